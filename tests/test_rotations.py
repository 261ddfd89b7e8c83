import math

import torch

from engines import rotations as R
from engines.skeleton import BLAZEPOSE_MIRROR, BLAZEPOSE_NAMES, SMPL_JOINT_NAMES, SMPL_MIRROR, SMPL_PARENTS


def _random_axis_angle(n, generator):
    axis = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(n, 1, generator=generator, dtype=torch.float64) * (math.pi - 1e-3)
    return axis * angle


def test_axis_angle_round_trips_through_matrix_and_quaternion():
    g = torch.Generator().manual_seed(0)
    aa = _random_axis_angle(1000, g)
    assert torch.allclose(R.matrix_to_axis_angle(R.axis_angle_to_matrix(aa)), aa, atol=1e-9)
    assert torch.allclose(R.quaternion_to_axis_angle(R.axis_angle_to_quaternion(aa)), aa, atol=1e-9)
    m = R.axis_angle_to_matrix(aa)
    assert torch.allclose(R.quaternion_to_matrix(R.matrix_to_quaternion(m)), m, atol=1e-9)


def test_rotation_matrices_are_orthonormal_and_known_rotation_is_right():
    aa = torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64)
    m = R.axis_angle_to_matrix(aa)[0]
    assert torch.allclose(m @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)
    g = torch.Generator().manual_seed(1)
    ms = R.axis_angle_to_matrix(_random_axis_angle(100, g))
    eye = torch.eye(3, dtype=torch.float64).expand_as(ms)
    assert torch.allclose(ms @ ms.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(ms), torch.ones(100, dtype=torch.float64), atol=1e-12)


def test_zero_rotation_has_finite_gradients():
    aa = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    R.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    assert torch.allclose(R.matrix_to_axis_angle(R.axis_angle_to_matrix(aa.detach())), aa.detach())


def test_rot6d_round_trip_and_projection_of_noisy_input():
    g = torch.Generator().manual_seed(2)
    m = R.axis_angle_to_matrix(_random_axis_angle(50, g))
    assert torch.allclose(R.rot6d_to_matrix(R.matrix_to_rot6d(m)), m, atol=1e-12)
    noisy = R.matrix_to_rot6d(m) + 0.01 * torch.randn(50, 6, generator=g, dtype=torch.float64)
    out = R.rot6d_to_matrix(noisy)
    assert torch.allclose(out @ out.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(out), atol=1e-12)


def test_skeleton_tables_are_consistent():
    assert len(SMPL_JOINT_NAMES) == len(SMPL_PARENTS) == len(SMPL_MIRROR) == 24
    assert all(p < i for i, p in enumerate(SMPL_PARENTS))
    assert len(BLAZEPOSE_NAMES) == len(BLAZEPOSE_MIRROR) == 33
    for i, j in enumerate(BLAZEPOSE_MIRROR):
        a, b = BLAZEPOSE_NAMES[i], BLAZEPOSE_NAMES[j]
        assert a.replace("left", "X").replace("right", "left").replace("X", "right") == b
    for i, j in enumerate(SMPL_MIRROR):
        a, b = SMPL_JOINT_NAMES[i], SMPL_JOINT_NAMES[j]
        assert a.replace("left", "X").replace("right", "left").replace("X", "right") == b


def test_skew_is_the_cross_product_and_shared_terms_match_separate_functions():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(5, 24, 3, generator=g, dtype=torch.float64)
    vectors[0, 0] = 0.0            # zero rotation
    vectors[0, 1] = 1e-5           # inside both Taylor branches
    others = torch.randn(5, 24, 3, generator=g, dtype=torch.float64)
    crossed = (R.skew(vectors) @ others[..., None])[..., 0]
    assert torch.allclose(crossed, torch.linalg.cross(vectors, others), atol=1e-12)
    matrix, left = R.matrix_and_left_jacobian(vectors)
    assert torch.allclose(matrix, R.axis_angle_to_matrix(vectors), atol=1e-12)
    assert torch.allclose(left, R.left_jacobian(vectors), atol=1e-12)
    # Rodrigues against the matrix exponential of the cross-product matrix.
    assert torch.allclose(matrix, torch.linalg.matrix_exp(R.skew(vectors)), atol=1e-9)


def test_rotations_first_used_in_inference_mode_still_differentiate_afterwards():
    # The pipeline skins bodies under inference mode; training in the same process needs
    # gradients through the same functions later (their cached constants must not be inference tensors).
    R._SKEW_GENERATORS.clear()
    with torch.inference_mode():
        R.axis_angle_to_matrix(torch.zeros(2, 3))
    axis_angle = torch.randn(2, 3, requires_grad=True)
    R.axis_angle_to_matrix(axis_angle).sum().backward()
    assert axis_angle.grad is not None and torch.isfinite(axis_angle.grad).all()


def test_nearest_rotation_keeps_rotations_and_turns_reflections_into_rotations():
    g = torch.Generator().manual_seed(1)
    rotation = R.axis_angle_to_matrix(torch.randn(4, 3, generator=g, dtype=torch.float64))
    assert torch.allclose(R.nearest_rotation(rotation), rotation, atol=1e-12)
    noisy = R.nearest_rotation(rotation + 0.05 * torch.randn(4, 3, 3, generator=g, dtype=torch.float64))
    assert torch.allclose(noisy.transpose(1, 2) @ noisy, torch.eye(3, dtype=torch.float64).expand(4, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(noisy), torch.ones(4, dtype=torch.float64))
    reflected = R.nearest_rotation(torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)))
    assert torch.isclose(torch.linalg.det(reflected), torch.tensor(1.0, dtype=torch.float64))
