"""The open body model (the committed asset): conventions, kinematics, shape space, landmarks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from engines.body import load_body_model
from engines.body.open_model import ASSET
from engines.rotations import axis_angle_to_matrix
from engines.skeleton import BLAZEPOSE_NAMES, COCO17_FROM_BLAZEPOSE, SMPL_JOINT_NAMES, SMPL_PARENTS
from tests.conftest import ROOT

JOINT = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", dtype=torch.float64)


def zero_pose(batch=1):
    return torch.zeros(batch, 3, dtype=torch.float64), torch.zeros(batch, 23, 3, dtype=torch.float64)


def random_pose(batch: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, generator=generator, dtype=torch.float64),
            0.7 * torch.randn(batch, 23, 3, generator=generator, dtype=torch.float64),
            torch.randn(batch, 10, generator=generator, dtype=torch.float64),
            torch.randn(batch, 3, generator=generator, dtype=torch.float64))


def test_asset_is_small_and_describes_anny_topology(model):
    assert ASSET.stat().st_size < 8 * 1024 * 1024
    assert (ASSET.parent / "NOTICE").read_text().count("Apache") >= 1
    assert model.model_id == "meshstream-open-1"
    assert model.num_vertices == 13718 and model.faces.shape == (27420, 3)
    assert np.unique(model.faces).size == model.num_vertices  # every vertex is used
    assert model.parents.tolist() == [-1] + list(SMPL_PARENTS[1:])
    weights = model.lbs_weights.numpy()
    assert weights.min() >= 0 and np.allclose(weights.sum(1), 1.0, atol=1e-5)


def test_rest_pose_is_a_t_pose_in_smpl_frame(model):
    joints = model.rest_joints(torch.zeros(1, 10, dtype=torch.float64))[0].numpy()
    out = model(*zero_pose())
    torch.testing.assert_close(torch.as_tensor(joints)[None], out.joints)
    assert np.allclose(joints[JOINT["pelvis"]], 0.0, atol=1e-4)  # the pelvis is the origin
    for side, sign in (("left", 1.0), ("right", -1.0)):
        arm = joints[[JOINT[f"{side}_{n}"] for n in ("shoulder", "elbow", "wrist", "hand")]]
        assert np.all(np.diff(sign * arm[:, 0]) > 0.05), "arms point outwards along x"
        assert np.ptp(arm[:, 1]) < 0.01 and np.ptp(arm[:, 2]) < 0.01, "arms horizontal and straight"
        leg = joints[[JOINT[f"{side}_{n}"] for n in ("hip", "knee", "ankle")]]
        assert np.all(np.diff(leg[:, 1]) < -0.3), "legs point down along -y"
        assert np.ptp(leg[:, 0]) < 0.01 and np.ptp(leg[:, 2]) < 0.01, "legs straight down"
        assert sign * joints[JOINT[f"{side}_hip"], 0] > 0.03
    assert joints[JOINT["head"], 1] > joints[JOINT["neck"], 1] > joints[JOINT["spine3"], 1] > 0.2
    nose = out.landmarks[0, BLAZEPOSE_NAMES.index("nose")].numpy()
    assert nose[2] > joints[JOINT["head"], 2] + 0.05, "the body faces +z"
    height = out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min()
    assert 1.55 < height < 1.85, "betas = 0 is an average adult"


def test_first_shape_direction_makes_the_body_taller_and_betas_have_unit_scale(model):
    betas = torch.zeros(3, 10, dtype=torch.float64)
    betas[1, 0], betas[2, 0] = 1.0, -1.0
    vertices = model(*zero_pose(3), betas).vertices
    heights = vertices[:, :, 1].max(1).values - vertices[:, :, 1].min(1).values
    assert heights[1] > heights[0] > heights[2]
    assert 0.03 < (heights[1] - heights[0]).item() < 0.2  # one standard deviation of adult stature


def test_bone_lengths_are_preserved_under_random_poses(model):
    global_orient, body_pose, betas, transl = random_pose(16, seed=0)
    posed = model(global_orient, body_pose, betas, transl).joints
    rest = model.rest_joints(betas)
    parents = list(SMPL_PARENTS[1:])
    children = list(range(1, 24))
    lengths_posed = (posed[:, children] - posed[:, parents]).norm(dim=-1)
    lengths_rest = (rest[:, children] - rest[:, parents]).norm(dim=-1)
    torch.testing.assert_close(lengths_posed, lengths_rest, atol=1e-9, rtol=0)


def test_rotating_one_joint_moves_exactly_its_descendants_about_it(model):
    descendants = {JOINT["left_elbow"]}
    for joint, parent in enumerate(SMPL_PARENTS):
        if parent in descendants:
            descendants.add(joint)
    rest = model(*zero_pose()).joints[0]
    global_orient, body_pose = zero_pose()
    axis_angle = torch.tensor([0.3, -1.1, 0.4], dtype=torch.float64)
    body_pose[0, JOINT["left_elbow"] - 1] = axis_angle
    posed = model(global_orient, body_pose).joints[0]
    rotation = axis_angle_to_matrix(axis_angle)
    elbow = rest[JOINT["left_elbow"]]
    for joint in range(24):
        if joint in descendants:
            expected = elbow + rotation @ (rest[joint] - elbow)
        else:
            expected = rest[joint]
        torch.testing.assert_close(posed[joint], expected, atol=1e-9, rtol=0)
    assert descendants == {JOINT["left_elbow"], JOINT["left_wrist"], JOINT["left_hand"]}


def test_global_orient_and_transl_move_the_whole_body_rigidly(model):
    global_orient, body_pose, betas, transl = random_pose(2, seed=1)
    local = model(torch.zeros_like(global_orient), body_pose, betas)
    world = model(global_orient, body_pose, betas, transl)
    rotation = axis_angle_to_matrix(global_orient)
    pelvis = model.rest_joints(betas)[:, :1]  # global_orient turns the body about its pelvis (SMPL)
    expected = (local.vertices - pelvis) @ rotation.transpose(1, 2) + pelvis + transl[:, None]
    torch.testing.assert_close(world.vertices, expected, atol=1e-9, rtol=0)


def test_twisting_shoulder_hip_and_elbow_keeps_the_limbs_round(model):
    """No candy-wrapper: a limb's cross-section keeps at least 70% of its radius under twists."""
    weights = model.lbs_weights
    for joint, child, axis, angle in (("left_shoulder", "left_elbow", (1, 0, 0), 1.2),
                                      ("right_hip", "right_knee", (0, 1, 0), -0.8),
                                      ("left_elbow", "left_wrist", (1, 0, 0), 1.2)):
        j, c = JOINT[joint], JOINT[child]
        global_orient, body_pose = zero_pose()
        body_pose[0, j - 1] = torch.tensor(axis, dtype=torch.float64) * angle
        rest, posed = model(*zero_pose()), model(global_orient, body_pose)
        limb = weights[:, j] + weights[:, c] > 0.5

        def radius(out):
            start, end = out.joints[0, j], out.joints[0, c]
            direction = (end - start) / (end - start).norm()
            relative = out.vertices[0, limb] - start
            along = relative @ direction
            return (relative - along[:, None] * direction).norm(dim=-1), along / (end - start).norm()

        rest_radius, along = radius(rest)
        posed_radius, _ = radius(posed)
        band = (along > 0) & (along < 1) & (rest_radius > 0.02)
        assert band.sum() > 100
        assert (posed_radius[band] / rest_radius[band]).min() > 0.7, joint


