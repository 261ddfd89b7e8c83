"""Geometry the whole project shares, one definition each: box overlap, pinhole projection,
Procrustes alignment, matching people under a gate, and mirroring an SMPL pose.

Boxes are (x0, y0, x1, y1) pixels; points are in the camera frame (OpenCV: x right, y down,
z forward), metres; intrinsics are 3x3 pixel matrices.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engines.rotations import nearest_rotation
from engines.skeleton import SMPL_MIRROR


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair: (A, 4), (B, 4) x0, y0, x1, y1 -> (A, B).

    Pairs whose union has no area score 0."""
    a = np.asarray(boxes_a, dtype=np.float64)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    intersection = width * height
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) \
        - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def project_points(points: Tensor, intrinsics: Tensor) -> Tensor:
    """Pinhole projection: (P, N, 3) camera-frame metres -> (P, N, 2) pixels, depth clamped at 1 mm.

    intrinsics (3, 3) for all people, or (P, 3, 3) one per person.
    """
    z = points[..., 2:].clamp(min=1e-3)
    focal = torch.stack([intrinsics[..., 0, 0], intrinsics[..., 1, 1]], -1)
    centre = torch.stack([intrinsics[..., 0, 2], intrinsics[..., 1, 2]], -1)
    if intrinsics.ndim == 3:
        focal, centre = focal[:, None], centre[:, None]
    return points[..., :2] / z * focal + centre


def procrustes(source: Tensor, target: Tensor, weights: Tensor | None = None,
               with_scale: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The transform x -> s R x + t that best moves source onto target (Kabsch; with_scale:
    Umeyama's similarity), least squares weighted per point, reflections excluded.

    source, target (P, N, 3); weights (P, N) or None (equal). Returns scale (P,) (ones without
    with_scale), rotation (P, 3, 3) and translation (P, 3), minimising
    sum_i w_i |s R source_i + t - target_i|^2.
    """
    if weights is None:
        weights = torch.ones(source.shape[:2], dtype=source.dtype, device=source.device)
    w = weights[..., None] / weights.sum(-1, keepdim=True)[..., None].clamp(min=1e-9)
    source_mean = (w * source).sum(1, keepdim=True)
    target_mean = (w * target).sum(1, keepdim=True)
    s = source - source_mean
    t = target - target_mean
    covariance = (w * t).transpose(1, 2) @ s  # (P, 3, 3): target x source
    rotation = nearest_rotation(covariance)
    if with_scale:
        # With R = U D V^T from covariance = U S V^T, trace(R^T covariance) = sum(D S).
        spread = (w * s * s).sum((1, 2))
        scale = (rotation * covariance).sum((1, 2)) / spread.clamp(min=1e-30)
    else:
        scale = torch.ones(source.shape[0], dtype=source.dtype, device=source.device)
    translation = target_mean[:, 0] - scale[:, None] * (rotation @ source_mean[:, 0, :, None])[..., 0]
    return scale, rotation, translation


def match_within_gate(cost: np.ndarray, gate) -> list[tuple[int, int]]:
    """One-to-one matching of rows to columns with the least total cost, pairs over the gate
    left unmatched (Hungarian assignment, scipy.optimize.linear_sum_assignment).

    cost (R, C), NaN or inf where a pair cannot match; gate: a number, or an array that
    broadcasts to (R, C) (e.g. gate[None] for one limit per column). Pairs costing more than
    their gate are kept out of the assignment, so they never displace a pair within it.
    Returns [(row, column), ...] in row order.
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return []
    allowed = np.isfinite(cost) & (cost <= np.broadcast_to(np.asarray(gate, dtype=np.float64), cost.shape))
    finite = cost[allowed]
    # Forbidden pairs cost more than any set of allowed ones together.
    forbidden = 1.0 + (np.abs(finite).sum() * 2.0 + 1.0 if finite.size else 1.0)
    rows, cols = linear_sum_assignment(np.where(allowed, cost, forbidden))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


def mirror_pose(axis_angle):
    """The left/right mirror image of SMPL poses: (..., 24, 3) axis-angle (numpy or torch) ->
    the same shape and type, reflected through the model frame's plane x = 0.

    A rotation R reflected by M = diag(-1, 1, 1) is M R M, which for axis-angle (x, y, z) is
    (x, -y, -z); each joint then swaps with its partner (engines.skeleton.SMPL_MIRROR).
    """
    swapped = axis_angle[..., list(SMPL_MIRROR), :]
    if isinstance(swapped, Tensor):
        return swapped * swapped.new_tensor([1.0, -1.0, -1.0])
    return swapped * np.array([1.0, -1.0, -1.0], dtype=swapped.dtype)
