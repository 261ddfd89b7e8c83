"""The shipped lifter: load the trained network, lift people's keypoints to SMPL parameters.

``Lifter.load()`` reads engines/lift/assets/lifter.pt (made by tools/train_lifter.py); its
network runs through the engine interface (:mod:`engines.lift.engine`: eager, torch.compile or
TensorRT, chosen with ``backend``, fallbacks logged).
``lifter(keypoints, boxes, intrinsics, world=None, masks=None)`` returns a :class:`LiftResult`
for P people. A person with too little evidence gets no body, never a guess: see
:func:`enough_evidence` (rows of such people are NaN and ``valid`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engines.geometry import mirror_pose
from engines.lift.camera import square_boxes
from engines.lift.network import MASK_SIZE, NUM_KEYPOINTS, LiftNetwork
from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle, nearest_rotation
from engines.skeleton import BLAZEPOSE_MIRROR

ASSET_PATH = Path(__file__).resolve().parent / "assets" / "lifter.pt"

# The rule for "no body": a keypoint counts as visible at visibility >= VISIBLE_THRESHOLD; a person
# needs at least MIN_VISIBLE_KEYPOINTS of the 33 visible, and at least one of the 4 torso keypoints
# (shoulders, hips), to be lifted.
VISIBLE_THRESHOLD = 0.5
MIN_VISIBLE_KEYPOINTS = 8
MIN_VISIBLE_TORSO = 1
_TORSO = (11, 12, 23, 24)
_BLAZEPOSE_SWAP = list(BLAZEPOSE_MIRROR)  # keypoint i of a mirror image is keypoint _BLAZEPOSE_SWAP[i]


@dataclass
class LiftResult:
    """The lifter's answer for P people, float32 tensors, camera frame (x right, y down, z forward).

    global_orient (P,3) and body_pose (P,23,3) axis-angle radians; betas (P,10); transl (P,3)
    metres; valid (P,) bool, False for people without enough evidence (their rows are NaN).
    """

    global_orient: Tensor
    body_pose: Tensor
    betas: Tensor
    transl: Tensor
    valid: Tensor

    def __len__(self) -> int:
        return int(self.global_orient.shape[0])

    def select(self, index) -> "LiftResult":
        """The rows picked by ``index`` (a bool mask or integer indices)."""
        return LiftResult(self.global_orient[index], self.body_pose[index], self.betas[index],
                          self.transl[index], self.valid[index])

    def only_valid(self) -> tuple[Tensor, "LiftResult"]:
        """(indices (K,) int64 of the valid people, their rows)."""
        indices = torch.nonzero(self.valid, as_tuple=False).reshape(-1)
        return indices, self.select(indices)


def enough_evidence(keypoints: Tensor) -> Tensor:
    """(P,33,3) keypoints -> (P,) bool: the person has enough visible keypoints to be lifted."""
    visibility = torch.nan_to_num(keypoints[..., 2], nan=0.0)
    finite = torch.isfinite(keypoints[..., :2]).all(-1)
    visible = (visibility >= VISIBLE_THRESHOLD) & finite
    torso = visible[:, list(_TORSO)].sum(1)
    return (visible.sum(1) >= MIN_VISIBLE_KEYPOINTS) & (torso >= MIN_VISIBLE_TORSO)


def crop_masks(mask: Tensor | np.ndarray, boxes: Tensor | np.ndarray, size: int = MASK_SIZE) -> Tensor:
    """Crop a full-frame person mask to each person's square box, resampled to size x size.

    mask: (H,W) one mask for everyone, or (P,H,W) one per person; float in [0,1] (or bool).
    boxes: (P,4) x0, y0, x1, y1 pixels, in the project's pixel convention (pixel (i, j) covers
    [i, i+1) x [j, j+1), its centre at i + 0.5, as engines/render and engines/pose). The box is
    made square about its centre (:func:`engines.lift.camera.square_boxes`); crop pixel (row i,
    column j) samples the frame at u = bx - b/2 + (j + 0.5) b/size, v = by - b/2 + (i + 0.5) b/size
    (bilinear, zero outside the frame). Returns (P,size,size) float32.
    """
    mask = torch.as_tensor(np.asarray(mask, dtype=np.float32) if isinstance(mask, np.ndarray) else mask).float()
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    count = boxes.shape[0]
    if mask.ndim == 2:
        mask = mask.expand(count, -1, -1)
    if mask.ndim != 3 or mask.shape[0] != count:
        raise ValueError(f"mask must be (H,W) or (P,H,W) with P = {count} boxes, got {tuple(mask.shape)}")
    height, width = mask.shape[1:]
    centre_x, centre_y, side = square_boxes(boxes)
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5          # (size,) in (-0.5, 0.5)
    u = centre_x[:, None] + side[:, None] * steps[None]                             # (P,size)
    v = centre_y[:, None] + side[:, None] * steps[None]
    grid_x = u * 2.0 / width - 1.0      # align_corners=False: -1 and 1 are the frame's outer edges
    grid_y = v * 2.0 / height - 1.0
    grid = torch.stack([grid_x[:, None, :].expand(-1, size, -1), grid_y[:, :, None].expand(-1, -1, size)], -1)
    crops = torch.nn.functional.grid_sample(mask[:, None], grid, mode="bilinear", padding_mode="zeros",
                                            align_corners=False)
    return crops[:, 0].contiguous()


class Lifter:
    """The trained lifter. Build with :meth:`load`; call on P people of one frame.

    backend: "auto" (CPU: eager; CUDA: TensorRT -> torch.compile -> eager), "eager", "compile"
    or "tensorrt" (see :func:`engines.lift.engine.create_lifter_engine`); the engine that runs
    is ``self.engine`` (``self.engine.backend`` says which).

    mirror_average: also lift each person's left/right mirror image (the keypoints reflected
    about the principal point's column, left and right swapped) and average the two answers'
    joint rotations, the mirrored one reflected back (test-time augmentation; one batch of 2P).
    """

    def __init__(self, network: LiftNetwork, device: str | torch.device = "cpu", metadata: dict | None = None,
                 backend: str = "auto", fp16: bool = False, threads: int | None = 1,
                 mirror_average: bool = True) -> None:
        """threads: torch intra-op threads while lifting (default 1: a small network on a few
        people, see :func:`engines.backends.intra_op_threads`); None leaves torch's setting."""
        from engines.lift.engine import create_lifter_engine

        self.threads = threads
        self.mirror_average = mirror_average
        self.network = network.to(device).eval()
        self.device = torch.device(device)
        self.metadata = metadata or {}
        self.engine = create_lifter_engine(self.network, backend, self.device, fp16=fp16)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu", backend: str = "auto",
             fp16: bool = False) -> "Lifter":
        """Load the shipped weights (engines/lift/assets/lifter.pt) or those at ``path``."""
        path = Path(path) if path is not None else ASSET_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"lifter weights not found at {path}; train them with "
                "`python tools/train_lifter.py` (see docs/lifter.md) or pass the path of a trained lifter.pt")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        network = LiftNetwork(**checkpoint["config"])
        state = {name: value.float() for name, value in checkpoint["state_dict"].items()}
        network.load_state_dict(state)
        return cls(network, device, checkpoint.get("metadata", {}), backend=backend, fp16=fp16)

    def __call__(
        self,
        keypoints: Tensor | np.ndarray,
        boxes: Tensor | np.ndarray,
        intrinsics: Tensor | np.ndarray,
        world: Tensor | np.ndarray | None = None,
        masks: Tensor | np.ndarray | None = None,
    ) -> LiftResult:
        """Lift P people.

        keypoints (P,33,3) x, y pixels and visibility; boxes (P,4) x0, y0, x1, y1 pixels;
        intrinsics (3,3) pixels; world (P,33,3) metres, hip-centred, camera-aligned, or None;
        masks (P,64,64) in [0,1] cropped with :func:`crop_masks`, or None.
        """
        from engines.backends import intra_op_threads

        with torch.no_grad(), intra_op_threads(self.threads if self.device.type == "cpu" else None):
            return self._lift(keypoints, boxes, intrinsics, world, masks)

    def _lift(self, keypoints, boxes, intrinsics, world, masks) -> LiftResult:
        def tensor(x):
            return torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, Tensor) else x,
                                   dtype=torch.float32, device=self.device)

        keypoints = tensor(keypoints)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
            raise ValueError(f"keypoints must be (P,33,3) (x, y pixels, visibility), got {tuple(keypoints.shape)}")
        count = keypoints.shape[0]
        boxes = tensor(boxes).reshape(-1, 4) if count else torch.zeros(0, 4, device=self.device)
        if boxes.shape[0] != count:
            raise ValueError(f"boxes must be (P,4) with P = {count}, got {tuple(boxes.shape)}")
        intrinsics = tensor(intrinsics)
        if intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be a (3,3) camera matrix, got {tuple(intrinsics.shape)}")
        if world is None:
            world_t = torch.zeros(count, NUM_KEYPOINTS, 3, device=self.device)
            world_present = torch.zeros(count, device=self.device)
        else:
            world_t = tensor(world)
            if world_t.shape != (count, NUM_KEYPOINTS, 3):
                raise ValueError(f"world landmarks must be (P,33,3) metres, got {tuple(world_t.shape)}")
            world_present = torch.isfinite(world_t).all(-1).all(-1).float()
        if masks is None:
            masks_t = torch.zeros(count, MASK_SIZE, MASK_SIZE, device=self.device)
            mask_present = torch.zeros(count, device=self.device)
        else:
            masks_t = tensor(masks)
            if masks_t.shape != (count, MASK_SIZE, MASK_SIZE):
                raise ValueError(f"masks must be (P,{MASK_SIZE},{MASK_SIZE}) crops (see crop_masks), "
                                 f"got {tuple(masks_t.shape)}")
            mask_present = torch.isfinite(masks_t).all(-1).all(-1).float()
            masks_t = torch.nan_to_num(masks_t, nan=0.0)

        valid = enough_evidence(keypoints) if count else torch.zeros(0, dtype=torch.bool, device=self.device)
        orient = torch.full((count, 3), float("nan"), device=self.device)
        pose = torch.full((count, 23, 3), float("nan"), device=self.device)
        betas = torch.full((count, 10), float("nan"), device=self.device)
        transl = torch.full((count, 3), float("nan"), device=self.device)
        if bool(valid.any()):
            index = torch.nonzero(valid, as_tuple=False).reshape(-1)
            inputs = (torch.nan_to_num(keypoints[index], nan=0.0), boxes[index], intrinsics.expand(len(index), 3, 3),
                      world_t[index], world_present[index], masks_t[index], mask_present[index])
            if self.mirror_average:
                out = _mirror_averaged(self.engine, inputs)
            else:
                out = self.engine(*inputs)
            orient[index], pose[index], betas[index], transl[index] = out[0], out[1], out[2], out[3]
        return LiftResult(orient, pose, betas, transl, valid)


