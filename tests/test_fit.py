"""The SMPLify-style fit (engines/fit.py) and the per-frame reconstruction (stream/stages/lift.py)."""

import math

import numpy as np
import pytest
import torch

from engines.body import load_body_model
from engines.body.sparse import LandmarkPoser
from engines.fit import BodyFitter, GaussianPosePrior, solve_translation
from engines.geometry import project_points
from engines.pose_prior import PosePrior
from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle

INTRINSICS = torch.tensor([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])


@pytest.fixture(scope="module")
def model():
    return load_body_model("open")


@pytest.fixture(scope="module")
def poser(model):
    return LandmarkPoser(model)


def _people(model, count, seed, pose_scale=0.3):
    """Bodies standing about 4 m in front of the camera, upright, in random poses."""
    g = torch.Generator().manual_seed(seed)
    upright = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    turn = axis_angle_to_matrix(torch.randn(count, 3, generator=g) * torch.tensor([0.1, 0.8, 0.1]))
    orient = matrix_to_axis_angle(turn @ upright)
    pose = pose_scale * torch.randn(count, 23, 3, generator=g)
    pose[:, [3, 4], 0] = pose[:, [3, 4], 0].abs()  # knees bend forwards
    betas = 0.7 * torch.randn(count, 10, generator=g)
    transl = torch.stack([torch.linspace(-1, 1, count), torch.full((count,), 0.2), torch.full((count,), 4.0)], 1)
    return orient, pose, betas, transl


def test_landmark_poser_equals_the_full_model(model, poser):
    orient, pose, betas, transl = _people(model, 3, seed=0)
    landmarks, joints = poser(orient, pose, betas, transl)
    out = model(orient, pose, betas, transl)
    assert torch.allclose(landmarks, out.landmarks, atol=1e-5)
    assert torch.allclose(joints, out.joints, atol=1e-5)
    assert poser.num_vertices_posed < model.num_vertices / 4


def test_translation_is_solved_exactly_from_exact_projections(model):
    orient, pose, betas, transl = _people(model, 2, seed=1)
    out = model(orient, pose, betas, transl)
    uv = project_points(out.landmarks, INTRINSICS)
    centred = out.landmarks - transl[:, None]
    recovered = solve_translation(centred, uv, torch.ones(2, 33), INTRINSICS)
    assert torch.allclose(recovered, transl, atol=1e-3)


def test_fit_recovers_pose_from_exact_keypoints_and_world_landmarks(model, poser):
    orient, pose, betas, transl = _people(model, 3, seed=2)
    out = model(orient, pose, betas, transl)
    keypoints = torch.cat([project_points(out.landmarks, INTRINSICS), torch.ones(3, 33, 1)], -1)
    mid_hip = 0.5 * (out.landmarks[:, 23] + out.landmarks[:, 24])
    world = out.landmarks - mid_hip[:, None]
    fitter = BodyFitter(poser, pose_prior=GaussianPosePrior(PosePrior.load()),
                        iterations=10)
    result = fitter.fit(keypoints, INTRINSICS, betas, world_landmarks=world)
    fitted = model(result.global_orient, result.body_pose, betas, result.transl)
    # Landmarks (what the fit sees) land on the keypoints; joints (what it does not see) are close.
    assert result.reprojection_px.max() < 2.0, result.reprojection_px
    joint_error = ((fitted.joints - fitted.joints[:, :1]) - (out.joints - out.joints[:, :1])).norm(dim=-1).mean()
    assert joint_error < 0.05, f"mean joint error {joint_error * 1000:.0f} mm"
    assert (result.transl - transl).norm(dim=-1).max() < 0.15


def test_fit_lowers_reprojection_error_and_never_returns_nan(model, poser):
    orient, pose, betas, transl = _people(model, 2, seed=3, pose_scale=0.5)
    out = model(orient, pose, betas, transl)
    g = torch.Generator().manual_seed(4)
    keypoints = torch.cat([project_points(out.landmarks, INTRINSICS) + 4 * torch.randn(2, 33, 2, generator=g),
                           torch.rand(2, 33, 1, generator=g)], -1)
    keypoints[1, :10] = float("nan")  # garbage in: the fit must still give finite numbers
    fitter = BodyFitter(poser, iterations=0)
    start = fitter.fit(keypoints, INTRINSICS, betas)
    fitter.iterations = 8
    result = fitter.fit(keypoints, INTRINSICS, betas)
    assert torch.isfinite(result.global_orient).all() and torch.isfinite(result.body_pose).all()
    assert torch.isfinite(result.transl).all()
    assert (result.reprojection_px < start.reprojection_px).all(), (start.reprojection_px, result.reprojection_px)


