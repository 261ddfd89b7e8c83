"""Person tracking: ids through a crossing with an occlusion, new ids for new people, expiry."""

from __future__ import annotations

import numpy as np
import pytest

from engines.geometry import box_iou
from engines.skeleton import BLAZEPOSE_NAMES
from stream.tracking import Tracker, keypoint_similarity

FPS = 30.0

# A standing person's 33 BlazePose keypoints as (u, v) in their box (0..1 left to right, top
# to bottom; the person faces the camera, so their left side is on the image's right).
_TEMPLATE = {
    "nose": (0.5, 0.06), "left_eye_inner": (0.53, 0.045), "left_eye": (0.55, 0.045), "left_eye_outer": (0.57, 0.045),
    "right_eye_inner": (0.47, 0.045), "right_eye": (0.45, 0.045), "right_eye_outer": (0.43, 0.045),
    "left_ear": (0.6, 0.055), "right_ear": (0.4, 0.055), "mouth_left": (0.53, 0.08), "mouth_right": (0.47, 0.08),
    "left_shoulder": (0.72, 0.2), "right_shoulder": (0.28, 0.2), "left_elbow": (0.85, 0.35), "right_elbow": (0.15, 0.35),
    "left_wrist": (0.9, 0.48), "right_wrist": (0.1, 0.48), "left_pinky": (0.92, 0.52), "right_pinky": (0.08, 0.52),
    "left_index": (0.91, 0.53), "right_index": (0.09, 0.53), "left_thumb": (0.88, 0.51), "right_thumb": (0.12, 0.51),
    "left_hip": (0.62, 0.52), "right_hip": (0.38, 0.52), "left_knee": (0.63, 0.74), "right_knee": (0.37, 0.74),
    "left_ankle": (0.64, 0.94), "right_ankle": (0.36, 0.94), "left_heel": (0.64, 0.97), "right_heel": (0.36, 0.97),
    "left_foot_index": (0.66, 0.99), "right_foot_index": (0.34, 0.99),
}
TEMPLATE = np.array([_TEMPLATE[name] for name in BLAZEPOSE_NAMES])


def person(centre_x: float, centre_y: float, height: float, t: float, arms_up: bool, rng) -> tuple[np.ndarray, np.ndarray]:
    """A walking person's box (4,) and keypoints (33, 3), with detector-like noise."""
    width = 0.4 * height
    uv = TEMPLATE.copy()
    if arms_up:  # wrists and hands above the head
        for name in ("left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb"):
            uv[BLAZEPOSE_NAMES.index(name), 1] = -0.05
    swing = 0.08 * np.sin(2 * np.pi * 1.5 * t)
    for side, sign in (("left", 1), ("right", -1)):
        for name in ("knee", "ankle", "heel", "foot_index"):
            uv[BLAZEPOSE_NAMES.index(f"{side}_{name}"), 0] += sign * swing
    x0, y0 = centre_x - width / 2, centre_y - height / 2
    xy = np.stack([x0 + uv[:, 0] * width, y0 + uv[:, 1] * height], axis=1) + rng.normal(0, 4.0, (33, 2))
    keypoints = np.concatenate([xy, rng.uniform(0.7, 1.0, (33, 1))], axis=1)
    box = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]) + rng.normal(0, 3.0, 4)
    return box, keypoints


def crossing_sequence(seed: int = 0, occlusion_px: float = 80.0, same_size: bool = False):
    """Two people crossing in a 1280x720 image over 4 s: A (nearer, taller) walks right, B walks
    left with arms up; B is hidden behind A (no detection) while their centres are within
    occlusion_px. Yields (t_s, boxes, keypoints, labels) per frame, labels "A"/"B"."""
    rng = np.random.default_rng(seed)
    for frame in range(int(4 * FPS)):
        t = frame / FPS
        a_x = 200 + 220 * t
        b_x = 1080 - 220 * t
        detections = [("A",) + person(a_x, 400, 400, t, False, rng)]
        if abs(a_x - b_x) >= occlusion_px:
            detections.append(("B",) + person(b_x, 390, 400 if same_size else 360, t, True, rng))
        order = rng.permutation(len(detections))  # detectors give no stable order
        detections = [detections[i] for i in order]
        yield t, np.stack([d[1] for d in detections]), np.stack([d[2] for d in detections]), [d[0] for d in detections]


