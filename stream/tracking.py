"""Stable person ids across frames and short occlusions.

    tracker = Tracker(max_age_s=1.0)
    ids = tracker.update(t_s, boxes, keypoints)   # boxes (P,4) x0,y0,x1,y1 px; keypoints (P,33,3) or None
    tracker.tracks                                # TrackState per live track (seen or coasting)
    tracker.expired                               # ids that expired in the last update

Per update:
  1. every live track's box is predicted to t_s by its own filterpy Kalman filter (state: box
     centre, width, height and their velocities, in pixels and pixels per second; dt from the
     timestamps);
  2. similarity of each track and detection: box IoU with the predicted box, plus an OKS-like
     keypoint similarity (the track's last keypoints moved with its predicted centre, compared
     with the detection's, keypoints visible in both, scale from the box area), weighted;
  3. Hungarian assignment on 1 - similarity (engines.geometry.match_within_gate); pairs below
     ``min_similarity`` are not matched;
  4. matched tracks are corrected with their detection; unmatched detections start new tracks
     with new ids (never reused); tracks not seen for longer than ``max_age_s`` expire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from filterpy.kalman import KalmanFilter

from engines.geometry import box_iou, match_within_gate


def keypoint_similarity(
    keypoints_a: np.ndarray,
    keypoints_b: np.ndarray,
    areas: np.ndarray,
    kappa: float = 0.1,
    min_visibility: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """OKS-like similarity of every pair of keypoint sets.

    keypoints_a (A, K, 3), keypoints_b (B, K, 3): x, y pixels and visibility; areas (A,) the
    scale of each of the A sets (box area, px^2). Per keypoint visible (>= min_visibility) in
    both: exp(-d^2 / (2 area kappa^2)); the mean over them. Returns (A, B) similarity and
    (A, B) bool, False where the pair shares no visible keypoint (similarity 0 there).
    """
    visible = (keypoints_a[:, None, :, 2] >= min_visibility) & (keypoints_b[None, :, :, 2] >= min_visibility)
    distance_sq = ((keypoints_a[:, None, :, :2] - keypoints_b[None, :, :, :2]) ** 2).sum(-1)
    scale = 2.0 * np.maximum(areas, 1.0)[:, None, None] * kappa**2
    per_point = np.exp(-distance_sq / scale) * visible
    count = visible.sum(-1)
    similarity = per_point.sum(-1) / np.maximum(count, 1)
    return similarity, count > 0


@dataclass
class TrackState:
    """One tracked person.

    track_id: stable id; box (4,) x0, y0, x1, y1 px, the filter's estimate at last_update_s;
    velocity (2,) px/s of the box centre; keypoints (33, 3) or None, as last observed;
    first_seen_s, last_seen_s: seconds; hits: frames observed; missed_frames: updates since seen.
    """

    track_id: int
    box: np.ndarray
    velocity: np.ndarray
    keypoints: np.ndarray | None
    first_seen_s: float
    last_seen_s: float
    hits: int = 1
    missed_frames: int = 0
    kalman: KalmanFilter = field(repr=False, default=None)
    last_update_s: float = 0.0
    observed_centre: np.ndarray = field(repr=False, default=None)


def _box_to_state(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=np.float64)


def _state_to_box(state: np.ndarray) -> np.ndarray:
    cx, cy, w, h = state[:4]
    w, h = max(w, 1.0), max(h, 1.0)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


class Tracker:
    """Assigns stable ids to the people detected in successive frames.

    max_age_s: a track not seen for longer than this expires (its id is never reused).
    iou_weight, keypoint_weight: weights of box IoU and keypoint similarity (renormalised to the
        box alone when a pair shares no visible keypoint).
    min_similarity: pairs less similar than this are never matched.
    kappa: keypoint falloff relative to sqrt(box area) (OKS's per-keypoint constant, one for all).
    position_noise: process noise of the box filter, acceleration std as a fraction of the box
        height per s^2; measurement_noise: detection std as a fraction of the box height.
    """

    def __init__(
        self,
        max_age_s: float = 1.0,
        iou_weight: float = 0.5,
        keypoint_weight: float = 0.5,
        min_similarity: float = 0.1,
        kappa: float = 0.1,
        min_visibility: float = 0.5,
        position_noise: float = 2.0,
        measurement_noise: float = 0.05,
    ):
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.max_age_s = float(max_age_s)
        self.iou_weight = float(iou_weight)
        self.keypoint_weight = float(keypoint_weight)
        self.min_similarity = float(min_similarity)
        self.kappa = float(kappa)
        self.min_visibility = float(min_visibility)
        self.position_noise = float(position_noise)
        self.measurement_noise = float(measurement_noise)
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video). Ids keep increasing."""
        self._tracks: list[TrackState] = []
        self.expired: list[int] = []
        self._last_t_s: float | None = None
        if not hasattr(self, "_next_id"):
            self._next_id = 1

    @property
    def tracks(self) -> list[TrackState]:
        """The live tracks (seen this frame, or coasting on their prediction)."""
        return list(self._tracks)

    # -- the per-track Kalman filter ---------------------------------------------------------

    def _new_filter(self, box: np.ndarray) -> KalmanFilter:
        kf = KalmanFilter(dim_x=8, dim_z=4)
        kf.x = np.concatenate([_box_to_state(box), np.zeros(4)])
        kf.H = np.hstack([np.eye(4), np.zeros((4, 4))])
        height = max(box[3] - box[1], 1.0)
        kf.P = np.diag(np.concatenate([np.full(4, (self.measurement_noise * height) ** 2), np.full(4, height**2)]))
        return kf

    def _predict(self, track: TrackState, t_s: float) -> None:
        dt = t_s - track.last_update_s
        if dt <= 0:
            return
        kf = track.kalman
        height = max(kf.x[3], 1.0)
        kf.F = np.eye(8)
        kf.F[:4, 4:] = dt * np.eye(4)
        # White-noise acceleration (std position_noise * height per s^2) on each of the 4 values.
        accel_var = (self.position_noise * height) ** 2
        block = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]]) * accel_var
        kf.Q = np.zeros((8, 8))
        for i in range(4):
            kf.Q[np.ix_([i, i + 4], [i, i + 4])] = block
        kf.predict()
        track.last_update_s = t_s
        track.box = _state_to_box(kf.x)
        track.velocity = kf.x[4:6].copy()

    def _correct(self, track: TrackState, t_s: float, box: np.ndarray, keypoints: np.ndarray | None) -> None:
        kf = track.kalman
        height = max(box[3] - box[1], 1.0)
        kf.R = np.eye(4) * (self.measurement_noise * height) ** 2
        kf.update(_box_to_state(box))
        track.box = _state_to_box(kf.x)
        track.velocity = kf.x[4:6].copy()
        track.last_seen_s = t_s
        track.hits += 1
        track.missed_frames = 0
        if keypoints is not None:
            track.keypoints = keypoints.copy()
            track.observed_centre = kf.x[:2].copy()

    # -- matching --------------------------------------------------------------------------

    def _similarity(self, boxes: np.ndarray, keypoints: np.ndarray | None) -> np.ndarray:
        predicted = np.stack([t.box for t in self._tracks])
        similarity = box_iou(predicted, boxes)
        with_keypoints = [i for i, t in enumerate(self._tracks) if t.keypoints is not None]
        if keypoints is None or not with_keypoints:
            return similarity
        # The track's last keypoints, moved with its predicted centre since they were seen.
        moved = np.stack([
            self._tracks[i].keypoints
            + np.concatenate([self._tracks[i].kalman.x[:2] - self._tracks[i].observed_centre, [0.0]])
            for i in with_keypoints
        ])
        areas = np.array([(predicted[i, 2] - predicted[i, 0]) * (predicted[i, 3] - predicted[i, 1]) for i in with_keypoints])
        oks, shared = keypoint_similarity(moved, keypoints, areas, self.kappa, self.min_visibility)
        total = self.iou_weight + self.keypoint_weight
        combined = (self.iou_weight * similarity[with_keypoints] + self.keypoint_weight * oks) / total
        similarity[with_keypoints] = np.where(shared, combined, similarity[with_keypoints])
        return similarity

    def update(self, t_s: float, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray:
        """Ids for this frame's detections. boxes (P, 4) x0, y0, x1, y1 px; keypoints (P, K, 3)
        x, y px and visibility, or None. Returns (P,) int64 ids, in the detections' order."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if keypoints is not None:
            keypoints = np.asarray(keypoints, dtype=np.float64)
            if keypoints.ndim != 3 or keypoints.shape[0] != boxes.shape[0] or keypoints.shape[2] != 3:
                raise ValueError(f"keypoints must be (P, K, 3) for P = {boxes.shape[0]} boxes, got {keypoints.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError("boxes hold NaN or infinite values; drop those detections before tracking")
        if self._last_t_s is not None and t_s < self._last_t_s:
            raise ValueError(f"timestamps must not go back: got {t_s} after {self._last_t_s}; call reset() for a new video")
        self._last_t_s = t_s

        # 1. Predict every track to now.
        for track in self._tracks:
            self._predict(track, t_s)
        ids = np.zeros(boxes.shape[0], dtype=np.int64)
        matched_tracks: set[int] = set()
        matched_detections: set[int] = set()

        # 2-3. Similarity and assignment.
        if self._tracks and boxes.shape[0]:
            similarity = self._similarity(boxes, keypoints)
            for row, col in match_within_gate(1.0 - similarity, 1.0 - self.min_similarity):
                track = self._tracks[row]
                self._correct(track, t_s, boxes[col], None if keypoints is None else keypoints[col])
                ids[col] = track.track_id
                matched_tracks.add(row)
                matched_detections.add(col)

        # 4. Missed tracks coast or expire; new people get new ids.
        self.expired = []
        live = []
        for index, track in enumerate(self._tracks):
            if index not in matched_tracks:
                track.missed_frames += 1
                if t_s - track.last_seen_s > self.max_age_s:
                    self.expired.append(track.track_id)
                    continue
            live.append(track)
        self._tracks = live
        for col in range(boxes.shape[0]):
            if col in matched_detections:
                continue
            kf = self._new_filter(boxes[col])
            track = TrackState(
                track_id=self._next_id,
                box=boxes[col].copy(),
                velocity=np.zeros(2),
                keypoints=None if keypoints is None else keypoints[col].copy(),
                first_seen_s=t_s,
                last_seen_s=t_s,
                kalman=kf,
                last_update_s=t_s,
                observed_centre=kf.x[:2].copy(),
            )
            self._next_id += 1
            self._tracks.append(track)
            ids[col] = track.track_id
        return ids