def test_warm_start_keeps_a_still_person_still(model, poser):
    orient, pose, betas, transl = _people(model, 1, seed=5)
    out = model(orient, pose, betas, transl)
    keypoints = torch.cat([project_points(out.landmarks, INTRINSICS), torch.ones(1, 33, 1)], -1)
    fitter = BodyFitter(poser, iterations=8)
    first = fitter.fit(keypoints, INTRINSICS, betas)
    second = fitter.fit(keypoints, INTRINSICS, betas, previous=(first.global_orient, first.body_pose, first.transl))
    assert second.reprojection_px.item() <= first.reprojection_px.item() + 0.05
    assert (second.transl - first.transl).norm() < 0.05


def test_reconstructor_gives_no_body_when_keypoints_are_invisible(model):
    from stream.stages.lift import BodyReconstructor

    orient, pose, betas, transl = _people(model, 2, seed=6)
    out = model(orient, pose, betas, transl)
    uv = project_points(out.landmarks, INTRINSICS).numpy()
    keypoints = np.concatenate([uv, np.ones((2, 33, 1), np.float32)], -1)
    keypoints[1, :, 2] = 0.05  # the second person is not really seen
    boxes = np.concatenate([uv.min(1), uv.max(1)], -1)
    rec = BodyReconstructor(model, fit_iterations=4)
    bodies = rec(0.0, [0, 1], boxes, keypoints, INTRINSICS.numpy())
    assert bodies[0] is not None and bodies[1] is None
    assert np.isfinite(bodies[0].body_pose).all()
    assert rec(0.1, [], np.zeros((0, 4)), np.zeros((0, 33, 3)), INTRINSICS.numpy()) == []


def test_reconstructor_keeps_each_tracks_state_whatever_order_people_come_in(model):
    """Warm starts and shapes are kept per track id: people given in a different order each
    frame get the same bodies as when they always come in one order."""
    from stream.stages.lift import BodyReconstructor

    orient, pose, betas, transl = _people(model, 2, seed=7)
    steady, shuffled = BodyReconstructor(model, fit_iterations=3), BodyReconstructor(model, fit_iterations=3)
    for frame in range(4):
        out = model(orient, pose, betas, transl + torch.tensor([0.02 * frame, 0.0, 0.0]))
        uv = project_points(out.landmarks, INTRINSICS).numpy()
        keypoints = np.concatenate([uv, np.ones((2, 33, 1), np.float32)], -1)
        boxes = np.concatenate([uv.min(1), uv.max(1)], -1)
        order = [1, 0] if frame % 2 else [0, 1]
        expected = steady(frame / 30.0, [0, 1], boxes, keypoints, INTRINSICS.numpy())
        got = shuffled(frame / 30.0, order, boxes[order], keypoints[order], INTRINSICS.numpy())
        for track, body in zip(order, got):
            assert body is not None and np.isfinite(body.transl).all()
            np.testing.assert_allclose(body.transl, expected[track].transl, atol=1e-4)
            np.testing.assert_array_equal(body.betas, expected[track].betas)


def test_fit_tolerance_stops_early_at_nearly_the_same_answer(model, poser):
    """A warm-started fit with a tolerance stops once a step gains little, and lands where
    running every iteration lands (the pipeline's default: tolerance 0.003 of the energy)."""
    orient, pose, betas, transl = _people(model, 2, seed=6)
    out = model(orient, pose, betas, transl)
    g = torch.Generator().manual_seed(7)
    keypoints = torch.cat([project_points(out.landmarks, INTRINSICS) + torch.randn(2, 33, 2, generator=g),
                           torch.ones(2, 33, 1)], -1)
    nudged = (orient, pose + 0.05 * torch.randn(2, 23, 3, generator=g), transl + 0.02)
    every = BodyFitter(poser, iterations=12)
    early = BodyFitter(poser, iterations=12, tolerance=0.003)
    full = every.fit(keypoints, INTRINSICS, betas, previous=nudged)
    assert full.iterations == 12
    quick = early.fit(keypoints, INTRINSICS, betas, previous=nudged)
    assert 1 <= quick.iterations < 12
    assert (quick.reprojection_px - full.reprojection_px).abs().max() < 0.2, (quick.reprojection_px, full.reprojection_px)
    assert (quick.energy <= 1.02 * full.energy + 1e-6).all(), (quick.energy, full.energy)


