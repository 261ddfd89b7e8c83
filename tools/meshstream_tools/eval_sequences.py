"""Accuracy of the pipeline's body stage over time, on held-out synthetic sequences: the lifter
alone, lifter + refinement, and + every smoothing; MPJPE, PA-MPJPE, PVE (mm), acceleration error
(mm/frame^2) and the lag each adds (frames).

    python tools/eval_sequences.py --frames 30

Steps:

1. The same held-out sequences as tools/eval_lifter.py: one person per CMU clip never trained
   on, 30 fps (meshstream_tools.mocap.load_clip: leading frames with missing joints dropped, marker
   jitter low-passed at 10 Hz), detector-like keypoint noise that persists from frame to frame
   as the detector's does, world landmarks in 70 % of frames.
2. The body stage once per clip, frame after frame, as the lift stage runs it
   (stream.stages.lift.BodyReconstructor): the lifter as anchor, the fit
   warm-started from the previous frame's fit, one shape per track. Once more without the fit
   (``refine=False``, as `--no-refine`): the "lifter alone" row.
3. Each smoothing applied to those bodies as the lift stage applies it: the causal filters
   (one-euro, kalman) frame by frame through a SmootherBank; "rts" through a FixedLagSmoother
   (each frame released ``lag`` frames later, the rest flushed at the end). The fit never sees
   the smoothed bodies (it is warm-started from its own previous answer and the shape comes
   from the unsmoothed track), so this is the pipeline's computation, with the fit paid once.
4. Per row: MPJPE, PA-MPJPE and PVE over all frames with a body; acceleration error over runs
   of consecutive frames with a body (engines.metrics, pelvis-aligned joints); the lag behind
   the truth in frames (meshstream_tools.smoothing_eval.lag_terms, pooled over clips; the fit's own
   lag included, as it is tied to its previous frame) and the lag the smoothing adds (its
   lag minus the unsmoothed fit's); and the smoothing's own time per person-frame.
5. A reference row: the ground-truth parameters themselves through the rts smoother. Its
   acceleration error is the part of the truth's own acceleration that a smoother of that
   bandwidth takes out: a floor for any smoothing of that strength on these clips.

:func:`evaluate` returns the table as a dict; ``--json`` prints it, otherwise it ends with the
markdown table docs/accuracy.md quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from engines import metrics
from meshstream_tools.eval_lifter import held_out_sequences

FPS = 30.0
# (label, kind, parameters): the rows of the table.
ROWS = (
    ("none", "none", {}),
    ("one-euro", "one-euro", {}),
    ("kalman", "kalman", {}),
    ("rts, lag 5", "rts", {"lag_frames": 5}),
    ("rts, lag 15 (default offline)", "rts", {}),
)


def reconstruct(reconstructor, batch) -> tuple[list, float]:
    """The unsmoothed bodies (BodyParams or None) of one clip, frame by frame, and the seconds it took."""
    bodies = []
    start = time.perf_counter()
    for i in range(batch.keypoints.shape[0]):
        world = batch.world[i:i + 1].numpy() if batch.world_present[i] > 0 else None
        bodies += reconstructor(i / FPS, [0], batch.boxes[i:i + 1].numpy(), batch.keypoints[i:i + 1].numpy(),
                                batch.intrinsics[i].numpy(), world_landmarks=world)
    return bodies, time.perf_counter() - start


def smooth(bodies: list, kind: str, **params) -> list:
    """The bodies of one track (None: no body that frame) smoothed as the lift stage smooths them."""
    from stream.smoothing import FixedLagSmoother, SmootherBank

    if kind == "rts":
        smoother = FixedLagSmoother(**params)
        out: list = [None] * len(bodies)
        released = []
        for i, body in enumerate(bodies):
            released += smoother.push(i / FPS, i, [0], [body])
        for i, (smoothed,) in released + smoother.flush():
            out[i] = smoothed
        return out
    bank = SmootherBank(kind, **params)
    return [None if body is None else bank.update(i / FPS, 0, body) for i, body in enumerate(bodies)]


def joints_of(model, bodies: list) -> tuple[np.ndarray, np.ndarray]:
    """(T, 24, 3) float64 joints and (T, V, 3) float32 vertices in metres, NaN where there is no body."""
    joints = np.full((len(bodies), 24, 3), np.nan)
    vertices = np.full((len(bodies), model.num_vertices, 3), np.nan, dtype=np.float32)
    have = [i for i, b in enumerate(bodies) if b is not None]
    if have:
        stack = lambda name: torch.from_numpy(np.stack([getattr(bodies[i], name) for i in have]).astype(np.float32))  # noqa: E731
        with torch.no_grad():
            out = model(stack("global_orient"), stack("body_pose"), stack("betas"), stack("transl"))
        joints[have] = out.joints.double().numpy()
        vertices[have] = out.vertices.numpy()
    return joints, vertices


def runs_of(have: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the runs of consecutive True frames."""
    runs, current = [], []
    for i, ok in enumerate(have.tolist()):
        if ok:
            current.append(i)
        elif current:
            runs.append(np.array(current))
            current = []
    if current:
        runs.append(np.array(current))
    return runs


def lag_sums(output: np.ndarray, truth: np.ndarray, runs: list[np.ndarray]) -> np.ndarray:
    """meshstream_tools.smoothing_eval.lag_terms of the pelvis-aligned joints, summed over the runs."""
    from meshstream_tools.smoothing_eval import lag_terms

    sums = np.zeros(2)
    for run in runs:
        sums += lag_terms(metrics.pelvis_aligned(output[run], output[run]), metrics.pelvis_aligned(truth[run], truth[run]))
    return sums


