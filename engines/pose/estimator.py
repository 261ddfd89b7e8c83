"""BlazePose on video: detector when needed, landmarks per tracked region, several people batched.

Per frame (:meth:`PoseEstimator.__call__`):

1. Regions of interest: those tracked from the previous frame (from its auxiliary landmarks 33
   and 34). The detector runs only when nobody is tracked, when a tracked person was lost, or
   every ``detect_every`` frames while fewer than ``max_people`` are tracked; detections whose
   region overlaps a tracked one are ignored.
2. Each region is cropped (rotated, 256x256, values in [0, 1], border replicated); all crops run
   through the landmark network as one batch.
3. A region whose pose presence is below 0.5 (MediaPipe's threshold) is dropped (the person is
   lost; the detector runs again in the same frame to find them).
4. Landmarks are refined with the heatmap, projected to the image; world landmarks rotated back;
   the mask warped back to the image; the next frame's region comes from landmarks 33/34.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from engines.geometry import box_iou
from engines.pose import geometry as geo
from engines.pose.filtering import PoseSmoother
from engines.pose.networks import DETECTOR, LANDMARKS, build_engines

log = logging.getLogger("meshstream.pose")


@dataclass
class PersonObservation:
    """One person in one frame.

    keypoints (33, 3) float32: x, y image pixels, visibility in [0, 1];
    keypoints_z (33,) float32: depth relative to the hips, pixel-like units (smaller = nearer);
    presence: pose presence probability; world_landmarks (33, 3) float32: metres, hip-centred;
    mask (H, W) float32 in [0, 1] or None; bbox (4,) float32 x0, y0, x1, y1 pixels of the landmarks;
    roi (cx, cy, size, rotation): the region the landmarks were computed in (pixels, radians);
    landmark_presence (33,) float32: per-landmark presence; from_detection: whether the region
    came from the detector in this frame (else from tracking).
    """

    keypoints: np.ndarray
    keypoints_z: np.ndarray
    presence: float
    world_landmarks: np.ndarray
    mask: np.ndarray | None
    bbox: np.ndarray
    roi: tuple[float, float, float, float]
    landmark_presence: np.ndarray | None = None
    from_detection: bool = False


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes (4,) x0, y0, x1, y1 (engines.geometry.box_iou)."""
    return float(box_iou(np.asarray(a)[None], np.asarray(b)[None])[0, 0])


def _roi_box(roi: geo.Roi) -> np.ndarray:
    corners = roi.corners()
    return np.concatenate([corners.min(0), corners.max(0)])


def check_image(image) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array, or a ValueError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) RGB, got {image.shape}; convert grey or RGBA images first")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: {image.shape}")
    return np.ascontiguousarray(image)


