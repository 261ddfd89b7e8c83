"""BVH reading, forward kinematics and retargeting of the CMU clips onto SMPL's 24 joints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines.skeleton import SMPL_JOINT_NAMES, SMPL_MIRROR, SMPL_PARENTS
from meshstream_tools import mocap
from tests.conftest import MOCAP

# Real clips of different kinds: a walk, a cartwheel-like dance, low fast dribbling (bent over).
CLIPS = ("02_01", "05_06", "06_13")

TINY_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Arm
  {
    OFFSET 1 0 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    End Site
    {
      OFFSET 2 0 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.5
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 90
"""


def _clip(trial: str, max_frames: int = 1500) -> mocap.BvhClip:
    """A CMU clip, cut to its first max_frames frames (frame 0, the T-pose, kept) to stay fast."""
    info = next(c for c in mocap.list_clips("all", MOCAP) if c.trial == trial)
    clip = mocap.read_bvh(info.path)
    return mocap.BvhClip(clip.skeleton, clip.motion[:max_frames], clip.frame_time_s, clip.name)


def _bone_angles_deg(joints_a: torch.Tensor, joints_b: torch.Tensor, children: list[int]) -> torch.Tensor:
    parents = [SMPL_PARENTS[c] for c in children]
    dir_a = torch.nn.functional.normalize(joints_a[:, children] - joints_a[:, parents], dim=-1)
    dir_b = torch.nn.functional.normalize(joints_b[:, children] - joints_b[:, parents], dim=-1)
    return torch.rad2deg(torch.acos((dir_a * dir_b).sum(-1).clamp(-1.0, 1.0)))


def test_bvh_channels_compose_in_declared_order():
    clip = mocap.parse_bvh(TINY_BVH, "tiny")
    assert clip.skeleton.names == ["Hips", "Arm"]
    assert clip.fps == pytest.approx(2.0)
    assert clip.skeleton.channels[1] == ("Xrotation", "Yrotation", "Zrotation")
    np.testing.assert_allclose(clip.skeleton.end_sites[1], [2, 0, 0])
    rot, pos = mocap.bvh_forward_kinematics(clip)
    # Frame 1: the root at (1, 2, 3) turned 90 deg about z, so the arm's offset +x points to +y.
    np.testing.assert_allclose(pos[1, 1].numpy(), [1, 3, 3], atol=1e-9)
    # The arm's own 90 deg about z, composed after the root's: +x ends up along -x.
    np.testing.assert_allclose((rot[1, 1] @ torch.tensor([1.0, 0, 0], dtype=torch.float64)).numpy(), [-1, 0, 0], atol=1e-9)


def test_malformed_bvh_says_what_is_wrong():
    with pytest.raises(ValueError, match="MOTION holds"):
        mocap.parse_bvh(TINY_BVH.replace("0 0 0 0 0 0 0 0 0\n", "0 0 0\n"))
    with pytest.raises(ValueError, match="no MOTION"):
        mocap.parse_bvh("HIERARCHY\nROOT Hips\n{\n}\n")


def test_cmu_tpose_frame_is_in_smpl_axes():
    clip = _clip("02_01")
    assert clip.num_frames == 344 and clip.fps == pytest.approx(120.0, rel=1e-4)
    rest = mocap.mocap_rest_joints(clip)
    names = SMPL_JOINT_NAMES
    assert rest[names.index("left_hip"), 0] > 0.05 > -0.05 > rest[names.index("right_hip"), 0]  # left at +x
    assert rest[names.index("head"), 1] > 0.3 and rest[names.index("left_ankle"), 1] < -0.8  # y up
    foot = rest[names.index("left_foot")] - rest[names.index("left_ankle")]
    assert foot[2] > 0.08  # toes forward, +z
    # Arms out sideways (a T-pose), within 15 degrees of horizontal.
    arm = rest[names.index("left_wrist")] - rest[names.index("left_shoulder")]
    assert arm[0] > 0 and abs(math.degrees(math.atan2(arm[1], arm[0]))) < 15
    assert 1.2 < mocap.skeleton_height(rest) < 1.7  # head joint above the foot joints, metres


