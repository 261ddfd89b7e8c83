"""BlazePose pre/post-processing: anchors, decoding, NMS, regions, crops and projections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.pose import geometry as geo
from engines.pose.filtering import OneEuro


def test_anchors_follow_mediapipe_layout():
    anchors = geo.ssd_anchors()
    assert anchors.shape == (2254, 2)
    # Stride 8: 28x28 locations, 2 anchors each, row-major.
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])
    # Stride 16 starts after 1568, stride 32 (6 per location) after 1568 + 392.
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(anchors[1960:1966], np.tile([0.5 / 7, 0.5 / 7], (6, 1)))
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def test_decoding_places_boxes_and_keypoints_relative_to_their_anchor():
    anchors = geo.ssd_anchors()
    raw = np.zeros((2254, 12), np.float32)
    scores = np.full((2254, 1), -10.0, np.float32)
    raw[100] = [22.4, -11.2, 44.8, 22.4, 0, 0, 11.2, 0, 0, 0, 0, 0]
    scores[100] = 3.0
    s, boxes, kps = geo.decode_detections(raw, scores, anchors)
    assert s.shape == (1,) and s[0] == pytest.approx(1 / (1 + math.exp(-3)))
    cx, cy = anchors[100] + [0.1, -0.05]
    np.testing.assert_allclose(boxes[0], [cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05], atol=1e-6)
    np.testing.assert_allclose(kps[0, 1], anchors[100] + [0.05, 0], atol=1e-6)


def test_weighted_nms_merges_overlapping_boxes_by_score():
    scores = np.array([0.9, 0.6, 0.8])
    boxes = np.array([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [3, 3, 4, 4]], float)
    kps = np.zeros((3, 4, 2))
    kps[1] += 1.0
    out = geo.weighted_nms(scores, boxes, kps)
    assert len(out) == 2
    score, box, keypoints = out[0]
    assert score == 0.9
    np.testing.assert_allclose(box[0], 0.6 * 0.1 / 1.5)
    np.testing.assert_allclose(keypoints[0, 0], 0.6 / 1.5)
    assert out[1][0] == 0.8


def test_letterbox_removal_inverts_the_letterbox():
    image = np.zeros((100, 300, 3), np.uint8)
    tensor, box = geo.letterbox(image)
    assert tensor.shape == (224, 224, 3) and tensor.min() == -1.0
    points_px = np.array([[0.0, 0.0], [300.0, 100.0], [150.0, 50.0]])
    homogeneous = np.concatenate([points_px, np.ones((3, 1))], axis=1)
    in_tensor = homogeneous @ box.matrix.T / 224
    np.testing.assert_allclose(geo.remove_letterbox(in_tensor, box, 300, 100), points_px, atol=1e-9)


def test_roi_points_the_scale_point_straight_up():
    roi = geo.roi_from_alignment_points(np.array([100.0, 200.0]), np.array([100.0, 120.0]))
    assert roi.rotation == pytest.approx(0.0)
    assert roi.size == pytest.approx(2 * 80 * 1.25)
    lying = geo.roi_from_alignment_points(np.array([100.0, 200.0]), np.array([180.0, 200.0]))
    assert lying.rotation == pytest.approx(math.pi / 2)


def test_crop_and_projection_are_inverse_maps():
    roi = geo.Roi(320.0, 240.0, 300.0, 0.7)
    matrix = geo.roi_to_crop_matrix(roi)
    crop_norm = np.array([[0.1, 0.2], [0.5, 0.5], [0.9, 0.4]])
    image_px = geo.project_to_image(crop_norm, roi)
    back = (np.concatenate([image_px, np.ones((3, 1))], axis=1) @ matrix.T) / geo.LANDMARK_SIZE
    np.testing.assert_allclose(back, crop_norm, atol=1e-9)
    np.testing.assert_allclose(image_px[1], [320, 240])


def test_crop_replicates_the_border_and_scales_to_unit_range():
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = geo.crop_roi(image, geo.Roi(0.0, 0.0, 400.0, 0.3))
    assert crop.shape == (256, 256, 3) and crop.dtype == np.float32
    np.testing.assert_allclose(crop, 200 / 255, atol=1e-6)


def test_heatmap_refinement_moves_points_to_the_confident_peak_only():
    heat = np.full((64, 64, 2), -10.0, np.float32)
    heat[30, 33, 0] = 10.0   # a confident peak near landmark 0
    heat[10, 10, 1] = -0.5   # not confident enough for landmark 1
    xy = np.array([[32 / 64, 31 / 64], [10 / 64, 10 / 64]])
    out = geo.refine_from_heatmap(xy, heat)
    assert out[0, 0] == pytest.approx(33 / 64, abs=2e-3) and out[0, 1] == pytest.approx(30 / 64, abs=2e-3)
    np.testing.assert_allclose(out[1], xy[1])


def _refine_one_at_a_time(xy_norm, logits, kernel=geo.HEATMAP_KERNEL, min_confidence=geo.HEATMAP_MIN_CONFIDENCE):
    """The refinement written out landmark by landmark, as MediaPipe's calculator loops."""
    height, width, count = logits.shape
    out = np.array(xy_norm, dtype=np.float64, copy=True)
    half = (kernel - 1) // 2
    for index in range(count):
        col, row = int(out[index, 0] * width), int(out[index, 1] * height)
        if not (0 <= col < width and 0 <= row < height):
            continue
        rows = slice(max(0, row - half), min(height, row + half + 1))
        cols = slice(max(0, col - half), min(width, col + half + 1))
        window = geo.sigmoid(logits[rows, cols, index])
        if window.max() >= min_confidence and window.sum() > 0:
            rr, cc = np.mgrid[rows, cols]
            out[index] = (cc * window).sum() / width / window.sum(), (rr * window).sum() / height / window.sum()
    return out


def test_heatmap_refinement_equals_the_landmark_by_landmark_definition():
    rng = np.random.default_rng(3)
    logits = rng.normal(-1.0, 3.0, size=(64, 64, 39)).astype(np.float32)
    # Landmarks anywhere, including on the edges (cut windows), outside the crop and negative.
    xy = rng.uniform(-0.1, 1.1, size=(39, 2))
    xy[:4] = [[0.0, 0.0], [0.999, 0.5], [0.5, 1.0], [-0.01, 0.5]]
    np.testing.assert_allclose(geo.refine_from_heatmap(xy, logits), _refine_one_at_a_time(xy, logits), atol=1e-12)


def test_one_euro_follows_fast_motion_and_damps_jitter():
    still = OneEuro(min_cutoff=0.05, beta=80.0)
    rng = np.random.default_rng(0)
    # 1 px of jitter on a 1000 px person.
    values = [still(np.array([100.0 + rng.normal(0, 1.0)]), t / 30, 1 / 1000) for t in range(60)]
    assert np.std(values[30:]) < 0.6
    moving = OneEuro(min_cutoff=0.05, beta=80.0)
    out = [moving(np.array([10.0 * t]), t / 30, 1 / 100) for t in range(30)]
    assert out[-1][0] > 0.9 * 290
