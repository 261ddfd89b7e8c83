"""Motion capture: BVH reading, forward kinematics, and retargeting onto SMPL's 24-joint tree.

The clips are the CMU Graphics Lab motion capture database in the cgspeed "MotionBuilder-
friendly" BVH conversion (31 joints, 120 fps, frame 0 a synthetic T-pose added by the
conversion). See ../shared/data/mocap/README.md.

Retargeting in one paragraph: each of SMPL's 24 joints is mapped to a point of the mocap
skeleton (a joint, or a point on a bone) and to a mocap joint whose rotation supplies its
twist (CMU_TO_SMPL). Per frame, the limb bones of the target (thighs, shins, upper arms,
forearms, hands) are turned to point exactly the way the mocap's mapped points point (direction
matching, whatever the target's proportions); the torso, neck, collars and feet, whose bones
differ in anatomy between the two skeletons, turn as the mocap's turned since its T-pose, so at
the T-pose the target stands in its own rest pose instead of copying, say, CMU's chest-to-
shoulder bone into a shrug. The joints with three children (pelvis, spine3) take a weighted
Kabsch fit of their child directions; the rotation about a bone's own axis, and the orientation
of the five leaf joints (head, hands, feet), come from the mocap's own joint rotations relative
to its T-pose. The root follows the mocap's hips, scaled by the ratio of the two skeletons'
heights. Axes: the cgspeed CMU BVH frame is already SMPL's canonical frame (y up, the T-pose
facing +z, its left side at +x; checked by a test), so the change of axes is the identity,
kept as an explicit matrix for other sources.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from engines import geometry, rotations
from engines.skeleton import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS

# ---------------------------------------------------------------------------------------------
# 1. BVH files


@dataclass
class BvhSkeleton:
    """A BVH hierarchy.

    names: joint names in file order (parents before children).
    parents: (J,) int64, -1 for the root.
    offsets: (J, 3) float64 joint offsets from the parent, in the file's units.
    channels: per joint, the channel names in the order the file declares them
        (e.g. ("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")).
    end_sites: (J, 3) float64 offset of a joint's End Site, NaN where it has none.
    """

    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray
    channels: list[tuple[str, ...]]
    end_sites: np.ndarray

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"the BVH skeleton has no joint {name!r}; it has {', '.join(self.names)}") from None


@dataclass
class BvhClip:
    """A BVH file: its skeleton and its motion.

    motion: (F, C) float64 channel values per frame, C = total channels, in file order
        (degrees for rotations, file units for positions).
    frame_time_s: seconds per frame.
    """

    skeleton: BvhSkeleton
    motion: np.ndarray
    frame_time_s: float
    name: str = ""

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time_s

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    def drop_first_frame(self) -> "BvhClip":
        """The same clip without frame 0 (cgspeed's synthetic T-pose)."""
        return BvhClip(self.skeleton, self.motion[1:], self.frame_time_s, self.name)


def read_bvh(path: str | Path) -> BvhClip:
    """Read a BVH file (hierarchy and motion). Raises ValueError on malformed files."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return parse_bvh(text, name=path.stem)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_bvh(text: str, name: str = "") -> BvhClip:
    """Parse the text of a BVH file."""
    head, sep, motion_text = text.partition("MOTION")
    if not sep:
        raise ValueError("no MOTION section; is this a BVH file?")
    tokens = head.split()
    if not tokens or tokens[0] != "HIERARCHY":
        raise ValueError("the file does not start with HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: list[list[float]] = []
    stack: list[int] = []  # open joints; -2 marks an End Site block
    pending_parent = -1
    position = 1
    while position < len(tokens):
        token = tokens[position]
        if token in ("ROOT", "JOINT"):
            names.append(tokens[position + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            end_sites.append([math.nan] * 3)
            pending_parent = len(names) - 1
            position += 2
        elif token == "End":
            pending_parent = -2
            position += 2
        elif token == "{":
            stack.append(pending_parent)
            position += 1
        elif token == "}":
            if not stack:
                raise ValueError("unbalanced braces in HIERARCHY")
            stack.pop()
            position += 1
        elif token == "OFFSET":
            values = [float(v) for v in tokens[position + 1 : position + 4]]
            if stack and stack[-1] == -2:
                end_sites[stack[-2]] = values
            else:
                offsets[stack[-1]] = values
            position += 4
        elif token == "CHANNELS":
            count = int(tokens[position + 1])
            channels[stack[-1]] = tuple(tokens[position + 2 : position + 2 + count])
            position += 2 + count
        else:
            raise ValueError(f"unexpected token {token!r} in HIERARCHY")
    if not names:
        raise ValueError("the HIERARCHY declares no joints")
    for joint_channels in channels:
        for channel in joint_channels:
            if channel[1:] not in ("position", "rotation") or channel[0] not in "XYZ":
                raise ValueError(f"unknown channel {channel!r}")

    lines = motion_text.strip().splitlines()
    frame_count = int(lines[0].split(":")[1])
    frame_time = float(lines[1].split(":")[1])
    values = np.array(" ".join(lines[2:]).split(), dtype=np.float64)
    channel_count = sum(len(c) for c in channels)
    if values.size != frame_count * channel_count:
        raise ValueError(
            f"MOTION holds {values.size} numbers, expected {frame_count} frames x {channel_count} channels"
        )
    skeleton = BvhSkeleton(
        names=names,
        parents=np.asarray(parents, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.float64),
        channels=channels,
        end_sites=np.asarray(end_sites, dtype=np.float64),
    )
    return BvhClip(skeleton, values.reshape(frame_count, channel_count), frame_time, name)


_AXES = {"X": (1.0, 0.0, 0.0), "Y": (0.0, 1.0, 0.0), "Z": (0.0, 0.0, 1.0)}


def bvh_local_transforms(clip: BvhClip) -> tuple[Tensor, Tensor]:
    """Per-joint local rotations and translations from the channels.

    Rotation channels compose in the order the file declares them: "Zrotation Yrotation
    Xrotation" gives R = Rz @ Ry @ Rx (column vectors). Position channels, where present,
    replace the joint's OFFSET (the root's OFFSET is 0 in practice).

    Returns (F, J, 3, 3) float64 rotations and (F, J, 3) float64 translations (file units).
    """
    skeleton = clip.skeleton
    frames = clip.num_frames
    joints = len(skeleton.names)
    motion = torch.from_numpy(clip.motion)
    local_rot = torch.eye(3, dtype=torch.float64).repeat(frames, joints, 1, 1)
    local_pos = torch.from_numpy(skeleton.offsets).repeat(frames, 1, 1)
    column = 0
    for joint, joint_channels in enumerate(skeleton.channels):
        for channel in joint_channels:
            values = motion[:, column]
            axis = torch.tensor(_AXES[channel[0]], dtype=torch.float64)
            if channel.endswith("rotation"):
                step = rotations.axis_angle_to_matrix(torch.deg2rad(values)[:, None] * axis)
                local_rot[:, joint] = local_rot[:, joint] @ step
            else:
                local_pos[:, joint, "XYZ".index(channel[0])] = values
            column += 1
    return local_rot, local_pos


def forward_kinematics(parents: Sequence[int], local_rot: Tensor, local_pos: Tensor) -> tuple[Tensor, Tensor]:
    """Global rotations and positions of a tree.

    parents: (J,) parent indices, each before its children, -1 for the root.
    local_rot: (..., J, 3, 3); local_pos: (..., J, 3) translation of each joint from its parent
    (for the root, its position). Returns (..., J, 3, 3) global rotations, (..., J, 3) positions.
    """
    global_rot: list[Tensor] = []
    global_pos: list[Tensor] = []
    for joint, parent in enumerate(parents):
        if parent < 0:
            global_rot.append(local_rot[..., joint, :, :])
            global_pos.append(local_pos[..., joint, :])
        else:
            global_rot.append(global_rot[parent] @ local_rot[..., joint, :, :])
            global_pos.append(global_pos[parent] + (global_rot[parent] @ local_pos[..., joint, :, None])[..., 0])
    return torch.stack(global_rot, dim=-3), torch.stack(global_pos, dim=-2)


def bvh_forward_kinematics(clip: BvhClip) -> tuple[Tensor, Tensor]:
    """(F, J, 3, 3) global rotations and (F, J, 3) global joint positions, file units, float64."""
    local_rot, local_pos = bvh_local_transforms(clip)
    return forward_kinematics(clip.skeleton.parents.tolist(), local_rot, local_pos)


# ---------------------------------------------------------------------------------------------
# 2. Retargeting onto SMPL's 24 joints

# One mocap unit of the CMU conversion in metres (the ASF files declare lengths in units of
# 1/0.45 inch). Only used to give the mocap's own skeleton a metric size; retargeting onto
# another skeleton scales by the ratio of heights instead.
CMU_UNIT_M = 0.0254 / 0.45

# The change of axes from the BVH file's frame to SMPL's canonical frame (y up, facing +z,
# left at +x): positions p_smpl = BVH_TO_SMPL @ p_bvh, rotations R_smpl = C @ R_bvh @ C^T. The
# cgspeed CMU files already use SMPL's axes (their T-pose has left hip at +x, toes at +z).
BVH_TO_SMPL = np.eye(3)


@dataclass(frozen=True)
class JointSource:
    """Where an SMPL joint comes from on the mocap skeleton.

    position: the point is ``(1 - t) * P[a] + t * P[b]`` for ``(a, b, t)``, P the mocap joint
        positions; a and b are a mocap joint and its descendant along one bone, so the point
        moves rigidly with that bone.
    rotation: the mocap joint whose global rotation (relative to the T-pose) gives this SMPL
        joint's twist about its bone (or, for a leaf, its whole orientation): the mocap joint
        that drives the segment from this point towards the child's point.
    mode: "direction": the SMPL bone(s) leaving this joint point exactly as the mocap's do
        (limbs, where both skeletons have the same bone); "relative": they turn as the mocap's
        turned since its T-pose, so the target keeps its own rest shape at the T-pose (torso,
        neck, collars, feet, where the two skeletons' bones differ in anatomy and a copied
        direction would bake in a constant shrug or tilt).
    """

    position: tuple[str, str, float]
    rotation: str
    mode: str = "direction"


def _at(name: str) -> tuple[str, str, float]:
    return (name, name, 0.0)


# The mapping from the cgspeed CMU skeleton to SMPL's 24 joints (SMPL order). CMU branches the
# neck and both shoulders at Spine1, so Spine1 is SMPL's spine3; SMPL's spine2 is the middle
# of the Spine -> Spine1 bone; CMU bends its spine at the hip centre (LowerBack) and its neck
# at Spine1 (Neck), so SMPL's spine1 and neck sit just past those bends (10% along the bone),
# which keeps the SMPL tree's rigid pelvis and spine3 from displacing the joints above them;
# SMPL's collars lie 40% of the way along CMU's Spine1 -> LeftArm bone (CMU has no clavicle
# joint of its own); SMPL's hands are CMU's LeftHandIndex1 (the knuckles), whose bone from the
# wrist the CMU LeftFingerBase joint drives.
CMU_TO_SMPL: dict[str, JointSource] = {
    "pelvis": JointSource(_at("Hips"), "Hips", "relative"),
    "left_hip": JointSource(_at("LeftUpLeg"), "LeftUpLeg"),
    "right_hip": JointSource(_at("RightUpLeg"), "RightUpLeg"),
    "spine1": JointSource(("LowerBack", "Spine", 0.1), "Spine", "relative"),
    "left_knee": JointSource(_at("LeftLeg"), "LeftLeg"),
    "right_knee": JointSource(_at("RightLeg"), "RightLeg"),
    "spine2": JointSource(("Spine", "Spine1", 0.5), "Spine", "relative"),
    "left_ankle": JointSource(_at("LeftFoot"), "LeftFoot", "relative"),
    "right_ankle": JointSource(_at("RightFoot"), "RightFoot", "relative"),
    "spine3": JointSource(_at("Spine1"), "Spine1", "relative"),
    "left_foot": JointSource(_at("LeftToeBase"), "LeftToeBase"),
    "right_foot": JointSource(_at("RightToeBase"), "RightToeBase"),
    "neck": JointSource(("Neck", "Neck1", 0.1), "Neck1", "relative"),
    "left_collar": JointSource(("Spine1", "LeftArm", 0.4), "LeftShoulder", "relative"),
    "right_collar": JointSource(("Spine1", "RightArm", 0.4), "RightShoulder", "relative"),
    "head": JointSource(_at("Head"), "Head"),
    "left_shoulder": JointSource(_at("LeftArm"), "LeftArm"),
    "right_shoulder": JointSource(_at("RightArm"), "RightArm"),
    "left_elbow": JointSource(_at("LeftForeArm"), "LeftForeArm"),
    "right_elbow": JointSource(_at("RightForeArm"), "RightForeArm"),
    "left_wrist": JointSource(_at("LeftHand"), "LeftFingerBase"),
    "right_wrist": JointSource(_at("RightHand"), "RightFingerBase"),
    "left_hand": JointSource(_at("LeftHandIndex1"), "LeftHandIndex1"),
    "right_hand": JointSource(_at("RightHandIndex1"), "RightHandIndex1"),
}

# Weights of the child directions when fitting the rotation of a joint with several children
# (weighted Kabsch on unit vectors). The pelvis follows its hips more than the CMU spine,
# which bends at the hip centre where SMPL's bends higher up; spine3 follows the shoulder
# line more than the neck, which CMU bends at its own joint.
CHILD_WEIGHTS: dict[str, float] = {
    "left_hip": 1.0, "right_hip": 1.0, "spine1": 0.0,
    "left_collar": 1.0, "right_collar": 1.0, "neck": 0.0,
}

_CHILDREN: list[list[int]] = [[c for c, p in enumerate(SMPL_PARENTS) if p == j] for j in range(NUM_SMPL_JOINTS)]


def _change_axes(positions: Tensor, rotations_: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    axes = torch.as_tensor(BVH_TO_SMPL, dtype=positions.dtype)
    positions = positions @ axes.T
    if rotations_ is not None:
        rotations_ = axes @ rotations_ @ axes.T
    return positions, rotations_


def mapped_points(skeleton: BvhSkeleton, positions: Tensor) -> Tensor:
    """SMPL's 24 joints as points on the mocap skeleton: (F, J, 3) -> (F, 24, 3), same units."""
    points = []
    for name in SMPL_JOINT_NAMES:
        start, end, t = CMU_TO_SMPL[name].position
        a, b = skeleton.index(start), skeleton.index(end)
        points.append((1.0 - t) * positions[:, a] + t * positions[:, b])
    return torch.stack(points, dim=1)


