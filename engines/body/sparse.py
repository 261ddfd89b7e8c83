"""Posing only what a fit needs: the landmarks and joints of a body model, not its whole mesh.

A fit evaluates the body tens of times per frame but looks only at the 33 landmarks, which the
model's landmark regressor builds from a few hundred vertices at most. :class:`LandmarkPoser`
skins just those vertices with the model's own buffers and functions, so its landmarks equal
the full model's (to rounding) at a fraction of the cost.

:meth:`LandmarkPoser.linearize` goes further for fitting: it gives the landmarks and their exact
Jacobian with respect to the pose's axis-angles and the translation, with plain batched tensor
operations (no automatic differentiation). Linear blend skinning makes each landmark a sum of
per-joint contributions,

    landmark_l = sum_k [ G_k S_lk + s_lk (p_k - G_k r_k) + c_lk p_k ] + transl,

with G_k, p_k joint k's world rotation and position, r_k its rest position, S_lk = sum_v
m_lv w_kv x_v the landmark regressor (m) and skinning weights (w) folded into the shaped (and
pose-corrected) vertices x, s_lk = sum_v m_lv w_kv and c_lk the landmark's weight on joint k
itself. Turning joint j by a small angle a (world axes) about p_j moves everything below it, so

    d landmark_l = a x ( sum_{k below j} contribution_lk - (sum_{k below j} s_lk + c_lk) p_j ),

and an axis-angle component theta_jc turns joint j about the world axis G_parent(j) J(theta_j) e_c,
with J SO(3)'s left Jacobian. Pose correctives (SMPL files) add their own linear term.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from engines.body.model import BodyModel
from engines.body.skinning import forward_kinematics, pose_rotations, shape_joints, shape_vertices, skin
from engines.rotations import axis_angle_to_matrix, left_jacobian, skew  # noqa: F401 (skew: re-exported)


class LandmarkPoser(nn.Module):
    """Landmarks (B,33,3) and joints (B,24,3) of ``model``, posing only the vertices they use.

    forward(global_orient (B,3), body_pose (B,23,3), betas (B,10), transl (B,3))
        -> (landmarks (B,33,3), joints (B,24,3)) in the frame of global_orient/transl, metres.
    Differentiable in every input; holds views of the model's buffers (no copy of the mesh).
    """

    def __init__(self, model: BodyModel):
        super().__init__()
        rows = len(model._landmark_joint_weight) - 17  # BlazePose rows come first, then COCO's
        index = model._landmark_index[:33].detach().cpu().numpy()
        if rows != 33:
            raise ValueError(f"expected 33 BlazePose landmark rows, found {rows}")
        used, local_index = np.unique(index.reshape(-1), return_inverse=True)
        used_t = torch.as_tensor(used, device=model.device)
        num_betas = model.shapedirs.shape[0]
        # Coordinate-major layouts, as the model's: (3,V') template, (NB, 3*V') directions.
        self.register_buffer("v_template_t", model.v_template_t[:, used_t].clone())
        shapedirs = model.shapedirs.reshape(num_betas, 3, -1)[:, :, used_t].reshape(num_betas, -1)
        self.register_buffer("shapedirs", shapedirs.clone())
        self.register_buffer("lbs_weights_t", model.lbs_weights_t[:, used_t].clone())
        if model.posedirs is not None:
            posedirs = model.posedirs.reshape(model.posedirs.shape[0], 3, -1)[:, :, used_t]
            self.register_buffer("posedirs", posedirs.reshape(model.posedirs.shape[0], -1).clone())
        else:
            self.posedirs = None
        self.register_buffer("j_template", model.j_template)
        self.register_buffer("j_shapedirs", model.j_shapedirs)
        self.register_buffer("parents", model.parents_tensor)
        self.register_buffer("vertex_index", torch.as_tensor(local_index.reshape(index.shape), device=model.device))
        self.register_buffer("vertex_weight", model._landmark_weight[:33])
        self.register_buffer("joint_weight", model._landmark_joint_weight[:33])
        self._levels = model._levels
        self._chain_dtype = model._chain_dtype()
        self.num_vertices_posed = int(len(used))
        self._prepare_linearization(model, used_t, torch.as_tensor(local_index.reshape(index.shape)))

    def _prepare_linearization(self, model: BodyModel, used: Tensor, local_index: Tensor) -> None:
        """Fold the landmark regressor into the skinning weights (see the module's docstring).

        Buffers, float64 folded then stored in the chain's dtype (J = 24 joints, V' used vertices):
        lin_regress (33*J, V') m_lv w_kv; lin_skin_sum (33,J) s_lk; lin_joint (33,J) c_lk;
        lin_below (J,J) 1 where k is j or below it; lin_lever (33,J) sum_{k below j} s_lk + c_lk;
        lin_posedirs (33*J, (J-1)*9*3) the pose correctives folded likewise, or None.
        """
        dtype = self._chain_dtype
        count = len(used)
        joints = model.lbs_weights_t.shape[0]
        regressor = torch.zeros(33, count, dtype=torch.float64)
        regressor.scatter_add_(1, local_index, model._landmark_weight[:33].double().cpu())
        skin_weights = model.lbs_weights_t[:, used].double().cpu()                     # (J,V')
        folded = regressor[:, None, :] * skin_weights[None]                              # (33,J,V')
        below = torch.zeros(joints, joints, dtype=torch.float64)
        parents = model.parents_tensor.tolist()
        for joint in range(joints):
            node = joint
            while node >= 0:
                below[node, joint] = 1.0
                node = parents[node] if node > 0 else -1
        skin_sum = folded.sum(-1)
        joint_weight = model._landmark_joint_weight[:33].double().cpu()
        lever = (skin_sum + joint_weight) @ below.T
        device = model.device
        self.register_buffer("lin_regress", folded.reshape(33 * joints, count).to(device, dtype))
        self.register_buffer("lin_skin_sum", skin_sum.to(device, dtype))
        self.register_buffer("lin_joint", joint_weight.to(device, dtype))
        self.register_buffer("lin_below", below.to(device, dtype))
        self.register_buffer("lin_lever", lever.to(device, dtype))
        if model.posedirs is not None:
            posedirs = model.posedirs.reshape(model.posedirs.shape[0], 3, -1)[:, :, used].double().cpu()
            posed = torch.einsum("lv,fcv->lfc", folded.reshape(33 * joints, count), posedirs)
            self.register_buffer("lin_posedirs", posed.reshape(33 * joints, -1).to(device, dtype))
        else:
            self.lin_posedirs = None
        self._parents_list = parents
        self._shape_key: tuple | None = None
        self._shape_value: tuple[Tensor, Tensor] | None = None

    def _folded_shape(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        """(S (B,33,J,3) from the shaped vertices, rest joints (B,J,3)); cached for equal betas
        (a fit evaluates one shape many times)."""
        key = (betas.shape, betas.dtype, betas.device, betas.detach().cpu().numpy().tobytes())
        if self._shape_key == key and not betas.requires_grad:
            return self._shape_value
        dtype = self._chain_dtype
        v_shaped = shape_vertices(self.v_template_t, self.shapedirs, betas).to(dtype)   # (B,3,V')
        folded = (self.lin_regress @ v_shaped.transpose(1, 2)).reshape(betas.shape[0], 33, -1, 3)
        rest = shape_joints(self.j_template, self.j_shapedirs, betas).to(dtype)
        self._shape_key, self._shape_value = key, (folded, rest)
        return folded, rest

    def linearize(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor, transl: Tensor,
                  jacobian: bool = True, local: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Landmarks (B,33,3) and their Jacobian (B,33,3,75) with respect to the unknowns
        [global_orient (3), body_pose (69), transl (3)] (axis-angle radians, metres), exactly;
        ``jacobian=False`` skips it (None). Not differentiable by autograd (use forward for that).
        ``local``: the rotation matrices and left Jacobians (B,J,3,3) of [global_orient,
        body_pose] if the caller has them (engines.rotations.matrix_and_left_jacobian).

        Steps: 1. local rotations, their left Jacobians, forward kinematics; 2. the folded
        shaped vertices (+ pose correctives) S_lk; 3. per-joint contributions and the landmarks;
        4. the rigid part of the Jacobian, a cross product per (landmark, joint);
        5. the pose correctives' part; 6. the translation's part (identity).
        """
        dtype = self._chain_dtype
        batch = global_orient.shape[0]
        joints = self.lin_below.shape[0]
        # 1. Rotations and kinematics.
        if local is None:
            axis_angles = torch.cat([global_orient[:, None], body_pose], 1).to(dtype)  # (B,J,3)
            rotations = axis_angle_to_matrix(axis_angles)
            local_axes = left_jacobian(axis_angles) if jacobian else None
        else:
            rotations, local_axes = local[0].to(dtype), local[1].to(dtype)
        folded, rest = self._folded_shape(betas)
        world_rot, world_pos = forward_kinematics(rotations, rest, self.parents, self._levels)
        # 2. Pose correctives folded into S.
        if self.lin_posedirs is not None:
            eye = torch.eye(3, dtype=dtype, device=rotations.device)
            feature = (rotations[:, 1:] - eye).reshape(batch, -1)                       # (B,(J-1)*9)
            per_feature = self.lin_posedirs.reshape(33 * joints, -1, 3)                 # (33J,(J-1)*9,3)
            folded = folded + torch.einsum("bf,nfc->bnc", feature, per_feature).reshape(batch, 33, joints, 3)
        # 3. Contributions Q_lk = G_k S_lk + s_lk (p_k - G_k r_k) + c_lk p_k.
        rotated = torch.einsum("bkcd,blkd->blkc", world_rot, folded)
        offset = world_pos - (world_rot @ rest[..., None])[..., 0]                       # (B,J,3)
        contribution = (rotated + self.lin_skin_sum[None, :, :, None] * offset[:, None]
                        + self.lin_joint[None, :, :, None] * world_pos[:, None])
        landmarks = contribution.sum(2) + transl[:, None].to(dtype)
        if not jacobian:
            return landmarks, None
        # 4. Rigid part: column (j, c) = axis_jc x (sum_{k below j} Q_lk - lever_lj p_j).
        lever = (torch.einsum("blkc,jk->bljc", contribution, self.lin_below)
                 - self.lin_lever[None, :, :, None] * world_pos[:, None])              # (B,33,J,3)
        parent_rot = torch.cat([torch.eye(3, dtype=dtype, device=rotations.device).expand(batch, 1, 3, 3),
                                world_rot[:, [max(p, 0) for p in self._parents_list[1:]]]], 1)
        axes = parent_rot @ local_axes                                                   # (B,J,3,3) world axes, columns
        # cross(axis_c, lever) for each c: (B,33,J,3 xyz,3 c)
        jac = torch.linalg.cross(axes.transpose(-1, -2)[:, None], lever[:, :, :, None].expand(-1, -1, -1, 3, -1), dim=-1)
        jac = jac.transpose(-1, -2)                                                      # (B,33,J,xyz,c)
        # 5. Pose correctives: d S_lk / d theta_jc = posedirs_lk,j . vec(skew(J e_c) R_j), rotated by G_k.
        if self.lin_posedirs is not None:
            d_rot = skew(local_axes[:, 1:].transpose(-1, -2)) @ rotations[:, 1:, None]   # (B,J-1,c,3,3)
            per_joint = self.lin_posedirs.reshape(33, joints, joints - 1, 9, 3)
            d_folded = torch.einsum("lkjfd,bjcf->blkjcd", per_joint, d_rot.reshape(batch, joints - 1, 3, 9))
            d_corr = torch.einsum("bkxd,blkjcd->bljxc", world_rot, d_folded)              # (B,33,J-1,xyz,c)
            jac = torch.cat([jac[:, :, :1], jac[:, :, 1:] + d_corr], 2)
        jac = jac.permute(0, 1, 3, 2, 4).reshape(batch, 33, 3, joints * 3)
        # 6. Translation.
        eye = torch.eye(3, dtype=dtype, device=jac.device).expand(batch, 33, 3, 3)
        return landmarks, torch.cat([jac, eye], -1)

    def landmarks(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor, transl: Tensor) -> Tensor:
        """Landmarks (B,33,3) only, by the folded path of :meth:`linearize` (no autograd)."""
        return self.linearize(global_orient, body_pose, betas, transl, jacobian=False)[0]

    def forward(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor, transl: Tensor) -> tuple[Tensor, Tensor]:
        v_shaped = shape_vertices(self.v_template_t, self.shapedirs, betas)  # (B,3,V')
        rest_joints = shape_joints(self.j_template, self.j_shapedirs, betas)
        rotations = pose_rotations(global_orient, body_pose, self._chain_dtype)
        vertices, joints = skin(v_shaped, rest_joints, rotations, self.parents, self._levels,
                                self.lbs_weights_t, self.posedirs, self._chain_dtype)
        landmarks = (vertices[:, :, self.vertex_index] * self.vertex_weight).sum(-1).transpose(1, 2)
        landmarks = landmarks + self.joint_weight @ joints
        return landmarks + transl[:, None], joints + transl[:, None]
