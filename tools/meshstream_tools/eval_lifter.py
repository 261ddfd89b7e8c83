"""Accuracy of the lifter, alone and with the refinement, on held-out synthetic sequences.

    python tools/eval_lifter.py [--frames 90] [--seed 0] [--json out.json]

Steps:

1. For every clip of tools/meshstream_tools/holdout.txt (never used in training): the clip retargeted onto
   the body model at 30 fps, its first ``--frames`` frames (every ``--stride``-th), one random
   shape, camera and placement per sequence (meshstream_tools.synthetic.make_sequence), keypoints
   with detector-like noise, dropouts and low visibility for hidden points; world landmarks
   present in 70 % of frames. The noise persists from frame to frame as the detector's does
   (meshstream_tools.synthetic.DETECTOR_FRAME_CORRELATION, measured by
   tools/measure_detector_noise.py).
2. Lifter alone: engines.lift.Lifter on each frame (batched).
3. Lifter + refinement: engines.fit.BodyFitter per frame with the lifter's answer as anchor and
   its betas held fixed (frames fitted independently, batched; no previous frame).
4. MPJPE, PA-MPJPE (24 SMPL joints) and PVE (all vertices), mm, root-aligned; and the
   translation error (mm), mean 2D landmark error (px) and time per person.

:func:`evaluate` returns the numbers as a dict, for the accuracy table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from meshstream_tools.lift_metrics import mpjpe, pa_mpjpe, pve


def held_out_sequences(model, frames: int, stride: int, seed: int, noise: float = 1.0, mocap_folder=None,
                       frame_correlation: float | None = None) -> list:
    """[(trial, SyntheticBatch)] for each held-out clip (see the module docstring, step 1)."""
    import numpy as np

    from meshstream_tools import mocap
    from meshstream_tools.synthetic import DETECTOR_FRAME_CORRELATION, SyntheticPeople, make_sequence, read_holdout

    rest = model.rest_joints(torch.zeros(1, 10, dtype=model.dtype))[0].double().numpy()
    generator = torch.Generator().manual_seed(seed)
    sequences = []
    for trial in read_holdout():
        motion, _ = mocap.load_clip(trial, rest_joints=rest, fps=30.0, root=mocap_folder)
        pose = np.concatenate([motion.global_orient[:, None], motion.body_pose], 1)[: frames * stride : stride]
        transl = motion.transl[: frames * stride : stride]
        people = SyntheticPeople(model, torch.from_numpy(pose), generator, noise=noise,
                                 frame_correlation=DETECTOR_FRAME_CORRELATION if frame_correlation is None else frame_correlation)
        sequences.append((trial, make_sequence(model, people, torch.from_numpy(pose), torch.from_numpy(transl))))
    return sequences


def _scores(model, batch, orient, body_pose, betas, transl) -> dict[str, torch.Tensor]:
    from engines.geometry import project_points

    with torch.no_grad():
        body = model(orient, body_pose, betas, transl)
        uv = project_points(body.landmarks, batch.intrinsics)
        true_uv = project_points(batch.landmarks, batch.intrinsics)
        return {
            "mpjpe_mm": mpjpe(body.joints, batch.joints) * 1000,
            "pa_mpjpe_mm": pa_mpjpe(body.joints, batch.joints) * 1000,
            "pve_mm": pve(body.vertices, batch.vertices, body.joints[:, 0], batch.joints[:, 0]) * 1000,
            "transl_mm": (body.joints[:, 0] - batch.joints[:, 0]).norm(dim=-1) * 1000,
            "landmarks_px": (uv - true_uv).norm(dim=-1).mean(-1),
        }


def evaluate(body: str = "open", lifter_path: str | None = None, frames: int = 90, stride: int = 1,
             seed: int = 0, refine: bool = True, iterations: int = 6, cold_iterations: int = 8, threads: int = 2,
             mocap_folder=None, log=print) -> dict:
    """The numbers of the module docstring: {"lifter": {...}, "lifter+refinement": {...}, ...}."""
    from engines.body import load_body_model
    from engines.body.sparse import LandmarkPoser
    from engines.fit import ANCHORED_WEIGHTS, BodyFitter, GaussianPosePrior
    from engines.lift import Lifter
    from engines.pose_prior import PosePrior

    torch.set_num_threads(threads)
    model = load_body_model(body)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    lifter = Lifter.load(lifter_path)
    # The fit needs only landmarks: pose just the vertices they use.
    poser = LandmarkPoser(model)
    fitter = BodyFitter(poser, ANCHORED_WEIGHTS, pose_prior=GaussianPosePrior(PosePrior.load()),
                        iterations=iterations, cold_iterations=cold_iterations)
    sequences = held_out_sequences(model, frames, stride, seed, mocap_folder=mocap_folder)
    results: dict[str, dict[str, list]] = {"lifter": {}, "lifter+refinement": {}}
    timing = {"lifter_ms_per_person": [], "refinement_ms_per_person": []}
    per_clip = {}
    for trial, batch in sequences:
        count = batch.keypoints.shape[0]
        intrinsics = batch.intrinsics[0]
        start = time.perf_counter()
        lifted = lifter(batch.keypoints, batch.boxes, intrinsics,
                        torch.where(batch.world_present[:, None, None] > 0, batch.world, float("nan")), None)
        timing["lifter_ms_per_person"].append((time.perf_counter() - start) * 1000 / count)
        valid = lifted.valid
        index, lifted_valid = lifted.only_valid()
        sub = _subset(batch, index)
        stages = {"lifter": (lifted_valid.global_orient, lifted_valid.body_pose, lifted_valid.betas, lifted_valid.transl)}
        if refine:
            world = torch.where(sub.world_present[:, None, None] > 0, sub.world, torch.zeros_like(sub.world))
            start = time.perf_counter()
            # World landmarks count only where the frame has them: the fit takes one tensor for all,
            # so fit frames with and without them separately.
            orient = lifted_valid.global_orient.clone()
            pose = lifted_valid.body_pose.clone()
            transl = lifted_valid.transl.clone()
            for has_world in (True, False):
                rows = torch.nonzero((sub.world_present > 0) == has_world).reshape(-1)
                if rows.numel() == 0:
                    continue
                fit = fitter.fit(sub.keypoints[rows], intrinsics, lifted_valid.betas[rows],
                                 world_landmarks=world[rows] if has_world else None,
                                 anchor=(lifted_valid.global_orient[rows], lifted_valid.body_pose[rows]))
                orient[rows], pose[rows], transl[rows] = fit.global_orient, fit.body_pose, fit.transl
            timing["refinement_ms_per_person"].append((time.perf_counter() - start) * 1000 / max(1, len(index)))
            stages["lifter+refinement"] = (orient, pose, lifted_valid.betas, transl)
        per_clip[trial] = {"frames": count, "lifted": int(valid.sum())}
        for stage, parameters in stages.items():
            scores = _scores(model, sub, *parameters)
            for key, value in scores.items():
                results[stage].setdefault(key, []).append(value)
            per_clip[trial][stage] = {k: round(float(v.mean()), 1) for k, v in scores.items()}
        log(f"{trial}: {per_clip[trial]}")
    summary = {stage: {key: round(float(torch.cat(values).mean()), 1) for key, values in scores.items()}
               for stage, scores in results.items() if scores}
    summary["timing"] = {key: round(sum(v) / len(v), 2) for key, v in timing.items() if v}
    summary["frames"] = sum(c["frames"] for c in per_clip.values())
    summary["lifted"] = sum(c["lifted"] for c in per_clip.values())
    summary["clips"] = per_clip
    return summary


def _subset(batch, index):
    from dataclasses import fields, replace

    return replace(batch, **{f.name: getattr(batch, f.name)[index] for f in fields(batch)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", default="open")
    parser.add_argument("--lifter", default=None, help="lifter weights (default: the shipped ones)")
    parser.add_argument("--frames", type=int, default=90, help="frames per held-out clip (30 fps)")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=6, help="refinement Levenberg-Marquardt iterations")
    parser.add_argument("--cold-iterations", type=int, default=8, help="refinement: 3D-only iterations first")
    parser.add_argument("--no-refine", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    summary = evaluate(args.body, args.lifter, args.frames, args.stride, args.seed, not args.no_refine,
                       args.iterations, args.cold_iterations, args.threads)
    for stage in ("lifter", "lifter+refinement"):
        if stage in summary:
            print(f"{stage:>18}: " + ", ".join(f"{k} {v}" for k, v in summary[stage].items()))
    print(f"timing: {summary['timing']}; frames {summary['frames']}, lifted {summary['lifted']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
