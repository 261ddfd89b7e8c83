"""The Gaussian-mixture pose prior: EM on known data, and the shipped asset on real mocap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.pose_prior import ASSET, PosePrior
from engines.skeleton import SMPL_JOINT_NAMES
from meshstream_tools import mocap
from meshstream_tools.fit_pose_prior import fit_gaussian_mixture
from tests.conftest import MOCAP


def test_em_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    first = rng.multivariate_normal([0, 0, 0], np.diag([1.0, 0.5, 0.2]), 3000)
    second = rng.multivariate_normal([6, -4, 2], [[0.5, 0.3, 0], [0.3, 0.5, 0], [0, 0, 0.1]], 1000)
    mixture = fit_gaussian_mixture(np.concatenate([first, second]), components=2, regularisation=1e-6, seed=1)
    order = np.argsort(mixture["weights"])[::-1]
    np.testing.assert_allclose(mixture["weights"][order], [0.75, 0.25], atol=0.02)
    np.testing.assert_allclose(mixture["means"][order[0]], [0, 0, 0], atol=0.1)
    np.testing.assert_allclose(mixture["means"][order[1]], [6, -4, 2], atol=0.1)
    np.testing.assert_allclose(mixture["covariances"][order[1]][0, 1], 0.3, atol=0.06)


def test_held_out_mocap_poses_score_better_than_random_ones():
    prior = PosePrior.load(ASSET)
    held_out = []
    for trial in ("07_09", "05_13", "06_05"):  # meshstream_tools.mocap.HELD_OUT_CLIPS: never fitted
        assert trial in mocap.HELD_OUT_CLIPS
        motion, _ = mocap.load_clip(trial, fps=10.0, root=MOCAP)
        held_out.append(torch.from_numpy(motion.body_pose))
    poses = torch.cat(held_out)
    rng = np.random.default_rng(0)
    random = torch.from_numpy(rng.uniform(-0.6, 0.6, (500, 23, 3)).astype(np.float32))
    with torch.no_grad():
        typical, unlikely = prior(poses), prior(random)
    assert torch.quantile(typical, 0.95) < torch.quantile(unlikely, 0.01)
    assert typical.median() < unlikely.median() - 100.0


def test_prior_prefers_joints_bending_their_natural_way():
    prior = PosePrior.load(ASSET)
    knee = SMPL_JOINT_NAMES.index("left_knee") - 1
    elbow = SMPL_JOINT_NAMES.index("left_elbow") - 1
    poses = torch.zeros(4, 23, 3)
    poses[0, knee, 0] = 1.0  # +x at the knee: the shin goes back (flexion)
    poses[1, knee, 0] = -1.0  # hyperextension
    poses[2, elbow, 1] = -1.0  # -y at the left elbow: the forearm comes forward
    poses[3, elbow, 1] = 1.0
    penalty = prior(poses)
    assert penalty[0] < penalty[1] and penalty[2] < penalty[3]


def test_prior_is_differentiable_and_checks_its_input():
    prior = PosePrior.load(ASSET)
    pose = torch.zeros(2, 23, 3, requires_grad=True)
    prior(pose).sum().backward()
    assert torch.isfinite(pose.grad).all()
    with pytest.raises(ValueError, match="23 x 3"):
        prior(torch.zeros(2, 24, 3))
    assert ASSET.stat().st_size < 1_000_000
