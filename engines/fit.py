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
3. When starting cold with world landmarks: Levenberg-Marquardt steps on terms 2-5 only,
   which are well conditioned, then step 2 again.
4. Levenberg-Marquardt on the full energy over orientation, pose and translation (75 unknowns
   per person). The robust term enters as iteratively reweighted least squares; Jacobians are
   exact, by forward-mode differentiation vectorised over people and unknowns (one batched
   evaluation per iteration, so few iterations suffice and each is cheap).

Nothing here is specific to one body model: it needs a callable that maps parameters to
landmarks (see :class:`LandmarkFunction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

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
    sigma_px: float = 100.0        # robust scale, pixels
    world: float = 1.0e3           # per m^2 of hip-centred landmark error (1 cm -> 0.1)
    anchor: float = 20.0           # per squared Frobenius distance of rotation matrices
    temporal_pose: float = 20.0    # per squared Frobenius distance to the previous frame
    temporal_transl: float = 1.0e3  # per m^2 of translation change
    prior: float = 0.01            # per unit of squared whitened deviation (nats x 2)
    hinge: float = 100.0           # per rad^2 of knee/elbow bent the wrong way


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


def hinge_residuals(body_pose: Tensor) -> Tensor:
    """(..., 23, 3) -> (..., 4): how far knees and elbows bend the wrong way (radians, 0 if not)."""
    return torch.stack([
        torch.relu(-body_pose[..., _SMPL_KNEES[0], 0]), torch.relu(-body_pose[..., _SMPL_KNEES[1], 0]),
        torch.relu(body_pose[..., _SMPL_ELBOWS[0], 1]), torch.relu(-body_pose[..., _SMPL_ELBOWS[1], 1]),
    ], -1)


class GaussianPosePrior:
    """The pose prior as least-squares residuals: one Gaussian (mean, whitening matrix) per pose.

    From a Gaussian mixture (``engines.pose_prior.PosePrior``: buffers ``means`` (K,69) and
    ``precision_chol`` (K,69,69)), each person's nearest component is chosen once per frame
    (SMPLify's best-component approximation) and its whitened deviation is the residual; without
    a mixture, a zero-mean isotropic Gaussian of standard deviation ``sigma`` radians.
    """

    def __init__(self, mixture=None, sigma: float = 1.0):
        self.means = None if mixture is None else mixture.means.detach().float()
        self.whiten = None if mixture is None else mixture.precision_chol.detach().float()
        self.constants = None if mixture is None else mixture.constants.detach().float()
        self.sigma = sigma

    def component(self, body_pose: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (P,69) and whitening (P,69,69) of each pose's best component."""
        flat = body_pose.reshape(body_pose.shape[0], -1)
        if self.means is None:
            eye = torch.eye(flat.shape[1], dtype=flat.dtype, device=flat.device) / self.sigma
            return torch.zeros_like(flat), eye.expand(flat.shape[0], -1, -1)
        centred = flat[:, None, :] - self.means[None]
        penalty = 0.5 * (torch.einsum("kij,pkj->pki", self.whiten, centred) ** 2).sum(-1) + self.constants
        best = penalty.argmin(1)
        return self.means[best], self.whiten[best]




class BodyFitter:
    """Batched SMPLify-style fit of a body model's landmarks to keypoints (Levenberg-Marquardt).

    Args:
        landmarks_fn: maps (global_orient (P,3), body_pose (P,23,3), betas (P,10), transl (P,3))
            to landmarks (P,33,3) in the camera frame; must be vmap-able (plain tensor code).
        weights: the energy's weights (:class:`FitWeights`).
        pose_prior: a :class:`GaussianPosePrior` (default: isotropic, 1 rad).
        iterations: LM iterations of the final stage (step 4).
        cold_iterations: LM iterations of the 3D stage (step 3) for a person seen first.
    """

    def __init__(
        self,
        landmarks_fn: LandmarkFunction,
        weights: FitWeights | None = None,
        pose_prior: GaussianPosePrior | None = None,
        iterations: int = 8,
        cold_iterations: int = 8,
    ) -> None:
        self.landmarks_fn = landmarks_fn
        self.weights = weights or FitWeights()
        self.pose_prior = pose_prior or GaussianPosePrior()
        self.iterations = iterations
        self.cold_iterations = cold_iterations

    # -- residuals of one person (vmapped over people) -------------------------------------
    def _residuals(self, theta, betas, keypoints, sqrt_w2d, world, sqrt_wworld, anchor_rot, sqrt_wanchor,
                   prev_rot, prev_transl, sqrt_wprev, prior_mean, prior_whiten, intrinsics, use_2d: bool):
        """theta (75,) = orient (3), pose (69), transl (3) -> residual vector (R,), its squared
        norm being the energy (with the robust weights frozen)."""
        w = self.weights
        orient, pose, transl = theta[:3], theta[3:72], theta[72:]
        landmarks = self.landmarks_fn(orient[None], pose.reshape(1, 23, 3), betas[None], transl[None])[0]
        parts = []
        if use_2d:
            uv = project(landmarks[None], intrinsics)[0]
            parts.append(((uv - keypoints[:, :2]) * sqrt_w2d[:, None]).reshape(-1))
        mid_hip = 0.5 * (landmarks[_LEFT_HIP] + landmarks[_RIGHT_HIP])
        parts.append(((landmarks - mid_hip - world) * sqrt_wworld[:, None]).reshape(-1))
        rot = axis_angle_to_matrix(theta[:72].reshape(24, 3))
        parts.append(((rot - anchor_rot) * sqrt_wanchor).reshape(-1))
        parts.append(((rot - prev_rot) * sqrt_wprev).reshape(-1))
        parts.append((transl - prev_transl) * sqrt_wprev * math.sqrt(w.temporal_transl / w.temporal_pose))
        parts.append(math.sqrt(w.prior) * (prior_whiten @ (pose - prior_mean)))
        parts.append(math.sqrt(w.hinge) * hinge_residuals(pose.reshape(23, 3)))
        return torch.cat(parts)

    def _robust_weights(self, theta, betas, data) -> Tensor:
        """sqrt of (reprojection weight x visibility x Geman-McClure's IRLS weight), (P,33)."""
        w = self.weights
        with torch.no_grad():
            landmarks = self.landmarks_fn(theta[:, :3], theta[:, 3:72].reshape(-1, 23, 3), betas, theta[:, 72:])
            sq = ((project(landmarks, data["intrinsics"]) - data["keypoints"][..., :2]) ** 2).sum(-1)
        s2 = w.sigma_px ** 2
        irls = (s2 / (s2 + sq)) ** 2  # rho'(s) of rho(s) = s2 s / (s2 + s)
        return torch.sqrt(w.reprojection * data["visibility"] * irls)

    def _energy(self, theta, betas, data, use_2d: bool) -> Tensor:
        """The true (robust) energy of each person, (P,)."""
        w = self.weights
        args = self._per_person_args(theta, betas, data, sqrt_w2d=torch.zeros_like(data["visibility"]))
        with torch.no_grad():
            r = torch.vmap(lambda *a: self._residuals(*a, data["intrinsics"], False))(*args)
            energy = (r ** 2).sum(-1)
            if use_2d:
                landmarks = self.landmarks_fn(theta[:, :3], theta[:, 3:72].reshape(-1, 23, 3), betas, theta[:, 72:])
                sq = ((project(landmarks, data["intrinsics"]) - data["keypoints"][..., :2]) ** 2).sum(-1)
                energy = energy + (w.reprojection * data["visibility"] * geman_mcclure(sq, w.sigma_px)).sum(-1)
        return energy

    def _per_person_args(self, theta, betas, data, sqrt_w2d):
        return (theta, betas, data["keypoints"], sqrt_w2d, data["world"], data["sqrt_wworld"], data["anchor_rot"],
                data["sqrt_wanchor"], data["prev_rot"], data["prev_transl"], data["sqrt_wprev"],
                data["prior_mean"], data["prior_whiten"])

    def _levenberg_marquardt(self, theta, betas, data, iterations: int, use_2d: bool, active: Tensor) -> Tensor:
        """Minimise each active person's energy from theta (P,75); inactive rows are returned unchanged."""
        damping = torch.full((theta.shape[0],), 1e-3, dtype=theta.dtype, device=theta.device)
        energy = self._energy(theta, betas, data, use_2d)
        eye = torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)

        def residual_and_aux(*args):
            r = self._residuals(*args, data["intrinsics"], use_2d)
            return r, r

        jacobian_fn = torch.vmap(torch.func.jacfwd(residual_and_aux, has_aux=True))
        for _ in range(iterations):
            sqrt_w2d = self._robust_weights(theta, betas, data) if use_2d else torch.zeros_like(data["visibility"])
            # 1. Residuals and their exact Jacobian, all people at once.
            jac, r = jacobian_fn(*self._per_person_args(theta, betas, data, sqrt_w2d))
            # 2. The damped normal equations (Marquardt's scaling by the diagonal).
            jtj = jac.transpose(1, 2) @ jac
            grad = (jac.transpose(1, 2) @ r[..., None])[..., 0]
            diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp(min=1e-6)
            system = jtj + damping[:, None, None] * torch.diag_embed(diag) + 1e-9 * eye
            step = -torch.linalg.solve(system, grad[..., None])[..., 0]
            # 3. Keep the step where it lowers the true energy; adapt the damping.
            candidate = theta + step
            candidate_energy = self._energy(candidate, betas, data, use_2d)
            better = (candidate_energy < energy) & torch.isfinite(candidate_energy) & active
            theta = torch.where(better[:, None], candidate, theta)
            energy = torch.where(better, candidate_energy, energy)
            damping = torch.where(better, damping * 0.3, damping * 5.0).clamp(1e-7, 1e7)
        return theta

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
        if keypoints.ndim != 3 or keypoints.shape[1:] != (33, 3):
            raise ValueError(f"keypoints must be (P,33,3), got {tuple(keypoints.shape)}")
        dtype, device = torch.float32, keypoints.device
        keypoints = torch.nan_to_num(keypoints.to(dtype), nan=0.0)
        betas = betas.to(dtype)
        count = keypoints.shape[0]
        if count == 0:
            empty = torch.zeros(0, dtype=dtype, device=device)
            return FitResult(empty.reshape(0, 3), empty.reshape(0, 23, 3), empty.reshape(0, 3), empty, empty)
        w = self.weights
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
        zero_t = torch.zeros(count, 3, dtype=dtype, device=device)
        if anchor is not None:
            orient, pose = anchor[0].to(dtype).clone(), anchor[1].to(dtype).clone()
        else:
            with torch.no_grad():
                rest = self.landmarks_fn(orient, pose, betas, zero_t)
            torso = list(_TORSO)
            if world_landmarks is not None:
                target = world_landmarks[:, torso].to(dtype)
            else:  # the 2D torso at unit depth, a rough but serviceable orientation
                uv = keypoints[:, torso, :2]
                xy = (uv - intrinsics[:2, 2]) / torch.stack([intrinsics[0, 0], intrinsics[1, 1]])
                scale = (rest[:, torso].std(1).norm(dim=-1) / xy.std(1).norm(dim=-1).clamp(min=1e-6))[:, None, None]
                target = torch.cat([xy * scale, torch.zeros_like(xy[..., :1])], -1)
            orient = matrix_to_axis_angle(kabsch_rotation(rest[:, torso], target))
        if have_previous.any():
            orient = torch.where(have_previous[:, None], previous[0].to(dtype), orient)
            pose = torch.where(have_previous[:, None, None], previous[1].to(dtype), pose)

        # 2. Translation in closed form.
        def place(orient_, pose_):
            with torch.no_grad():
                posed = self.landmarks_fn(orient_, pose_, betas, zero_t)
            return solve_translation(posed, keypoints[..., :2], visibility, intrinsics)

        transl = place(orient, pose)
        if have_previous.any():
            transl = torch.where(have_previous[:, None], previous[2].to(dtype), transl)

        # The data of the energy's terms, per person; absent terms get zero weights.
        identity = torch.eye(3, dtype=dtype, device=device).expand(count, 24, 3, 3)
        data = {"keypoints": keypoints, "visibility": visibility, "intrinsics": intrinsics}
        if world_landmarks is not None:
            data["world"] = world_landmarks.to(dtype)
            world_weight = keypoints[..., 2].clamp(0.2, 1)
            data["sqrt_wworld"] = torch.sqrt(w.world * world_weight / world_weight.sum(1, keepdim=True) * 33)
        else:
            data["world"] = torch.zeros_like(keypoints)
            data["sqrt_wworld"] = torch.zeros_like(visibility)
        if anchor is not None:
            data["anchor_rot"] = axis_angle_to_matrix(torch.cat([anchor[0][:, None], anchor[1]], 1).to(dtype))
            data["sqrt_wanchor"] = torch.full((count,), math.sqrt(w.anchor), dtype=dtype, device=device)
        else:
            data["anchor_rot"] = identity
            data["sqrt_wanchor"] = torch.zeros(count, dtype=dtype, device=device)
        data["prev_rot"], data["prev_transl"] = identity, zero_t
        data["sqrt_wprev"] = torch.zeros(count, dtype=dtype, device=device)
        data["prior_mean"], data["prior_whiten"] = self.pose_prior.component(pose)

        # 3. Cold start with world landmarks: the well-conditioned 3D stage first.
        theta = torch.cat([orient, pose.reshape(count, -1), transl], 1)
        cold = ~have_previous
        if world_landmarks is not None and cold.any() and self.cold_iterations > 0:
            theta = self._levenberg_marquardt(theta, betas, data, self.cold_iterations, use_2d=False, active=cold)
            moved = place(theta[:, :3], theta[:, 3:72].reshape(count, 23, 3))
            theta = torch.cat([theta[:, :72], torch.where(cold[:, None], moved, theta[:, 72:])], 1)
            data["prior_mean"], data["prior_whiten"] = self.pose_prior.component(theta[:, 3:72])

        # 4. The full energy, warm-started people tied to their previous frame.
        if have_previous.any():
            prev_rot = axis_angle_to_matrix(torch.cat([previous[0][:, None], previous[1]], 1).to(dtype))
            data["prev_rot"] = torch.where(have_previous[:, None, None, None], torch.nan_to_num(prev_rot), identity)
            data["prev_transl"] = torch.where(have_previous[:, None], torch.nan_to_num(previous[2].to(dtype)), zero_t)
            data["sqrt_wprev"] = torch.where(have_previous, math.sqrt(w.temporal_pose), 0.0).to(dtype)
        all_people = torch.ones(count, dtype=torch.bool, device=device)
        theta = self._levenberg_marquardt(theta, betas, data, self.iterations, use_2d=True, active=all_people)

        with torch.no_grad():
            orient, pose, transl = theta[:, :3], theta[:, 3:72].reshape(count, 23, 3), theta[:, 72:]
            landmarks = self.landmarks_fn(orient, pose, betas, transl)
            dist = (project(landmarks, intrinsics) - keypoints[..., :2]).norm(dim=-1)
            vis = keypoints[..., 2].clamp(0, 1)
            reprojection = (vis * dist).sum(1) / vis.sum(1).clamp(min=1e-6)
            energy = self._energy(theta, betas, data, use_2d=True)
        return FitResult(orient.clone(), pose.clone(), transl.clone(), reprojection, energy)
