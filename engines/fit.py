"""Fitting a body model to one frame's keypoints: the SMPLify-style refinement.

Given, per person, BlazePose's 33 keypoints (pixels, with visibility), optionally its 33 world
landmarks (metres, hip-centred, camera-aligned axes), the camera intrinsics and optionally an
anchor pose (the lifter's answer) and the previous frame's fit, find the body's
``global_orient`` (P, 3), ``body_pose`` (P, 23, 3) and ``transl`` (P, 3) in the camera frame
(x right, y down, z forward) so that the body model's landmarks project onto the keypoints.

Energy, summed over people (they are independent, so one batched optimisation serves all):

1. reprojection: Geman-McClure robust error of the projected landmarks to the keypoints, in
   pixels, weighted by visibility (SMPLify's data term);
2. world: squared error of the body's hip-centred landmarks to the world landmarks (metres);
3. anchor: squared distance of the pose to the anchor pose (the regression's answer; Pavlakos
   et al. 2018 anchor SMPLify on it), on rotation matrices;
4. temporal: squared distance of pose and translation to the previous frame's;
5. prior: a pose prior's energy (a Gaussian mixture when one is given, else a small L2 on the
   pose plus a penalty on knees and elbows bending the wrong way).

Steps of :meth:`BodyFitter.fit`:

1. Initialise: from the previous frame when there is one; else the anchor; else a relaxed pose
   (arms lowered) turned by the rotation that best aligns the body's torso landmarks with the
   world landmarks (Kabsch), or with the 2D torso when there are no world landmarks.
2. Translation in closed form: linear least squares of the pinhole projection of the posed
   landmarks onto the keypoints.
3. When starting cold with world landmarks: a few quasi-Newton (L-BFGS) steps on terms 2-5
   only, which is well conditioned, then step 2 again.
4. L-BFGS on the full energy over orientation, pose and translation.

Nothing here is specific to one body model: it needs a callable that maps parameters to
landmarks (see :class:`LandmarkFunction`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor

from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle

# BlazePose keypoint indices used here.
_LEFT_SHOULDER, _RIGHT_SHOULDER, _LEFT_HIP, _RIGHT_HIP = 11, 12, 23, 24
_LEFT_ELBOW, _RIGHT_ELBOW, _LEFT_KNEE, _RIGHT_KNEE = 13, 14, 25, 26
_TORSO = (_LEFT_SHOULDER, _RIGHT_SHOULDER, _LEFT_HIP, _RIGHT_HIP)

# SMPL body_pose indices (joint index - 1) and the axis about which each hinge bends naturally.
_SMPL_LEFT_SHOULDER, _SMPL_RIGHT_SHOULDER = 15, 16
_SMPL_KNEES = (3, 4)      # left_knee, right_knee: bend about +x in SMPL's frame
_SMPL_ELBOWS = (17, 18)   # left_elbow (bends about -y), right_elbow (about +y)


class LandmarkFunction(Protocol):
    def __call__(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor, transl: Tensor) -> Tensor:
        """(P,3), (P,23,3), (P,10), (P,3) -> landmarks (P,33,3) in the camera frame, metres."""


@dataclass
class FitWeights:
    """Weights of the energy's terms, and the robust scale. Units in the comments."""

    reprojection: float = 1.0      # per robust px^2 (Geman-McClure, saturates at sigma_px)
    sigma_px: float = 30.0         # robust scale, pixels
    world: float = 4.0e4           # per m^2 of hip-centred landmark error (1 cm -> 4)
    anchor: float = 20.0           # per squared Frobenius distance of rotation matrices
    temporal_pose: float = 20.0    # per squared Frobenius distance to the previous frame
    temporal_transl: float = 1.0e3  # per m^2 of translation change
    prior: float = 2.0             # per unit of prior energy


@dataclass
class FitResult:
    """One frame's fit. Shapes for P people."""

    global_orient: Tensor   # (P, 3) axis-angle, camera frame
    body_pose: Tensor       # (P, 23, 3) axis-angle
    transl: Tensor          # (P, 3) metres, camera frame
    reprojection_px: Tensor  # (P,) visibility-weighted mean pixel distance after the fit
    energy: Tensor          # (P,) final energy
    extras: dict = field(default_factory=dict)


def relaxed_pose(batch: int, dtype=torch.float32, device="cpu") -> Tensor:
    """(batch, 23, 3): a T-pose with the arms lowered by 65 degrees, a neutral start."""
    pose = torch.zeros(batch, 23, 3, dtype=dtype, device=device)
    pose[:, _SMPL_LEFT_SHOULDER, 2] = -1.13   # SMPL: left arm down is -z for the left shoulder
    pose[:, _SMPL_RIGHT_SHOULDER, 2] = 1.13
    return pose