def test_landmarks_lie_where_their_names_say(model):
    out = model(*zero_pose())
    landmarks, joints = out.landmarks[0].numpy(), out.joints[0].numpy()
    named = dict(zip(BLAZEPOSE_NAMES, landmarks))
    for name, point in named.items():
        if name.startswith("left"):
            assert point[0] > 0.005, name
            assert np.allclose(named[name.replace("left", "right")] * [-1, 1, 1], point, atol=0.01), name
    for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        distance = np.linalg.norm(named[f"left_{part}"] - joints[JOINT[f"left_{part}"]])
        assert distance < 0.06, (part, distance)
    face = [named[n] for n in ("nose", "left_eye", "left_ear", "mouth_left", "left_eye_inner", "left_eye_outer")]
    assert all(np.linalg.norm(p - joints[JOINT["head"]]) < 0.15 for p in face)
    assert named["nose"][1] > named["mouth_left"][1] and named["left_eye"][1] > named["nose"][1]
    assert named["left_heel"][2] < named["left_ankle"][2] < named["left_foot_index"][2]
    assert named["left_wrist"][0] < named["left_index"][0] and named["left_wrist"][0] < named["left_pinky"][0]
    torch.testing.assert_close(out.landmarks_coco, out.landmarks[:, list(COCO17_FROM_BLAZEPOSE)], atol=1e-6, rtol=0)


def test_default_model_loads_without_anny_or_smplx():
    code = ("import sys, torch; from engines.body import load_body_model; m = load_body_model(); "
            "o = m(torch.zeros(1, 3), torch.zeros(1, 23, 3)); "
            "bad = [n for n in ('anny', 'smplx', 'chumpy') if n in sys.modules]; assert not bad, bad; print(m.model_id)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "meshstream-open-1" in done.stdout


def test_open_model_in_float16_stays_within_5_mm_of_float64(model):
    half = load_body_model("open", dtype=torch.float16)
    global_orient, body_pose, betas, transl = random_pose(4, seed=2)
    exact = model(global_orient, body_pose, betas, transl)
    approx = half(global_orient.half(), body_pose.half(), betas.half(), transl.half())
    for name in ("vertices", "joints", "landmarks"):
        error = (getattr(approx, name).double() - getattr(exact, name)).abs().max().item()
        assert error < 5e-3, (name, error)


def test_open_model_exports_with_a_dynamic_batch():
    model = load_body_model("open")
    batch = torch.export.Dim("batch", min=1, max=512)
    example = tuple(t.float() for t in random_pose(2, seed=3))
    exported = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example)).module()
    for size in (1, 5):
        args = tuple(t.float() for t in random_pose(size, seed=size))
        eager, graph = model(*args), exported(*args)
        torch.testing.assert_close(graph.vertices, eager.vertices, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(graph.landmarks, eager.landmarks, atol=1e-5, rtol=1e-5)