def test_zero_pose_forward_kinematics_gives_the_rest_skeleton():
    rest = mocap.mocap_rest_joints(_clip("02_01")).astype(np.float64)
    joints = mocap.skeleton_forward_kinematics(rest, np.zeros((2, 3)), np.zeros((2, 23, 3)), np.zeros((2, 3)))
    np.testing.assert_allclose(joints.numpy(), np.broadcast_to(rest, (2, 24, 3)), atol=1e-12)
    moved = mocap.skeleton_forward_kinematics(rest, np.zeros((1, 3)), np.zeros((1, 23, 3)), np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(moved[0].numpy(), rest + [1.0, 2.0, 3.0], atol=1e-12)


def test_tpose_retargets_to_the_zero_pose_on_its_own_skeleton():
    clip = _clip("05_06")
    tpose_twice = mocap.BvhClip(clip.skeleton, clip.motion[[0, 0]], clip.frame_time_s)
    motion = mocap.retarget(tpose_twice, mocap.mocap_rest_joints(clip))
    assert motion.num_frames == 1
    assert np.abs(motion.body_pose).max() < 1e-5 and np.abs(motion.global_orient).max() < 1e-5


@pytest.mark.parametrize("trial", CLIPS)
def test_retargeting_reproduces_mocap_joint_positions(trial):
    """On the mocap's own skeleton: legs exact, upper body within a few mm, every bone of a
    one-child joint pointing exactly as the mocap's."""
    clip = _clip(trial)
    rest = mocap.mocap_rest_joints(clip)
    motion = mocap.retarget(clip, rest)
    assert motion.num_frames == clip.num_frames - 1
    assert motion.scale == pytest.approx(mocap.CMU_UNIT_M, rel=1e-5)
    joints = mocap.skeleton_forward_kinematics(rest.astype(np.float64), motion.global_orient, motion.body_pose, motion.transl)
    _, positions = mocap.bvh_forward_kinematics(clip)
    target = mocap.mapped_points(clip.skeleton, positions)[1:] * motion.scale
    error_mm = (joints - target).norm(dim=-1) * 1000.0
    legs = [SMPL_JOINT_NAMES.index(n) for n in ("left_hip", "left_knee", "left_ankle", "left_foot", "right_knee", "right_foot")]
    assert error_mm[:, 0].max() < 0.05  # root trajectory
    assert error_mm[:, legs].max() < 0.5
    assert error_mm.mean() < 8.0 and error_mm.max() < 35.0
    one_child = [c for c in range(1, 24) if sum(p == SMPL_PARENTS[c] for p in SMPL_PARENTS) == 1]
    assert _bone_angles_deg(joints, target, one_child).max() < 0.05


def test_retargeting_onto_other_proportions_keeps_directions_and_scales_the_root():
    clip = _clip("02_01")
    rest = mocap.mocap_rest_joints(clip).astype(np.float64)
    # A different body: longer legs, shorter arms, everything 10% larger, pelvis off the origin.
    other = rest.copy()
    for joint in range(1, 24):
        parent = SMPL_PARENTS[joint]
        stretch = 1.3 if "knee" in SMPL_JOINT_NAMES[joint] or "ankle" in SMPL_JOINT_NAMES[joint] else 1.0
        stretch = 0.8 if "elbow" in SMPL_JOINT_NAMES[joint] or "wrist" in SMPL_JOINT_NAMES[joint] else stretch
        other[joint] = other[parent] + stretch * (rest[joint] - rest[parent])
    other = 1.1 * other + [0.0, 0.3, 0.1]
    motion = mocap.retarget(clip, other)
    ratio = mocap.skeleton_height(other) / mocap.skeleton_height(rest)
    assert motion.scale == pytest.approx(mocap.CMU_UNIT_M * ratio, rel=1e-5)
    joints = mocap.skeleton_forward_kinematics(other, motion.global_orient, motion.body_pose, motion.transl)
    _, positions = mocap.bvh_forward_kinematics(clip)
    target = mocap.mapped_points(clip.skeleton, positions)[1:]
    np.testing.assert_allclose(joints[:, 0].numpy(), (target[:, 0] * motion.scale).numpy(), atol=1e-5)
    one_child = [c for c in range(1, 24) if sum(p == SMPL_PARENTS[c] for p in SMPL_PARENTS) == 1]
    assert _bone_angles_deg(joints, target, one_child).max() < 0.05
    # The hips of a three-child pelvis and the collars keep close to the mocap's directions.
    hips_and_collars = [SMPL_JOINT_NAMES.index(n) for n in ("left_hip", "right_hip", "left_collar", "right_collar")]
    assert _bone_angles_deg(joints, target, hips_and_collars).mean() < 3.0


def test_mirroring_twice_is_the_identity():
    motion, rest = mocap.load_clip("05_06", fps=30.0, root=MOCAP)
    twice = mocap.mirror_motion(mocap.mirror_motion(motion, rest), rest)
    np.testing.assert_allclose(twice.body_pose, motion.body_pose, atol=1e-7)
    np.testing.assert_allclose(twice.global_orient, motion.global_orient, atol=1e-7)
    np.testing.assert_allclose(twice.transl, motion.transl, atol=1e-6)


def test_mirrored_pose_moves_joints_to_their_reflected_partners():
    motion, rest = mocap.load_clip("05_06", fps=10.0, root=MOCAP)
    # A left-right symmetric skeleton: the rest joints averaged with their reflection.
    reflect = np.array([-1.0, 1.0, 1.0])
    symmetric = 0.5 * (rest + rest[list(SMPL_MIRROR)] * reflect).astype(np.float64)
    mirrored = mocap.mirror_motion(motion, symmetric)
    joints = mocap.skeleton_forward_kinematics(symmetric, motion.global_orient, motion.body_pose, motion.transl)
    joints_mirrored = mocap.skeleton_forward_kinematics(symmetric, mirrored.global_orient, mirrored.body_pose, mirrored.transl)
    expected = joints[:, list(SMPL_MIRROR)] * torch.tensor(reflect)
    np.testing.assert_allclose(joints_mirrored.numpy(), expected.numpy(), atol=1e-4)
    assert np.abs(mirrored.body_pose - motion.body_pose).max() > 0.1  # it did change something


def test_resampling_keeps_poses_at_shared_instants():
    motion, _ = mocap.load_clip("02_01", fps=None, root=MOCAP)
    assert motion.fps == pytest.approx(120.0, rel=1e-4) and motion.num_frames == 343
    at_30 = mocap.resample(motion, 30.0)
    assert at_30.num_frames == 86 and at_30.fps == 30.0
    np.testing.assert_allclose(at_30.body_pose, motion.body_pose[::4], atol=1e-3)
    np.testing.assert_allclose(at_30.transl, motion.transl[::4], atol=1e-4)  # 120.0001 fps in the file
    # Between samples, slerp lies between its neighbours (here: half way for the root height).
    at_240 = mocap.resample(motion, 240.0)
    np.testing.assert_allclose(at_240.transl[1], 0.5 * (motion.transl[0] + motion.transl[1]), atol=1e-6)
    for array in (at_30.global_orient, at_30.body_pose, at_30.transl):
        assert array.dtype == np.float32 and array.flags["C_CONTIGUOUS"]


def test_validation_clips_are_held_out_of_training():
    everything = {c.trial for c in mocap.list_clips("all", MOCAP)}
    train = {c.trial for c in mocap.list_clips("train", MOCAP)}
    validation = {c.trial for c in mocap.list_clips("validation", MOCAP)}
    assert validation == everything & set(mocap.HELD_OUT_CLIPS) == {"03_02", "05_13", "06_05", "07_09"}
    assert train == everything - validation == {"02_01", "05_06", "06_13"}


def _open_rest_joints() -> np.ndarray:
    from engines.body import load_body_model

    model = load_body_model("open")
    return model.rest_joints(torch.zeros(1, 10))[0].detach().numpy().astype(np.float64)


LIMB_BONES = [SMPL_JOINT_NAMES.index(n) for n in (
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)]  # each the child end of a limb bone whose parent is in "direction" mode


def test_open_body_model_takes_its_rest_pose_at_the_mocap_tpose():
    rest = _open_rest_joints()
    clip = _clip("02_01")
    tpose_twice = mocap.BvhClip(clip.skeleton, clip.motion[[0, 0]], clip.frame_time_s)
    motion = mocap.retarget(tpose_twice, rest)
    angles = np.degrees(np.linalg.norm(motion.body_pose[0], axis=-1))
    relative = [SMPL_JOINT_NAMES.index(n) - 1 for n, s in mocap.CMU_TO_SMPL.items() if s.mode == "relative" and n != "pelvis"]
    assert angles[relative].max() < 1.5 and np.linalg.norm(motion.global_orient) < 1e-6
    assert angles.max() < 10.0  # limbs: only the two T-poses' differences (CMU's arms droop 8 degrees)


@pytest.mark.parametrize("trial", ["02_01", "06_13"])
def test_retargeting_onto_the_open_body_model_keeps_limb_directions_and_the_scaled_root(trial):
    rest = _open_rest_joints()
    clip = _clip(trial)
    motion = mocap.retarget(clip, rest)
    own = mocap.mocap_rest_joints(clip)
    assert motion.scale == pytest.approx(mocap.CMU_UNIT_M * mocap.skeleton_height(rest) / mocap.skeleton_height(own), rel=1e-4)
    joints = mocap.skeleton_forward_kinematics(rest, motion.global_orient, motion.body_pose, motion.transl)
    _, positions = mocap.bvh_forward_kinematics(clip)
    target = mocap.mapped_points(clip.skeleton, positions)[1:]
    assert _bone_angles_deg(joints, target, LIMB_BONES).max() < 0.05
    np.testing.assert_allclose(joints[:, 0].numpy(), (target[:, 0] * motion.scale).numpy(), atol=1e-5)
    # The torso turns with the mocap's: the shoulder line within a few degrees of CMU's.
    shoulders = [SMPL_JOINT_NAMES.index("left_shoulder"), SMPL_JOINT_NAMES.index("right_shoulder")]
    line = torch.nn.functional.normalize(joints[:, shoulders[0]] - joints[:, shoulders[1]], dim=-1)
    line_mocap = torch.nn.functional.normalize(target[:, shoulders[0]] - target[:, shoulders[1]], dim=-1)
    assert torch.rad2deg(torch.acos((line * line_mocap).sum(-1).clamp(-1, 1))).mean() < 5.0


def _wobbling_motion(frames: int = 240, fps: float = 120.0, slow_hz: float = 1.0, jitter_hz: float = 40.0):
    """A knee bending at slow_hz plus a 0.05 rad wobble at jitter_hz, the root gliding with the same."""
    t = np.arange(frames) / fps
    slow = 0.6 * np.sin(2 * np.pi * slow_hz * t)
    wobble = 0.05 * np.sin(2 * np.pi * jitter_hz * t)
    body_pose = np.zeros((frames, 23, 3), np.float32)
    body_pose[:, 3, 0] = slow + wobble                                 # left knee (joint 4)
    transl = np.stack([0.5 * slow + 0.05 * wobble, np.zeros(frames), np.zeros(frames)], -1).astype(np.float32)
    return mocap.SmplMotion(np.zeros((frames, 3), np.float32), body_pose, transl, fps), slow


def test_lowpass_removes_marker_jitter_and_keeps_the_movement_without_delay():
    motion, slow = _wobbling_motion()
    smoothed = mocap.lowpass(motion, 10.0)
    inner = slice(30, -30)  # away from the padded ends
    knee = smoothed.body_pose[:, 3, 0].astype(np.float64)
    # The 40 Hz wobble (0.05 rad) is gone to under 1 %; the 1 Hz bend keeps its amplitude and
    # its timing (a delay of one 120 fps frame would already be off by 0.031 rad at the zero crossings).
    assert np.abs(knee - slow)[inner].max() < 0.005
    assert np.abs(np.asarray(motion.body_pose[:, 3, 0], np.float64) - slow)[inner].max() > 0.04
    np.testing.assert_allclose(smoothed.transl[inner, 0], 0.5 * slow[inner], atol=0.003)
    assert smoothed.body_pose.dtype == np.float32 and smoothed.num_frames == motion.num_frames
    with pytest.raises(ValueError, match="cutoff_hz"):
        mocap.lowpass(motion, 70.0)


def test_clip_whose_arms_start_missing_is_loaded_from_the_first_complete_frame():
    assert mocap.incomplete_leading_frames(_clip("03_02")) == 50  # both arms held at zero, then in place
    assert mocap.incomplete_leading_frames(_clip("02_01")) == 0
    raw, _ = mocap.load_clip("03_02", fps=None, lowpass_hz=None, root=MOCAP)
    info = next(c for c in mocap.list_clips("all", MOCAP) if c.trial == "03_02")
    assert raw.num_frames == info.frames - 1 - 50
    # Without the trim the arms jumped into place between two 120 fps frames (an 800 mm/frame^2
    # spike at the hands); from the first complete frame the arms' largest step is a normal one.
    step = np.abs(np.diff(raw.body_pose[:, 15:21], axis=0)).max()
    assert step < 0.3, f"largest arm rotation step {step:.3f} rad between 120 fps frames"
    untrimmed = mocap.retarget(_clip("03_02"), mocap.mocap_rest_joints(_clip("03_02")))
    assert np.abs(np.diff(untrimmed.body_pose[:, 15:21], axis=0)).max() > 1.0
