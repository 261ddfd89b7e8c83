"""The lifter's network, after Pavlakos et al. 2018: pose from keypoints, shape from the silhouette.

Inputs, per person (P people, batched; every input is a tensor so the module exports whole):

- keypoints (P,33,3): BlazePose keypoints, x, y pixels and visibility in [0,1];
- boxes (P,4): the person's box x0, y0, x1, y1 pixels (made square about its centre, see
  :mod:`engines.lift.camera`); intrinsics (3,3) pixels (or (P,3,3), one per person, as in training);
- world (P,33,3): BlazePose world landmarks, metres, hip-centred, camera-aligned axes (x right,
  y down, z away), with world_present (P,) 1.0 where given, 0.0 where not (the rows are ignored);
- masks (P,64,64): the person mask cropped to the square box (see :func:`engines.lift.crop_masks`),
  with mask_present (P,) as above.

Steps of :meth:`LiftNetwork.forward`:

1. Keypoints to box coordinates ([-1, 1] over the square box), clamped to [-4, 4], with their
   visibility; world landmarks times their flag; the box's viewing ray and size over the focal
   length (so orientation in the camera frame can account for where the person stands).
2. Pose network: an MLP with residual blocks -> 24 rotations in the continuous 6D form (the
   root's is the camera-frame global orientation) and a weak-perspective camera.
3. Shape network: a small CNN on the mask, joined with the pose network's features -> 10 betas.
4. 6D -> rotation matrices -> axis-angle; camera -> translation (formula in
   :mod:`engines.lift.camera`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engines.lift.camera import camera_to_translation, pixels_to_box, square_boxes
from engines.rotations import matrix_to_axis_angle, rot6d_to_matrix

NUM_KEYPOINTS = 33
NUM_JOINTS = 24
NUM_BETAS = 10
MASK_SIZE = 64

# The root's starting rotation: the body upright and facing the camera (a half turn about x
# takes SMPL's y-up, facing +z frame into the camera's y-down frame, facing -z).
_ROOT_START_6D = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
_JOINT_START_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class ResidualBlock(nn.Module):
    """x + Linear(SiLU(Linear(SiLU(LayerNorm(x))))), width preserved."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.first(nn.functional.silu(self.norm(x)))
        h = self.second(self.dropout(nn.functional.silu(h)))
        return x + h


class LiftNetwork(nn.Module):
    """Keypoints (+ world landmarks) + mask -> SMPL pose, betas, camera and translation.

    Args:
        width: the pose MLP's width. blocks: its residual blocks. shape_width: the shape head's
        width. dropout: inside the residual blocks (training only).
    """

    def __init__(self, width: int = 512, blocks: int = 3, shape_width: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"width": width, "blocks": blocks, "shape_width": shape_width, "dropout": dropout}
        pose_inputs = NUM_KEYPOINTS * 3 + NUM_KEYPOINTS * 3 + 1 + 3
        self.pose_in = nn.Linear(pose_inputs, width)
        self.pose_blocks = nn.Sequential(*[ResidualBlock(width, dropout) for _ in range(blocks)])
        self.pose_out_norm = nn.LayerNorm(width)
        self.rotation_head = nn.Linear(width, NUM_JOINTS * 6)
        self.camera_head = nn.Linear(width, 3)
        channels = (1, 16, 32, 64, 96)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(4, c_out), nn.SiLU()]
        self.mask_encoder = nn.Sequential(*layers)
        self.mask_fc = nn.Linear(channels[-1] * 16, shape_width)
        self.shape_mlp = nn.Sequential(
            nn.Linear(shape_width + width + 1, shape_width), nn.SiLU(),
            nn.Linear(shape_width, shape_width), nn.SiLU(),
            nn.Linear(shape_width, NUM_BETAS),
        )
        # Start from an upright body facing the camera, in its rest pose, about 1.9 m across the box.
        nn.init.zeros_(self.rotation_head.weight)
        nn.init.zeros_(self.camera_head.weight)
        start = torch.tensor([_ROOT_START_6D] + [_JOINT_START_6D] * (NUM_JOINTS - 1)).reshape(-1)
        self.register_buffer("rotation_start", start, persistent=False)
        with torch.no_grad():
            self.rotation_head.bias.zero_()
            self.camera_head.bias.zero_()

    def forward(
        self,
        keypoints: Tensor,
        boxes: Tensor,
        intrinsics: Tensor,
        world: Tensor,
        world_present: Tensor,
        masks: Tensor,
        mask_present: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Shapes in the module docstring. Returns, all float32:

        global_orient (P,3) axis-angle, camera frame; body_pose (P,23,3) axis-angle;
        betas (P,10); transl (P,3) metres, camera frame; rotations (P,24,3,3);
        camera (P,3) weak-perspective (s per metre, tx, ty metres).
        """
        count = keypoints.shape[0]
        # 1. Inputs.
        visibility = keypoints[..., 2:3].clamp(0.0, 1.0)
        in_box = pixels_to_box(keypoints[..., :2], boxes).clamp(-4.0, 4.0)
        centre_x, centre_y, side = square_boxes(boxes)
        fx, fy, cx, cy = intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]
        ray = torch.stack([(centre_x - cx) / fx, (centre_y - cy) / fy, side / fx], -1)
        present = world_present.reshape(count, 1)
        world_in = torch.nan_to_num(world, nan=0.0).clamp(-2.0, 2.0).reshape(count, -1) * present
        features = torch.cat([torch.cat([in_box, visibility], -1).reshape(count, -1), world_in, present, ray], -1)
        # 2. Pose network.
        h = self.pose_blocks(self.pose_in(features))
        h = nn.functional.silu(self.pose_out_norm(h))
        rot6d = (self.rotation_head(h) + self.rotation_start).reshape(count, NUM_JOINTS, 6)
        raw_camera = self.camera_head(h)
        camera = torch.cat([torch.exp(raw_camera[:, :1].clamp(-5.0, 5.0)), raw_camera[:, 1:]], -1)
        # 3. Shape network.
        mask_flag = mask_present.reshape(count, 1)
        m = self.mask_encoder(masks.reshape(count, 1, MASK_SIZE, MASK_SIZE) * mask_flag[..., None, None])
        m = nn.functional.silu(self.mask_fc(m.reshape(count, -1))) * mask_flag
        betas = self.shape_mlp(torch.cat([m, h, mask_flag], -1))
        # 4. Outputs.
        rotations = rot6d_to_matrix(rot6d)
        axis_angle = matrix_to_axis_angle(rotations)
        transl = camera_to_translation(camera, boxes, intrinsics)
        return axis_angle[:, 0], axis_angle[:, 1:], betas, transl, rotations, camera
