"""Synthetic people for training and evaluating the lifter, made on the fly from a body model.

A batch is made in these steps (:meth:`SyntheticPeople.sample`):

1. Pose: a motion-capture pose (SMPL 24-joint axis-angle, model frame: y up, facing +z), mirrored
   left/right half the time, sometimes with its arms taken from another pose, perturbed by small
   rotations (knees and elbows never pushed past straight), turned about the vertical axis at
   random, then taken into the camera frame (x right, y down, z forward) with a random camera
   elevation.
2. Shape: betas ~ N(0, 1), clipped to [-3, 3].
3. Camera and placement: a random image size and horizontal field of view (35-85 degrees); the
   body is placed so that it spans 25-95 % of the image's shorter side, mostly inside the frame
   (sometimes partly out).
4. Detector-like keypoints: the body's 33 BlazePose landmarks projected, with pixel noise
   proportional to the box size, rare outliers, dropouts, and low visibility (with more noise)
   for landmarks hidden behind the body (a coarse z-buffer of the vertices) or out of the frame,
   and sometimes a whole limb.
5. The person's box from the projected mesh or from the keypoints, enlarged and jittered.
6. World landmarks (hip-centred, camera axes) with noise in position, scale and rotation,
   present 70 % of the time; silhouettes from a bank rendered with engines.render (see
   :func:`render_mask_bank`), degraded like a segmentation network's output.

Everything is batched torch on the CPU and driven by one ``torch.Generator`` (seeded runs repeat).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engines.geometry import mirror_pose
from engines.lift.camera import square_boxes
from engines.lift.network import MASK_SIZE
from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle

HOLDOUT_FILE = Path(__file__).resolve().parent / "holdout.txt"

# body_pose indices (SMPL joint index - 1).
_KNEES = (3, 4)
_LEFT_ELBOW, _RIGHT_ELBOW = 17, 18
_ARM_JOINTS = (12, 13, 15, 16, 17, 18, 19, 20, 21, 22)  # collars, shoulders, elbows, wrists, hands
# BlazePose limbs that may be occluded as a whole.
_LIMBS = (
    (13, 15, 17, 19, 21), (14, 16, 18, 20, 22),                  # left arm, right arm
    (25, 27, 29, 31), (26, 28, 30, 32),                          # left leg, right leg
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),                          # face
)
_IMAGE_SIZES = ((1280, 720), (720, 1280), (1920, 1080), (640, 480), (480, 640), (1080, 1080))


def read_holdout(path: Path = HOLDOUT_FILE) -> list[str]:
    """The held-out CMU trials (e.g. "02_02"), one per line; '#' starts a comment."""
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def list_clips(mocap_dir: Path) -> list[tuple[str, Path, bool]]:
    """(trial, bvh path, first frame is a T-pose) for every clip listed in INDEX.csv."""
    rows = []
    with open(Path(mocap_dir) / "INDEX.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append((row["cmu_trial"], Path(mocap_dir) / row["file"],
                         row["first_frame_is_cgspeed_tpose"].strip().lower() == "true"))
    return rows


def rotation_about(axis: int, angle: Tensor) -> Tensor:
    """(B,) radians -> (B,3,3) rotation about the x (0), y (1) or z (2) axis."""
    vector = torch.zeros(angle.shape[0], 3, dtype=angle.dtype)
    vector[:, axis] = angle
    return axis_angle_to_matrix(vector)


@dataclass
class SyntheticBatch:
    """B synthetic people, ground truth and detector-like observations. Camera frame, metres, pixels."""

    global_orient: Tensor   # (B,3) axis-angle, camera frame
    body_pose: Tensor       # (B,23,3)
    betas: Tensor           # (B,10)
    transl: Tensor          # (B,3)
    rotations: Tensor       # (B,24,3,3) the root's in the camera frame
    vertices: Tensor        # (B,V,3) camera frame
    joints: Tensor          # (B,24,3)
    landmarks: Tensor       # (B,33,3) exact 3D landmarks
    intrinsics: Tensor      # (B,3,3)
    image_size: Tensor      # (B,2) width, height pixels
    boxes: Tensor           # (B,4) x0, y0, x1, y1 pixels
    keypoints: Tensor       # (B,33,3) noisy pixels + visibility
    world: Tensor           # (B,33,3) noisy hip-centred landmarks (zeros when absent)
    world_present: Tensor   # (B,) 1.0 / 0.0
    masks: Tensor           # (B,64,64) degraded silhouettes (zeros when absent)
    mask_present: Tensor    # (B,) 1.0 / 0.0


# Frame-to-frame correlation of every random draw of the noise in a synthetic video sequence
# (SyntheticPeople's frame_correlation). BlazePose's real errors on rendered video persist: the
# second difference of its 2D keypoint error over three frames is 0.56-0.59 times the error
# (1.24-1.34 % of the person's size), where errors independent per frame give 2.45 times.
# 0.8 is the smallest correlation that brings the synthetic jitter down to the detector's
# (1.32 %); the world landmarks then jitter 73 mm against the detector's 53-56 mm.
# tools/measure_detector_noise.py measures both.
DETECTOR_FRAME_CORRELATION = 0.8


class SyntheticPeople:
    """Draws :class:`SyntheticBatch` es from a body model and a bank of poses.

    Args:
        model: an engines.body BodyModel.
        poses: (N,24,3) SMPL axis-angle poses in the model frame (root included).
        generator: the torch.Generator that drives every random choice.
        mask_bank: a dict from :func:`render_mask_bank` or None (then no silhouettes).
        noise: scale of the keypoint noise (1.0 = detector-like; 0.0 = exact keypoints, all visible).
        world_errors: (M,33,3) metres, real world-landmark errors (BlazePose's world landmarks minus
            the true hip-centred landmarks, e.g. from tools/make_lifter_renders.py samples) or None;
            when given, a share ``world_error_share`` of the world landmarks carry one of them
            (drawn at random) instead of the default noise.
        world_presence: chance that a person has world landmarks at all.
        frame_correlation: 0.0 (default): every row of a batch is drawn independently, as the
            lifter's training wants. Above 0, the rows are a sequence's frames and every random
            draw of the detector's errors is a stationary first-order autoregressive process along
            them with this correlation from one frame to the next, with the same distribution in
            each frame: a detector's errors persist over frames (see
            DETECTOR_FRAME_CORRELATION and :func:`make_sequence`).
    """

    def __init__(self, model, poses: Tensor, generator: torch.Generator, mask_bank: dict | None = None,
                 noise: float = 1.0, world_errors: Tensor | None = None, world_error_share: float = 0.5,
                 world_presence: float = 0.7, frame_correlation: float = 0.0) -> None:
        if not 0.0 <= frame_correlation < 1.0:
            raise ValueError(f"frame_correlation must be in [0, 1), got {frame_correlation}")
        self.model = model
        self.poses = poses.float()
        self.generator = generator
        self.mask_bank = mask_bank
        self.noise = noise
        self.world_errors = None if world_errors is None else torch.as_tensor(world_errors, dtype=torch.float32)
        self.world_error_share = world_error_share
        self.world_presence = world_presence
        self.frame_correlation = float(frame_correlation)

    # -- random helpers ------------------------------------------------------------------------
    # With frame_correlation 0 they draw exactly as torch.rand / randn / randint (the training
    # data stays what it was). Otherwise each draws standard normals correlated along dim 0 and
    # maps them to the wanted distribution (through the normal CDF for uniforms, chances and
    # indices), so every frame keeps its distribution and errors persist from frame to frame.
    def _correlated_standard_normal(self, shape) -> Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        draws = torch.randn(shape, generator=self.generator)
        rho = self.frame_correlation
        if rho > 0 and shape[0] > 1:
            innovation = math.sqrt(1.0 - rho * rho)
            for t in range(1, shape[0]):
                draws[t] = rho * draws[t - 1] + innovation * draws[t]
        return draws

    def _rand(self, shape) -> Tensor:
        if self.frame_correlation <= 0:
            return torch.rand(shape, generator=self.generator)
        return torch.special.ndtr(self._correlated_standard_normal(shape)).clamp(0.0, 1.0 - 1e-7)

    def _uniform(self, shape, low, high) -> Tensor:
        return low + (high - low) * self._rand(shape)

    def _normal(self, shape, std=1.0) -> Tensor:
        if self.frame_correlation <= 0:
            return std * torch.randn(shape, generator=self.generator)
        return std * self._correlated_standard_normal(shape)

    def _chance(self, shape, p) -> Tensor:
        return self._rand(shape) < p

    def _index(self, count: int, high: int) -> Tensor:
        """(count,) int64 in [0, high)."""
        if self.frame_correlation <= 0:
            return torch.randint(0, high, (count,), generator=self.generator)
        return (self._rand(count) * high).long().clamp(max=high - 1)

    # -- 1. pose ------------------------------------------------------------------------------
    def sample_pose(self, count: int, augment: bool = True) -> Tensor:
        """(count,24,3) model-frame poses: picked, mirrored, arms swapped, perturbed, turned."""
        index = torch.randint(0, self.poses.shape[0], (count,), generator=self.generator)
        pose = self.poses[index].clone()
        if augment:
            flip = self._chance(count, 0.5)
            pose = torch.where(flip[:, None, None], mirror_pose(pose), pose)
            swap = self._chance(count, 0.25)
            donor = self.poses[torch.randint(0, self.poses.shape[0], (count,), generator=self.generator)]
            arms = [j + 1 for j in _ARM_JOINTS]
            pose[:, arms] = torch.where(swap[:, None, None], donor[:, arms], pose[:, arms])
            body = pose[:, 1:]
            original = body.clone()
            body = body + self._normal(body.shape) * self._uniform((count, 1, 1), 0.0, 0.08)
            # Hinges: never straighter than the original or straight, whichever is less bent.
            for knee in _KNEES:
                body[:, knee, 0] = torch.maximum(body[:, knee, 0], original[:, knee, 0].clamp(max=0.0))
            body[:, _LEFT_ELBOW, 1] = torch.minimum(body[:, _LEFT_ELBOW, 1], original[:, _LEFT_ELBOW, 1].clamp(min=0.0))
            body[:, _RIGHT_ELBOW, 1] = torch.maximum(body[:, _RIGHT_ELBOW, 1], original[:, _RIGHT_ELBOW, 1].clamp(max=0.0))
            pose = torch.cat([pose[:, :1], body], 1)
        # Heading: a turn about the model's vertical axis.
        heading = rotation_about(1, self._uniform(count, -math.pi, math.pi))
        root = heading @ axis_angle_to_matrix(pose[:, 0])
        return torch.cat([matrix_to_axis_angle(root)[:, None], pose[:, 1:]], 1)

    # -- 3. camera ----------------------------------------------------------------------------
    def sample_camera(self, count: int) -> tuple[Tensor, Tensor]:
        """(intrinsics (count,3,3), image size (count,2) width, height)."""
        sizes = torch.tensor(_IMAGE_SIZES, dtype=torch.float32)
        size = sizes[torch.randint(0, len(_IMAGE_SIZES), (count,), generator=self.generator)]
        fov = torch.deg2rad(self._uniform(count, 35.0, 85.0))
        focal = 0.5 * size[:, 0] / torch.tan(0.5 * fov)
        intrinsics = torch.zeros(count, 3, 3)
        intrinsics[:, 0, 0] = focal
        intrinsics[:, 1, 1] = focal
        intrinsics[:, 0, 2] = (size[:, 0] - 1) / 2 + self._normal(count, 0.01) * size[:, 0]
        intrinsics[:, 1, 2] = (size[:, 1] - 1) / 2 + self._normal(count, 0.01) * size[:, 1]
        intrinsics[:, 2, 2] = 1.0
        return intrinsics, size

    def camera_frame(self, pose: Tensor) -> Tensor:
        """Model-frame poses (B,24,3) -> global orientation (B,3) in the camera frame, with elevation."""
        count = pose.shape[0]
        upright = rotation_about(0, torch.full((count,), math.pi))   # y up, facing +z -> y down, facing -z
        elevation = rotation_about(0, self._normal(count, math.radians(12.0)).clamp(-0.6, 0.6))
        roll = rotation_about(2, self._normal(count, math.radians(3.0)))
        return matrix_to_axis_angle(roll @ elevation @ upright @ axis_angle_to_matrix(pose[:, 0]))

    def place(self, vertices: Tensor, intrinsics: Tensor, size: Tensor) -> Tensor:
        """Translation (B,3) putting bodies (vertices (B,V,3) at transl 0) in view of their cameras."""
        count = vertices.shape[0]
        low, high = vertices.amin(1), vertices.amax(1)
        middle = 0.5 * (low + high)
        extent = (high - low)[:, :2].amax(1)
        shorter = size.amin(1)
        fraction = self._uniform(count, 0.25, 0.95)
        focal = intrinsics[:, 0, 0]
        depth = (focal * extent / (fraction * shorter)).clamp(1.2, 30.0)
        box = focal * extent / depth                                  # pixels, about
        room = (0.5 * size - 0.5 * box[:, None]).clamp(min=0.0)        # how far the centre may move
        outside = self._chance(count, 0.1)[:, None] * box[:, None] * 0.3
        centre = torch.stack([intrinsics[:, 0, 2], intrinsics[:, 1, 2]], -1) + (room + outside) * self._uniform((count, 2), -1.0, 1.0)
        x = (centre[:, 0] - intrinsics[:, 0, 2]) * depth / focal
        y = (centre[:, 1] - intrinsics[:, 1, 2]) * depth / intrinsics[:, 1, 1]
        return torch.stack([x - middle[:, 0], y - middle[:, 1], depth - middle[:, 2]], -1)

    # -- 4./5. observations -------------------------------------------------------------------
    def hidden_landmarks(self, vertices: Tensor, landmarks: Tensor, intrinsics: Tensor, grid: int = 32) -> Tensor:
        """(B,33) bool: landmarks more than 16 cm behind the body's nearest surface (a vertex z-buffer).

        Joint-like landmarks (hips, shoulders, knees) lie 5-12 cm inside the body, so a smaller
        margin would hide them whenever they face the camera.
        """
        count = vertices.shape[0]
        uv = _project(vertices, intrinsics)
        uv_lm = _project(landmarks, intrinsics)
        low, high = uv.amin(1), uv.amax(1)
        span = (high - low).amax(-1).clamp(min=1.0)[:, None]

        def cell(points):
            ij = ((points - low[:, None]) / span[:, None] * (grid - 1)).round().long().clamp(0, grid - 1)
            return ij[..., 1] * grid + ij[..., 0]

        depth = torch.full((count, grid * grid), float("inf"))
        depth = depth.scatter_reduce(1, cell(uv), vertices[..., 2], reduce="amin")
        front = depth.gather(1, cell(uv_lm))
        return landmarks[..., 2] > front + 0.16

    def observe(self, landmarks: Tensor, vertices: Tensor, intrinsics: Tensor, size: Tensor,
                boxes: Tensor | None) -> tuple[Tensor, Tensor]:
        """Detector-like keypoints (B,33,3) and boxes (B,4) (the given boxes are kept)."""
        count = landmarks.shape[0]
        exact = _project(landmarks, intrinsics)
        uv_vertices = _project(vertices, intrinsics)
        tight = torch.cat([uv_vertices.amin(1), uv_vertices.amax(1)], -1)
        side = (tight[:, 2:] - tight[:, :2]).amax(-1)
        if self.noise <= 0:
            keypoints = torch.cat([exact, torch.ones(count, 33, 1)], -1)
            return keypoints, tight if boxes is None else boxes
        hidden = self.hidden_landmarks(vertices, landmarks, intrinsics)
        outside = (exact < 0).any(-1) | (exact[..., 0] > size[:, :1] - 1) | (exact[..., 1] > size[:, 1:] - 1)
        limb_hidden = torch.zeros(count, 33, dtype=torch.bool)
        limb_choice = self._index(count, len(_LIMBS))
        occlude_limb = self._chance(count, 0.1 * self.noise)
        for index, limb in enumerate(_LIMBS):
            rows = occlude_limb & (limb_choice == index)
            limb_hidden[:, list(limb)] |= rows[:, None]
        weak = hidden | outside | limb_hidden
        sigma = side * self._uniform(count, 0.003, 0.015) * self.noise                    # (B,) pixels
        scale = torch.where(weak, 3.0, 1.0) * sigma[:, None]
        uv = exact + self._normal((count, 33, 2)) * scale[..., None]
        outlier = self._chance((count, 33), 0.02 * self.noise)
        uv = uv + outlier[..., None] * self._normal((count, 33, 2)) * 0.08 * side[:, None, None]
        visibility = torch.where(weak, self._uniform((count, 33), 0.0, 0.6), self._uniform((count, 33), 0.75, 1.0))
        visibility = torch.where(outside, visibility * 0.3, visibility)
        visibility = torch.where(outlier, visibility * 0.5, visibility)
        dropped = self._chance((count, 33), 0.03 * self.noise)
        visibility = torch.where(dropped, torch.zeros_like(visibility), visibility)
        keypoints = torch.cat([uv, visibility[..., None]], -1)
        if boxes is None:
            from_keypoints = torch.cat([uv.amin(1), uv.amax(1)], -1)
            use_keypoints = self._chance(count, 0.5)[:, None]
            base = torch.where(use_keypoints, from_keypoints, tight)
            centre = 0.5 * (base[:, :2] + base[:, 2:])
            half = 0.5 * (base[:, 2:] - base[:, :2]) * self._uniform((count, 1), 1.0, 1.25)
            half = half * torch.where(use_keypoints, 1.1, 1.0)
            centre = centre + self._normal((count, 2), 0.03) * side[:, None]
            boxes = torch.cat([centre - half, centre + half], -1)
        return keypoints, boxes

    def world_landmarks(self, landmarks: Tensor) -> tuple[Tensor, Tensor]:
        """Noisy hip-centred landmarks (B,33,3) and their presence (B,)."""
        count = landmarks.shape[0]
        mid_hip = 0.5 * (landmarks[:, 23] + landmarks[:, 24])
        world = landmarks - mid_hip[:, None]
        if self.noise > 0:
            tilt = self._normal((count, 3), math.radians(5.0) * self.noise)
            world = world @ axis_angle_to_matrix(tilt).transpose(1, 2)
            world = world * self._uniform((count, 1, 1), 1.0 - 0.1 * self.noise, 1.0 + 0.1 * self.noise)
            sigma = self._uniform((count, 1, 1), 0.005, 0.03) * self.noise
            world = world + self._normal((count, 33, 3)) * sigma * torch.tensor([1.0, 1.0, 2.0])
            if self.world_errors is not None:
                pick = self._index(count, self.world_errors.shape[0])
                real = self.world_errors[pick]
                use_real = self._chance(count, self.world_error_share)[:, None, None]
                world = torch.where(use_real, landmarks - mid_hip[:, None] + real * self.noise, world)
        present = self._chance(count, self.world_presence).float()
        return world * present[:, None, None], present

    # -- the batch ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, count: int, with_masks: int = 0, augment: bool = True) -> SyntheticBatch:
        """A batch of ``count`` people; the first ``with_masks`` are drawn from the mask bank."""
        with_masks = min(with_masks, count) if self.mask_bank is not None else 0
        fresh = count - with_masks
        pose = self.sample_pose(fresh, augment)
        orient = self.camera_frame(pose)
        body_pose = pose[:, 1:]
        betas = self._normal((fresh, 10)).clamp(-3.0, 3.0)
        intrinsics, size = self.sample_camera(fresh)
        masks = torch.zeros(count, MASK_SIZE, MASK_SIZE)
        mask_present = torch.zeros(count)
        if with_masks:
            bank = self.mask_bank
            pick = torch.randint(0, bank["masks"].shape[0], (with_masks,), generator=self.generator)
            orient = torch.cat([bank["global_orient"][pick], orient])
            body_pose = torch.cat([bank["body_pose"][pick], body_pose])
            betas = torch.cat([bank["betas"][pick], betas])
            intrinsics = torch.cat([bank["intrinsics"][pick], intrinsics])
            size = torch.cat([bank["image_size"][pick], size])
            masks[:with_masks] = degrade_masks(bank["masks"][pick].float(), self.generator, self.noise)
            mask_present[:with_masks] = (torch.rand(with_masks, generator=self.generator) < 0.9).float()
            masks = masks * mask_present[:, None, None]
        out = self.model(orient, body_pose, betas, None)
        transl = self.place(out.vertices[with_masks:], intrinsics[with_masks:], size[with_masks:])
        if with_masks:
            transl = torch.cat([bank["transl"][pick], transl])
        vertices = out.vertices + transl[:, None]
        joints = out.joints + transl[:, None]
        landmarks = out.landmarks + transl[:, None]
        keypoints, boxes_fresh = self.observe(landmarks, vertices, intrinsics, size, None)
        if with_masks:
            boxes_fresh[:with_masks] = self.mask_bank["boxes"][pick]
        world, world_present = self.world_landmarks(landmarks)
        rotations = axis_angle_to_matrix(torch.cat([orient[:, None], body_pose], 1))
        return SyntheticBatch(orient, body_pose, betas, transl, rotations, vertices, joints, landmarks,
                              intrinsics, size, boxes_fresh, keypoints, world, world_present, masks, mask_present)


def _project(points: Tensor, intrinsics: Tensor) -> Tensor:
    """(B,N,3) -> (B,N,2) pixels with per-person intrinsics (B,3,3)."""
    z = points[..., 2:].clamp(min=1e-3)
    focal = torch.stack([intrinsics[:, 0, 0], intrinsics[:, 1, 1]], -1)[:, None]
    centre = torch.stack([intrinsics[:, 0, 2], intrinsics[:, 1, 2]], -1)[:, None]
    return points[..., :2] / z * focal + centre


def degrade_masks(masks: Tensor, generator: torch.Generator, noise: float = 1.0) -> Tensor:
    """(B,64,64) clean silhouettes -> segmentation-like ones: blurred, grown or shrunk, partly cut."""
    if noise <= 0:
        return masks
    count = masks.shape[0]
    x = masks[:, None]
    pool = torch.nn.functional.max_pool2d
    grow = torch.rand(count, generator=generator)
    x = torch.where((grow < 0.2)[:, None, None, None], pool(x, 3, 1, 1), x)
    x = torch.where((grow > 0.8)[:, None, None, None], -pool(-x, 3, 1, 1), x)
    blur = torch.rand(count, generator=generator) < 0.5
    x = torch.where(blur[:, None, None, None], torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x)
    cut = torch.rand(count, generator=generator) < 0.15
    corner = torch.randint(0, MASK_SIZE - 16, (count, 2), generator=generator)
    extent = torch.randint(8, 24, (count, 2), generator=generator)
    rows = torch.arange(MASK_SIZE)
    inside_r = (rows[None] >= corner[:, :1]) & (rows[None] < corner[:, :1] + extent[:, :1])
    inside_c = (rows[None] >= corner[:, 1:]) & (rows[None] < corner[:, 1:] + extent[:, 1:])
    block = (inside_r[:, :, None] & inside_c[:, None, :]) & cut[:, None, None]
    return (x[:, 0] * (~block)).clamp(0.0, 1.0)


def render_mask_bank(model, people: SyntheticPeople, count: int, chunk: int = 64) -> dict:
    """Render ``count`` silhouettes (64x64 crops of the person's square box) with engines.render.

    Returns a dict of tensors: global_orient (N,3), body_pose (N,23,3), betas (N,10), transl (N,3),
    intrinsics (N,3,3), image_size (N,2), boxes (N,4), masks (N,64,64) uint8 0/1.
    """
    from engines.render import Camera, Mesh, render

    keys = ("global_orient", "body_pose", "betas", "transl", "intrinsics", "image_size", "boxes")
    parts: dict[str, list] = {key: [] for key in keys + ("masks",)}
    faces = np.asarray(model.faces)
    done = 0
    while done < count:
        batch = people.sample(min(chunk, count - done))
        centre_x, centre_y, side = square_boxes(batch.boxes)
        for i in range(batch.boxes.shape[0]):
            scale = MASK_SIZE / float(side[i])
            k = batch.intrinsics[i]
            # The box's square as a 64x64 image (pixel (i, j) covers [i, i+1) x [j, j+1)).
            camera = Camera(float(k[0, 0]) * scale, float(k[1, 1]) * scale,
                            (float(k[0, 2]) - (float(centre_x[i]) - 0.5 * float(side[i]))) * scale,
                            (float(k[1, 2]) - (float(centre_y[i]) - 0.5 * float(side[i]))) * scale,
                            MASK_SIZE, MASK_SIZE)
            result = render(camera, [Mesh(batch.vertices[i].numpy(), faces)])
            parts["masks"].append(torch.from_numpy(result.mask.astype(np.uint8)))
        for key in keys:
            parts[key].append(getattr(batch, key))
        done += batch.boxes.shape[0]
    bank = {key: torch.cat(parts[key]) for key in keys}
    bank["masks"] = torch.stack(parts["masks"])
    return bank


def vertex_subset_model(model, stride: int = 4):
    """A copy of an engines.body BodyModel that poses only every ``stride``-th vertex (plus the
    vertices its landmarks use), with the same joints and landmarks: training's loss and the
    synthetic observations need no more, and skinning costs in proportion to the vertices.

    Returns (the sub-model, (V',) int64 indices of its vertices in the full model).
    """
    from engines.body.model import BodyModel, LandmarkRegressor

    # The landmark regressors: BlazePose's 33 rows then COCO's 17, stacked in one buffer.
    index, weight, joint_weight = model._landmark_index, model._landmark_weight, model._landmark_joint_weight
    keep = torch.unique(torch.cat([torch.arange(0, model.num_vertices, stride), index.reshape(-1)]))
    position = torch.full((model.num_vertices,), -1, dtype=torch.int64)
    position[keep] = torch.arange(keep.shape[0])
    count = keep.shape[0]

    def regressor(rows: slice) -> LandmarkRegressor:
        return LandmarkRegressor(position[index[rows]].numpy(), weight[rows].double().numpy(),
                                 joint_weight[rows].double().numpy())

    # Template and shape directions through the public rest_vertices (layout-free).
    with torch.no_grad():
        eye = torch.eye(10, dtype=model.dtype)
        template = model.rest_vertices(torch.zeros(1, 10, dtype=model.dtype))[0]
        directions = model.rest_vertices(eye) - template                            # (10,V,3)
    posedirs = None
    if model.posedirs is not None:  # (207, 3*V), coordinate-major
        posedirs = model.posedirs.double().reshape(-1, 3, model.num_vertices).permute(2, 1, 0)[keep].numpy()
    sub = BodyModel(
        v_template=template[keep].double().numpy(), shapedirs=directions.permute(1, 2, 0)[keep].double().numpy(),
        J_regressor=np.full((24, count), 1.0 / count), lbs_weights=model.lbs_weights[keep].double().numpy(),
        faces=np.array([[0, 1, 2]]), landmarks=regressor(slice(0, 33)), landmarks_coco=regressor(slice(33, 50)),
        model_id=model.model_id + f"-subset{stride}", posedirs=posedirs, parents=tuple(int(p) for p in model.parents),
        dtype=model.dtype,
    )
    with torch.no_grad():  # the joints come from the full mesh
        sub.j_template.copy_(model.j_template)
        sub.j_shapedirs.copy_(model.j_shapedirs)
    return sub, keep


@torch.no_grad()
def make_sequence(model, people: SyntheticPeople, pose: Tensor, transl: Tensor) -> SyntheticBatch:
    """One person moving through a motion-capture sequence in front of one fixed camera.

    pose (F,24,3) model-frame axis-angle and transl (F,3) metres (SMPL convention) of one clip,
    e.g. from meshstream_tools.mocap.load_clip with the model's rest joints. One shape, camera, heading and
    placement (framing the whole path) hold for the whole sequence; the keypoint noise,
    world-landmark noise and their presence are drawn per frame from ``people`` (its noise
    setting applies; with its frame_correlation, e.g. DETECTOR_FRAME_CORRELATION, they persist
    from frame to frame as a detector's do). No silhouettes. Returns a SyntheticBatch of F frames.
    """
    frames = pose.shape[0]
    generator = people.generator
    heading = rotation_about(1, (torch.rand(1, generator=generator) * 2 - 1) * math.pi)
    upright = rotation_about(0, torch.full((1,), math.pi))
    elevation = rotation_about(0, (people._normal(1, math.radians(12.0))).clamp(-0.6, 0.6))
    turn = (elevation @ upright @ heading)[0]                                           # (3,3)
    orient = matrix_to_axis_angle(turn @ axis_angle_to_matrix(pose[:, 0].float()))
    body_pose = pose[:, 1:].float()
    betas = people._normal((1, 10)).clamp(-3.0, 3.0).expand(frames, -1).contiguous()
    intrinsics, size = people.sample_camera(1)
    out = model(orient, body_pose, betas, None)
    # Pelvis path: the clip's, turned with the body, relative to the first frame; the camera
    # frames the whole path (all frames' vertices together), so the person stays in view.
    pelvis = (transl.float() - transl[:1].float()) @ turn.T                             # (F,3)
    path = (out.vertices[:, ::8] + pelvis[:, None]).reshape(1, -1, 3)
    shift = people.place(path, intrinsics, size) + pelvis
    intrinsics, size = intrinsics.expand(frames, -1, -1).contiguous(), size.expand(frames, -1).contiguous()
    vertices = out.vertices + shift[:, None]
    joints = out.joints + shift[:, None]
    landmarks = out.landmarks + shift[:, None]
    keypoints, boxes = people.observe(landmarks, vertices, intrinsics, size, None)
    world, world_present = people.world_landmarks(landmarks)
    rotations = axis_angle_to_matrix(torch.cat([orient[:, None], body_pose], 1))
    empty = torch.zeros(frames, MASK_SIZE, MASK_SIZE)
    return SyntheticBatch(orient, body_pose, betas, shift, rotations, vertices, joints, landmarks, intrinsics,
                          size, boxes, keypoints, world, world_present, empty, torch.zeros(frames))
