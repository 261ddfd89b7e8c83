"""A pose prior for fitting: a Gaussian mixture over SMPL's body_pose (23 x 3 axis-angle).

As in SMPLify (Bogo et al. 2016): a mixture of full-covariance Gaussians fitted to motion
capture retargeted onto the 24-joint tree; the penalty of a pose is the negative log-likelihood
of its best component (the "max-mixture" approximation, smooth enough for Gauss-Newton or
L-BFGS). The asset engines/assets/pose_prior.npz is made by tools/fit_pose_prior.py from the CMU
clips not held out for validation.

    prior = PosePrior.load()
    penalty = prior(body_pose)            # (B, 23, 3) or (B, 69) -> (B,) torch, differentiable
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ASSET = Path(__file__).resolve().parent / "assets" / "pose_prior.npz"


def fit_gaussian_mixture(
    data: np.ndarray,
    components: int = 8,
    iterations: int = 100,
    regularisation: float = 1e-3,
    seed: int = 0,
    tolerance: float = 1e-5,
) -> dict[str, np.ndarray]:
    """Expectation-maximisation for a full-covariance Gaussian mixture.

    data: (N, D) float. Initialisation: k-means++ seeds and a few k-means steps. The covariance
    of each component gets ``regularisation`` added to its diagonal (keeps it invertible).
    Stops when the mean log-likelihood improves by less than ``tolerance`` (per sample).
    Returns weights (K,), means (K, D), covariances (K, D, D) float64, log_likelihood (mean
    per sample, nats).
    """
    x = torch.as_tensor(np.asarray(data), dtype=torch.float64)
    n, dim = x.shape
    if n < components * 2:
        raise ValueError(f"need at least {components * 2} samples for {components} components, got {n}")
    generator = torch.Generator().manual_seed(seed)

    # 1. k-means++ seeds, then k-means.
    centres = [x[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    for _ in range(1, components):
        distance = torch.cdist(x, torch.stack(centres)).min(dim=1).values ** 2
        centres.append(x[torch.multinomial(distance / distance.sum(), 1, generator=generator)].squeeze(0))
    means = torch.stack(centres)
    for _ in range(10):
        labels = torch.cdist(x, means).argmin(dim=1)
        means = torch.stack([x[labels == k].mean(0) if (labels == k).any() else means[k] for k in range(components)])
    labels = torch.cdist(x, means).argmin(dim=1)
    eye = torch.eye(dim, dtype=torch.float64)
    covariances = torch.stack([
        torch.cov(x[labels == k].T) + regularisation * eye if (labels == k).sum() > dim else torch.cov(x.T) + regularisation * eye
        for k in range(components)
    ])
    weights = torch.bincount(labels, minlength=components).double().clamp(min=1) / n

    # 2. EM.
    previous = -math.inf
    log_likelihood = -math.inf
    for _ in range(iterations):
        log_density = _component_log_density(x, means, covariances) + torch.log(weights)  # (N, K)
        total = torch.logsumexp(log_density, dim=1, keepdim=True)
        log_likelihood = float(total.mean())
        responsibility = torch.exp(log_density - total)  # (N, K)
        counts = responsibility.sum(0) + 1e-10
        weights = counts / n
        means = (responsibility.T @ x) / counts[:, None]
        centred = x[None] - means[:, None]  # (K, N, D)
        covariances = torch.einsum("nk,kni,knj->kij", responsibility, centred, centred) / counts[:, None, None]
        covariances = covariances + regularisation * eye
        if log_likelihood - previous < tolerance:
            break
        previous = log_likelihood
    return dict(
        weights=weights.numpy(), means=means.numpy(), covariances=covariances.numpy(), log_likelihood=np.float64(log_likelihood)
    )


def _component_log_density(x: Tensor, means: Tensor, covariances: Tensor) -> Tensor:
    """log N(x | mean_k, cov_k) for every sample and component: (N, D) -> (N, K)."""
    chol = torch.linalg.cholesky(covariances)  # (K, D, D)
    centred = (x[None] - means[:, None]).transpose(1, 2)  # (K, D, N)
    solved = torch.linalg.solve_triangular(chol, centred, upper=False)  # (K, D, N)
    mahalanobis = (solved**2).sum(1).T  # (N, K)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    dim = x.shape[1]
    return -0.5 * (mahalanobis + log_det + dim * math.log(2 * math.pi))


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