def test_fit_leaves_a_wrong_warm_start_for_the_lifters_answer(model, poser, monkeypatch):
    """A previous frame that went wrong (the body turned half a turn) must not hold the fit there
    when the lifter's answer explains the keypoints better: the fit restarts from the anchor."""
    from engines.fit import ANCHORED_WEIGHTS

    orient, pose, betas, transl = _people(model, 1, seed=8)
    out = model(orient, pose, betas, transl)
    keypoints = torch.cat([project_points(out.landmarks, INTRINSICS), torch.ones(1, 33, 1)], -1)
    half_turn = axis_angle_to_matrix(torch.tensor([[0.0, math.pi, 0.0]]))
    turned = matrix_to_axis_angle(axis_angle_to_matrix(orient) @ half_turn)
    previous = (turned, pose.clone(), transl.clone())
    anchor = (orient + 0.05, pose + 0.05)

    def orientation_error_deg(result):
        relative = axis_angle_to_matrix(result.global_orient).transpose(1, 2) @ axis_angle_to_matrix(orient)
        return math.degrees(matrix_to_axis_angle(relative).norm())

    fitter = BodyFitter(poser, ANCHORED_WEIGHTS, iterations=6)
    result = fitter.fit(keypoints, INTRINSICS, betas, anchor=anchor, previous=previous)
    assert orientation_error_deg(result) < 15
    assert result.reprojection_px.item() < 3.0
    # Without the restart the same fit stays turned away.
    monkeypatch.setattr(BodyFitter, "_restart_from_anchor", lambda self, theta, *args: theta)
    stuck = fitter.fit(keypoints, INTRINSICS, betas, anchor=anchor, previous=previous)
    assert orientation_error_deg(stuck) > 60


def test_a_larger_fit_anchor_keeps_the_body_nearer_the_lifters_pose(model):
    """`--fit-anchor` reaches the fit: with a lifter that answers wrongly (untrained), the body
    follows the keypoints at the default anchor and stays near the lifter's pose at a large one."""
    from engines.lift import Lifter, LiftNetwork
    from stream.stages.lift import BodyReconstructor

    torch.manual_seed(0)
    lifter = Lifter(LiftNetwork(width=64, blocks=1, shape_width=32))
    orient, pose, betas, transl = _people(model, 1, seed=9)
    uv = project_points(model(orient, pose, betas, transl).landmarks, INTRINSICS).numpy()
    keypoints = np.concatenate([uv, np.ones((1, 33, 1), np.float32)], -1)
    boxes = np.concatenate([uv.min(1), uv.max(1)], -1)
    lifted = lifter(keypoints, boxes, INTRINSICS.numpy())

    def distance_to_lifter(**options):
        rec = BodyReconstructor(model, lifter=lifter, **options)
        body = rec(0.0, [0], boxes, keypoints, INTRINSICS.numpy())[0]
        return float(np.abs(body.body_pose - lifted.body_pose[0].numpy()).mean())

    assert BodyReconstructor(model, lifter=lifter, fit_anchor=1e5).fitter.weights.world == 0.0
    assert distance_to_lifter(fit_anchor=1e5) < 0.5 * distance_to_lifter()


def test_depth_anchor_keeps_the_lifters_depths_where_the_keypoints_say_nothing(model, poser):
    """Noisy keypoints of a body whose pose the lifter got right: with a light rotation anchor
    the fit chases the 2D noise with changes along the viewing rays, which the keypoints cannot
    see; holding the anchor's depths keeps the 3D while fitting the 2D as well."""
    from engines.fit import FitWeights

    orient, pose, betas, transl = _people(model, 4, seed=11, pose_scale=0.4)
    out = model(orient, pose, betas, transl)
    g = torch.Generator().manual_seed(12)
    keypoints = torch.cat([project_points(out.landmarks, INTRINSICS) + 6 * torch.randn(4, 33, 2, generator=g),
                           torch.ones(4, 33, 1)], -1)

    def fit(anchor_depth: float):
        weights = FitWeights(anchor=5.0, anchor_depth=anchor_depth, world=0.0)
        fitter = BodyFitter(poser, weights, pose_prior=GaussianPosePrior(PosePrior.load()), iterations=10)
        result = fitter.fit(keypoints, INTRINSICS, betas, anchor=(orient, pose))
        fitted = model(result.global_orient, result.body_pose, betas, result.transl)
        error = ((fitted.joints - fitted.joints[:, :1]) - (out.joints - out.joints[:, :1])).norm(dim=-1).mean()
        return float(error), float(result.reprojection_px.mean())

    (free_error, free_px), (held_error, held_px) = fit(0.0), fit(1.0e4)
    # Measured: joint error 78 -> 40 mm, 2D 3.52 -> 3.58 px.
    assert held_error < 0.6 * free_error, (held_error, free_error)
    assert held_px < free_px + 1.0, (held_px, free_px)
