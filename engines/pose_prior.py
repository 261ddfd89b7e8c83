"""A pose prior for fitting: a Gaussian mixture over SMPL's body_pose (23 x 3 axis-angle).

As in SMPLify (Bogo et al. 2016): a mixture of full-covariance Gaussians fitted to motion
capture retargeted onto the 24-joint tree; the penalty of a pose is the negative log-likelihood
of its best component (the "max-mixture" approximation, smooth enough for Gauss-Newton or
L-BFGS). The asset engines/assets/pose_prior.npz is made by tools/fit_pose_prior.py
(meshstream_tools.fit_pose_prior.fit_gaussian_mixture) from the CMU clips not held out for validation.

    prior = PosePrior.load()
    penalty = prior(body_pose)            # (B, 23, 3) or (B, 69) -> (B,) torch, differentiable
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ASSET = Path(__file__).resolve().parent / "assets" / "pose_prior.npz"


class PosePrior(torch.nn.Module):
    """Negative log-likelihood of body poses under a Gaussian mixture (best component).

    forward(body_pose (B, 23, 3) or (B, 69)) -> (B,) in nats, up to a constant: 0.5 *
    Mahalanobis distance + 0.5 log det(cov) - log weight, minimised over components.
    """

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray):
        super().__init__()
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        chol = torch.linalg.cholesky(covariances)
        eye = torch.eye(covariances.shape[-1], dtype=torch.float64).expand_as(covariances)
        precision_chol = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^-1
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float32))
        self.register_buffer("precision_chol", precision_chol.float())  # (K, D, D): |L^-1 (x - mu)|^2
        self.register_buffer("constants", (0.5 * log_det - torch.log(torch.as_tensor(weights, dtype=torch.float64))).float())

    @classmethod
    def load(cls, path: str | Path = ASSET) -> "PosePrior":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no pose prior at {path}; make it with: python tools/fit_pose_prior.py")
        with np.load(path, allow_pickle=False) as data:
            return cls(data["weights"], data["means"], data["covariances"].astype(np.float64))

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def forward(self, body_pose: Tensor) -> Tensor:
        pose = body_pose.reshape(body_pose.shape[0], -1)
        if pose.shape[1] != self.dim:
            raise ValueError(f"the pose prior is over {self.dim} numbers (23 x 3 axis-angle); got {tuple(body_pose.shape)}")
        centred = pose.to(self.means.dtype)[:, None, :] - self.means[None]  # (B, K, D)
        whitened = torch.einsum("kij,bkj->bki", self.precision_chol, centred)
        penalty = 0.5 * (whitened**2).sum(-1) + self.constants  # (B, K)
        return penalty.min(dim=1).values