class PoseEstimator:
    """BlazePose (detector + full landmark network) with region tracking across frames.

    ``backend``: "auto", "eager", "compile", "tensorrt" or "litert" (see engines.backends);
    ``device``: torch device; ``max_people``: most people per frame; ``with_mask``: compute the
    person masks; ``detect_every``: also run the detector every N frames while fewer than
    ``max_people`` are tracked (0: only when nobody is tracked or someone is lost);
    ``smooth_landmarks``: MediaPipe's One Euro smoothing of the outputs (keypoints, visibility,
    world landmarks); ``smooth_roi``: MediaPipe's smoothing of the auxiliary landmarks that
    place the next frame's region (steadier crops); both per tracked person (engines.pose.filtering).
    ``repeat_detection``: after the detector's first pass, hide the people it found and run it
    again, until nobody new is found or ``max_people`` are (BlazePose's detector, made for one
    person, scores people far lower when others stand beside them; see :meth:`detect`).
    Fetches and converts the networks on first use if they are not cached.
    """

    def __init__(self, backend: str = "auto", device: str = "cpu", max_people: int = 4, with_mask: bool = True,
                 detect_every: int = 10, smooth_landmarks: bool = False, smooth_roi: bool = True,
                 fp16: bool = False, repeat_detection: bool = True):
        if max_people < 1:
            raise ValueError("max_people must be at least 1")
        self.max_people = max_people
        self.repeat_detection = repeat_detection
        self.with_mask = with_mask
        self.detect_every = detect_every
        self.smooth_landmarks = smooth_landmarks
        self.smooth_roi = smooth_roi
        engines = build_engines(backend=backend, device=device, fp16=fp16, max_batch=max_people)
        self.detector = engines[DETECTOR]
        self.landmarker = engines[LANDMARKS]
        self.anchors = geo.ssd_anchors()
        self.tracked: list[_Track] = []
        self.frame_index = 0
        self.detector_runs = 0
        log.info("pose estimator: detector on %s, landmarks on %s", self.detector.backend, self.landmarker.backend)

    def reset(self) -> None:
        """Forget the tracked regions (call between videos)."""
        self.tracked = []
        self.frame_index = 0

    # -- the two stages ------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[geo.Detection]:
        """People found by the detector in ``image`` (H, W, 3) uint8, at most max_people.

        Steps:
        1. One pass of the detector (letterboxed to its input, decoded, weighted NMS), best first.
        2. With ``repeat_detection``, while fewer than max_people are found and the last pass
           found someone: the people found so far are hidden (a band around each one's hips and
           torso, filled with the frame's mean colour) and the detector runs again on that copy;
           a new detection that overlaps an earlier one is dropped.
        """
        image = check_image(image)
        found = self._one_pass(image)
        if not self.repeat_detection:
            return found
        hidden = None
        new = found
        while new and len(found) < self.max_people:
            if hidden is None:
                hidden = image.copy()
                fill = image.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
            for detection in new:
                _hide_person(hidden, detection, fill)
            new = [d for d in self._one_pass(hidden)
                   if all(_box_iou(d.box, other.box) < 0.3 for other in found)][: self.max_people - len(found)]
            found += new
        return found

    def detect_once(self, image: np.ndarray) -> list[geo.Detection]:
        """One pass of the detector: people in ``image`` (H, W, 3) uint8, best first, at most max_people."""
        return self._one_pass(check_image(image))

    def _one_pass(self, image: np.ndarray) -> list[geo.Detection]:
        """:meth:`detect_once` on an image already checked."""
        height, width = image.shape[:2]
        tensor, box = geo.letterbox(image)
        raw_boxes, raw_scores = self.detector(torch.from_numpy(tensor[None]))
        self.detector_runs += 1
        # .cpu(): an engine on a GPU answers with tensors on the GPU.
        scores, boxes, keypoints = geo.decode_detections(raw_boxes[0].cpu().numpy(), raw_scores[0].cpu().numpy(),
                                                         self.anchors)
        found = []
        for score, det_box, det_kps in geo.weighted_nms(scores, boxes, keypoints)[: self.max_people]:
            corners = geo.remove_letterbox(det_box.reshape(2, 2), box, width, height).reshape(4)
            points = geo.remove_letterbox(det_kps, box, width, height)
            found.append(geo.Detection(score, corners.astype(np.float32), points.astype(np.float32)))
        return found

    def landmarks(self, image: np.ndarray, rois: list[geo.Roi]) -> list[PersonObservation | None]:
        """Landmarks in each region (one batch); None where the pose presence is below 0.5."""
        image = check_image(image)
        if not rois:
            return []
        height, width = image.shape[:2]
        crops = np.stack([geo.crop_roi(image, roi) for roi in rois])
        outputs = self.landmarker(torch.from_numpy(crops))
        raw, presence, mask_logits, heatmaps, world = (t.cpu().numpy() for t in outputs)
        people: list[PersonObservation | None] = []
        for k, roi in enumerate(rois):
            score = float(presence[k].reshape(-1)[0])
            if not score >= geo.PRESENCE_THRESHOLD:
                people.append(None)
                continue
            values = raw[k].reshape(geo.NUM_LANDMARKS, 5).astype(np.float64)
            xy = geo.refine_from_heatmap(values[:, :2] / geo.LANDMARK_SIZE, heatmaps[k])
            xy_image = geo.project_to_image(xy, roi)
            visibility = geo.sigmoid(values[:, 3])
            keypoints = np.concatenate([xy_image, visibility[:, None]], axis=1)
            z = values[:, 2] / geo.LANDMARK_SIZE * roi.size
            world_xyz = geo.rotate_world(world[k].reshape(geo.NUM_LANDMARKS, 3)[: geo.NUM_BODY_LANDMARKS], roi.rotation)
            mask = None
            if self.with_mask:
                crop_mask = geo.sigmoid(mask_logits[k, :, :, 0]).astype(np.float32)
                mask = geo.warp_mask_to_image(crop_mask, roi, width, height)
            body = xy_image[: geo.NUM_BODY_LANDMARKS]
            bbox = np.array([body[:, 0].min(), body[:, 1].min(), body[:, 0].max(), body[:, 1].max()])
            bbox = np.clip(bbox, 0, [width, height, width, height])
            person = PersonObservation(
                keypoints=np.ascontiguousarray(keypoints[: geo.NUM_BODY_LANDMARKS], dtype=np.float32),
                keypoints_z=np.ascontiguousarray(z[: geo.NUM_BODY_LANDMARKS], dtype=np.float32),
                presence=score,
                world_landmarks=np.ascontiguousarray(world_xyz, dtype=np.float32),
                mask=mask,
                bbox=bbox.astype(np.float32),
                roi=roi.as_tuple(),
                landmark_presence=geo.sigmoid(values[: geo.NUM_BODY_LANDMARKS, 4]).astype(np.float32),
            )
            # The auxiliary landmarks 33/34 (x, y, z pixels) give the next frame's region.
            person._aux = np.concatenate([xy_image[geo.AUX_CENTRE:geo.AUX_SCALE + 1],
                                          z[geo.AUX_CENTRE:geo.AUX_SCALE + 1, None]], axis=1)
            people.append(person)
        return people

    # -- per frame -----------------------------------------------------------------------------

    def _rois_from_detections(self, image: np.ndarray, avoid: list[geo.Roi]) -> list[geo.Roi]:
        rois = []
        taken = [_roi_box(r) for r in avoid]
        for det in self.detect(image):
            roi = geo.roi_from_alignment_points(det.keypoints[0], det.keypoints[1])
            if roi.size < 1.0:
                continue
            box = _roi_box(roi)
            if any(_box_iou(box, other) > 0.5 for other in taken):
                continue
            taken.append(box)
            rois.append(roi)
        return rois

    def __call__(self, image: np.ndarray, timestamp_s: float | None = None) -> list[PersonObservation]:
        """People in ``image`` (H, W, 3) uint8 RGB; updates the tracked regions.

        ``timestamp_s``: the frame's time in seconds, used by the smoothing filters (default:
        the frame count at a nominal 30 frames per second).
        """
        image = check_image(image)
        time_s = float(timestamp_s) if timestamp_s is not None else self.frame_index / 30.0
        tracks = [t for t in self.tracked if t.roi.size >= 1.0]
        new_tracks: list[_Track] = []
        periodic = self.detect_every > 0 and self.frame_index % self.detect_every == 0
        if not tracks or (periodic and len(tracks) < self.max_people):
            rois = self._rois_from_detections(image, [t.roi for t in tracks])[: self.max_people - len(tracks)]
            new_tracks = [_Track(roi) for roi in rois]
        candidates = tracks + new_tracks
        results = self.landmarks(image, [t.roi for t in candidates])
        found = [(t, p) for t, p in zip(candidates, results) if p is not None]
        for track, person in found:
            person.from_detection = track in new_tracks
        if len(found) < len(candidates) and not new_tracks and len(found) < self.max_people:
            # Someone tracked was lost: look for people again in this frame.
            avoid = [geo.Roi(*p.roi) for _, p in found]
            fresh = [_Track(r) for r in self._rois_from_detections(image, avoid)[: self.max_people - len(found)]]
            for track, person in zip(fresh, self.landmarks(image, [t.roi for t in fresh])):
                if person is not None:
                    person.from_detection = True
                    found.append((track, person))
        found = self._drop_duplicates(found)
        self.tracked = []
        people = []
        for track, person in found:
            aux = person.__dict__.pop("_aux")
            if self.smooth_landmarks:
                track.smooth(person, time_s)
            if self.smooth_roi:
                aux = track.smoother.auxiliary(aux, time_s)
            track.roi = geo.roi_from_alignment_points(aux[0, :2], aux[1, :2])
            self.tracked.append(track)
            people.append(person)
        self.frame_index += 1
        return people

    @staticmethod
    def _drop_duplicates(found: list) -> list:
        """Two regions that converged on the same person: keep the more confident one."""
        kept: list = []
        for track, person in sorted(found, key=lambda tp: -tp[1].presence):
            if all(_box_iou(person.bbox, other.bbox) < 0.6 for _, other in kept):
                kept.append((track, person))
        return kept


