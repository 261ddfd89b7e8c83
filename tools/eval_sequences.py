"""Accuracy of the pipeline's body stage over time, on held-out synthetic sequences.

The same held-out sequences as tools/eval_lifter.py (one person per CMU clip never trained on,
30 fps, detector-like keypoint noise, world landmarks in 70 % of frames), but run frame after
frame through stream.reconstruct.BodyReconstructor as the pipeline runs them: the lifter as
anchor, the fit warm-started from the previous frame, then the chosen smoothing. Reports MPJPE,
PA-MPJPE (mm) and the acceleration error (mm/frame^2, stream.evaluation.acceleration_error)
for each smoothing, so docs/accuracy.md's "+ smoothing" rows come from one command:

    python tools/eval_sequences.py --frames 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engines.lift.metrics import mpjpe, pa_mpjpe  # noqa: E402
from stream.evaluation import acceleration_error  # noqa: E402
from tools.eval_lifter import held_out_sequences  # noqa: E402


def run_sequence(reconstructor, batch, fps: float = 30.0) -> tuple[torch.Tensor, int]:
    """Joints (T,24,3) of the reconstructed body, frame by frame (NaN where no body), and the
    number of frames with a body."""
    model = reconstructor.body_model
    joints = torch.full((batch.keypoints.shape[0], 24, 3), float("nan"))
    bodies = 0
    for i in range(batch.keypoints.shape[0]):
        world = batch.world[i:i + 1].numpy() if batch.world_present[i] > 0 else None
        result = reconstructor(i / fps, batch.boxes[i:i + 1].numpy(), batch.keypoints[i:i + 1].numpy(),
                               batch.intrinsics[i].numpy(), world_landmarks=world, track_ids=np.array([0]))
        body = result.bodies[0]
        if body is None:
            continue
        bodies += 1
        as_t = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
        with torch.no_grad():
            joints[i] = model(as_t(body.global_orient), as_t(body.body_pose), as_t(body.betas), as_t(body.transl)).joints[0]
    return joints, bodies


def evaluate(frames: int = 30, seed: int = 0, smoothings=("none", "one-euro", "kalman"), threads: int = 2,
             log=print) -> dict:
    from engines.body import load_body_model
    from engines.lift import Lifter
    from stream.reconstruct import BodyReconstructor

    torch.set_num_threads(threads)
    model = load_body_model("open")
    lifter = Lifter.load()
    sequences = held_out_sequences(model, frames, 1, seed)
    table = {}
    for smoothing in smoothings:
        errors, pa_errors, accel = [], [], []
        start = time.perf_counter()
        count = 0
        for trial, batch in sequences:
            reconstructor = BodyReconstructor(model, lifter=lifter, smoothing=smoothing)
            joints, _ = run_sequence(reconstructor, batch)
            have = torch.isfinite(joints).all(-1).all(-1)
            count += int(have.sum())
            errors.append(mpjpe(joints[have], batch.joints[have]) * 1000)
            pa_errors.append(pa_mpjpe(joints[have], batch.joints[have]) * 1000)
            # Acceleration over runs of consecutive frames with a body.
            runs, current = [], []
            for i, ok in enumerate(have.tolist()):
                if ok:
                    current.append(i)
                elif current:
                    runs.append(current)
                    current = []
            if current:
                runs.append(current)
            for run in runs:
                accel.append(acceleration_error(joints[run].numpy(), batch.joints[run].numpy()) * 1000)
        row = {
            "mpjpe_mm": round(float(torch.cat(errors).mean()), 1),
            "pa_mpjpe_mm": round(float(torch.cat(pa_errors).mean()), 1),
            "accel_mm_per_frame2": round(float(np.concatenate(accel).mean()), 1),
            "frames": count,
            "ms_per_frame": round((time.perf_counter() - start) * 1000 / max(count, 1), 1),
        }
        table[smoothing] = row
        log(f"smoothing {smoothing:9s}: {row}")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30, help="frames per held-out clip (30 fps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    table = evaluate(args.frames, args.seed, threads=args.threads, log=(lambda *a: None) if args.json else print)
    if args.json:
        print(json.dumps(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
