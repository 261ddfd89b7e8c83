"""The project's accuracy measures (engines/metrics.py) on torch tensors, for training and tools.

Same definitions, same numbers as ``meshstream eval``: each function converts its inputs to
float64 numpy, calls engines.metrics, and returns a float tensor. Unit-agnostic (metres in,
metres out).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from engines import metrics


def _np(tensor: Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def _tensor(array: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.dtype if like.is_floating_point() else torch.float32)


def mpjpe(predicted: Tensor, truth: Tensor) -> Tensor:
    """(B,J,3), (B,J,3) -> (B,) mean joint distance with the pelvis joints made to coincide."""
    return _tensor(metrics.mpjpe(_np(predicted), _np(truth)), predicted)


def procrustes_align(predicted: Tensor, truth: Tensor) -> Tensor:
    """(B,N,3) predicted points moved by the similarity transform that best fits them onto truth."""
    return _tensor(metrics.procrustes_align(_np(predicted), _np(truth)), predicted)


def pa_mpjpe(predicted: Tensor, truth: Tensor) -> Tensor:
    """(B,J,3), (B,J,3) -> (B,) mean joint distance after Procrustes alignment."""
    return _tensor(metrics.pa_mpjpe(_np(predicted), _np(truth)), predicted)


def pve(predicted_vertices: Tensor, truth_vertices: Tensor, predicted_root: Tensor, truth_root: Tensor) -> Tensor:
    """(B,V,3) vertices and (B,3) pelvis joints -> (B,) mean vertex distance with the pelvises aligned."""
    return _tensor(metrics.pve(_np(predicted_vertices), _np(truth_vertices),
                               _np(predicted_root)[:, None], _np(truth_root)[:, None]), predicted_vertices)
