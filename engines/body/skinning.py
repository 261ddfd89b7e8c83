"""Linear blend skinning for SMPL-style body models, as plain tensor functions.

The functions here hold no state; :class:`engines.body.model.BodyModel` owns the buffers and
calls them. They avoid data-dependent Python control flow, so a module built on them passes
``torch.export`` with a dynamic batch dimension.

Notation (body-model code only): ``B`` batch, ``V`` vertices, ``J`` joints (24), ``NB`` betas.

Layout: inside the skinning path vertices are coordinate-major, (B,3,V), and the shape and
pose directions are stored to match ((NB, 3*V), (P, 3*V)). Every per-vertex operation then
runs over contiguous rows of V values, which is what makes batch-1 skinning cheap on a CPU;
the output is turned back into the public (B,V,3) layout once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engines.rotations import axis_angle_to_matrix


def shape_vertices(v_template: Tensor, shapedirs: Tensor, betas: Tensor) -> Tensor:
    """Rest-pose vertices for these shapes, coordinate-major.

    v_template (3,V), shapedirs (NB, 3*V), betas (B,NB) -> v_shaped (B,3,V).
    """
    offsets = betas @ shapedirs  # (B, 3*V)
    return v_template + offsets.reshape(betas.shape[0], 3, -1)


def shape_joints(j_template: Tensor, j_shapedirs: Tensor, betas: Tensor) -> Tensor:
    """Rest-pose joints for these shapes, without touching the vertices.

    Joints are J_regressor @ v_shaped, which is linear in betas, so the regressor is folded
    into the template and the shape directions once: j_template (J,3) = J_regressor @
    v_template and j_shapedirs (NB, J*3) = J_regressor applied to each shape direction.
    -> (B,J,3).
    """
    return j_template + (betas @ j_shapedirs).reshape(betas.shape[0], -1, 3)


@dataclass(frozen=True)
class KinematicLevels:
    """A kinematic tree prepared for forward kinematics by pointer jumping.

    Each joint's world transform is the product of the local transforms on its path from the
    root. Pointer jumping gets all of them in ceil(log2(depth + 1)) batched products (4 for
    SMPL's tree of depth 8) instead of one per level: at step s every joint multiplies in the
    partial product of its current ancestor ``ancestors[s][j]`` and jumps to that ancestor's
    ancestor. Index J stands for "above the root" (an identity transform).

    parents: the tree; ancestors: per step, each joint's ancestor index (J when past the root).
    """

    parents: tuple[int, ...]
    ancestors: tuple[tuple[int, ...], ...]

    @staticmethod
    def from_parents(parents: list[int] | tuple[int, ...]) -> "KinematicLevels":
        count = len(parents)
        for joint, parent in enumerate(parents):
            if parent >= joint:
                raise ValueError(f"joint {joint} has parent {parent}; parents must come before children")
        if parents[0] >= 0 or any(p < 0 for p in parents[1:]):
            raise ValueError("the kinematic tree must have exactly one root, joint 0")
        current = [p if p >= 0 else count for p in parents] + [count]
        steps = []
        while any(a != count for a in current[:count]):
            steps.append(tuple(current[:count]))
            current = [current[a] for a in current]
        return KinematicLevels(tuple(int(p) for p in parents), tuple(steps))


def forward_kinematics(
    rotations: Tensor, rest_joints: Tensor, parents: Tensor, levels: KinematicLevels
) -> tuple[Tensor, Tensor]:
    """World rotations and positions of every joint.

    rotations (B,J,3,3) local rotations (root's is global); rest_joints (B,J,3); parents (J,)
    int64 (root's entry unused). -> world_rotations (B,J,3,3), world_positions (B,J,3).

    Steps: 1. each joint's local rigid transform (4x4): its rotation, and the bone from its
    parent in the rest pose (the root's "bone" is its rest position); 2. pointer jumping (see
    :class:`KinematicLevels`): a few batched products give every joint's world transform.
    """
    # 1. Local transforms, plus an identity at index J.
    parent_joints = rest_joints[:, parents.clamp(min=0)]
    root_mask = (parents < 0).to(rest_joints.dtype)[None, :, None]
    bones = rest_joints - parent_joints * (1.0 - root_mask)
    batch, count = rotations.shape[:2]
    top = torch.cat([rotations, bones[..., None]], dim=-1)  # (B,J,3,4)
    bottom = torch.zeros(1, 1, 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 3] = 1.0
    local = torch.cat([top, bottom.expand(batch, count, 1, 4)], dim=-2)  # (B,J,4,4)
    identity = torch.eye(4, dtype=top.dtype, device=top.device).expand(batch, 1, 4, 4)
    # 2. Pointer jumping.
    partial = torch.cat([local, identity], dim=1)  # (B,J+1,4,4)
    for ancestors in levels.ancestors:
        partial = torch.cat([partial[:, list(ancestors)] @ partial[:, :count], identity], dim=1)
    world = partial[:, :count]
    return world[..., :3, :3], world[..., :3, 3]


def pose_feature(rotations: Tensor) -> Tensor:
    """SMPL's pose-corrective input: (R - I) of every non-root joint, flattened.

    rotations (B,J,3,3) -> (B, (J-1)*9).
    """
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).flatten(1)


def skin(
    v_shaped: Tensor,
    rest_joints: Tensor,
    rotations: Tensor,
    parents: Tensor,
    levels: KinematicLevels,
    lbs_weights_t: Tensor,
    posedirs: Tensor | None,
    chain_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Pose the shaped body.

    v_shaped (B,3,V) coordinate-major; rest_joints (B,J,3); rotations (B,J,3,3) local;
    lbs_weights_t (J,V) (the skinning weights, transposed); posedirs ((J-1)*9, 3*V)
    coordinate-major, or None. The kinematic chain runs in ``chain_dtype`` (float32 when the
    model is float16: 24 joints cost nothing and the chain accumulates rounding).
    -> vertices (B,3,V) coordinate-major, joints (B,J,3), both relative to the origin of the
    rest pose (no translation applied).

    Steps: 1. pose correctives; 2. forward kinematics; 3. per-joint transforms that map rest
    positions to posed ones; 4. blend them per vertex and apply.
    """
    dtype = v_shaped.dtype
    batch = rotations.shape[0]
    # 1. Pose correctives.
    v_posed = v_shaped
    if posedirs is not None:
        offsets = pose_feature(rotations.to(dtype)) @ posedirs
        v_posed = v_shaped + offsets.reshape(batch, 3, -1)
    # 2. Forward kinematics.
    world_rotations, world_positions = forward_kinematics(
        rotations.to(chain_dtype), rest_joints.to(chain_dtype), parents, levels
    )
    # 3. x_posed = R_world (x_rest - j_rest) + j_world = R_world x_rest + offset.
    offsets = world_positions - (world_rotations @ rest_joints.to(chain_dtype)[..., None]).squeeze(-1)
    # (B,12,J): rows R[:,0] (3 rows), R[:,1], R[:,2], offset -- the rotation's columns, then t.
    transforms = torch.cat([world_rotations.transpose(-1, -2).reshape(batch, -1, 9), offsets], dim=2)
    transforms = transforms.transpose(1, 2).to(dtype)
    # 4. Blend per vertex: (B,12,J) @ (J,V) -> (B,12,V), then x' = t + R[:,0] x + R[:,1] y + R[:,2] z.
    blended = transforms @ lbs_weights_t
    v_posed = v_posed.expand(batch, -1, -1)
    vertices = torch.addcmul(blended[:, 9:12], blended[:, 0:3], v_posed[:, 0:1])
    vertices = torch.addcmul(vertices, blended[:, 3:6], v_posed[:, 1:2])
    vertices = torch.addcmul(vertices, blended[:, 6:9], v_posed[:, 2:3])
    return vertices, world_positions.to(dtype)


def pose_rotations(global_orient: Tensor, body_pose: Tensor, chain_dtype: torch.dtype) -> Tensor:
    """Axis-angle root (B,3) and body (B,J-1,3) -> local rotation matrices (B,J,3,3)."""
    axis_angles = torch.cat([global_orient[:, None], body_pose], dim=1).to(chain_dtype)
    return axis_angle_to_matrix(axis_angles)
