"""How a detector's errors behave over time: real BlazePose on rendered video against the
synthetic sequences' noise model (meshstream_tools.synthetic.DETECTOR_FRAME_CORRELATION).

    python tools/measure_detector_noise.py [--renders DIR ...] [--correlations 0 0.8 0.9]

Steps:

1. Real errors: each samples.npz of tools/make_lifter_renders.py (default: every
   renders_seed<S> folder in the cache) holds BlazePose's keypoints and world landmarks on
   rendered people with their true landmarks. Rows are grouped into runs of consecutive frames
   of one person (same clip, same true shape).
2. Synthetic errors: the held-out sequences of tools/eval_lifter.py (30 frames per clip) drawn
   with each frame correlation asked for.
3. For both: the mean 2D keypoint error (visibility > 0.5) as a share of the person's size
   (the larger side of the true landmarks' box), and the mean of its second difference over
   three consecutive frames (the error's own frame-to-frame jitter: what becomes acceleration
   error downstream); the same for the hip-centred world landmarks, in mm. For errors
   independent from frame to frame the jitter is sqrt(6) = 2.45 times the error; for errors
   that persist it is much less.

The synthetic correlation is chosen as the smallest that brings the 2D jitter down to the
real one: the sequences then jitter about as much as the detector (docs/accuracy.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def _project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(N,33,3) metres, (N,3,3) -> (N,33,2) pixels, float64 (engines.geometry.project_points)."""
    from engines.geometry import project_points

    return project_points(torch.from_numpy(points), torch.from_numpy(np.asarray(intrinsics, np.float64))).numpy()


def error_statistics(keypoints: np.ndarray, true_uv: np.ndarray, world: np.ndarray, true_world: np.ndarray,
                     runs: list[np.ndarray]) -> dict[str, float]:
    """Step 3 over runs of consecutive frames (index arrays into the (N, 33, ...) arrays)."""
    size = np.ptp(true_uv, axis=1).max(-1)
    error = (keypoints[..., :2] - true_uv) / size[:, None, None]
    visible = keypoints[..., 2] > 0.5
    world_error = world - true_world
    sums = dict.fromkeys(("err", "jitter", "world_err", "world_jitter"), 0.0)
    counts = dict.fromkeys(sums, 0)
    for run in runs:
        if len(run) < 3:
            continue
        e, v, w = error[run], visible[run], world_error[run]
        jitter = np.linalg.norm(e[2:] - 2 * e[1:-1] + e[:-2], axis=-1)
        all_visible = v[2:] & v[1:-1] & v[:-2]
        world_jitter = np.linalg.norm(w[2:] - 2 * w[1:-1] + w[:-2], axis=-1)
        for key, values in (("err", np.linalg.norm(e, axis=-1)[v]), ("jitter", jitter[all_visible]),
                            ("world_err", np.linalg.norm(w, axis=-1).ravel()), ("world_jitter", world_jitter.ravel())):
            sums[key] += float(values.sum())
            counts[key] += values.size
    mean = {key: sums[key] / max(counts[key], 1) for key in sums}
    return {
        "keypoint_error_pct_size": round(100 * mean["err"], 2),
        "keypoint_jitter_pct_size": round(100 * mean["jitter"], 2),
        "keypoint_jitter_to_error": round(mean["jitter"] / max(mean["err"], 1e-12), 2),
        "world_error_mm": round(1000 * mean["world_err"], 1),
        "world_jitter_mm": round(1000 * mean["world_jitter"], 1),
        "world_jitter_to_error": round(mean["world_jitter"] / max(mean["world_err"], 1e-12), 2),
    }


def _hip_centred(landmarks: np.ndarray) -> np.ndarray:
    return landmarks - 0.5 * (landmarks[:, 23:24] + landmarks[:, 24:25])


def real_statistics(path: Path) -> dict[str, float]:
    """Steps 1 and 3 for one samples.npz (or a folder holding one)."""
    from meshstream_tools.rendered import load_samples

    samples = load_samples(path)
    order = np.lexsort((samples["frame"], samples["betas"][:, 0], samples["clip"]))
    runs, current = [], [order[0]]
    for previous, index in zip(order[:-1], order[1:]):
        same_person = samples["clip"][index] == samples["clip"][previous] and np.allclose(
            samples["betas"][index], samples["betas"][previous])
        if same_person and samples["frame"][index] == samples["frame"][previous] + 1:
            current.append(index)
        else:
            runs.append(np.array(current))
            current = [index]
    runs.append(np.array(current))
    landmarks = samples["landmarks"].astype(np.float64)
    return error_statistics(samples["keypoints"], _project(landmarks, samples["intrinsics"]),
                            samples["world"].astype(np.float64), _hip_centred(landmarks), runs)


def synthetic_statistics(correlation: float, frames: int = 30, seed: int = 0) -> dict[str, float]:
    """Steps 2 and 3 (frames without world landmarks count as exact there)."""
    from engines.body import load_body_model
    from meshstream_tools.eval_lifter import held_out_sequences

    model = load_body_model("open")
    arrays: dict[str, list] = {"kp": [], "uv": [], "world": [], "true_world": []}
    runs, start = [], 0
    for _trial, batch in held_out_sequences(model, frames, 1, seed, frame_correlation=correlation):
        landmarks = batch.landmarks.double().numpy()
        true_world = _hip_centred(landmarks)
        present = batch.world_present.numpy()[:, None, None] > 0
        arrays["kp"].append(batch.keypoints.numpy())
        arrays["uv"].append(_project(landmarks, batch.intrinsics.double().numpy()))
        arrays["world"].append(np.where(present, batch.world.double().numpy(), true_world))
        arrays["true_world"].append(true_world)
        runs.append(np.arange(start, start + len(landmarks)))
        start += len(landmarks)
    joined = {key: np.concatenate(value) for key, value in arrays.items()}
    return error_statistics(joined["kp"], joined["uv"], joined["world"], joined["true_world"], runs)


def main() -> int:
    from engines.cache import cache_dir
    from meshstream_tools.synthetic import DETECTOR_FRAME_CORRELATION

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", nargs="*", type=Path, default=None,
                        help="samples.npz files or folders (default: the cache's lifter/renders_seed* folders)")
    parser.add_argument("--correlations", nargs="*", type=float, default=[0.0, DETECTOR_FRAME_CORRELATION, 0.9])
    args = parser.parse_args()
    torch.set_num_threads(1)
    renders = args.renders
    if renders is None:
        renders = sorted((cache_dir() / "lifter").glob("renders_seed*"))
    renders = [r for r in renders if (r / "samples.npz" if r.is_dir() else r).is_file()]
    if not renders:
        print("no rendered samples: make them with tools/make_lifter_renders.py --seed 1 (see tools/README.md)")
    for path in renders:
        print(f"real BlazePose, {path}: {real_statistics(path)}")
    for correlation in args.correlations:
        print(f"synthetic sequences, frame correlation {correlation:g}: {synthetic_statistics(correlation)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
