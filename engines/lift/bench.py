"""Per-person costs of turning keypoints into bodies on this machine: the lifter, the fit
(per Levenberg-Marquardt iteration and per frame), temporal smoothing and body skinning.

    python -m engines.lift.bench [--people 1,2,4] [--frames 30] [--threads 1] [--backend eager] [--json]

Made-up but realistic input, the same for every figure: P people of the open body model
standing 3-5 m in front of a 1280x720 camera, moving smoothly (a pose that drifts from frame to
frame), their 33 landmarks projected with 2 px noise (visibility 0.9) and their world landmarks
with 1 cm noise. Per frame, as the pipeline's lift stage does: 1. the lifter on all P people;
2. the fit anchored on its answer with the pipeline's weights (engines.fit.ANCHORED_WEIGHTS)
and warm-started from the previous frame's fit; 3. the
smoother per person; 4. skinning the P bodies (tracked shapes, all vertices). Figures are
medians over frames, divided by P ("per person"), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch


def _median_ms(values: list[float]) -> float:
    return float(statistics.median(values)) * 1000.0 if values else float("nan")


def _scene(model, people: int, frames: int, seed: int):
    """Per frame: (keypoints (P,33,3), boxes (P,4), world (P,33,3)); and the intrinsics (3,3)."""
    from engines.geometry import project_points
    from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    g = torch.Generator().manual_seed(seed)
    intrinsics = torch.tensor([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]])
    upright = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    orient = matrix_to_axis_angle(axis_angle_to_matrix(torch.randn(people, 3, generator=g)
                                                       * torch.tensor([0.1, 0.8, 0.1])) @ upright)
    base_pose = 0.25 * torch.randn(people, 23, 3, generator=g)
    drift = 0.25 * torch.randn(people, 23, 3, generator=g)
    betas = 0.7 * torch.randn(people, 10, generator=g)
    transl = torch.stack([torch.linspace(-1.2, 1.2, people) if people > 1 else torch.zeros(1),
                          torch.full((people,), 0.3), 3.0 + 2.0 * torch.rand(people, generator=g)], 1)
    sequence = []
    with torch.no_grad():
        for frame in range(frames):
            pose = base_pose + drift * math.sin(2 * math.pi * frame / 30.0)
            pose[:, [3, 4], 0] = pose[:, [3, 4], 0].abs()
            landmarks = model(orient, pose, betas, transl).landmarks
            uv = project_points(landmarks, intrinsics) + 2.0 * torch.randn(people, 33, 2, generator=g)
            keypoints = torch.cat([uv, torch.full((people, 33, 1), 0.9)], -1)
            boxes = torch.cat([uv.min(1).values, uv.max(1).values], -1)
            mid_hip = 0.5 * (landmarks[:, 23] + landmarks[:, 24])
            world = landmarks - mid_hip[:, None] + 0.01 * torch.randn(people, 33, 3, generator=g)
            sequence.append((keypoints, boxes, world))
    return sequence, intrinsics, betas


def benchmark(people=(1, 2, 4), frames: int = 30, iterations: int = 6, backend: str = "eager",
              smoothing=("one-euro", "kalman"), seed: int = 0) -> dict:
    """The figures of the module docstring: {"threads", "torch", "backend", "iterations",
    "people": {P: {"lifter_ms", "fit_frame_ms", "fit_iteration_ms", "fit_cold_ms",
    "smoothing_ms": {kind: ms}, "skinning_ms", "total_ms"}}}, all per person per frame."""
    from engines.body import load_body_model
    from engines.body.sparse import LandmarkPoser
    from engines.fit import ANCHORED_WEIGHTS, BodyFitter, GaussianPosePrior
    from engines.lift import Lifter
    from engines.pose_prior import PosePrior
    from stream.smoothing import BodyParams, SmootherBank

    model = load_body_model("open")
    poser = LandmarkPoser(model)
    lifter = Lifter.load(backend=backend)
    prior = GaussianPosePrior(PosePrior.load())
    fitter = BodyFitter(poser, ANCHORED_WEIGHTS, pose_prior=prior, iterations=iterations)
    one_step = BodyFitter(poser, ANCHORED_WEIGHTS, pose_prior=prior, iterations=1)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "backend": lifter.engine.backend,
           "iterations": iterations, "frames": frames, "people": {}}
    for count in people:
        sequence, intrinsics, betas = _scene(model, count, frames + 1, seed + count)
        lifter_s, fit_s, one_s, cold_s, skin_s = [], [], [], [], []
        smooth_s: dict[str, list[float]] = {kind: [] for kind in smoothing}
        banks = {kind: SmootherBank(kind) for kind in smoothing}
        previous = None
        for frame, (keypoints, boxes, world) in enumerate(sequence):
            # 1. The lifter.
            start = time.perf_counter()
            lifted = lifter(keypoints, boxes, intrinsics, world)
            lifter_s.append(time.perf_counter() - start)
            anchor = (lifted.global_orient, lifted.body_pose)
            # 2. The fit: one iteration, then the full fit, from the same start.
            if previous is None:
                for _ in range(3):
                    start = time.perf_counter()
                    result = fitter.fit(keypoints, intrinsics, betas, world, anchor)
                    cold_s.append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                one_step.fit(keypoints, intrinsics, betas, world, anchor, previous)
                one_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = fitter.fit(keypoints, intrinsics, betas, world, anchor, previous)
                fit_s.append(time.perf_counter() - start)
            previous = (result.global_orient, result.body_pose, result.transl)
            # 3. Smoothing, per person.
            for kind, bank in banks.items():
                start = time.perf_counter()
                for person in range(count):
                    bank.update(frame / 30.0, person, BodyParams(result.global_orient[person].numpy(),
                                                                   result.body_pose[person].numpy(),
                                                                   result.transl[person].numpy(), betas[person].numpy()))
                smooth_s[kind].append(time.perf_counter() - start)
            # 4. Skinning (tracked shapes: the model's shape cache hits after the first frame).
            start = time.perf_counter()
            with torch.no_grad():
                model(result.global_orient, result.body_pose, betas, result.transl)
            skin_s.append(time.perf_counter() - start)
        fit_frame = _median_ms(fit_s) / count
        per_iteration = (_median_ms(fit_s) - _median_ms(one_s)) / max(1, iterations - 1) / count
        row = {
            "lifter_ms": _median_ms(lifter_s[1:]) / count,
            "fit_frame_ms": fit_frame,
            "fit_iteration_ms": per_iteration,
            "fit_cold_ms": _median_ms(cold_s) / count,
            "smoothing_ms": {kind: _median_ms(v) / count for kind, v in smooth_s.items()},
            "skinning_ms": _median_ms(skin_s[1:]) / count,
        }
        row["total_ms"] = (row["lifter_ms"] + row["fit_frame_ms"] + row["smoothing_ms"].get(smoothing[0], 0.0)
                           + row["skinning_ms"])
        out["people"][count] = row
    return out


def format_result(result: dict) -> str:
    kinds = list(next(iter(result["people"].values()))["smoothing_ms"]) if result["people"] else []
    lines = [f"per person per frame, ms (median of {result['frames']} frames; {result['threads']} thread(s), "
             f"torch {result['torch']}, lifter on {result['backend']}, fit {result['iterations']} iterations, warm)",
             "| people | lifter | fit per iteration | fit per frame | fit, first frame (cold) | "
             + " | ".join(f"smoothing {k}" for k in kinds) + " | skinning | total |",
             "|---" * (7 + len(kinds)) + "|"]
    for count, row in result["people"].items():
        lines.append(f"| {count} | {row['lifter_ms']:.2f} | {row['fit_iteration_ms']:.2f} | {row['fit_frame_ms']:.1f} | "
                     f"{row['fit_cold_ms']:.1f} | " + " | ".join(f"{row['smoothing_ms'][k]:.2f}" for k in kinds)
                     + f" | {row['skinning_ms']:.2f} | {row['total_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", default="1,2,4", help="comma-separated numbers of people (default 1,2,4)")
    parser.add_argument("--frames", type=int, default=30, help="frames per run (default 30)")
    parser.add_argument("--iterations", type=int, default=6, help="fit iterations per frame (default 6, the pipeline's)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--backend", default="eager", help="the lifter's back end: auto, eager, compile, tensorrt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        people = tuple(int(p) for p in args.people.split(","))
    except ValueError:
        parser.error(f"--people must be comma-separated integers, got {args.people!r}")
    if any(p < 1 for p in people) or args.frames < 2 or args.iterations < 2:
        parser.error("--people must be >= 1, --frames >= 2 and --iterations >= 2")
    torch.set_num_threads(max(1, args.threads))
    result = benchmark(people, args.frames, args.iterations, args.backend)
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
