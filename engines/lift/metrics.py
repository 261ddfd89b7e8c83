"""Accuracy measures of 3D bodies, in the units of their inputs (metres in, metres out).

- MPJPE: mean per-joint position error after aligning the roots (pelvis, joint 0).
- PA-MPJPE: the same after the best similarity transform (Procrustes: rotation, scale, shift).
- PVE: mean per-vertex error after aligning the roots (pelvis joints given separately).
"""

from __future__ import annotations

import torch
from torch import Tensor


def mpjpe(predicted: Tensor, truth: Tensor, root: int = 0) -> Tensor:
    """(B,J,3), (B,J,3) -> (B,) mean joint distance with the joints ``root`` made to coincide."""
    predicted = predicted - predicted[:, root : root + 1]
    truth = truth - truth[:, root : root + 1]
    return (predicted - truth).norm(dim=-1).mean(-1)


def procrustes_align(predicted: Tensor, truth: Tensor) -> Tensor:
    """(B,N,3) predicted points moved by the similarity transform that best fits them onto truth."""
    mu_p, mu_t = predicted.mean(1, keepdim=True), truth.mean(1, keepdim=True)
    p, t = predicted - mu_p, truth - mu_t
    covariance = p.transpose(1, 2) @ t                       # (B,3,3)
    u, s, vh = torch.linalg.svd(covariance)
    sign = torch.sign(torch.det(u @ vh))
    fix = torch.ones_like(s)
    fix[:, 2] = torch.where(sign == 0, torch.ones_like(sign), sign)
    rotation = u @ torch.diag_embed(fix) @ vh                # p @ rotation ~ t
    scale = (s * fix).sum(-1) / (p ** 2).sum((1, 2)).clamp(min=1e-12)
    return scale[:, None, None] * p @ rotation + mu_t


def pa_mpjpe(predicted: Tensor, truth: Tensor) -> Tensor:
    """(B,J,3), (B,J,3) -> (B,) mean joint distance after Procrustes alignment."""
    return (procrustes_align(predicted, truth) - truth).norm(dim=-1).mean(-1)


def pve(predicted_vertices: Tensor, truth_vertices: Tensor, predicted_root: Tensor, truth_root: Tensor) -> Tensor:
    """(B,V,3) vertices and (B,3) root joints -> (B,) mean vertex distance with the roots aligned."""
    return ((predicted_vertices - predicted_root[:, None]) - (truth_vertices - truth_root[:, None])).norm(dim=-1).mean(-1)
