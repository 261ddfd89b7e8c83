"""Posing only what a fit needs: the landmarks and joints of a body model, not its whole mesh.

A fit evaluates the body tens of times per frame but looks only at the 33 landmarks, which the
model's landmark regressor builds from a few hundred vertices at most. :class:`LandmarkPoser`
skins just those vertices with the model's own buffers and functions, so its landmarks equal
the full model's (to rounding) at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from engines.body.model import BodyModel
from engines.body.skinning import pose_rotations, shape_joints, shape_vertices, skin


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

    def forward(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor, transl: Tensor) -> tuple[Tensor, Tensor]:
        v_shaped = shape_vertices(self.v_template_t, self.shapedirs, betas)  # (B,3,V')
        rest_joints = shape_joints(self.j_template, self.j_shapedirs, betas)
        rotations = pose_rotations(global_orient, body_pose, self._chain_dtype)
        vertices, joints = skin(v_shaped, rest_joints, rotations, self.parents, self._levels,
                                self.lbs_weights_t, self.posedirs, self._chain_dtype)
        landmarks = (vertices[:, :, self.vertex_index] * self.vertex_weight).sum(-1).transpose(1, 2)
        landmarks = landmarks + self.joint_weight @ joints
        return landmarks + transl[:, None], joints + transl[:, None]