def kabsch_rotation(source: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Rotation R (P,3,3) minimising sum_i w_i |R (s_i - s_mean) - (t_i - t_mean)|^2.

    source, target: (P, N, 3); weights: (P, N) or None.
    """
    if weights is None:
        weights = torch.ones(source.shape[:2], dtype=source.dtype, device=source.device)
    w = weights[..., None] / weights.sum(-1, keepdim=True)[..., None].clamp(min=1e-9)
    s = source - (w * source).sum(1, keepdim=True)
    t = target - (w * target).sum(1, keepdim=True)
    cov = (w * t).transpose(1, 2) @ s  # (P,3,3) target x source
    u, _, vh = torch.linalg.svd(cov)
    det = torch.det(u @ vh)
    fix = torch.ones_like(cov[..., 0])
    fix[:, 2] = torch.sign(det) + (det == 0).to(det.dtype)
    return u @ torch.diag_embed(fix) @ vh


def solve_translation(points: Tensor, keypoints: Tensor, weights: Tensor, intrinsics: Tensor) -> Tensor:
    """Translation t (P,3) so that points + t project onto the keypoints, by linear least squares.

    points (P,N,3) camera-frame metres before translation; keypoints (P,N,2) pixels;
    weights (P,N); intrinsics (3,3). Each point gives two linear equations:
    fx (X + tx) - (u - cx)(Z + tz) = 0 and fy (Y + ty) - (v - cy)(Z + tz) = 0.
    """
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    du = keypoints[..., 0] - cx
    dv = keypoints[..., 1] - cy
    zeros = torch.zeros_like(du)
    rows_u = torch.stack([fx.expand_as(du), zeros, -du], -1)          # (P,N,3)
    rows_v = torch.stack([zeros, fy.expand_as(dv), -dv], -1)
    rhs_u = du * points[..., 2] - fx * points[..., 0]
    rhs_v = dv * points[..., 2] - fy * points[..., 1]
    a = torch.cat([rows_u, rows_v], 1) * torch.cat([weights, weights], 1)[..., None]
    b = torch.cat([rhs_u, rhs_v], 1) * torch.cat([weights, weights], 1)
    ata = a.transpose(1, 2) @ a + 1e-6 * torch.eye(3, dtype=a.dtype, device=a.device)
    atb = a.transpose(1, 2) @ b[..., None]
    t = torch.linalg.solve(ata, atb)[..., 0]
    # Keep the body in front of the camera.
    return torch.cat([t[:, :2], t[:, 2:].clamp(min=0.3 - points[..., 2].mean(1, keepdim=True))], 1)


def project(points: Tensor, intrinsics: Tensor) -> Tensor:
    """(P,N,3) camera-frame metres -> (P,N,2) pixels (pinhole)."""
    z = points[..., 2:].clamp(min=1e-3)
    uv = points[..., :2] / z
    return uv * torch.stack([intrinsics[0, 0], intrinsics[1, 1]]) + torch.stack([intrinsics[0, 2], intrinsics[1, 2]])


def geman_mcclure(squared: Tensor, sigma: float) -> Tensor:
    """Geman-McClure robust penalty of squared residuals: sigma^2 r^2 / (sigma^2 + r^2)."""
    s2 = sigma * sigma
    return s2 * squared / (s2 + squared)


def default_pose_prior(body_pose: Tensor) -> Tensor:
    """(P,23,3) -> (P,): small L2 on the pose and a hinge penalty on knees and elbows bent backwards."""
    l2 = (body_pose ** 2).sum((1, 2)) * 0.05
    knees = torch.relu(-body_pose[:, list(_SMPL_KNEES), 0]).pow(2).sum(1)
    elbows = torch.relu(body_pose[:, _SMPL_ELBOWS[0], 1]).pow(2) + torch.relu(-body_pose[:, _SMPL_ELBOWS[1], 1]).pow(2)
    return l2 + 10.0 * (knees + elbows)


class BodyFitter:
    """Batched SMPLify-style fit of a body model's landmarks to keypoints.

    Args:
        landmarks_fn: maps (global_orient (P,3), body_pose (P,23,3), betas (P,10), transl (P,3))
            to landmarks (P,33,3) in the camera frame.
        weights: the energy's weights (:class:`FitWeights`).
        pose_prior: (P,23,3) -> (P,) energy; defaults to :func:`default_pose_prior`.
        iterations: L-BFGS iterations of the final stage (step 4).
        cold_iterations: L-BFGS iterations of the 3D stage (step 3) for a person seen first.
    """

    def __init__(
        self,
        landmarks_fn: LandmarkFunction,
        weights: FitWeights | None = None,
        pose_prior: Callable[[Tensor], Tensor] | None = None,
        iterations: int = 20,
        cold_iterations: int = 30,
    ) -> None:
        self.landmarks_fn = landmarks_fn
        self.weights = weights or FitWeights()
        self.pose_prior = pose_prior or default_pose_prior
        self.iterations = iterations
        self.cold_iterations = cold_iterations

    # -- energy -------------------------------------------------------------------------
    def _energy(self, orient, pose, transl, betas, data, use_2d: bool) -> Tensor:
        w = self.weights
        landmarks = self.landmarks_fn(orient, pose, betas, transl)  # (P,33,3)
        energy = w.prior * self.pose_prior(pose)
        if data["world"] is not None:
            mid_hip = 0.5 * (landmarks[:, _LEFT_HIP] + landmarks[:, _RIGHT_HIP])
            rel = landmarks - mid_hip[:, None]
            err = ((rel - data["world"]) ** 2).sum(-1)
            energy = energy + w.world * (data["world_weight"] * err).sum(1) / data["world_weight"].sum(1).clamp(min=1)
        if use_2d:
            uv = project(landmarks, data["intrinsics"])
            sq = ((uv - data["keypoints"][..., :2]) ** 2).sum(-1)
            vis = data["visibility"]
            energy = energy + w.reprojection * (vis * geman_mcclure(sq, w.sigma_px)).sum(1) / vis.sum(1).clamp(min=1) * 33
        rot = None
        if data["anchor"] is not None:
            rot = axis_angle_to_matrix(torch.cat([orient[:, None], pose], 1))
            energy = energy + w.anchor * ((rot - data["anchor"]) ** 2).sum((1, 2, 3))
        if data["previous_rot"] is not None:
            if rot is None:
                rot = axis_angle_to_matrix(torch.cat([orient[:, None], pose], 1))
            energy = energy + w.temporal_pose * ((rot - data["previous_rot"]) ** 2).sum((1, 2, 3))
            energy = energy + w.temporal_transl * ((transl - data["previous_transl"]) ** 2).sum(1)
        return energy

    def _minimise(self, variables, closure_energy, iterations: int) -> None:
        optimiser = torch.optim.LBFGS(variables, lr=1.0, max_iter=iterations, history_size=10,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure():
            optimiser.zero_grad()
            energy = closure_energy().sum()
            energy.backward()
            return energy

        optimiser.step(closure)

    # -- public -------------------------------------------------------------------------
    def fit(
        self,
        keypoints: Tensor,
        intrinsics: Tensor,
        betas: Tensor,
        world_landmarks: Tensor | None = None,
        anchor: tuple[Tensor, Tensor] | None = None,
        previous: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> FitResult:
        """Fit P people of one frame.

        Args:
            keypoints: (P,33,3) x, y pixels and visibility in [0,1].
            intrinsics: (3,3) pinhole camera matrix, pixels.
            betas: (P,10) shape, held fixed.
            world_landmarks: (P,33,3) metres, hip-centred, camera-aligned axes; or None.
            anchor: (global_orient (P,3), body_pose (P,23,3)) from the lifter; or None.
            previous: (global_orient (P,3), body_pose (P,23,3), transl (P,3)) from the previous
                frame of the same people; or None. Rows may be NaN for people seen first.
        """
        dtype, device = keypoints.dtype, keypoints.device
        count = keypoints.shape[0]
        if keypoints.ndim != 3 or keypoints.shape[1:] != (33, 3):
            raise ValueError(f"keypoints must be (P,33,3), got {tuple(keypoints.shape)}")
        if count == 0:
            empty = torch.zeros(0, dtype=dtype, device=device)
            return FitResult(empty.reshape(0, 3), empty.reshape(0, 23, 3), empty.reshape(0, 3), empty, empty)
        keypoints = torch.nan_to_num(keypoints, nan=0.0)
        visibility = keypoints[..., 2].clamp(0, 1)
        # Points with little visibility still count a little: BlazePose predicts them plausibly.
        visibility = torch.where(visibility > 0.5, visibility, 0.1 * visibility)
        intrinsics = intrinsics.to(dtype=dtype, device=device)

        have_previous = torch.zeros(count, dtype=torch.bool, device=device)
        if previous is not None:
            have_previous = torch.isfinite(previous[2]).all(-1)

        # 1. Initialise.
        pose = relaxed_pose(count, dtype, device)
        orient = torch.zeros(count, 3, dtype=dtype, device=device)
        if anchor is not None:
            orient, pose = anchor[0].clone(), anchor[1].clone()
        else:
            zero_t = torch.zeros(count, 3, dtype=dtype, device=device)
            rest = self.landmarks_fn(orient, pose, betas, zero_t)
            torso = list(_TORSO)
            if world_landmarks is not None:
                target = world_landmarks[:, torso]
            else:  # the 2D torso at unit depth, a rough but serviceable orientation
                uv = keypoints[:, torso, :2]
                xy = (uv - intrinsics[:2, 2]) / torch.stack([intrinsics[0, 0], intrinsics[1, 1]])
                scale = (rest[:, torso].std(1).norm(dim=-1) / xy.std(1).norm(dim=-1).clamp(min=1e-6))[:, None, None]
                target = torch.cat([xy * scale, torch.zeros_like(xy[..., :1])], -1)
            rotation = kabsch_rotation(rest[:, torso], target)
            orient = matrix_to_axis_angle(rotation)
        if previous is not None and have_previous.any():
            orient = torch.where(have_previous[:, None], previous[0], orient)
            pose = torch.where(have_previous[:, None, None], previous[1], pose)

        data = {
            "keypoints": keypoints,
            "visibility": visibility,
            "intrinsics": intrinsics,
            "world": world_landmarks,
            "world_weight": None if world_landmarks is None else keypoints[..., 2].clamp(0.2, 1),
            "anchor": None,
            "previous_rot": None,
            "previous_transl": None,
        }
        if anchor is not None:
            data["anchor"] = axis_angle_to_matrix(torch.cat([anchor[0][:, None], anchor[1]], 1)).detach()

        # 2. Translation in closed form.
        def place(orient_, pose_):
            zero_t = torch.zeros(count, 3, dtype=dtype, device=device)
            with torch.no_grad():
                posed = self.landmarks_fn(orient_, pose_, betas, zero_t)
            return solve_translation(posed, keypoints[..., :2], visibility, intrinsics)

        transl = place(orient, pose)
        if previous is not None and have_previous.any():
            transl = torch.where(have_previous[:, None], previous[2], transl)

        # 3. Cold start with world landmarks: a well-conditioned 3D stage first.
        cold = ~have_previous
        if world_landmarks is not None and cold.any() and self.cold_iterations > 0:
            o = orient.clone().requires_grad_(True)
            p = pose.clone().requires_grad_(True)
            self._minimise([o, p], lambda: self._energy(o, p, transl, betas, data, use_2d=False), self.cold_iterations)
            orient = torch.where(cold[:, None], o.detach(), orient)
            pose = torch.where(cold[:, None, None], p.detach(), pose)
            transl = torch.where(cold[:, None], place(orient, pose), transl)

        # 4. The full energy.
        if previous is not None and have_previous.any():
            prev_rot = axis_angle_to_matrix(torch.cat([previous[0][:, None], previous[1]], 1))
            data["previous_rot"] = torch.where(have_previous[:, None, None, None], prev_rot,
                                               axis_angle_to_matrix(torch.cat([orient[:, None], pose], 1))).detach()
            data["previous_transl"] = torch.where(have_previous[:, None], previous[2], transl).detach()
            # People without a previous frame: the temporal term then anchors to their own start.
        o = orient.clone().requires_grad_(True)
        p = pose.clone().requires_grad_(True)
        t = transl.clone().requires_grad_(True)
        if self.iterations > 0:
            self._minimise([o, p, t], lambda: self._energy(o, p, t, betas, data, use_2d=True), self.iterations)

        with torch.no_grad():
            orient, pose, transl = o.detach(), p.detach(), t.detach()
            bad = ~(torch.isfinite(orient).all(-1) & torch.isfinite(pose).all((1, 2)) & torch.isfinite(transl).all(-1))
            if bad.any():  # never return NaN: fall back to the start of this frame's fit
                orient = torch.where(bad[:, None], torch.nan_to_num(orient), orient)
                pose = torch.where(bad[:, None, None], relaxed_pose(count, dtype, device), pose)
                transl = torch.where(bad[:, None], place(orient, pose), transl)
            landmarks = self.landmarks_fn(orient, pose, betas, transl)
            uv = project(landmarks, intrinsics)
            dist = (uv - keypoints[..., :2]).norm(dim=-1)
            vis = keypoints[..., 2].clamp(0, 1)
            reprojection = (vis * dist).sum(1) / vis.sum(1).clamp(min=1e-6)
            energy = self._energy(orient, pose, transl, betas, data, use_2d=True)
        return FitResult(orient, pose, transl, reprojection, energy)