def skeleton_height(joints: np.ndarray | Tensor) -> float:
    """Height of a 24-joint skeleton in a T-pose: head joint above the lower foot joint. (24, 3)."""
    joints = torch.as_tensor(joints, dtype=torch.float64)
    names = SMPL_JOINT_NAMES
    head = joints[names.index("head"), 1]
    feet = torch.minimum(joints[names.index("left_foot"), 1], joints[names.index("right_foot"), 1])
    return float(head - feet)


def mocap_rest_joints(clip: BvhClip, tpose_frame: int = 0) -> np.ndarray:
    """The mocap's own T-pose (frame ``tpose_frame``) as SMPL's 24 joints, in metres, in SMPL's
    frame, hips at the origin. (24, 3) float32.

    A stand-in target skeleton with exactly the mocap's proportions (retargeting onto it
    reproduces the mocap's joint positions up to the tree differences).
    """
    _, positions = bvh_forward_kinematics(BvhClip(clip.skeleton, clip.motion[tpose_frame : tpose_frame + 1], clip.frame_time_s))
    positions, _ = _change_axes(positions)
    points = mapped_points(clip.skeleton, positions)[0]
    points = (points - points[0]) * CMU_UNIT_M
    return np.ascontiguousarray(points.numpy(), dtype=np.float32)


