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
   et al. 2018 anchor SMPLify on it), on rotation matrices; and the anchor's depths: squared
   difference, along each landmark's viewing ray, of the hip-centred landmarks to the anchor
   body's (the keypoints say nothing along the rays, so the fit should not move them there);
4. temporal: squared distance of pose and translation to the previous frame's;
5. prior: a pose prior's energy (a Gaussian mixture when one is given, else a small L2 on the
   pose plus a penalty on knees and elbows bending the wrong way).

Steps of :meth:`BodyFitter.fit`:

1. Initialise: from the previous frame when there is one; else the anchor; else a relaxed pose
   (arms lowered) turned by the rotation that best aligns the body's torso landmarks with the
   world landmarks (Kabsch), or with the 2D torso when there are no world landmarks.
2. Translation in closed form: linear least squares of the pinhole projection of the posed
   landmarks onto the keypoints.
3. When starting cold with world landmarks and a weight on them: Levenberg-Marquardt steps
   on terms 2-5 only, which are well conditioned, then step 2 again. (Without a world term the
   stage would have no data to fit, only the anchor and the prior.)
4. Levenberg-Marquardt on the full energy over orientation, pose and translation (75 unknowns
   per person). The robust term enters as iteratively reweighted least squares; Jacobians are
   exact: the landmarks' analytically through the kinematic chain when the landmark function
   offers it (:meth:`engines.body.sparse.LandmarkPoser.linearize`), else by forward-mode
   differentiation vectorised over people and unknowns; the other terms' in closed form. All
   people are solved at once, so few iterations suffice and each is cheap.

