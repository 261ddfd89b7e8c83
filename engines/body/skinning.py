"""Linear blend skinning for SMPL-style body models, as plain tensor functions.

The functions here hold no state; :class:`engines.body.model.BodyModel` owns the buffers and
calls them. They avoid data-dependent Python control flow, so a module built on them passes
``torch.export`` with a dynamic batch dimension.

Notation (body-model code only): ``B`` batch, ``V`` vertices, ``J`` joints (24), ``NB`` betas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engines.rotations import axis_angle_to_matrix


def shape_vertices(v_template: Tensor, shapedirs: Tensor, betas: Tensor) -> Tensor:
    """Rest-pose vertices for these shapes.

    v_template (V,3), shapedirs (NB, V*3), betas (B,NB) -> v_shaped (B,V,3).
    """
    offsets = betas @ shapedirs  # (B, V*3)
    return v_template + offsets.reshape(betas.shape[0], -1, 3)


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
    """A kinematic tree split into levels of equal depth, for one batched product per level.

    order: joints listed level by level (root first); level_slices: (start, stop) of each level
    in ``order``; parent_positions: for each level, the positions in ``order`` of its joints'
    parents; inverse_order: position of each joint in ``order``.
    """

    order: tuple[int, ...]
    level_slices: tuple[tuple[int, int], ...]
    parent_positions: tuple[tuple[int, ...], ...]
    inverse_order: tuple[int, ...]

    @staticmethod
    def from_parents(parents: list[int] | tuple[int, ...]) -> "KinematicLevels":
        depth = []
        for joint, parent in enumerate(parents):
            if parent < 0:
                depth.append(0)
            elif parent >= joint:
                raise ValueError(f"joint {joint} has parent {parent}; parents must come before children")
            else:
                depth.append(depth[parent] + 1)
        order: list[int] = []
        slices = []
        for level in range(max(depth) + 1):
            members = [j for j in range(len(parents)) if depth[j] == level]
            slices.append((len(order), len(order) + len(members)))
            order.extend(members)
        position = {joint: i for i, joint in enumerate(order)}
        parent_positions = tuple(
            tuple(position[parents[j]] for j in order[start:stop]) for start, stop in slices[1:]
        )
        inverse = tuple(position[j] for j in range(len(parents)))
        if depth.count(0) != 1 or order[0] != 0:
            raise ValueError("the kinematic tree must have exactly one root, joint 0")
        return KinematicLevels(tuple(order), tuple(slices), parent_positions, inverse)


def forward_kinematics(
    rotations: Tensor, rest_joints: Tensor, parents: Tensor, levels: KinematicLevels
) -> tuple[Tensor, Tensor]:
    """World rotations and positions of every joint.

    rotations (B,J,3,3) local rotations (root's is global); rest_joints (B,J,3); parents (J,)
    int64 (root's entry unused). -> world_rotations (B,J,3,3), world_positions (B,J,3).

    Steps: 1. bone vectors from each parent in the rest pose; 2. level by level, a joint's world
    rotation is its parent's times its own and its position is its parent's position plus the
    parent's world rotation applied to the bone; 3. restore SMPL's joint order.
    """
    # 1. Bone vectors (the root's "bone" is its rest position).
    parent_joints = rest_joints[:, parents.clamp(min=0)]
    root_mask = (parents < 0).to(rest_joints.dtype)[None, :, None]
    bones = rest_joints - parent_joints * (1.0 - root_mask)
    order = list(levels.order)
    ordered_rotations = rotations[:, order]
    ordered_bones = bones[:, order]
    # 2. Level by level.
    world_rotations = ordered_rotations[:, 0:1]
    world_positions = ordered_bones[:, 0:1]
    for (start, stop), parent_positions in zip(levels.level_slices[1:], levels.parent_positions):
        parent_index = list(parent_positions)
        parent_rotations = world_rotations[:, parent_index]
        new_rotations = parent_rotations @ ordered_rotations[:, start:stop]
        new_positions = (parent_rotations @ ordered_bones[:, start:stop, :, None]).squeeze(-1)
        new_positions = new_positions + world_positions[:, parent_index]
        world_rotations = torch.cat([world_rotations, new_rotations], dim=1)
        world_positions = torch.cat([world_positions, new_positions], dim=1)
    # 3. Back to joint order.
    inverse = list(levels.inverse_order)
    return world_rotations[:, inverse], world_positions[:, inverse]


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
    lbs_weights: Tensor,
    posedirs: Tensor | None,
    chain_dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Pose the shaped body.

    v_shaped (B,V,3) or (1,V,3); rest_joints (B,J,3); rotations (B,J,3,3) local;
    lbs_weights (V,J); posedirs ((J-1)*9, V*3) or None. The kinematic chain runs in
    ``chain_dtype`` (float32 when the model is float16: 24 joints cost nothing and the chain
    accumulates rounding). -> vertices (B,V,3), joints (B,J,3), both relative to the origin
    of the rest pose (no translation applied).

    Steps: 1. pose correctives; 2. forward kinematics; 3. per-joint transforms that map rest
    positions to posed ones; 4. blend them per vertex and apply.
    """
    dtype = v_shaped.dtype
    batch = rotations.shape[0]
    # 1. Pose correctives.
    v_posed = v_shaped
    if posedirs is not None:
        offsets = pose_feature(rotations.to(dtype)) @ posedirs
        v_posed = v_shaped + offsets.reshape(batch, -1, 3)
    # 2. Forward kinematics.
    world_rotations, world_positions = forward_kinematics(
        rotations.to(chain_dtype), rest_joints.to(chain_dtype), parents, levels
    )
    # 3. x_posed = R_world (x_rest - j_rest) + j_world = R_world x_rest + offset.
    offsets = world_positions - (world_rotations @ rest_joints.to(chain_dtype)[..., None]).squeeze(-1)
    transforms = torch.cat([world_rotations.flatten(2), offsets], dim=2).to(dtype)  # (B,J,12)
    # 4. Blend per vertex.
    blended = lbs_weights @ transforms  # (B,V,12)
    blended_rotations = blended[..., :9].reshape(batch, -1, 3, 3)
    vertices = (blended_rotations @ v_posed[..., None]).squeeze(-1) + blended[..., 9:]
    return vertices, world_positions.to(dtype)


def pose_rotations(global_orient: Tensor, body_pose: Tensor, chain_dtype: torch.dtype) -> Tensor:
    """Axis-angle root (B,3) and body (B,J-1,3) -> local rotation matrices (B,J,3,3)."""
    axis_angles = torch.cat([global_orient[:, None], body_pose], dim=1).to(chain_dtype)
    return axis_angle_to_matrix(axis_angles)
