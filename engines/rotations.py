"""Rotation conversions in torch, batched over any leading dimensions.

Conventions: axis-angle vectors (..., 3) in radians (SMPL's convention at interfaces);
rotation matrices (..., 3, 3) acting on column vectors; quaternions (..., 4) as (w, x, y, z);
the continuous 6D form (..., 6) of Zhou et al. 2019 is the first two columns of the matrix,
column-major: (r00, r10, r20, r01, r11, r21).

All functions are differentiable, NaN-free at zero rotation, and torch.export-able (no
data-dependent Python control flow).
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-8


_SKEW_GENERATORS: dict = {}


def skew(vectors: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices: skew(a) @ b = a x b (one product with
    a constant (3, 9) generator: fewer operations than stacking nine entries)."""
    key = (vectors.dtype, vectors.device)
    generator = _SKEW_GENERATORS.get(key)
    if generator is None:
        # Made outside inference mode even when first asked for inside it: a cached inference
        # tensor could never take part in autograd afterwards.
        with torch.inference_mode(False):
            generator = torch.zeros(3, 9, dtype=vectors.dtype, device=vectors.device)
            # rows x, y, z; columns the row-major entries of [[0, -z, y], [z, 0, -x], [-y, x, 0]]
            for axis, entry, sign in ((2, 1, -1.0), (1, 2, 1.0), (2, 3, 1.0), (0, 5, -1.0), (1, 6, -1.0), (0, 7, 1.0)):
                generator[axis, entry] = sign
        _SKEW_GENERATORS[key] = generator
    return (vectors @ generator).reshape(vectors.shape + (3,))


def _rodrigues_parts(axis_angle: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """angle^2 (..., 1, 1), angle (..., 1, 1), K = skew(axis_angle), K^2 = a a^T - angle^2 I
    (both (..., 3, 3)) and the identity (3, 3)."""
    angle_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]
    angle = torch.sqrt(angle_sq + _EPS * _EPS)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    k = skew(axis_angle)
    k_sq = axis_angle[..., :, None] * axis_angle[..., None, :] - angle_sq * eye
    return angle_sq, angle, k, k_sq, eye


def _matrix_from_parts(angle_sq, angle, sin, cos, k, k_sq, eye) -> Tensor:
    """R = I + sin(t)/t K + (1 - cos t)/t^2 K^2, with Taylor series near zero."""
    small = angle_sq < 1e-12
    sinc = torch.where(small, 1.0 - angle_sq / 6.0, sin / angle)
    cosc = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - cos) / (angle * angle))
    return eye + sinc * k + cosc * k_sq


def _left_jacobian_from_parts(angle_sq, angle, sin, cos, k, k_sq, eye) -> Tensor:
    """J = I + (1 - cos t)/t^2 K + (t - sin t)/t^3 K^2, with Taylor series below 1e-3 rad."""
    small = angle_sq < 1e-6
    a = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - cos) / angle_sq.clamp(min=1e-12))
    b = torch.where(small, 1.0 / 6.0 - angle_sq / 120.0, (angle - sin) / (angle_sq * angle).clamp(min=1e-18))
    return eye + a * k + b * k_sq


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula. (..., 3) -> (..., 3, 3)."""
    angle_sq, angle, k, k_sq, eye = _rodrigues_parts(axis_angle)
    return _matrix_from_parts(angle_sq, angle, torch.sin(angle), torch.cos(angle), k, k_sq, eye)


def left_jacobian(axis_angle: Tensor) -> Tensor:
    """SO(3)'s left Jacobian, (..., 3) -> (..., 3, 3): exp(theta + d) = exp(J(theta) d) exp(theta)
    to first order, so d exp(theta) / d theta_c = skew(J(theta) e_c) exp(theta)."""
    angle_sq, angle, k, k_sq, eye = _rodrigues_parts(axis_angle)
    return _left_jacobian_from_parts(angle_sq, angle, torch.sin(angle), torch.cos(angle), k, k_sq, eye)


def matrix_and_left_jacobian(axis_angle: Tensor) -> tuple[Tensor, Tensor]:
    """(axis_angle_to_matrix, left_jacobian) of (..., 3), sharing their common terms (the
    body fit needs both of every joint's rotation at every step)."""
    angle_sq, angle, k, k_sq, eye = _rodrigues_parts(axis_angle)
    sin, cos = torch.sin(angle), torch.cos(angle)
    return (_matrix_from_parts(angle_sq, angle, sin, cos, k, k_sq, eye),
            _left_jacobian_from_parts(angle_sq, angle, sin, cos, k, k_sq, eye))


def nearest_rotation(matrix: Tensor) -> Tensor:
    """The rotation closest to ``matrix`` in the Frobenius norm, (..., 3, 3) -> (..., 3, 3):
    U diag(1, 1, det(U V^T)) V^T from its SVD U S V^T (a reflection is turned into the nearest
    proper rotation). The projection Kabsch's and Umeyama's alignments end with; also the mean
    of rotation matrices projected back onto the rotations."""
    u, _, vh = torch.linalg.svd(matrix)
    sign = torch.sign(torch.linalg.det(u @ vh))
    return torch.cat([u[..., :2], u[..., 2:] * sign[..., None, None]], -1) @ vh


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0.

    Uses the numerically stable branch (largest of w, x, y, z first), computed for all four
    and selected, so there is no data-dependent control flow.
    """
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (component)^2 for w, x, y, z.
    q_abs_sq = torch.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1
    )
    q_abs = torch.sqrt(torch.clamp(q_abs_sq, min=0.0) + 1e-12)
    # Each row: the quaternion scaled by 4 * (its pivot component).
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    candidates = candidates / (2.0 * q_abs[..., :, None].clamp(min=0.1))
    best = q_abs.argmax(dim=-1, keepdim=True)  # (..., 1)
    quat = torch.gather(candidates, -2, best[..., None].expand(best.shape[:-1] + (1, 4))).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat: Tensor) -> Tensor:
    """(..., 4) (w, x, y, z) -> (..., 3); the shorter rotation (angle in [0, pi])."""
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    xyz = quat[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    half = torch.atan2(sin_half, quat[..., :1])
    # angle / sin(half) = 2 * half / sin(half), with its series near zero.
    small = sin_half < 1e-6
    scale = torch.where(small, 2.0 + (half * half) / 3.0, 2.0 * half / sin_half.clamp(min=1e-12))
    return xyz * scale


def quaternion_to_matrix(quat: Tensor) -> Tensor:
    """(..., 4) (w, x, y, z), normalised here -> (..., 3, 3)."""
    q = quat / quat.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def axis_angle_to_quaternion(axis_angle: Tensor) -> Tensor:
    """(..., 3) -> (..., 4) (w, x, y, z)."""
    angle_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)
    angle = torch.sqrt(angle_sq + 1e-16)
    small = angle_sq < 1e-12
    half_sinc = torch.where(small, 0.5 - angle_sq / 48.0, torch.sin(angle / 2) / angle)
    return torch.cat([torch.cos(angle / 2), axis_angle * half_sinc], dim=-1)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3), angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def matrix_to_rot6d(matrix: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, column-major."""
    return matrix[..., :, :2].transpose(-1, -2).reshape(matrix.shape[:-2] + (6,))


def rot6d_to_matrix(rot6d: Tensor) -> Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two columns."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)
