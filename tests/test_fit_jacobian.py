"""The fit's analytic Jacobians (engines/body/sparse.py LandmarkPoser.linearize, engines/fit.py)
against automatic differentiation of the same functions."""

import math

import pytest
import torch

from engines.body import load_body_model
from engines.body.sparse import LandmarkPoser, left_jacobian, skew
from engines.fit import ANCHORED_WEIGHTS, BodyFitter, FitWeights, GaussianPosePrior
from engines.geometry import project_points as project
from engines.pose_prior import PosePrior
from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from meshstream_tools.random_files import smpl_arrays, write_npz

INTRINSICS = torch.tensor([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])


def _random_parameters(count, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    orient = torch.randn(count, 3, generator=g, dtype=dtype)
    pose = 0.6 * torch.randn(count, 23, 3, generator=g, dtype=dtype)
    orient[0] = 0.0            # rotations at and near zero take the series branches
    pose[0, :6] = 0.0
    pose[1, :6] = 1e-5
    betas = torch.randn(count, 10, generator=g, dtype=dtype)
    transl = torch.randn(count, 3, generator=g, dtype=dtype)
    return orient, pose, betas, transl


def _autograd_jacobian(poser, orient, pose, betas, transl):
    """d landmarks / d [orient, pose, transl], (B,33,3,75), by reverse-mode autograd."""
    theta = torch.cat([orient, pose.reshape(len(orient), -1), transl], 1)

    def landmarks(x):
        return poser(x[:, :3], x[:, 3:72].reshape(-1, 23, 3), betas, x[:, 72:])[0].sum(0)

    return torch.autograd.functional.jacobian(landmarks, theta, vectorize=True).permute(2, 0, 1, 3)


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    return write_npz(smpl_arrays(seed=0), tmp_path_factory.mktemp("smpl") / "smpl_neutral.npz")


def _observed(model, orient, pose, betas, transl, noise_px: float, g):
    """What the fit is given for these bodies: noisy keypoints (P,33,3) with random visibility,
    and exact hip-centred world landmarks (P,33,3)."""
    landmarks = model(orient, pose, betas, transl).landmarks
    count = landmarks.shape[0]
    keypoints = torch.cat([project(landmarks, INTRINSICS) + noise_px * torch.randn(count, 33, 2, generator=g),
                           torch.rand(count, 33, 1, generator=g)], -1)
    world = landmarks - 0.5 * (landmarks[:, 23] + landmarks[:, 24])[:, None]
    return keypoints, world


@pytest.mark.parametrize("which", ["open", "smpl-file-with-pose-correctives"])
def test_linearize_gives_the_landmarks_and_the_exact_jacobian(which, smpl_file):
    model = load_body_model("open" if which == "open" else smpl_file, dtype=torch.float64)
    assert (model.posedirs is not None) == (which != "open")
    poser = LandmarkPoser(model)
    orient, pose, betas, transl = _random_parameters(3, seed=1)
    landmarks, jacobian = poser.linearize(orient, pose, betas, transl)
    assert torch.allclose(landmarks, poser(orient, pose, betas, transl)[0], atol=1e-12)
    expected = _autograd_jacobian(poser, orient, pose, betas, transl)
    assert jacobian.shape == (3, 33, 3, 75)
    assert torch.allclose(jacobian, expected, atol=1e-9), (jacobian - expected).abs().max()
    assert torch.equal(poser.landmarks(orient, pose, betas, transl), landmarks)


def test_linearize_serves_a_changed_shape_fresh():
    poser = LandmarkPoser(load_body_model("open", dtype=torch.float64))
    orient, pose, betas, transl = _random_parameters(2, seed=2)
    first = poser.landmarks(orient, pose, betas, transl)
    other = poser.landmarks(orient, pose, betas + 0.5, transl)
    assert torch.allclose(other, poser(orient, pose, betas + 0.5, transl)[0], atol=1e-12)
    assert not torch.allclose(first, other)


def test_left_jacobian_differentiates_the_rotation_exactly():
    g = torch.Generator().manual_seed(3)
    axis_angles = torch.cat([torch.randn(5, 3, generator=g, dtype=torch.float64) * 1.5,
                             torch.zeros(1, 3, dtype=torch.float64), torch.full((1, 3), 1e-7, dtype=torch.float64)])
    for axis_angle in axis_angles:
        expected = torch.autograd.functional.jacobian(axis_angle_to_matrix, axis_angle)   # (3,3,c)
        derived = skew(left_jacobian(axis_angle).T) @ axis_angle_to_matrix(axis_angle)       # (c,3,3)
        assert torch.allclose(derived.permute(1, 2, 0), expected, atol=1e-9)


def test_analytic_and_automatic_fits_agree():
    """The fast path changes the arithmetic, not the fit: same steps, same answers (float32)."""
    model = load_body_model("open")
    poser = LandmarkPoser(model)
    g = torch.Generator().manual_seed(4)
    count = 2
    upright = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    orient = matrix_to_axis_angle(axis_angle_to_matrix(0.3 * torch.randn(count, 3, generator=g)) @ upright)
    pose = 0.4 * torch.randn(count, 23, 3, generator=g)
    pose[:, [3, 4], 0] = pose[:, [3, 4], 0].abs()
    pose[0, 17, 1] = 0.3                     # an elbow bent the wrong way: the hinge term is active
    betas = 0.5 * torch.randn(count, 10, generator=g)
    transl = torch.tensor([[-0.6, 0.2, 4.0], [0.6, 0.1, 3.5]])
    keypoints, world = _observed(model, orient, pose, betas, transl, 3.0, g)
    anchor = (orient + 0.1 * torch.randn(count, 3, generator=g), pose + 0.1 * torch.randn(count, 23, 3, generator=g))
    previous = (orient, pose, transl)
    prior = GaussianPosePrior(PosePrior.load())
    weights = FitWeights(anchor_depth=5000.0)  # every term in play
    analytic = BodyFitter(poser, weights, pose_prior=prior, iterations=4, cold_iterations=4)
    automatic = BodyFitter(lambda o, p, b, t: poser(o, p, b, t)[0], weights, pose_prior=prior, iterations=4,
                           cold_iterations=4)
    for kwargs in ({}, {"previous": previous}):
        fast = analytic.fit(keypoints, INTRINSICS, betas, world, anchor, **kwargs)
        slow = automatic.fit(keypoints, INTRINSICS, betas, world, anchor, **kwargs)
        assert torch.allclose(fast.body_pose, slow.body_pose, atol=5e-3)
        assert torch.allclose(fast.transl, slow.transl, atol=1e-3)
        assert torch.allclose(fast.energy, slow.energy, rtol=1e-4)
        assert torch.allclose(fast.reprojection_px, slow.reprojection_px, atol=1e-2)


@pytest.mark.parametrize("weights", [FitWeights(anchor_depth=5000.0), ANCHORED_WEIGHTS],
                         ids=["every-term", "pipeline-no-world-rows"])
def test_normal_equations_equal_those_of_the_dense_jacobian(weights):
    """The iterations' J^T J and J^T r, built term by term, against the dense reference; with
    every term, and with the pipeline's weights (no world rows at all)."""
    model = load_body_model("open")
    poser = LandmarkPoser(model)
    g = torch.Generator().manual_seed(5)
    count = 2
    orient = matrix_to_axis_angle(axis_angle_to_matrix(torch.tensor([[math.pi, 0.0, 0.0]])).expand(count, 3, 3))
    pose = 0.4 * torch.randn(count, 23, 3, generator=g)
    pose[0, 3, 0] = -0.2                     # a knee bent the wrong way: a hinge is active
    betas = 0.5 * torch.randn(count, 10, generator=g)
    transl = torch.tensor([[-0.5, 0.2, 4.0], [0.5, 0.1, 3.0]])
    keypoints, world = _observed(model, orient, pose, betas, transl, 5.0, g)
    anchor = (orient, pose + 0.1 * torch.randn(count, 23, 3, generator=g))
    previous = (orient, pose + 0.05, transl + 0.02)
    fitter = BodyFitter(poser, weights, pose_prior=GaussianPosePrior(PosePrior.load()), iterations=1, cold_iterations=0)
    seen = {}
    original = fitter._levenberg_marquardt

    def capture(theta, betas_, data, iterations, use_2d, active):
        seen.update(theta=theta, betas=betas_, data=data, use_2d=use_2d)
        return original(theta, betas_, data, iterations, use_2d, active)

    fitter._levenberg_marquardt = capture
    fitter.fit(keypoints, INTRINSICS, betas, world, anchor, previous)
    theta, data = seen["theta"] + 0.05 * torch.randn(seen["theta"].shape, generator=g), seen["data"]
    landmarks, landmark_jac = fitter._landmarks_and_jacobian(theta, seen["betas"])
    sqrt_w2d = fitter._robust_weights(landmarks, data)
    assert (theta[:, 3 + 3 * 3] < 0).any()  # the left knee bent backwards: its hinge term is active
    residuals, jacobian = fitter._residuals(theta, landmarks, landmark_jac, data, sqrt_w2d, True)
    jtj, grad = fitter._normal_equations(theta, landmarks, landmark_jac, data, sqrt_w2d, True)
    # reprojection 66, anchor depth 33, anchor and temporal 216 each, translation 3, prior 69,
    # hinges 4; world 99 only where the world term has a weight.
    assert residuals.shape[1] == 66 + 33 + 216 + 216 + 3 + 69 + 4 + (99 if weights.world > 0 else 0)
    expected_jtj = jacobian.transpose(1, 2) @ jacobian
    expected_grad = (jacobian.transpose(1, 2) @ residuals[..., None])[..., 0]
    scale = expected_jtj.abs().max()
    assert (jtj - expected_jtj).abs().max() < 1e-5 * scale
    assert (grad - expected_grad).abs().max() < 1e-5 * expected_grad.abs().max()


def test_every_residual_row_has_the_jacobian_automatic_differentiation_gives():
    """The dense reference itself (reprojection, world, anchor depth, anchor, temporal, prior,
    hinges) against autograd of the residuals through the body model."""
    model = load_body_model("open", dtype=torch.float64)
    poser = LandmarkPoser(model)
    poser32 = LandmarkPoser(load_body_model("open"))
    g = torch.Generator().manual_seed(6)
    count = 2
    orient = matrix_to_axis_angle(axis_angle_to_matrix(torch.tensor([[math.pi, 0.0, 0.0]], dtype=torch.float64))
                                  .expand(count, 3, 3))
    pose = 0.4 * torch.randn(count, 23, 3, generator=g, dtype=torch.float64)
    pose[0, 3, 0] = -0.2                     # a hinge is active
    betas = 0.5 * torch.randn(count, 10, generator=g, dtype=torch.float64)
    transl = torch.tensor([[-0.5, 0.2, 4.0], [0.5, 0.1, 3.0]], dtype=torch.float64)
    keypoints, world = _observed(model, orient, pose, betas, transl, 5.0, g)
    anchor = (orient, pose + 0.1 * torch.randn(count, 23, 3, generator=g, dtype=torch.float64))
    previous = (orient, pose + 0.05, transl + 0.02)
    weights = FitWeights(anchor_depth=5000.0)
    prior = GaussianPosePrior(PosePrior.load())
    fitter = BodyFitter(poser32, weights, pose_prior=prior, iterations=1, cold_iterations=0)
    seen = {}
    original = fitter._levenberg_marquardt

    def capture(theta, betas_, data, iterations, use_2d, active):
        seen.update(data=data, betas=betas_)
        return original(theta, betas_, data, iterations, use_2d, active)

    fitter._levenberg_marquardt = capture
    fitter.fit(keypoints.float(), INTRINSICS, betas.float(), world.float(), anchor, previous)
    fitter = BodyFitter(poser, weights, pose_prior=prior)  # the same terms, in float64
    data = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in seen["data"].items()}
    assert float(data["sqrt_wdepth"].min()) > 0 and float(data["anchor_rays"].norm(dim=-1).min()) > 0.99
    theta = torch.cat([orient, pose.reshape(count, -1), transl], 1)
    landmarks, landmark_jac = fitter._landmarks_and_jacobian(theta, betas)
    sqrt_w2d = fitter._robust_weights(landmarks, data)
    _, jacobian = fitter._residuals(theta, landmarks, landmark_jac, data, sqrt_w2d, True)

    def residuals(x):
        return fitter._residuals(x, poser(x[:, :3], x[:, 3:72].reshape(-1, 23, 3), betas, x[:, 72:])[0],
                                 None, data, sqrt_w2d, True)[0].sum(0)

    expected = torch.autograd.functional.jacobian(residuals, theta, vectorize=True).permute(1, 0, 2)
    assert jacobian.shape == expected.shape
    assert torch.allclose(jacobian, expected, atol=1e-7 * float(expected.abs().max())), (jacobian - expected).abs().max()
