"""Measure the smoothers' lag and noise reduction: the numbers in docs/smoothing.md.

    python tools/measure_smoothing.py [--fps 30] [--frames 300]

1. Synthetic scalar signals through each smoother's rotation filter (default parameters):
   a ramp (steady-state lag, frames) and a unit step (frames to reach 90 %, overshoot).
2. Held-out CMU clips (meshstream_tools.mocap.HELD_OUT_CLIPS) retargeted onto their own skeleton at
   --fps, with per-frame Gaussian noise (0.02 rad per axis-angle component, 1 cm translation);
   acceleration error (mm/frame^2), MPJPE (mm) root-relative and of the root, and the lag
   (frames) of the output behind the clean motion (meshstream_tools.smoothing_eval.lag_behind).
   "rts" is the two-sided FixedLagSmoother (lag RTS_LAG_FRAMES); the others are causal.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from meshstream_tools import mocap
from meshstream_tools import smoothing_eval as evaluation
from stream import smoothing


def make_vector(kind: str):
    if kind == "one-euro":
        d = smoothing.ONE_EURO_DEFAULTS
        return smoothing.OneEuroFilter(d["min_cutoff"], d["beta"], d["d_cutoff"])
    if kind == "kalman":
        d = smoothing.KALMAN_DEFAULTS
        return smoothing.ConstantVelocityKalman(d["process_noise"], d["measurement_noise"])
    return smoothing.PassThrough()


def filter_signal(kind: str, times: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """One scalar signal through a smoother's rotation filter; "rts" with its fixed lag (each
    sample smoothed with the RTS_LAG_FRAMES samples after it, the last ones at the end)."""
    if kind == "rts":
        d = smoothing.RTS_DEFAULTS
        segment = smoothing.RtsSegment(d["process_noise"], d["measurement_noise"])
        lag, out = smoothing.RTS_LAG_FRAMES, []
        for t, x in zip(times, signal):
            index = segment.add(t, np.array([x]))
            if index >= lag:
                out.append(segment.smoothed(index - lag)[0])
        return np.array(out + [segment.smoothed(i)[0] for i in range(len(out), len(signal))])
    vector = make_vector(kind)
    return np.array([vector.update(t, np.array([x]))[0] for t, x in zip(times, signal)])


def synthetic(kind: str, fps: float) -> dict[str, float]:
    """Lag on a ramp of 0.5 units/s (a joint turning ~60 deg/s moves a quaternion component
    about that fast), and the response to a unit step."""
    frames = int(4 * fps)
    times = np.arange(frames) / fps
    ramp = np.where(times > 1.0, 0.5 * (times - 1.0), 0.0)
    step = (times >= 1.0).astype(np.float64)
    results = {}
    for name, signal in (("ramp", ramp), ("step", step)):
        out = filter_signal(kind, times, signal)
        if name == "ramp":  # measured a second before the end (the two-sided one sees ahead there)
            end = -int(fps)
            results["ramp_lag_frames"] = float((signal[end] - out[end]) / (0.5 / fps))
        else:
            first = int(np.argmax(times >= 1.0))
            reached = np.nonzero(out[first:] >= 0.9)[0]
            results["step_90_frames"] = float(reached[0]) if reached.size else float("inf")
            results["step_overshoot"] = float(max(out.max() - 1.0, 0.0))
    return results


def on_mocap(kind: str, fps: float, frames: int) -> dict[str, float]:
    rows = []
    for trial in mocap.HELD_OUT_CLIPS:
        motion, rest = mocap.load_clip(trial, fps=fps)
        cut = slice(0, min(frames, motion.num_frames))
        motion = mocap.SmplMotion(motion.global_orient[cut], motion.body_pose[cut], motion.transl[cut], fps, trial, motion.scale)
        noisy = evaluation.add_pose_noise(motion, rotation_std_rad=0.02, transl_std_m=0.01, seed=0)
        clean = evaluation.joints_mm(motion, rest)
        start = time.perf_counter()
        smoothed = evaluation.smooth_motion(noisy, kind)
        per_frame_ms = (time.perf_counter() - start) / motion.num_frames * 1000.0
        joints = evaluation.joints_mm(smoothed, rest)
        relative, clean_relative = joints - joints[:, :1], clean - clean[:, :1]
        rows.append([
            evaluation.acceleration_error(joints, clean),
            evaluation.mean_joint_error(relative, clean_relative),
            evaluation.mean_joint_error(joints[:, 0], clean[:, 0]),
            evaluation.lag_behind(joints, clean),
            per_frame_ms,
        ])
    mean = np.mean(rows, axis=0)
    return dict(accel_mm_f2=mean[0], mpjpe_rel_mm=mean[1], root_mm=mean[2], lag_frames=mean[3], ms_per_frame=mean[4])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=300, help="frames per clip (from its start)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| smoothing | ramp lag (frames) | step to 90% (frames) | step overshoot | accel error (mm/frame^2) | "
          "MPJPE root-relative (mm) | root error (mm) | lag on mocap (frames) | ms per person-frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("rts", *smoothing.SMOOTHING_KINDS):
        s = synthetic(kind, args.fps)
        m = on_mocap(kind, args.fps, args.frames)
        print(f"| {kind} | {s['ramp_lag_frames']:.2f} | {s['step_90_frames']:.0f} | {s['step_overshoot']:.2f} | "
              f"{m['accel_mm_f2']:.1f} | {m['mpjpe_rel_mm']:.1f} | {m['root_mm']:.1f} | {m['lag_frames']:.2f} | {m['ms_per_frame']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