Nothing here is specific to one body model: it needs a callable that maps parameters to
landmarks (see :class:`LandmarkFunction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from engines.backends import intra_op_threads
from engines.geometry import procrustes, project_points
from engines.rotations import axis_angle_to_matrix, left_jacobian, matrix_and_left_jacobian, matrix_to_axis_angle, skew

# BlazePose keypoint indices used here.
_LEFT_SHOULDER, _RIGHT_SHOULDER, _LEFT_HIP, _RIGHT_HIP = 11, 12, 23, 24
_LEFT_ELBOW, _RIGHT_ELBOW, _LEFT_KNEE, _RIGHT_KNEE = 13, 14, 25, 26
_TORSO = (_LEFT_SHOULDER, _RIGHT_SHOULDER, _LEFT_HIP, _RIGHT_HIP)

# SMPL body_pose indices (joint index - 1) and the axis about which each hinge bends naturally.
_SMPL_LEFT_SHOULDER, _SMPL_RIGHT_SHOULDER = 15, 16
_SMPL_KNEES = (3, 4)      # left_knee, right_knee: bend about +x in SMPL's frame
_SMPL_ELBOWS = (17, 18)   # left_elbow (bends about -y), right_elbow (about +y)
# (body_pose joint, axis, sign) of each hinge residual relu(sign * body_pose[joint, axis]).
_HINGES = ((_SMPL_KNEES[0], 0, -1.0), (_SMPL_KNEES[1], 0, -1.0), (_SMPL_ELBOWS[0], 1, 1.0), (_SMPL_ELBOWS[1], 1, -1.0))


class LandmarkFunction(Protocol):
    def __call__(self, global_orient: Tensor, body_pose: Tensor, betas: Tensor, transl: Tensor) -> Tensor:
        """(P,3), (P,23,3), (P,10), (P,3) -> landmarks (P,33,3) in the camera frame, metres."""


@dataclass
class FitWeights:
    """Weights of the energy's terms, and the robust scale. Units in the comments.

    The anchor and world weights were chosen on the rendered benchmark with BlazePose's real
    outputs (docs/lifter.md): BlazePose's world landmarks are ~12 cm off even after the best
    similarity transform, so they get a light weight, and the lifter (trained on the detector's
    real outputs) a strong anchor; 2D alignment comes from the reprojection term.
    """

    reprojection: float = 1.0      # per robust px^2 (Geman-McClure, saturates at sigma_px)
    sigma_px: float = 100.0        # robust scale, pixels
    world: float = 100.0           # per m^2 of hip-centred landmark error (10 cm -> 1)
    anchor: float = 150.0          # per squared Frobenius distance of rotation matrices
    anchor_depth: float = 0.0      # per m^2 of hip-centred landmark depth (along its ray) off the anchor's
    temporal_pose: float = 20.0    # per squared Frobenius distance to the previous frame
    temporal_transl: float = 1.0e3  # per m^2 of translation change
    prior: float = 0.01            # per unit of squared whitened deviation (nats x 2)
    hinge: float = 100.0           # per rad^2 of knee/elbow bent the wrong way


# The weights when a learned lifter anchors the fit (the pipeline's default): the lifter's depths
# held along the viewing rays, a light anchor on its rotations, no world-landmark term. The
# keypoints carry no depth: without the depth term, the fit's corrections to the lifter's pose
# were all along the rays and made 3D worse on the rendered benchmark (the error in the image
# plane fell, the error along the rays grew 46 -> 56 mm), and only a stiff rotation anchor (200)
# held them, at the cost of the 2D fit. With the depths held, a light rotation anchor lets the
# body follow the keypoints (better 2D on real video) while 3D improves. The lifter fine-tuned on
# BlazePose's real outputs already weighs the world landmarks by what they are worth (~12 cm off
# after the best similarity transform); pulling the body towards them again made 3D worse.
# Chosen on the rendered benchmark and the real clip together (docs/lifter.md has the sweep).
ANCHORED_WEIGHTS = FitWeights(anchor=80.0, anchor_depth=1000.0, world=0.0)


@dataclass
class FitResult:
    """One frame's fit. Shapes for P people."""

    global_orient: Tensor   # (P, 3) axis-angle, camera frame
    body_pose: Tensor       # (P, 23, 3) axis-angle
    transl: Tensor          # (P, 3) metres, camera frame
    reprojection_px: Tensor  # (P,) visibility-weighted mean pixel distance after the fit
    energy: Tensor          # (P,) final energy
    iterations: int = 0     # Levenberg-Marquardt iterations the final stage ran (fewer than
                            # asked when every person converged: the tolerance)
    extras: dict = field(default_factory=dict)


def relaxed_pose(batch: int, dtype=torch.float32, device="cpu") -> Tensor:
    """(batch, 23, 3): a T-pose with the arms lowered by 65 degrees, a neutral start."""
    pose = torch.zeros(batch, 23, 3, dtype=dtype, device=device)
    pose[:, _SMPL_LEFT_SHOULDER, 2] = -1.13   # SMPL: left arm down is -z for the left shoulder
    pose[:, _SMPL_RIGHT_SHOULDER, 2] = 1.13
    return pose


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
        landmarks_fn: either an object with ``linearize(global_orient, body_pose, betas, transl,
            jacobian=True) -> (landmarks (P,33,3), jacobian (P,33,3,75) or None)`` (a
            :class:`engines.body.sparse.LandmarkPoser`: analytic Jacobians, the fast path), or a
            callable mapping (global_orient (P,3), body_pose (P,23,3), betas (P,10), transl (P,3))
            to landmarks (P,33,3) in the camera frame, differentiated by forward-mode automatic
            differentiation (must be vmap-able plain tensor code; about 10x slower).
        weights: the energy's weights (:class:`FitWeights`).
        pose_prior: a :class:`GaussianPosePrior` (default: isotropic, 1 rad).
        iterations: LM iterations of the final stage (step 4).
        cold_iterations: LM iterations of the 3D stage (step 3) for a person seen first.
        threads: torch intra-op threads during a fit (default 1: its tensors are small, and
            parallel regions cost more than they save; see
            :func:`engines.backends.intra_op_threads`); None leaves torch's setting.
        tolerance: a person's iterations stop once an accepted step lowers their energy by less
            than this fraction of it (converged); 0 runs every iteration.
    """

    def __init__(
        self,
        landmarks_fn: LandmarkFunction,
        weights: FitWeights | None = None,
        pose_prior: GaussianPosePrior | None = None,
        iterations: int = 8,
        cold_iterations: int = 8,
        threads: int | None = 1,
        tolerance: float = 0.0,
    ) -> None:
        self.landmarks_fn = landmarks_fn
        self.threads = threads
        self._linearize = getattr(landmarks_fn, "linearize", None)
        self.weights = weights or FitWeights()
        self.pose_prior = pose_prior or GaussianPosePrior()
        self.iterations = iterations
        self.cold_iterations = cold_iterations
        self.tolerance = tolerance

    # -- landmarks and their Jacobian ------------------------------------------------------
    def _landmarks(self, theta: Tensor, betas: Tensor) -> Tensor:
        """theta (P,75) -> landmarks (P,33,3)."""
        return self._landmarks_of(theta[:, :3], theta[:, 3:72].reshape(-1, 23, 3), betas, theta[:, 72:])

    def _landmarks_of(self, orient: Tensor, pose: Tensor, betas: Tensor, transl: Tensor) -> Tensor:
        """(P,3), (P,23,3), (P,10), (P,3) -> landmarks (P,33,3), float32."""
        if self._linearize is not None:
            return self._linearize(orient, pose, betas, transl, jacobian=False)[0].to(orient.dtype)
        return self.landmarks_fn(orient, pose, betas, transl)

    @staticmethod
    def _local(theta: Tensor) -> tuple[Tensor, Tensor]:
        """The 24 joints' rotation matrices and left Jacobians at theta (P,75): both (P,24,3,3).
        Computed once per candidate and shared by the landmarks, the energy and the normal
        equations."""
        return matrix_and_left_jacobian(theta[:, :72].reshape(theta.shape[0], 24, 3))

    def _landmarks_and_jacobian(self, theta: Tensor, betas: Tensor,
                                local: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """theta (P,75) -> landmarks (P,33,3) and d landmarks / d theta (P,33,3,75).

        Analytic when the landmark function offers ``linearize`` (:class:`LandmarkPoser`); else
        forward-mode differentiation of the landmark function, vectorised over people.
        ``local``: :meth:`_local` of theta, if known."""
        if self._linearize is not None:
            landmarks, jac = self._linearize(theta[:, :3], theta[:, 3:72].reshape(-1, 23, 3), betas, theta[:, 72:],
                                             local=local)
            return landmarks.to(theta.dtype), jac.to(theta.dtype)

        def one_person(x, shape):
            return self.landmarks_fn(x[None, :3], x[None, 3:72].reshape(1, 23, 3), shape[None], x[None, 72:])[0]

        jac = torch.vmap(torch.func.jacfwd(one_person))(theta, betas)
        return self._landmarks(theta, betas), jac

    # -- the energy as least squares ------------------------------------------------------
    def _robust_weights(self, landmarks: Tensor, data) -> Tensor:
        """sqrt of (reprojection weight x visibility x Geman-McClure's IRLS weight), (P,33)."""
        w = self.weights
        sq = ((project_points(landmarks, data["intrinsics"]) - data["keypoints"][..., :2]) ** 2).sum(-1)
        s2 = w.sigma_px ** 2
        irls = (s2 / (s2 + sq)) ** 2  # rho'(s) of rho(s) = s2 s / (s2 + s)
        return torch.sqrt(w.reprojection * data["visibility"] * irls)

    @staticmethod
    def _landmark_rows(landmarks: Tensor, landmark_jac: Tensor | None, data, sqrt_w2d: Tensor,
                       use_2d: bool) -> tuple[list[Tensor], list[Tensor]]:
        """The rows that depend on the landmarks (P,33,3): reprojection (with use_2d; pinhole,
        depth clamped at 1 mm as in project_points()), hip-centred world landmarks and the anchor's
        depths (each only when it has a weight: ``data["sqrt_wworld"]``, ``data["anchor_rays"]``
        None otherwise). Returns the residual blocks (P,r) and, when ``landmark_jac`` (P,33,3,U)
        is given, their Jacobians (P,r,U); else an empty list."""
        count = landmarks.shape[0]
        parts, jacs = [], []
        if use_2d:
            intrinsics = data["intrinsics"]
            parts.append(((project_points(landmarks, intrinsics) - data["keypoints"][..., :2])
                          * sqrt_w2d[..., None]).reshape(count, -1))
            if landmark_jac is not None:
                depth = landmarks[..., 2]
                z = depth.clamp(min=1e-3)
                depth_moves = (depth >= 1e-3).to(landmarks.dtype)
                fx, fy = intrinsics[0, 0], intrinsics[1, 1]
                zero = torch.zeros_like(z)
                du = torch.stack([fx / z, zero, -fx * landmarks[..., 0] / (z * z) * depth_moves], -1)
                dv = torch.stack([zero, fy / z, -fy * landmarks[..., 1] / (z * z) * depth_moves], -1)
                d_project = torch.stack([du, dv], -2) * sqrt_w2d[..., None, None]          # (P,33,2,3)
                jacs.append((d_project @ landmark_jac).reshape(count, -1, landmark_jac.shape[-1]))
        sqrt_wworld, rays = data["sqrt_wworld"], data["anchor_rays"]
        if sqrt_wworld is None and rays is None:
            return parts, jacs
        centred = landmarks - 0.5 * (landmarks[:, _LEFT_HIP] + landmarks[:, _RIGHT_HIP])[:, None]
        centred_jac = None
        if landmark_jac is not None:
            centred_jac = landmark_jac - 0.5 * (landmark_jac[:, _LEFT_HIP] + landmark_jac[:, _RIGHT_HIP])[:, None]
        if sqrt_wworld is not None:
            parts.append(((centred - data["world"]) * sqrt_wworld[..., None]).reshape(count, -1))
            if centred_jac is not None:
                jacs.append((centred_jac * sqrt_wworld[..., None, None]).reshape(count, -1, centred_jac.shape[-1]))
        if rays is not None:
            sqrt_wdepth = data["sqrt_wdepth"]
            parts.append(((centred * rays).sum(-1) - data["anchor_depth"]) * sqrt_wdepth[:, None])
            if centred_jac is not None:
                jacs.append((rays[..., None] * centred_jac).sum(2) * sqrt_wdepth[:, None, None])
        return parts, jacs

    def _residuals(self, theta: Tensor, landmarks: Tensor, landmark_jac: Tensor | None, data, sqrt_w2d: Tensor,
                   use_2d: bool, rot: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Residuals (P,R) of the energy with the robust weights frozen (their squared norm is
        the energy) and, when ``landmark_jac`` (P,33,3,75) is given, their dense Jacobian
        (P,R,75): the reference for :meth:`_normal_equations`, which the iterations use.

        Rows, per person: reprojection 66 (with use_2d), world 99 (with a world term), anchor depth
        33 (with a depth term), anchor 216, temporal pose 216, temporal translation 3, prior 69,
        hinge 4. ``rot``: the joints' rotations (P,24,3,3)
        at theta, if known.
        """
        w = self.weights
        count, unknowns = theta.shape
        want_jac = landmark_jac is not None
        # 1-2. Reprojection and hip-centred world landmarks.
        parts, jacs = self._landmark_rows(landmarks, landmark_jac, data, sqrt_w2d, use_2d)
        # 3-4. Anchor and temporal terms on the rotation matrices of all 24 joints.
        axis_angles = theta[:, :72].reshape(count, 24, 3)
        if rot is None:
            rot = axis_angle_to_matrix(axis_angles)
        sqrt_wanchor, sqrt_wprev = data["sqrt_wanchor"], data["sqrt_wprev"]
        parts.append(((rot - data["anchor_rot"]) * sqrt_wanchor[:, None, None, None]).reshape(count, -1))
        parts.append(((rot - data["prev_rot"]) * sqrt_wprev[:, None, None, None]).reshape(count, -1))
        if want_jac:
            # d R_j / d theta_jc = skew(J(theta_j) e_c) R_j, block-diagonal over joints.
            d_rot = skew(left_jacobian(axis_angles).transpose(-1, -2)) @ rot[:, :, None]     # (P,24,c,3,3)
            d_rot = d_rot.reshape(count, 24, 3, 9).transpose(2, 3)                            # (P,24,9,c)
            eye24 = torch.eye(24, dtype=theta.dtype, device=theta.device)
            blocks = torch.einsum("pjfc,jk->pjfkc", d_rot, eye24).reshape(count, 216, 72)
            blocks = torch.cat([blocks, blocks.new_zeros(count, 216, unknowns - 72)], -1)
            jacs.append(blocks * sqrt_wanchor[:, None, None])
            jacs.append(blocks * sqrt_wprev[:, None, None])
        # 5. Temporal translation.
        transl_scale = sqrt_wprev * math.sqrt(w.temporal_transl / w.temporal_pose)
        parts.append((theta[:, 72:] - data["prev_transl"]) * transl_scale[:, None])
        if want_jac:
            eye3 = torch.eye(3, dtype=theta.dtype, device=theta.device)
            jacs.append(torch.cat([theta.new_zeros(count, 3, 72), eye3.expand(count, 3, 3)], -1)
                        * transl_scale[:, None, None])
        # 6. Pose prior (linear in the pose) and hinges.
        pose = theta[:, 3:72]
        prior_whiten = data["prior_whiten"]
        parts.append(math.sqrt(w.prior) * (prior_whiten @ (pose - data["prior_mean"])[..., None])[..., 0])
        hinges = hinge_residuals(pose.reshape(count, 23, 3))
        parts.append(math.sqrt(w.hinge) * hinges)
        if want_jac:
            zeros3 = theta.new_zeros(count, 69, 3)
            jacs.append(math.sqrt(w.prior) * torch.cat([zeros3, prior_whiten, zeros3], -1))
            hinge_jac = theta.new_zeros(count, 4, unknowns)
            for row, (joint, axis, sign) in enumerate(_HINGES):
                column = 3 + 3 * joint + axis
                hinge_jac[:, row, column] = sign * (hinges[:, row] > 0).to(theta.dtype) * math.sqrt(w.hinge)
            jacs.append(hinge_jac)
        residuals = torch.cat(parts, 1)
        return residuals, (torch.cat(jacs, 1) if want_jac else None)

    def _normal_equations(self, theta: Tensor, landmarks: Tensor, landmark_jac: Tensor, data, sqrt_w2d: Tensor,
                          use_2d: bool, local: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """J^T J (P,75,75) and J^T r (P,75) of :meth:`_residuals`, built term by term.

        Equal to forming the dense Jacobian (the reference, :meth:`_residuals`) but only the
        landmark rows (reprojection, world, anchor depth: at most 198 of ~700) go through a dense product; the other
        terms touch few unknowns each and are added in closed form: the rotation terms are
        block-diagonal over joints (anchor and temporal share one derivative dR, so their blocks
        are (w_anchor + w_prev) dR^T dR), the prior's block is w W^T W for its whitening W, and
        the translation's and the hinges' are diagonal. ``local``: :meth:`_local` of theta, if known.
        """
        w = self.weights
        count, unknowns = theta.shape
        # 1. Landmark rows, dense.
        rows, row_jacs = self._landmark_rows(landmarks, landmark_jac, data, sqrt_w2d, use_2d)
        r = torch.cat(rows, 1)
        jac = torch.cat(row_jacs, 1)
        jac_t = jac.transpose(1, 2)
        jtj = jac_t @ jac
        grad = (jac_t @ r[..., None])[..., 0]
        # 2. Rotation terms (anchor + temporal), block-diagonal over the 24 joints.
        rot, left_jac = self._local(theta) if local is None else local
        w_anchor, w_prev = data["sqrt_wanchor"] ** 2, data["sqrt_wprev"] ** 2
        d_rot = skew(left_jac.transpose(-1, -2)) @ rot[:, :, None]                            # (P,24,c,3,3)
        d_rot = d_rot.reshape(count, 24, 3, 9)                                                 # (P,24,c,9)
        blocks = (w_anchor + w_prev)[:, None, None, None] * (d_rot @ d_rot.transpose(-1, -2))  # (P,24,3,3)
        error = (w_anchor[:, None, None, None] * (rot - data["anchor_rot"])
                 + w_prev[:, None, None, None] * (rot - data["prev_rot"])).reshape(count, 24, 9, 1)
        eye24 = torch.eye(24, dtype=theta.dtype, device=theta.device)
        jtj[:, :72, :72] += torch.einsum("pjab,jk->pjakb", blocks, eye24).reshape(count, 72, 72)
        grad[:, :72] += (d_rot @ error).reshape(count, 72)
        # 3. Temporal translation, diagonal.
        transl_weight = w_prev * (w.temporal_transl / w.temporal_pose)
        jtj[:, 72:, 72:] += transl_weight[:, None, None] * torch.eye(3, dtype=theta.dtype, device=theta.device)
        grad[:, 72:] += transl_weight[:, None] * (theta[:, 72:] - data["prev_transl"])
        # 4. Pose prior: w W^T W (pose - mean).
        pose = theta[:, 3:72]
        whiten = data["prior_whiten"]
        prior_block = w.prior * (whiten.transpose(1, 2) @ whiten)
        jtj[:, 3:72, 3:72] += prior_block
        grad[:, 3:72] += (prior_block @ (pose - data["prior_mean"])[..., None])[..., 0]
        # 5. Hinges, diagonal where active.
        hinges = hinge_residuals(pose.reshape(count, 23, 3))
        columns = torch.tensor([3 + 3 * joint + axis for joint, axis, _ in _HINGES], device=theta.device)
        signs = torch.tensor([sign for _, _, sign in _HINGES], dtype=theta.dtype, device=theta.device)
        jtj[:, columns, columns] += w.hinge * (hinges > 0).to(theta.dtype)
        grad[:, columns] += w.hinge * signs * hinges
        return jtj, grad

    def _energy(self, theta, betas, data, use_2d: bool, landmarks: Tensor | None = None,
                rot: Tensor | None = None) -> Tensor:
        """The true (robust) energy of each person, (P,); ``landmarks`` (P,33,3) and the joints'
        rotations ``rot`` (P,24,3,3) at theta if known."""
        w = self.weights
        if landmarks is None:
            landmarks = self._landmarks(theta, betas)
        r, _ = self._residuals(theta, landmarks, None, data, torch.zeros_like(data["visibility"]), False, rot)
        energy = (r ** 2).sum(-1)
        if use_2d:
            sq = ((project_points(landmarks, data["intrinsics"]) - data["keypoints"][..., :2]) ** 2).sum(-1)
            energy = energy + (w.reprojection * data["visibility"] * geman_mcclure(sq, w.sigma_px)).sum(-1)
        return energy

    def _levenberg_marquardt(self, theta, betas, data, iterations: int, use_2d: bool,
                             active: Tensor) -> tuple[Tensor, int]:
        """Minimise each active person's energy from theta (P,75); inactive rows are returned
        unchanged. Returns theta and the iterations run (fewer once every person converged)."""
        damping = torch.full((theta.shape[0],), 1e-3, dtype=theta.dtype, device=theta.device)
        eye = torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)
        # The landmarks and their Jacobian at theta are carried over from the accepted candidate:
        # with the analytic path, linearising a candidate costs little more than posing it.
        carry = self._linearize is not None
        local = self._local(theta)
        landmarks, landmark_jac = (self._landmarks_and_jacobian(theta, betas, local) if (carry and iterations)
                                   else (None, None))
        energy = self._energy(theta, betas, data, use_2d, landmarks, local[0])
        active = active.clone()
        ran = 0
        for _ in range(iterations):
            if not bool(active.any()):
                break
            ran += 1
            # 1. Residuals and their exact Jacobian, all people at once (robust weights at theta).
            if not carry:
                landmarks, landmark_jac = self._landmarks_and_jacobian(theta, betas, local)
            sqrt_w2d = self._robust_weights(landmarks, data) if use_2d else torch.zeros_like(data["visibility"])
            jtj, grad = self._normal_equations(theta, landmarks, landmark_jac, data, sqrt_w2d, use_2d, local)
            # 2. The damped normal equations (Marquardt's scaling by the diagonal).
            diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp(min=1e-6)
            system = jtj + damping[:, None, None] * torch.diag_embed(diag) + 1e-9 * eye
            step = -torch.linalg.solve(system, grad[..., None])[..., 0]
            # 3. Keep the step where it lowers the true energy; adapt the damping.
            candidate = theta + step
            candidate_local = self._local(candidate)
            if carry:
                candidate_landmarks, candidate_jac = self._landmarks_and_jacobian(candidate, betas, candidate_local)
                candidate_energy = self._energy(candidate, betas, data, use_2d, candidate_landmarks, candidate_local[0])
            else:
                candidate_energy = self._energy(candidate, betas, data, use_2d, rot=candidate_local[0])
            better = (candidate_energy < energy) & torch.isfinite(candidate_energy) & active
            if carry:
                landmarks = torch.where(better[:, None, None], candidate_landmarks, landmarks)
                landmark_jac = torch.where(better[:, None, None, None], candidate_jac, landmark_jac)
            theta = torch.where(better[:, None], candidate, theta)
            local = tuple(torch.where(better[:, None, None, None], new, old) for new, old in zip(candidate_local, local))
            if self.tolerance > 0:
                active &= ~(better & (energy - candidate_energy <= self.tolerance * energy))
            energy = torch.where(better, candidate_energy, energy)
            damping = torch.where(better, damping * 0.3, damping * 5.0).clamp(1e-7, 1e7)
        return theta, ran

    def _restart_from_anchor(self, theta: Tensor, betas: Tensor, data: dict, anchor, anchor_transl: Tensor,
                             warm: Tensor) -> Tensor:
        """Where the lifter's answer (translation solved in closed form) has a lower energy than
        the previous frame's fit, start from it instead. A warm start that once slid into a wrong
        minimum (a body turned upside down after a bad frame) would otherwise carry it on: the
        temporal term holds it there and the anchor's pull on a half-turned joint is weak.
        theta (P,75); anchor_transl (P,3) the anchor's translation on the keypoints; warm (P,)
        people started from their previous frame. Returns theta (P,75)."""
        count = theta.shape[0]
        orient, pose = anchor[0].to(theta.dtype), anchor[1].to(theta.dtype)
        lifted = torch.cat([orient, pose.reshape(count, -1), anchor_transl], 1)
        scored = dict(data)  # the lifted start scored with its own prior component
        scored["prior_mean"], scored["prior_whiten"] = self.pose_prior.component(lifted[:, 3:72])
        warm_energy = self._energy(theta, betas, data, use_2d=True)
        lifted_energy = self._energy(lifted, betas, scored, use_2d=True)
        switch = warm & torch.isfinite(lifted_energy) & (lifted_energy < warm_energy)
        if not bool(switch.any()):
            return theta
        data["prior_mean"] = torch.where(switch[:, None], scored["prior_mean"], data["prior_mean"])
        data["prior_whiten"] = torch.where(switch[:, None, None], scored["prior_whiten"], data["prior_whiten"])
        return torch.where(switch[:, None], lifted, theta)

    # -- public -------------------------------------------------------------------------
    def fit(
        self,
        keypoints: Tensor,
        intrinsics: Tensor,
        betas: Tensor,
        world_landmarks: Tensor | None = None,
        anchor: tuple[Tensor, Tensor] | None = None,
        previous: tuple[Tensor, Tensor, Tensor] | None = None,
        iterations: int | None = None,
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
            iterations: the most iterations of the final stage this time (default: the fitter's).
        """
        if keypoints.ndim != 3 or keypoints.shape[1:] != (33, 3):
            raise ValueError(f"keypoints must be (P,33,3), got {tuple(keypoints.shape)}")
        with torch.no_grad(), intra_op_threads(self.threads):
            return self._fit(keypoints, intrinsics, betas, world_landmarks, anchor, previous,
                             self.iterations if iterations is None else iterations)

    def _fit(self, keypoints, intrinsics, betas, world_landmarks, anchor, previous, iterations: int) -> FitResult:
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
        lifted_landmarks = lifted_transl = None
        if anchor is not None:
            orient, pose = anchor[0].to(dtype).clone(), anchor[1].to(dtype).clone()
            # The anchor body, posed once and placed on the keypoints: the start of people seen
            # first, the depths the fit holds, and the restart's candidate all use it.
            lifted_landmarks = self._landmarks_of(orient, pose, betas, zero_t)
            lifted_transl = solve_translation(lifted_landmarks, keypoints[..., :2], visibility, intrinsics)
        else:
            rest = self._landmarks_of(orient, pose, betas, zero_t)
            torso = list(_TORSO)
            if world_landmarks is not None:
                target = world_landmarks[:, torso].to(dtype)
            else:  # the 2D torso at unit depth, a rough but serviceable orientation
                uv = keypoints[:, torso, :2]
                xy = (uv - intrinsics[:2, 2]) / torch.stack([intrinsics[0, 0], intrinsics[1, 1]])
                scale = (rest[:, torso].std(1).norm(dim=-1) / xy.std(1).norm(dim=-1).clamp(min=1e-6))[:, None, None]
                target = torch.cat([xy * scale, torch.zeros_like(xy[..., :1])], -1)
            orient = matrix_to_axis_angle(procrustes(rest[:, torso], target)[1])
        if have_previous.any():
            orient = torch.where(have_previous[:, None], previous[0].to(dtype), orient)
            pose = torch.where(have_previous[:, None, None], previous[1].to(dtype), pose)

        # 2. Translation in closed form.
        def place(orient_, pose_):
            posed = self._landmarks_of(orient_, pose_, betas, zero_t)
            return solve_translation(posed, keypoints[..., :2], visibility, intrinsics)

        if bool(have_previous.all()):
            transl = previous[2].to(dtype).clone()
        else:
            transl = lifted_transl if lifted_transl is not None else place(orient, pose)
            if have_previous.any():
                transl = torch.where(have_previous[:, None], previous[2].to(dtype), transl)

        # The data of the energy's terms, per person; absent terms get zero weights.
        identity = torch.eye(3, dtype=dtype, device=device).expand(count, 24, 3, 3)
        data = {"keypoints": keypoints, "visibility": visibility, "intrinsics": intrinsics,
                "world": None, "sqrt_wworld": None, "anchor_rays": None}
        use_world = world_landmarks is not None and w.world > 0
        if use_world:
            data["world"] = world_landmarks.to(dtype)
            world_weight = keypoints[..., 2].clamp(0.2, 1)
            data["sqrt_wworld"] = torch.sqrt(w.world * world_weight / world_weight.sum(1, keepdim=True) * 33)
        if anchor is not None:
            data["anchor_rot"] = axis_angle_to_matrix(torch.cat([anchor[0][:, None], anchor[1]], 1).to(dtype))
            data["sqrt_wanchor"] = torch.full((count,), math.sqrt(w.anchor), dtype=dtype, device=device)
        else:
            data["anchor_rot"] = identity
            data["sqrt_wanchor"] = torch.zeros(count, dtype=dtype, device=device)
        if anchor is not None and w.anchor_depth > 0:
            # The anchor body's landmarks on the keypoints: their viewing rays (fixed for this
            # frame) and their hip-centred depths along them.
            placed = lifted_landmarks + lifted_transl[:, None]
            rays = placed / placed.norm(dim=-1, keepdim=True).clamp(min=1e-6)
            centred = lifted_landmarks - 0.5 * (lifted_landmarks[:, _LEFT_HIP] + lifted_landmarks[:, _RIGHT_HIP])[:, None]
            data["anchor_rays"], data["anchor_depth"] = rays, (centred * rays).sum(-1)
            data["sqrt_wdepth"] = torch.full((count,), math.sqrt(w.anchor_depth), dtype=dtype, device=device)
        data["prev_rot"], data["prev_transl"] = identity, zero_t
        data["sqrt_wprev"] = torch.zeros(count, dtype=dtype, device=device)
        data["prior_mean"], data["prior_whiten"] = self.pose_prior.component(pose)

        # 3. Cold start with weighted world landmarks: the well-conditioned 3D stage first.
        theta = torch.cat([orient, pose.reshape(count, -1), transl], 1)
        cold = ~have_previous
        if use_world and cold.any() and self.cold_iterations > 0:
            theta, _ = self._levenberg_marquardt(theta, betas, data, self.cold_iterations, use_2d=False, active=cold)
            moved = place(theta[:, :3], theta[:, 3:72].reshape(count, 23, 3))
            theta = torch.cat([theta[:, :72], torch.where(cold[:, None], moved, theta[:, 72:])], 1)
            data["prior_mean"], data["prior_whiten"] = self.pose_prior.component(theta[:, 3:72])

        # 4. The full energy, warm-started people tied to their previous frame.
        if have_previous.any():
            prev_rot = axis_angle_to_matrix(torch.cat([previous[0][:, None], previous[1]], 1).to(dtype))
            data["prev_rot"] = torch.where(have_previous[:, None, None, None], torch.nan_to_num(prev_rot), identity)
            data["prev_transl"] = torch.where(have_previous[:, None], torch.nan_to_num(previous[2].to(dtype)), zero_t)
            data["sqrt_wprev"] = torch.where(have_previous, math.sqrt(w.temporal_pose), 0.0).to(dtype)
            if anchor is not None:
                theta = self._restart_from_anchor(theta, betas, data, anchor, lifted_transl, have_previous)
        all_people = torch.ones(count, dtype=torch.bool, device=device)
        theta, ran = self._levenberg_marquardt(theta, betas, data, iterations, use_2d=True, active=all_people)

        orient, pose, transl = theta[:, :3], theta[:, 3:72].reshape(count, 23, 3), theta[:, 72:]
        landmarks = self._landmarks_of(orient, pose, betas, transl)
        dist = (project_points(landmarks, intrinsics) - keypoints[..., :2]).norm(dim=-1)
        vis = keypoints[..., 2].clamp(0, 1)
        reprojection = (vis * dist).sum(1) / vis.sum(1).clamp(min=1e-6)
        energy = self._energy(theta, betas, data, use_2d=True, landmarks=landmarks)
        return FitResult(orient.clone(), pose.clone(), transl.clone(), reprojection, energy, ran)
