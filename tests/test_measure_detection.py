"""tools/measure_detection.py: its definitions (fully visible, facing, matching) on known cases,
and a run of BlazePose over a tiny rendered clip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from meshstream_tools import measure_detection as md
from tests.conftest import HELD_OUT_MOTIONS, MOCAP_ENV, ROOT


def standing_keypoints(x_centre: float, top: float = 30.0, height: float = 180.0) -> np.ndarray:
    """(33, 3) keypoints spread over a box of the given size, all flagged visible."""
    ys = np.linspace(top, top + height, 33)
    xs = x_centre + 20.0 * np.sin(np.arange(33))
    return np.stack([xs, ys, np.ones(33)], axis=1).astype(np.float32)


def test_person_with_a_keypoint_outside_the_frame_is_not_fully_visible():
    inside = standing_keypoints(100.0)
    outside = inside.copy()
    outside[5, 0] = -1.0
    keypoints = np.stack([inside, outside])
    masks = np.zeros((2, 240, 320), bool)
    visible = md.fully_visible(keypoints, masks, np.array([0, 1]), 320, 240)
    assert visible.tolist() == [True, False]


def test_keypoints_covered_by_another_person_count_but_self_occlusion_does_not():
    person = standing_keypoints(100.0)
    person[:, 2] = 0.0  # hidden by its own body (e.g. seen from behind): still fully visible
    masks = np.zeros((2, 240, 320), bool)
    # The other person covers the pixels of the first person's first k keypoints.
    def covered(k):
        m = np.zeros((240, 320), bool)
        for x, y in person[:k, :2].astype(int):
            m[y, x] = True
        return m

    for k, expected in ((6, True), (7, False), (20, False)):  # 6/33 = 18 % covered, 7/33 = 21 %
        masks[1] = covered(k)
        keypoints = np.stack([person, standing_keypoints(250.0)])
        visible = md.fully_visible(keypoints, masks, np.array([0, 0]), 320, 240)
        assert visible[0] == expected, k
    # The same mask in another frame does not cover anything.
    assert md.fully_visible(keypoints, masks, np.array([0, 1]), 320, 240)[0]


def body_facing(angle_deg: float, distance: float = 3.0) -> np.ndarray:
    """Landmarks (33, 3) in the camera frame of a torso turned ``angle_deg`` away from the camera
    (its centre on the optical axis, so that the direction to the camera is -z)."""
    landmarks = np.zeros((33, 3))
    # Facing the camera: the person's left is the image's right (+x), up is -y.
    landmarks[md.LEFT_SHOULDER] = [0.2, -0.25, 0.0]
    landmarks[md.RIGHT_SHOULDER] = [-0.2, -0.25, 0.0]
    landmarks[md.LEFT_HIP] = [0.1, 0.25, 0.0]
    landmarks[md.RIGHT_HIP] = [-0.1, 0.25, 0.0]
    a = np.radians(angle_deg)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return landmarks @ turn.T + np.array([0.0, 0.0, distance])


def test_facing_angle_is_zero_facing_the_camera_and_180_from_behind():
    angles = md.facing_angle(np.stack([body_facing(a) for a in (0.0, 30.0, 90.0, 180.0)]))
    np.testing.assert_allclose(angles, [0.0, 30.0, 90.0, 180.0], atol=1e-6)
    assert md.facing_class(angles).tolist() == ["front", "front", "side", "back"]


def test_height_bins_and_detection_matching_gate():
    assert md.height_bin(np.array([100.0, 200.0, 300.0, 400.0])).tolist() == [
        "0-160 px", "160-240 px", "240-320 px", ">= 320 px"]
    hips = np.array([[100.0, 150.0], [250.0, 150.0]])
    heights = np.array([200.0, 200.0])
    # One detection near the second person (within 0.25 * 200 = 50 px), one far from everyone.
    found = md.match_detections(hips, heights, np.array([[260.0, 170.0], [100.0, 20.0]]))
    assert found.tolist() == [False, True]
    assert md.match_detections(hips, heights, np.zeros((0, 2))).tolist() == [False, False]


def test_pose_matching_accepts_left_right_swapped_landmarks():
    from engines.skeleton import BLAZEPOSE_MIRROR

    truth = standing_keypoints(150.0)[None]
    swapped = truth[:, list(BLAZEPOSE_MIRROR)]
    assert md.match_poses(truth, np.array([200.0]), swapped, 320, 240).tolist() == [True]
    shifted = truth.copy()
    shifted[..., 0] += 60.0  # 60 px off for a 200-px person: more than the 0.2 gate
    assert md.match_poses(truth, np.array([200.0]), shifted, 320, 240).tolist() == [False]


@pytest.mark.timeout(180)
def test_blazepose_finds_a_lone_rendered_person(tmp_path):
    pytest.importorskip("anny", reason="rendering needs the anny package")
    make = [sys.executable, str(ROOT / "tools" / "make_synthetic.py"), "--out", str(tmp_path), "--seed", "1",
            "--clips", "1", "--frames", "4", "--size", "320x240", "--supersample", "1", "--max-people", "1",
            "--motions", str(HELD_OUT_MOTIONS)]
    done = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, timeout=170, env=MOCAP_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    summary_path = tmp_path / "summary.json"
    measure = [sys.executable, str(ROOT / "tools" / "measure_detection.py"), str(tmp_path), "--json",
               str(summary_path)]
    done = subprocess.run(measure, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    gt = np.load(tmp_path / "clip_000.npz")
    expected = md.fully_visible(gt["keypoints2d"], gt["masks"], gt["frame_index"], 320, 240).sum()
    assert summary["rows"] == 4 and summary["fully_visible"] == expected > 0
    assert summary["in_view"] == {"1 in view": summary["overall"]}
    # One person alone in the frame: the detector and the pose stage find them.
    assert summary["overall"]["detector"] >= 0.75
    assert summary["overall"]["pipeline"] >= 0.75
    assert "overall" in done.stdout and "by facing" in done.stdout
