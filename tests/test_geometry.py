"""engines.geometry: the one definition of box IoU, projection, Procrustes, gated matching and mirroring."""

from __future__ import annotations

import numpy as np
import torch

from engines.geometry import box_iou, match_within_gate, mirror_pose, procrustes, project_points
from engines.rotations import axis_angle_to_matrix
from engines.skeleton import SMPL_JOINT_NAMES


def test_box_iou_of_overlapping_disjoint_and_empty_boxes():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], float)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1] == iou[1, 0] == 50 / 150
    assert iou[0, 2] == 0.0 and iou[0, 0] == 1.0
    assert iou[3, 3] == 0.0 and iou[3, 0] == 0.0  # a box without area overlaps nothing, itself included
    assert box_iou(boxes[:0], boxes).shape == (0, 4)


def test_projection_puts_points_on_the_pixels_of_the_pinhole_model():
    intrinsics = torch.tensor([[500.0, 0, 320], [0, 520.0, 240], [0, 0, 1]])
    points = torch.tensor([[[0.0, 0.0, 2.0], [1.0, -0.5, 4.0]]])
    np.testing.assert_allclose(project_points(points, intrinsics)[0].numpy(), [[320, 240], [445, 175]])
    per_person = torch.stack([intrinsics, torch.tensor([[1000.0, 0, 640], [0, 1040.0, 480], [0, 0, 1]])])
    both = project_points(points.expand(2, -1, -1), per_person)
    np.testing.assert_allclose(both[0].numpy(), [[320, 240], [445, 175]])
    assert both[1, 0].tolist() == [640.0, 480.0]


def test_procrustes_recovers_a_similarity_transform_and_weights_points():
    generator = torch.Generator().manual_seed(0)
    rotation = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=torch.float64))
    source = torch.randn(2, 12, 3, generator=generator, dtype=torch.float64)
    target = 1.7 * source @ rotation.T + torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    scale, found, translation = procrustes(source, target, with_scale=True)
    np.testing.assert_allclose(scale.numpy(), [1.7, 1.7], atol=1e-12)
    np.testing.assert_allclose(found.numpy(), rotation.expand(2, 3, 3).numpy(), atol=1e-12)
    np.testing.assert_allclose(translation.numpy(), [[0.5, -2.0, 3.0]] * 2, atol=1e-12)
    # Without scale, and with one point corrupted: weighting it out recovers the rotation again.
    rigid = source @ rotation.T
    rigid[:, 0] += 5.0
    weights = torch.ones(2, 12, dtype=torch.float64)
    assert (procrustes(source, rigid)[1] - rotation).abs().max() > 1e-3
    weights[:, 0] = 0.0
    np.testing.assert_allclose(procrustes(source, rigid, weights)[1].numpy(), rotation.expand(2, 3, 3).numpy(), atol=1e-12)
    assert torch.linalg.det(procrustes(source, -source)[1]).allclose(torch.ones(2, dtype=torch.float64))  # never a reflection


def test_matching_keeps_pairs_within_the_gate_and_lets_none_over_it_displace_them():
    # Row 0 alone fits column 0 within the gate; the cheapest total would give column 0 to row 1
    # (1 + 50 < 8 + 100) if the pair over the gate counted.
    cost = np.array([[8.0, 50.0], [1.0, 100.0]])
    assert match_within_gate(cost, 10.0) == [(1, 0)]
    assert match_within_gate(cost, np.array([[10.0, 60.0]])) == [(0, 1), (1, 0)]  # one limit per column
    assert match_within_gate(np.array([[np.inf, 2.0], [np.nan, 3.0]]), 5.0) == [(0, 1)]
    assert match_within_gate(np.zeros((0, 3)), 1.0) == []


def test_mirroring_swaps_left_and_right_and_is_its_own_inverse_in_numpy_and_torch():
    rng = np.random.default_rng(1)
    pose = rng.normal(0, 0.5, (3, 24, 3))
    mirrored = mirror_pose(pose)
    left_knee, right_knee = SMPL_JOINT_NAMES.index("left_knee"), SMPL_JOINT_NAMES.index("right_knee")
    np.testing.assert_array_equal(mirrored[:, right_knee], pose[:, left_knee] * [1, -1, -1])
    np.testing.assert_array_equal(mirror_pose(mirrored), pose)
    as_tensor = mirror_pose(torch.from_numpy(pose))
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), mirrored)
