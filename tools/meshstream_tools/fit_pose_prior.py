"""Fit the pose prior (engines/assets/pose_prior.npz) to the CMU clips not held out.

    python tools/fit_pose_prior.py [--rest open|mocap] [--fps 10] [--components 8]

Poses: every training clip (meshstream_tools.mocap.list_clips("train")) retargeted and resampled to
--fps, with its mirror image. --rest open (the default when engines.body has the open model)
retargets onto the open body model's rest skeleton, so the poses are what that skeleton needs;
--rest mocap onto each clip's own T-pose. Seeded; about a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engines.pose_prior import ASSET
from meshstream_tools import mocap


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


def open_rest_joints() -> np.ndarray | None:
    try:
        from engines.body import load_body_model

        model = load_body_model("open")
    except (ImportError, FileNotFoundError):
        return None
    return model.rest_joints(torch.zeros(1, 10))[0].detach().cpu().numpy().astype(np.float64)


def collect_poses(split: str, rest: np.ndarray | None, fps: float) -> np.ndarray:
    poses = []
    for motion in mocap.iter_clips(split, rest_joints=rest, fps=fps, mirror=True):
        poses.append(motion.body_pose.reshape(motion.num_frames, -1))
    return np.concatenate(poses).astype(np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest", choices=("open", "mocap"), default=None, help="target skeleton (default: open if available)")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ASSET)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    rest = None
    if args.rest in (None, "open"):
        rest = open_rest_joints()
        if rest is None and args.rest == "open":
            raise SystemExit("the open body model is not available (engines.body); use --rest mocap")
    source = "open body model rest joints" if rest is not None else "each clip's own T-pose"
    train = collect_poses("train", rest, args.fps)
    validation = collect_poses("validation", rest, args.fps)
    print(f"{train.shape[0]} training poses, {validation.shape[0]} validation poses ({source}), {time.time() - start:.1f}s")
    mixture = fit_gaussian_mixture(train, components=args.components, seed=args.seed)
    print(f"fitted in {time.time() - start:.1f}s; mean log-likelihood per pose {float(mixture['log_likelihood']):.1f} nats")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        weights=mixture["weights"].astype(np.float32),
        means=mixture["means"].astype(np.float32),
        covariances=mixture["covariances"].astype(np.float32),
        source=np.array(f"CMU mocap train split, {args.fps:g} fps + mirrors, retargeted onto {source}; "
                        f"{args.components} components, seed {args.seed}"),
    )
    from engines.pose_prior import PosePrior

    prior = PosePrior.load(args.output)
    with torch.no_grad():
        nll_train = prior(torch.from_numpy(train).float()).mean().item()
        nll_val = prior(torch.from_numpy(validation).float()).mean().item()
        rng = np.random.default_rng(0)
        random = torch.from_numpy(rng.uniform(-0.6, 0.6, (2000, 69))).float()
        nll_random = prior(random).mean().item()
    print(f"mean penalty: train {nll_train:.1f}, held-out {nll_val:.1f}, uniform random (+-0.6 rad) {nll_random:.1f}")
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