def _mirror_averaged(engine, inputs: tuple) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The engine's answer for P people averaged with the answer for their mirror images.

    Steps: 1. reflect the inputs about the principal point's column (u -> 2 cx - u; world
    landmarks x -> -x; boxes and masks flipped) and swap left and right (BlazePose's mirror
    table); 2. lift the 2P people in one batch; 3. reflect the mirrored answers back (SMPL's mirror
    table, axis-angle (x, -y, -z)); 4. average each joint's two rotation matrices and project the
    mean onto the rotations (SVD), and the betas. The translation is the original's (averaging
    in the mirror's made it worse: 219 -> 232 mm on tools/eval_lifter.py).
    """
    keypoints, boxes, intrinsics, world, world_present, masks, mask_present = inputs
    count = keypoints.shape[0]
    # 1. The mirror images.
    cx = intrinsics[:, 0, 2]
    swap = _BLAZEPOSE_SWAP
    mirrored_keypoints = keypoints[:, swap].clone()
    mirrored_keypoints[..., 0] = 2.0 * cx[:, None] - mirrored_keypoints[..., 0]
    mirrored_boxes = torch.stack([2.0 * cx - boxes[:, 2], boxes[:, 1], 2.0 * cx - boxes[:, 0], boxes[:, 3]], 1)
    mirrored_world = world[:, swap] * torch.tensor([-1.0, 1.0, 1.0], dtype=world.dtype, device=world.device)
    # 2. One batch.
    out = engine(torch.cat([keypoints, mirrored_keypoints]), torch.cat([boxes, mirrored_boxes]),
                 torch.cat([intrinsics, intrinsics]), torch.cat([world, mirrored_world]),
                 torch.cat([world_present, world_present]), torch.cat([masks, masks.flip(-1)]),
                 torch.cat([mask_present, mask_present]))
    orient, pose, betas, transl = out[0], out[1], out[2], out[3]
    # 3. The mirrored answers reflected back.
    axis_angles = torch.cat([orient[:, None], pose], 1)
    back = mirror_pose(axis_angles[count:])
    # 4. Averages.
    mean = 0.5 * (axis_angle_to_matrix(axis_angles[:count]) + axis_angle_to_matrix(back))
    averaged = matrix_to_axis_angle(nearest_rotation(mean))
    return averaged[:, 0], averaged[:, 1:], 0.5 * (betas[:count] + betas[count:]), transl[:count]