class _Track:
    """A tracked person: the region for the next frame and the smoothing state."""

    def __init__(self, roi: geo.Roi):
        self.roi = roi
        self.smoother = PoseSmoother()

    def smooth(self, person: PersonObservation, time_s: float) -> None:
        xyz = np.concatenate([person.keypoints[:, :2], person.keypoints_z[:, None]], axis=1)
        xyz = self.smoother.landmarks(xyz, time_s)
        visibility = self.smoother.visibilities(person.keypoints[:, 2])
        person.keypoints = np.ascontiguousarray(np.concatenate([xyz[:, :2], visibility[:, None]], axis=1), np.float32)
        person.keypoints_z = np.ascontiguousarray(xyz[:, 2], np.float32)
        person.world_landmarks = np.ascontiguousarray(self.smoother.world_landmarks(person.world_landmarks, time_s),
                                                      np.float32)


# Half the width of the band that hides a found person before the detector runs again, as a
# fraction of the detection's body radius (hip centre to the full-body circle's edge: about
# half the person's height). Narrow enough to leave a neighbour standing close by visible.
HIDE_HALF_WIDTH = 0.35


def _hide_person(image: np.ndarray, detection: geo.Detection, fill: np.ndarray) -> None:
    """Paint over a detected person in place: a band ``HIDE_HALF_WIDTH`` radii wide either side
    of the hip centre and one radius above and below it. image (H, W, 3) uint8."""
    hip = detection.keypoints[0]
    radius = float(np.linalg.norm(detection.keypoints[1] - hip))
    x0, x1 = int(max(0.0, hip[0] - HIDE_HALF_WIDTH * radius)), int(max(0.0, hip[0] + HIDE_HALF_WIDTH * radius))
    y0, y1 = int(max(0.0, hip[1] - radius)), int(max(0.0, hip[1] + radius))
    image[y0:y1, x0:x1] = fill