def score(model, clips: list, smoothed: list[list]) -> dict:
    """MPJPE, PA-MPJPE, PVE, acceleration error and lag of (smoothed) bodies against the truth."""
    errors, pa_errors, vertex_errors, accel = [], [], [], []
    lag = np.zeros(2)
    for batch, bodies in zip(clips, smoothed):
        joints, vertices = joints_of(model, bodies)
        have = np.isfinite(joints).all(-1).all(-1)
        truth = batch.joints.double().numpy()
        errors.append(metrics.mpjpe(joints[have], truth[have]))
        pa_errors.append(metrics.pa_mpjpe(joints[have], truth[have]))
        vertex_errors.append(metrics.pve(vertices[have], batch.vertices.numpy()[have], joints[have], truth[have]))
        runs = runs_of(have)
        accel += [metrics.acceleration_error(joints[run], truth[run]) for run in runs]
        lag += lag_sums(joints, truth, runs)
    return {
        "mpjpe_mm": round(1000 * float(np.concatenate(errors).mean()), 1),
        "pa_mpjpe_mm": round(1000 * float(np.concatenate(pa_errors).mean()), 1),
        "pve_mm": round(1000 * float(np.concatenate(vertex_errors).mean()), 1),
        "accel_mm_per_frame2": round(1000 * float(np.concatenate(accel).mean()), 1),
        "lag_behind_truth_frames": round(float(lag[0] / max(lag[1], 1e-12)), 2),
    }


def evaluate(frames: int = 30, seed: int = 0, threads: int = 1, rows=ROWS, log=print) -> dict:
    from engines.body import load_body_model
    from engines.lift import Lifter
    from stream.stages.lift import BodyReconstructor
    from stream.smoothing import BodyParams

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = load_body_model("open")
    lifter = Lifter.load()
    sequences = held_out_sequences(model, frames, 1, seed)
    # 1. The body stage, once per clip; and the lifter alone.
    clips, raw, lifted, fit_s, count = [], [], [], 0.0, 0
    for _trial, batch in sequences:
        bodies, seconds = reconstruct(BodyReconstructor(model, lifter=lifter), batch)
        fit_s += seconds
        count += sum(b is not None for b in bodies)
        clips.append(batch)
        raw.append(bodies)
        lifted.append(reconstruct(BodyReconstructor(model, lifter=lifter, refine=False), batch)[0])
    log(f"body stage: {count} of {sum(len(b) for b in raw)} frames with a body, {1000 * fit_s / max(count, 1):.0f} ms per frame")
    table = {"lifter alone": score(model, clips, lifted)}
    log(f"{'lifter alone':30s} {table['lifter alone']}")
    # 2. Every smoothing on the same bodies.
    for label, kind, params in rows:
        t0 = time.perf_counter()
        smoothed = [smooth(bodies, kind, **params) for bodies in raw]
        ms = 1000 * (time.perf_counter() - t0) / max(count, 1)
        row = score(model, clips, smoothed)
        row["smoothing_ms_per_person_frame"] = round(ms, 2)
        if "none" in table:  # the lag this smoothing adds to the unsmoothed fit's
            row["added_lag_frames"] = round(row["lag_behind_truth_frames"] - table["none"]["lag_behind_truth_frames"], 2)
        table[label] = row
        log(f"{label:30s} {row}")
    # 3. The floor: the truth itself through the rts smoother.
    truth_bodies = []
    for batch in clips:
        truth = [BodyParams(batch.global_orient[i].numpy(), batch.body_pose[i].numpy(), batch.transl[i].numpy(),
                            batch.betas[i].numpy()) for i in range(batch.keypoints.shape[0])]
        truth_bodies.append(smooth(truth, "rts"))
    row = score(model, clips, truth_bodies)
    table["truth through rts (floor)"] = {k: row[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_mm_per_frame2",
                                                              "lag_behind_truth_frames")}
    log(f"{'truth through rts (floor)':30s} {table['truth through rts (floor)']}")
    table["_meta"] = {"frames_with_body": count, "fit_ms_per_frame": round(1000 * fit_s / max(count, 1), 1),
                      "seconds": round(time.perf_counter() - start, 1), "clip_frames": frames, "seed": seed}
    log(f"total {table['_meta']['seconds']} s")
    return table


LABELS = {"lifter alone": "lifter alone (`--no-refine`)", "none": "lifter + refinement, no smoothing",
          "one-euro": "+ one-euro (live default)", "kalman": "+ kalman", "rts, lag 5": "+ rts, lag 5",
          "rts, lag 15 (default offline)": "+ rts, lag 15 (offline default)",
          "truth through rts (floor)": "reference: the truth through rts"}


def markdown(table: dict) -> str:
    """The table of docs/accuracy.md ("Over time") as markdown."""
    lines = ["| stage | MPJPE | PA-MPJPE | PVE | acceleration error (mm/frame^2) | lag behind truth (frames) "
             "| added lag (frames) | smoothing ms per person-frame |", "|---|---|---|---|---|---|---|---|"]
    for key, row in table.items():
        if key.startswith("_"):
            continue
        cells = [row.get(k, "") for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_mm_per_frame2",
                                          "lag_behind_truth_frames", "added_lag_frames", "smoothing_ms_per_person_frame")]
        lines.append("| " + " | ".join([LABELS.get(key, key)] + [str(c) for c in cells]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30, help="frames per held-out clip (30 fps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    table = evaluate(args.frames, args.seed, threads=args.threads, log=(lambda *a: None) if args.json else print)
    if args.json:
        print(json.dumps(table))
    else:
        print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
