"""Measuring smoothers: noise on clean motion, acceleration error, added lag.

Used by tools/measure_smoothing.py (the numbers in docs/smoothing.md) and by the tests.
"""

from __future__ import annotations

import numpy as np

from meshstream_tools import mocap
from stream.smoothing import BodyParams, FixedLagSmoother, make_smoother


def add_pose_noise(
    motion: mocap.SmplMotion,
    rotation_std_rad: float = 0.05,
    transl_std_m: float = 0.02,
    seed: int = 0,
) -> mocap.SmplMotion:
    """The motion with independent Gaussian noise per frame: on each axis-angle component of
    every rotation (radians) and on the translation (metres), like a per-frame estimator's."""
    rng = np.random.default_rng(seed)
    orient = motion.global_orient + rng.normal(0.0, rotation_std_rad, motion.global_orient.shape)
    pose = motion.body_pose + rng.normal(0.0, rotation_std_rad, motion.body_pose.shape)
    transl = motion.transl + rng.normal(0.0, transl_std_m, motion.transl.shape)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return mocap.SmplMotion(f32(orient), f32(pose), f32(transl), motion.fps, motion.name + "_noisy", motion.scale)


def smooth_motion(
    motion: mocap.SmplMotion,
    kind: str,
    missing: np.ndarray | None = None,
    **params: float,
) -> mocap.SmplMotion:
    """Run a fresh smoother over a motion, frame times k / fps; frames where ``missing`` (F,)
    is True are fed as None (a missed detection). kind "rts": the two-sided FixedLagSmoother
    (``params`` may hold lag_frames), whose missed frames have no body (shown as the input)."""
    observed = [missing is None or not missing[frame] for frame in range(motion.num_frames)]
    inputs = [BodyParams(motion.global_orient[f], motion.body_pose[f], motion.transl[f]) if observed[f] else None
              for f in range(motion.num_frames)]
    if kind == "rts":
        fixed_lag = FixedLagSmoother(**params)
        released = []
        for frame, body in enumerate(inputs):
            released += fixed_lag.push(frame / motion.fps, frame, [0], [body])
        results = [bodies[0] for _, bodies in released + fixed_lag.flush()]
    else:
        smoother = make_smoother(kind, consolidate_shape=False, **params)
        results = [smoother.update(frame / motion.fps, body) for frame, body in enumerate(inputs)]
    out_orient, out_pose, out_transl = [], [], []
    for frame, result in enumerate(results):
        if result is None:  # missed before the first observation: nothing to show
            result = BodyParams(motion.global_orient[frame], motion.body_pose[frame], motion.transl[frame])
        out_orient.append(result.global_orient)
        out_pose.append(result.body_pose)
        out_transl.append(result.transl)
    return mocap.SmplMotion(
        np.stack(out_orient), np.stack(out_pose), np.stack(out_transl), motion.fps, motion.name + "_" + kind, motion.scale
    )


def joints_mm(motion: mocap.SmplMotion, rest_joints: np.ndarray) -> np.ndarray:
    """(F, 24, 3) float64 joint positions in millimetres (skeleton forward kinematics)."""
    joints = mocap.skeleton_forward_kinematics(
        np.asarray(rest_joints, np.float64), motion.global_orient, motion.body_pose, motion.transl
    )
    return joints.numpy() * 1000.0


def acceleration_error(joints: np.ndarray, reference: np.ndarray) -> float:
    """Mean over frames and joints of |a - a_ref|, a[t] = x[t+1] - 2 x[t] + x[t-1] (units/frame^2)."""
    accel = joints[2:] - 2.0 * joints[1:-1] + joints[:-2]
    accel_ref = reference[2:] - 2.0 * reference[1:-1] + reference[:-2]
    return float(np.linalg.norm(accel - accel_ref, axis=-1).mean())


def mean_joint_error(joints: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-joint position error (MPJPE), in the units of the inputs."""
    return float(np.linalg.norm(joints - reference, axis=-1).mean())


def lag_frames(output: np.ndarray, reference: np.ndarray, max_lag: float = 10.0, step: float = 0.05) -> float:
    """The delay (frames, >= 0) that best aligns an output with its clean reference: the shift s
    minimising the mean squared difference between output[t] and reference[t - s] (linearly
    interpolated), over frames where both exist. (F, ...) arrays."""
    frames = reference.shape[0]
    flat_ref = reference.reshape(frames, -1)
    flat_out = output.reshape(frames, -1)
    start = int(np.ceil(max_lag)) + 1
    best_shift, best_error = 0.0, np.inf
    for shift in np.arange(0.0, max_lag + 1e-9, step):
        times = np.arange(start, frames) - shift
        before = np.floor(times).astype(int)
        weight = (times - before)[:, None]
        delayed = (1.0 - weight) * flat_ref[before] + weight * flat_ref[np.minimum(before + 1, frames - 1)]
        error = float(np.mean((flat_out[start:] - delayed) ** 2))
        if error < best_error:
            best_shift, best_error = float(shift), error
    return best_shift


def lag_terms(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The two sums of the linearised least-squares lag of ``output`` behind ``reference``
    ((T, ...) arrays, frames in order): output(t) ~ reference(t - s) ~ reference(t) - s v(t),
    v the reference's central-difference velocity, so s = sum (reference - output) . v /
    sum v . v over the interior frames. Returned separately so that clips can be pooled.

    Unlike :func:`lag_frames`, it does not interpolate: interpolating a jittery reference (noisy
    mocap, an unsmoothed fit) halfway between frames averages its jitter away and so favours
    half-frame shifts whatever the true lag. Valid for lags up to about a frame."""
    if reference.shape[0] < 3:
        return 0.0, 0.0
    velocity = 0.5 * (reference[2:] - reference[:-2])
    return float(((reference[1:-1] - output[1:-1]) * velocity).sum()), float((velocity * velocity).sum())


def lag_behind(output: np.ndarray, reference: np.ndarray) -> float:
    """The lag (frames, positive = late) of output behind reference, from :func:`lag_terms`."""
    numerator, denominator = lag_terms(output, reference)
    return numerator / denominator if denominator > 0 else 0.0