def _unit(vectors: Tensor) -> Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def rotation_between(source: Tensor, target: Tensor) -> Tensor:
    """The smallest rotation taking unit vectors ``source`` to ``target``: (..., 3) -> (..., 3, 3).

    For opposite vectors it turns by pi about an axis perpendicular to ``source``.
    """
    axis = torch.cross(source, target, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (source * target).sum(-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    # For (nearly) opposite vectors the cross product vanishes: use any perpendicular axis.
    helper = torch.where(
        source[..., :1].abs() < 0.9,
        torch.tensor([1.0, 0.0, 0.0], dtype=source.dtype).expand_as(source),
        torch.tensor([0.0, 1.0, 0.0], dtype=source.dtype).expand_as(source),
    )
    fallback = _unit(torch.cross(source, helper, dim=-1))
    axis = torch.where((sin < 1e-9) & (cos < 0), fallback, axis / sin.clamp(min=1e-12))
    return rotations.axis_angle_to_matrix(axis * angle)


def fit_rotation(rest_directions: Tensor, directions: Tensor, weights: Tensor) -> Tensor:
    """Weighted Kabsch: the rotation R minimising sum_i w_i |R u_i - d_i|^2.

    rest_directions u: (K, 3); directions d: (F, K, 3); weights: (K,). Returns (F, 3, 3).
    """
    covariance = torch.einsum("k,fki,kj->fij", weights, directions, rest_directions)  # sum w d u^T
    return rotations.nearest_rotation(covariance)


@dataclass
class SmplMotion:
    """A motion on SMPL's 24-joint tree, in SMPL's canonical frame (y up), metres.

    global_orient: (F, 3) float32 axis-angle; body_pose: (F, 23, 3) float32 axis-angle;
    transl: (F, 3) float32 metres, SMPL's convention (pelvis at rest_joints[0] + transl);
    fps: frames per second; scale: metres per mocap unit used for the root trajectory.
    """

    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    fps: float
    name: str = ""
    scale: float = 1.0

    @property
    def num_frames(self) -> int:
        return int(self.global_orient.shape[0])


def _float32(array: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def retarget(
    clip: BvhClip,
    rest_joints: np.ndarray | Tensor,
    tpose_frame: int | None = 0,
    scale: float | None = None,
) -> SmplMotion:
    """Retarget a CMU BVH clip onto a 24-joint SMPL skeleton.

    clip: a cgspeed CMU clip (31 joints, names as in CMU_TO_SMPL).
    rest_joints: (24, 3) the target skeleton's joints in its T-pose, SMPL's frame, metres.
    tpose_frame: index of the clip's T-pose frame, the reference for the mocap's joint
        rotations; it is dropped from the result. None: the clip has none, and its zero-rotation
        pose is taken as the reference (not a T-pose for CMU: avoid).
    scale: metres per mocap unit for the root trajectory; default the ratio of the two
        skeletons' heights (skeleton_height of the target over that of the mocap's T-pose).

    Returns an SmplMotion at the clip's frame rate. Steps:
      1. mocap FK -> global rotations and positions, into SMPL's axes; mapped points P (F,24,3);
         each mapped joint's rotation relative to the T-pose, Q = R(t) R(T)^T.
      2. per SMPL joint, in tree order, its global rotation G, with u the reference direction
         of each bone (the target's rest direction in "direction" mode, the mocap's T-pose
         direction in "relative" mode):
         - one child c: G = A Q, A the smallest rotation taking Q u onto the mocap direction
           P[c] - P[j]; in "direction" mode the bone then points exactly as the mocap's; the
           twist about it is the mocap's;
         - several children (pelvis, spine3): weighted Kabsch of the u onto the mocap directions;
         - a leaf (head, hands, feet): G = Q, the mocap joint's own rotation since the T-pose.
      3. local rotations G_parent^T G -> axis-angle; root translation from the scaled hips.
    """
    skeleton = clip.skeleton
    rest = torch.as_tensor(np.asarray(rest_joints), dtype=torch.float64)
    if rest.shape != (NUM_SMPL_JOINTS, 3) or not torch.isfinite(rest).all():
        raise ValueError(f"rest_joints must be a finite (24, 3) array, got shape {tuple(rest.shape)}")
    needed = {s.rotation for s in CMU_TO_SMPL.values()} | {n for s in CMU_TO_SMPL.values() for n in s.position[:2]}
    missing = needed - set(skeleton.names)
    if missing:
        raise ValueError(f"clip {clip.name!r} lacks the CMU joints {sorted(missing)}; it needs the cgspeed CMU skeleton")

    # 1. Mocap forward kinematics, in SMPL's axes.
    global_rot, positions = bvh_forward_kinematics(clip)
    positions, global_rot = _change_axes(positions, global_rot)
    if tpose_frame is None:
        zero = BvhClip(skeleton, np.zeros((1, clip.motion.shape[1])), clip.frame_time_s)
        zero_rot, zero_pos = bvh_forward_kinematics(zero)
        ref_pos, ref_rot = _change_axes(zero_pos, zero_rot)
        keep = slice(None)
    else:
        if not 0 <= tpose_frame < clip.num_frames:
            raise ValueError(f"tpose_frame {tpose_frame} is outside the clip's {clip.num_frames} frames")
        ref_rot, ref_pos = global_rot[tpose_frame : tpose_frame + 1], positions[tpose_frame : tpose_frame + 1]
        keep = [f for f in range(clip.num_frames) if f != tpose_frame]
    points = mapped_points(skeleton, positions)[keep]  # (F, 24, 3)
    ref_points = mapped_points(skeleton, ref_pos)[0]  # (24, 3), the T-pose
    source_index = [skeleton.index(CMU_TO_SMPL[n].rotation) for n in SMPL_JOINT_NAMES]
    relative = global_rot[keep][:, source_index] @ ref_rot[:, source_index].transpose(-1, -2)  # (F, 24, 3, 3)
    frames = points.shape[0]
    if frames == 0:
        raise ValueError(f"clip {clip.name!r} has no frames besides its T-pose")

    # 2. Global rotations of the target's joints. A bone's reference direction is the target's
    #    rest direction ("direction" mode: the bone ends up pointing as the mocap's) or the
    #    mocap's own T-pose direction ("relative": it turns as the mocap's turned).
    rest_bones = rest - rest[torch.tensor([max(p, 0) for p in SMPL_PARENTS])]
    tpose_bones = ref_points - ref_points[torch.tensor([max(p, 0) for p in SMPL_PARENTS])]
    globals_: list[Tensor] = []
    for joint, name in enumerate(SMPL_JOINT_NAMES):
        children = _CHILDREN[joint]
        reference = tpose_bones if CMU_TO_SMPL[name].mode == "relative" else rest_bones
        if not children:
            globals_.append(relative[:, joint])
        elif len(children) == 1:
            child = children[0]
            mocap_dir = _unit(points[:, child] - points[:, joint])
            twisted = relative[:, joint] @ _unit(reference[child])
            globals_.append(rotation_between(twisted, mocap_dir) @ relative[:, joint])
        else:
            weights = torch.tensor([CHILD_WEIGHTS[SMPL_JOINT_NAMES[c]] for c in children], dtype=torch.float64)
            mocap_dirs = _unit(points[:, children] - points[:, joint : joint + 1])
            globals_.append(fit_rotation(_unit(reference[children]), mocap_dirs, weights))
    global_mats = torch.stack(globals_, dim=1)  # (F, 24, 3, 3)

    # 3. Local rotations and the root translation.
    parent_mats = global_mats[:, [max(p, 0) for p in SMPL_PARENTS[1:]]]
    local = parent_mats.transpose(-1, -2) @ global_mats[:, 1:]
    if scale is None:
        scale = skeleton_height(rest) / skeleton_height(ref_points)
    transl = scale * points[:, 0] - rest[0]
    return SmplMotion(
        global_orient=_float32(rotations.matrix_to_axis_angle(global_mats[:, 0])),
        body_pose=_float32(rotations.matrix_to_axis_angle(local)),
        transl=_float32(transl),
        fps=clip.fps,
        name=clip.name,
        scale=float(scale),
    )


def skeleton_forward_kinematics(
    rest_joints: np.ndarray | Tensor,
    global_orient: np.ndarray | Tensor,
    body_pose: np.ndarray | Tensor,
    transl: np.ndarray | Tensor | None = None,
) -> Tensor:
    """Joint positions of SMPL's 24-joint skeleton (no mesh): SMPL's forward kinematics.

    rest_joints (24, 3); global_orient (F, 3); body_pose (F, 23, 3); transl (F, 3) or None.
    Returns (F, 24, 3) in the dtype of rest_joints (float64 for numpy float64 input).
    """
    rest = torch.as_tensor(rest_joints)
    dtype = rest.dtype if rest.dtype.is_floating_point else torch.float64
    rest = rest.to(dtype)
    pose = torch.cat([torch.as_tensor(global_orient, dtype=dtype)[:, None], torch.as_tensor(body_pose, dtype=dtype)], dim=1)
    local_rot = rotations.axis_angle_to_matrix(pose)
    parents = list(SMPL_PARENTS)
    offsets = rest - rest[torch.tensor([max(p, 0) for p in parents])]
    offsets = torch.cat([rest[:1], offsets[1:]], dim=0).expand(pose.shape[0], -1, -1)
    _, joints = forward_kinematics(parents, local_rot, offsets)
    if transl is not None:
        joints = joints + torch.as_tensor(transl, dtype=dtype)[:, None]
    return joints


# ---------------------------------------------------------------------------------------------
# 3. Mirroring, resampling, loading clips


def mirror_pose(
    global_orient: np.ndarray,
    body_pose: np.ndarray,
    transl: np.ndarray,
    rest_joints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The left-right mirror image of a motion, reflected through the plane x = 0.

    The rotations as engines.geometry.mirror_pose; the pelvis position rest_joints[0] + transl
    reflects too (rest_joints None: pelvis at x = 0).
    global_orient (F, 3), body_pose (F, 23, 3), transl (F, 3); returns float32 arrays alike.
    """
    pose = np.concatenate([np.asarray(global_orient, np.float64)[:, None], np.asarray(body_pose, np.float64)], axis=1)
    if pose.shape[1:] != (NUM_SMPL_JOINTS, 3):
        raise ValueError(f"expected global_orient (F, 3) and body_pose (F, 23, 3), got pose {pose.shape}")
    mirrored = geometry.mirror_pose(pose)
    pelvis_x = 0.0 if rest_joints is None else float(np.asarray(rest_joints)[0, 0])
    transl_mirrored = np.asarray(transl, np.float64).copy()
    transl_mirrored[:, 0] = -(pelvis_x + transl_mirrored[:, 0]) - pelvis_x
    return _float32(mirrored[:, 0]), _float32(mirrored[:, 1:]), _float32(transl_mirrored)


def mirror_motion(motion: SmplMotion, rest_joints: np.ndarray | None = None) -> SmplMotion:
    """The mirror image of an SmplMotion (see mirror_pose)."""
    orient, pose, transl = mirror_pose(motion.global_orient, motion.body_pose, motion.transl, rest_joints)
    return SmplMotion(orient, pose, transl, motion.fps, motion.name + "_mirror", motion.scale)


def _slerp(q0: Tensor, q1: Tensor, weight: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions (..., 4) with weight (..., 1) in [0, 1]."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # the shorter arc
    dot = dot.abs().clamp(max=1.0)
    angle = torch.acos(dot)
    sin = torch.sin(angle)
    near = sin < 1e-6
    w0 = torch.where(near, 1.0 - weight, torch.sin((1.0 - weight) * angle) / sin.clamp(min=1e-12))
    w1 = torch.where(near, weight, torch.sin(weight * angle) / sin.clamp(min=1e-12))
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def resample(motion: SmplMotion, fps: float) -> SmplMotion:
    """The motion at another frame rate: rotations by slerp, translation linearly.

    Output frames are at times k / fps for k = 0, 1, ... while within the clip's duration.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = motion.num_frames
    duration = (frames - 1) / motion.fps
    count = int(math.floor(duration * fps + 1e-9)) + 1
    position = torch.arange(count, dtype=torch.float64) * (motion.fps / fps)
    before = position.floor().long().clamp(max=frames - 1)
    after = (before + 1).clamp(max=frames - 1)
    weight = (position - before)[:, None]
    pose = torch.cat(
        [torch.from_numpy(motion.global_orient).double()[:, None], torch.from_numpy(motion.body_pose).double()], dim=1
    )
    quats = rotations.axis_angle_to_quaternion(pose)
    quats = _slerp(quats[before], quats[after], weight[:, :, None].expand(-1, NUM_SMPL_JOINTS, 1))
    pose = rotations.quaternion_to_axis_angle(quats)
    transl = torch.from_numpy(motion.transl).double()
    transl = (1.0 - weight) * transl[before] + weight * transl[after]
    return SmplMotion(_float32(pose[:, 0]), _float32(pose[:, 1:]), _float32(transl), float(fps), motion.name, motion.scale)


# Low-pass cutoff for the clips' motion, Hz. The optical markers jitter: at 120 fps the joints'
# second differences are 3-5 times what the same motion shows at 30 fps once scaled by the
# frame rates (smooth motion would give the same), i.e. mostly content above 15 Hz, which a
# 30 fps camera cannot see and which decimation would fold into the 30 fps truth. 10 Hz keeps
# human movement (biomechanics low-passes marker data at 6-10 Hz) and removes that jitter.
MOCAP_LOWPASS_HZ = 10.0


def lowpass(motion: SmplMotion, cutoff_hz: float) -> SmplMotion:
    """The motion with its content above ``cutoff_hz`` removed, without delay.

    A second-order Butterworth filter run forward then backward (zero phase, fourth order in
    all) over the translation and over each joint's rotation as a unit quaternion (each put on
    the hemisphere of the frame before, renormalised after). The ends are padded by odd
    extension (scipy's default), which keeps a motion's slope through them.
    Clips of fewer than 10 frames are returned unchanged.
    """
    from scipy.signal import butter, filtfilt

    if not 0 < cutoff_hz < motion.fps / 2:
        raise ValueError(f"cutoff_hz must be in (0, {motion.fps / 2:g}) for {motion.fps:g} fps, got {cutoff_hz}")
    if motion.num_frames < 10:
        return motion
    b, a = butter(2, cutoff_hz, fs=motion.fps)
    pose = np.concatenate([motion.global_orient[:, None], motion.body_pose], 1).astype(np.float64)
    quats = rotations.axis_angle_to_quaternion(torch.from_numpy(pose)).numpy()
    flips = np.cumprod(np.where((quats[1:] * quats[:-1]).sum(-1) < 0, -1.0, 1.0), axis=0)
    quats[1:] *= flips[..., None]
    padlen = min(3 * max(len(a), len(b)), motion.num_frames - 1)
    quats = np.ascontiguousarray(filtfilt(b, a, quats, axis=0, padlen=padlen))
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    pose = rotations.quaternion_to_axis_angle(torch.from_numpy(quats)).numpy()
    transl = filtfilt(b, a, motion.transl.astype(np.float64), axis=0, padlen=padlen)
    return SmplMotion(_float32(pose[:, 0]), _float32(pose[:, 1:]), _float32(transl), motion.fps, motion.name, motion.scale)


def incomplete_leading_frames(clip: BvhClip, tpose_frame: int = 0, min_channels: int = 6) -> int:
    """How many frames after the T-pose frame start the capture with joints still missing.

    Where the capture had not yet found some markers, the conversion filled their joints with
    the T-pose's channel values (clip 03_02: both arms held at zero for its first 50 frames,
    after which they jump into place). Such a frame has at least ``min_channels`` channels
    exactly equal to the T-pose's that take other values later. Returns the length of
    the leading run of such frames (0 for a clean clip), counted from the frame after the
    T-pose.
    """
    reference = clip.motion[tpose_frame]
    frames = np.delete(clip.motion, tpose_frame, axis=0)
    at_reference = np.abs(frames - reference) < 1e-6                    # (F, C)
    telling = ~at_reference.all(0)                                       # channels that move later
    incomplete = at_reference[:, telling].sum(1) >= min_channels
    if incomplete.all():
        return 0
    return int(np.argmin(incomplete))


def _frames(motion: SmplMotion, index: slice) -> SmplMotion:
    return SmplMotion(motion.global_orient[index], motion.body_pose[index], motion.transl[index], motion.fps,
                      motion.name, motion.scale)


# Whole clips held out for validation (lifter, pose prior): a walk, a run, a jump, dance,
# basketball, swordplay, uneven terrain, climbing. Never train on these.
HELD_OUT_CLIPS: tuple[str, ...] = (
    "01_14", "02_03", "02_09", "03_02", "05_05", "05_13", "06_05", "06_11", "07_09", "08_07", "09_05",
)


def mocap_root() -> Path:
    """The folder of the CMU clips: $MESHSTREAM_MOCAP, else shared/data/mocap beside the
    repository (../shared) or beside its parent (../../shared, for git worktrees)."""
    import os

    from meshstream_tools import REPOSITORY as repo

    configured = os.environ.get("MESHSTREAM_MOCAP")
    candidates = [Path(configured)] if configured else [repo.parent / "shared" / "data" / "mocap", repo.parents[1] / "shared" / "data" / "mocap"]
    for root in candidates:
        if (root / "INDEX.csv").is_file():
            return root
    raise FileNotFoundError(
        f"no motion capture index (INDEX.csv) in {', '.join(str(c) for c in candidates)}; set MESHSTREAM_MOCAP to "
        "the folder holding INDEX.csv and cmu/*.bvh (the CMU clips are not shipped with the package)"
    )


@dataclass(frozen=True)
class ClipInfo:
    """One row of the mocap INDEX.csv."""

    trial: str
    path: Path
    description: str
    categories: tuple[str, ...]
    frames: int
    fps: float
    tpose_first: bool


def list_clips(split: str = "all", root: str | Path | None = None) -> list[ClipInfo]:
    """The clips of INDEX.csv. split: "all", "train" (not held out) or "validation" (HELD_OUT_CLIPS)."""
    if split not in ("all", "train", "validation"):
        raise ValueError(f"split must be 'all', 'train' or 'validation', got {split!r}")
    root = Path(root) if root is not None else mocap_root()
    clips = []
    with open(root / "INDEX.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            held_out = row["cmu_trial"] in HELD_OUT_CLIPS
            if (split == "train" and held_out) or (split == "validation" and not held_out):
                continue
            clips.append(
                ClipInfo(
                    trial=row["cmu_trial"],
                    path=root / row["file"],
                    description=row["description"],
                    categories=tuple(c for c in row["categories"].split(";") if c),
                    frames=int(row["frames"]),
                    fps=float(row["fps"]),
                    tpose_first=row["first_frame_is_cgspeed_tpose"].strip().lower() == "true",
                )
            )
    return clips


def load_clip(
    clip: ClipInfo | str | Path,
    rest_joints: np.ndarray | None = None,
    fps: float | None = 30.0,
    root: str | Path | None = None,
    lowpass_hz: float | None = MOCAP_LOWPASS_HZ,
) -> tuple[SmplMotion, np.ndarray]:
    """Read, clean and retarget one clip (an INDEX entry, a trial like "02_01", or a .bvh path).

    Steps: 1. retarget (:func:`retarget`); 2. drop the leading frames whose capture had not
    started for some joints (:func:`incomplete_leading_frames`); 3. low-pass the motion at
    ``lowpass_hz`` (:func:`lowpass`; None: keep the marker jitter); 4. resample to ``fps``.

    rest_joints: (24, 3) target T-pose joints; None uses the clip's own T-pose (mocap_rest_joints).
    fps: resample to this rate (None keeps 120 fps). Returns (motion, the rest joints used).
    """
    if isinstance(clip, ClipInfo):
        path, tpose_first = clip.path, clip.tpose_first
    elif isinstance(clip, str) and not clip.endswith(".bvh"):
        matches = [c for c in list_clips("all", root) if c.trial == clip]
        if not matches:
            raise KeyError(f"no clip {clip!r} in the mocap INDEX.csv")
        path, tpose_first = matches[0].path, matches[0].tpose_first
    else:
        path, tpose_first = Path(clip), True
    bvh = read_bvh(path)
    tpose_frame = 0 if tpose_first else None
    rest = mocap_rest_joints(bvh) if rest_joints is None else np.asarray(rest_joints, dtype=np.float32)
    motion = retarget(bvh, rest, tpose_frame=tpose_frame)
    if tpose_frame is not None:
        motion = _frames(motion, slice(incomplete_leading_frames(bvh, tpose_frame), None))
    if lowpass_hz is not None:
        motion = lowpass(motion, lowpass_hz)
    if fps is not None:
        motion = resample(motion, fps)
    return motion, rest


def iter_clips(
    split: str = "train",
    rest_joints: np.ndarray | None = None,
    fps: float | None = 30.0,
    mirror: bool = False,
    root: str | Path | None = None,
) -> Iterator[SmplMotion]:
    """Retargeted clips of a split, resampled to ``fps``; with ``mirror`` each clip's mirror
    image follows it. rest_joints None: each clip on its own T-pose skeleton."""
    for info in list_clips(split, root):
        motion, rest = load_clip(info, rest_joints, fps)
        yield motion
        if mirror:
            yield mirror_motion(motion, rest)