@pytest.mark.parametrize("use_keypoints", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_ids_survive_a_crossing_with_a_short_occlusion(use_keypoints, seed):
    tracker = Tracker(max_age_s=1.0)
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    hidden_frames = 0
    for t, boxes, keypoints, labels in crossing_sequence(seed):
        ids = tracker.update(t, boxes, keypoints if use_keypoints else None)
        hidden_frames += "B" not in labels
        for label, track_id in zip(labels, ids):
            seen[label].add(int(track_id))
    assert hidden_frames >= 8  # the occlusion really happened (about 0.3 s)
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1 and seen["A"] != seen["B"]


def test_keypoints_keep_ids_when_same_sized_people_cross_in_view():
    """No occlusion, same box sizes: boxes overlap heavily at the crossing; keypoints (arms up
    or down) and each track's velocity keep the ids apart."""
    tracker = Tracker(max_age_s=1.0)
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    for t, boxes, keypoints, labels in crossing_sequence(seed=2, occlusion_px=0.0, same_size=True):
        for label, track_id in zip(labels, tracker.update(t, boxes, keypoints)):
            seen[label].add(int(track_id))
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1 and seen["A"] != seen["B"]


def test_new_people_get_new_ids():
    rng = np.random.default_rng(3)
    tracker = Tracker()
    first = set()
    for frame in range(20):
        t = frame / FPS
        box, kp = person(300 + 100 * t, 400, 400, t, False, rng)
        first |= set(tracker.update(t, box[None], kp[None]).tolist())
    assert len(first) == 1
    t = 20 / FPS
    box_a, kp_a = person(300 + 100 * t, 400, 400, t, False, rng)
    box_c, kp_c = person(1000, 380, 350, t, True, rng)
    ids = tracker.update(t, np.stack([box_c, box_a]), np.stack([kp_c, kp_a]))
    assert ids[1] in first and ids[0] not in first and ids[0] > 0
    assert sorted(t.track_id for t in tracker.tracks) == sorted(ids.tolist())


def test_lost_tracks_expire_after_max_age_and_their_ids_are_not_reused():
    rng = np.random.default_rng(4)
    tracker = Tracker(max_age_s=0.5)
    ids_before = set()
    for frame in range(15):
        box, kp = person(640, 400, 400, frame / FPS, False, rng)
        ids_before |= set(tracker.update(frame / FPS, box[None], kp[None]).tolist())
    (track_id,) = ids_before
    # Gone for 0.3 s: still live, coasting; back in place, it keeps its id.
    for frame in range(15, 24):
        tracker.update(frame / FPS, np.zeros((0, 4)), np.zeros((0, 33, 3)))
    assert [t.track_id for t in tracker.tracks] == [track_id] and tracker.tracks[0].missed_frames == 9
    box, kp = person(640, 400, 400, 24 / FPS, False, rng)
    assert tracker.update(24 / FPS, box[None], kp[None]).tolist() == [track_id]
    # Gone for longer than max_age_s: expired, reported once, and a return gets a new id.
    expired_at = None
    for frame in range(25, 50):
        tracker.update(frame / FPS, np.zeros((0, 4)), None)
        if tracker.expired:
            assert tracker.expired == [track_id] and expired_at is None
            expired_at = frame / FPS
    assert expired_at is not None and 0.5 < expired_at - 24 / FPS <= 0.5 + 1.5 / FPS
    assert tracker.tracks == []
    box, kp = person(640, 400, 400, 50 / FPS, False, rng)
    assert tracker.update(50 / FPS, box[None], kp[None]).tolist() == [track_id + 1]


def test_similarity_measures():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    np.testing.assert_allclose(box_iou(boxes, boxes), [[1, 1 / 3], [1 / 3, 1]])
    kp = np.zeros((1, 33, 3))
    kp[..., 2] = 1.0
    shifted = kp.copy()
    shifted[..., 0] += 10.0
    hidden = kp.copy()
    hidden[..., 2] = 0.0
    similarity, shared = keypoint_similarity(kp, np.concatenate([kp, shifted, hidden]), np.array([100.0**2]))
    assert similarity[0, 0] == pytest.approx(1.0) and similarity[0, 1] == pytest.approx(np.exp(-100 / (2 * 100.0**2 * 0.01)))
    assert shared.tolist() == [[True, True, False]] and similarity[0, 2] == 0.0


def test_bad_input_is_refused_with_a_reason():
    tracker = Tracker()
    tracker.update(1.0, np.array([[0, 0, 10, 10]]))
    with pytest.raises(ValueError, match="timestamps must not go back"):
        tracker.update(0.5, np.array([[0, 0, 10, 10]]))
    with pytest.raises(ValueError, match="keypoints must be"):
        tracker.update(2.0, np.array([[0, 0, 10, 10]]), np.zeros((2, 33, 3)))
    with pytest.raises(ValueError, match="NaN"):
        tracker.update(2.0, np.array([[0, 0, np.nan, 10]]))
