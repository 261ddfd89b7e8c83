"""Temporal smoothing of each tracked person's body: pose, translation and shape.

A filter per track, made by a factory (as in norfair and filterpy):

    smoother = make_smoother("one-euro", min_cutoff=1.0, beta=1.0)   # or "kalman", "none"
    body = smoother.update(t_s, BodyParams(global_orient, body_pose, transl, betas))
    body = smoother.update(t_s, None)        # a missed frame: the prediction, state kept

Rotations (global_orient and the 23 body_pose joints) are filtered as unit quaternions, each
new one first put on the hemisphere of the previous output (q and -q are the same rotation) and
the output renormalised; translation is filtered in metres; betas are consolidated into one
shape per track (a running median that freezes once it has converged). Time steps come from the
frames' timestamps (seconds), so variable frame rates and dropped frames are handled.
docs/smoothing.md gives the parameters and the lag they add.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter

from engines import rotations

# ---------------------------------------------------------------------------------------------
# Vector filters: each filters a (D,) float64 signal, every element independently.


class VectorFilter(Protocol):
    def predict(self, t_s: float) -> np.ndarray | None: ...

    def update(self, t_s: float, value: np.ndarray | None) -> np.ndarray | None: ...

    def reset(self) -> None: ...


def smoothing_factor(dt_s: float | np.ndarray, cutoff_hz: float | np.ndarray) -> np.ndarray:
    """The exponential smoothing factor of a first-order low-pass filter (Casiez et al. 2012):
    alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff)."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over elements.

    min_cutoff: Hz, the cutoff when the signal is still (lower: smoother, more lag at rest).
    beta: cutoff increase per unit of speed (per second) (higher: less lag when moving fast).
    d_cutoff: Hz, the cutoff of the low-pass filter on the derivative.

    Per sample x at time t (dt = t - t_previous):
      1. dx = (x - x_hat_previous) / dt; dx_hat = a(dt, d_cutoff) dx + (1 - a) dx_hat_previous
      2. cutoff = min_cutoff + beta |dx_hat|
      3. x_hat = a(dt, cutoff) x + (1 - a) x_hat_previous
    The first sample passes through (dx_hat = 0).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self.value: np.ndarray | None = None
        self.derivative: np.ndarray | None = None
        self.output_velocity: np.ndarray | None = None
        self.t_s: float | None = None

    def predict(self, t_s: float) -> np.ndarray | None:
        """The output extrapolated to t_s at its own low-passed velocity (state unchanged).

        (Not with dx_hat: taken against the previous filtered value, it overestimates the
        speed of a ramp by the factor 1 + lag.)"""
        if self.value is None or self.t_s is None:
            return None
        return self.value + self.output_velocity * max(t_s - self.t_s, 0.0)

    def update(self, t_s: float, value: np.ndarray | None) -> np.ndarray | None:
        """Filter one sample; None (a missed frame) returns the prediction and keeps the state."""
        if value is None:
            return self.predict(t_s)
        value = np.asarray(value, dtype=np.float64)
        if self.value is None:
            self.value, self.t_s = value.copy(), float(t_s)
            self.derivative, self.output_velocity = np.zeros_like(value), np.zeros_like(value)
            return self.value.copy()
        dt = float(t_s) - self.t_s
        if not dt > 0:
            raise ValueError(f"timestamps must increase: got {t_s} after {self.t_s}")
        derivative = (value - self.value) / dt
        alpha_d = smoothing_factor(dt, self.d_cutoff)
        self.derivative = alpha_d * derivative + (1.0 - alpha_d) * self.derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self.derivative)
        alpha = smoothing_factor(dt, cutoff)
        previous = self.value
        self.value = alpha * value + (1.0 - alpha) * previous
        self.output_velocity = alpha_d * (self.value - previous) / dt + (1.0 - alpha_d) * self.output_velocity
        self.t_s = float(t_s)
        return self.value.copy()


class ConstantVelocityKalman:
    """A filterpy KalmanFilter with a constant-velocity model, for D channels at once.

    Every channel has the same model (state: value and velocity), the same noise and the same
    measurement times, so they share one covariance: the filter's state x is (2, D), column d
    holding channel d's value and velocity, and filterpy's 2x2 matrices act on all columns.

    process_noise: variance of the white-noise acceleration, (units/s^2)^2 (higher: follows
        faster, smooths less). measurement_noise: variance of a measurement, units^2.
    """

    def __init__(self, process_noise: float = 1.0, measurement_noise: float = 1e-3, initial_velocity_var: float = 1.0):
        if process_noise <= 0 or measurement_noise <= 0:
            raise ValueError(f"Kalman noises must be positive; got {process_noise}, {measurement_noise}")
        self.process_noise = float(process_noise)
        self.measurement_noise = float(measurement_noise)
        self.initial_velocity_var = float(initial_velocity_var)
        self.reset()

    def reset(self) -> None:
        self.filter: KalmanFilter | None = None
        self.t_s: float | None = None

    def _advance(self, t_s: float) -> None:
        dt = float(t_s) - self.t_s
        if not dt > 0:
            raise ValueError(f"timestamps must increase: got {t_s} after {self.t_s}")
        kf = self.filter
        kf.F = np.array([[1.0, dt], [0.0, 1.0]])
        kf.Q = Q_discrete_white_noise(dim=2, dt=dt, var=self.process_noise)
        kf.predict()
        self.t_s = float(t_s)

    def predict(self, t_s: float) -> np.ndarray | None:
        """The value predicted at t_s (state unchanged)."""
        if self.filter is None:
            return None
        dt = max(float(t_s) - self.t_s, 0.0)
        return self.filter.x[0] + dt * self.filter.x[1]

    def update(self, t_s: float, value: np.ndarray | None) -> np.ndarray | None:
        """Predict to t_s, then correct with the value; None (a missed frame) only predicts,
        so the uncertainty grows and the next measurement weighs more."""
        if self.filter is None:
            if value is None:
                return None
            value = np.asarray(value, dtype=np.float64)
            kf = KalmanFilter(dim_x=2, dim_z=1)
            kf.x = np.stack([value, np.zeros_like(value)])  # (2, D)
            kf.P = np.diag([self.measurement_noise, self.initial_velocity_var])
            kf.H = np.array([[1.0, 0.0]])
            kf.R = np.array([[self.measurement_noise]])
            self.filter, self.t_s = kf, float(t_s)
            return value.copy()
        self._advance(t_s)
        if value is not None:
            # H given explicitly: filterpy then takes z as is, (1, D), one row per measurement.
            self.filter.update(np.asarray(value, dtype=np.float64)[None, :], H=self.filter.H)
        return self.filter.x[0].copy()


class PassThrough:
    """No smoothing: returns each value; a missed frame repeats the last one."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.value: np.ndarray | None = None

    def predict(self, t_s: float) -> np.ndarray | None:
        return None if self.value is None else self.value.copy()

    def update(self, t_s: float, value: np.ndarray | None) -> np.ndarray | None:
        if value is not None:
            self.value = np.asarray(value, dtype=np.float64).copy()
        return self.predict(t_s)


# ---------------------------------------------------------------------------------------------
# Shape: one set of betas per track.


class ShapeConsolidator:
    """A running robust mean of a track's betas that freezes once it has converged.

    The estimate is the element-wise median of the last ``window`` observations. It freezes
    when at least ``min_samples`` were seen and it moved less than ``tolerance`` (L2, in beta
    units) on each of the last ``patience`` updates; after that, new observations are ignored.
    """

    def __init__(self, window: int = 60, min_samples: int = 10, tolerance: float = 0.02, patience: int = 5):
        self.window, self.min_samples, self.tolerance, self.patience = window, min_samples, tolerance, patience
        self.reset()

    def reset(self) -> None:
        self.samples: list[np.ndarray] = []
        self.estimate: np.ndarray | None = None
        self.frozen = False
        self.count = 0
        self._still = 0

    def update(self, betas: np.ndarray | None) -> np.ndarray | None:
        """Add one observation (None: none this frame) and return the current shape."""
        if betas is None or self.frozen:
            return None if self.estimate is None else self.estimate.copy()
        betas = np.asarray(betas, dtype=np.float64)
        if not np.isfinite(betas).all():
            return None if self.estimate is None else self.estimate.copy()
        self.samples.append(betas)
        self.samples = self.samples[-self.window :]
        self.count += 1
        estimate = np.median(np.stack(self.samples), axis=0)
        moved = math.inf if self.estimate is None else float(np.linalg.norm(estimate - self.estimate))
        self._still = self._still + 1 if moved < self.tolerance else 0
        self.estimate = estimate
        if self.count >= self.min_samples and self._still >= self.patience:
            self.frozen = True
        return self.estimate.copy()


# ---------------------------------------------------------------------------------------------
# The per-track body smoother.


@dataclass
class BodyParams:
    """One person's body in one frame. global_orient (3,) and body_pose (23, 3) axis-angle
    radians, transl (3,) metres, betas (10,) or None; float32."""

    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    betas: np.ndarray | None = None


def _to_quaternions(global_orient: np.ndarray, body_pose: np.ndarray) -> np.ndarray:
    pose = np.concatenate([np.asarray(global_orient, np.float64).reshape(1, 3), np.asarray(body_pose, np.float64).reshape(-1, 3)])
    return rotations.axis_angle_to_quaternion(torch.from_numpy(pose)).numpy()  # (24, 4)


def _to_axis_angle(quats: np.ndarray) -> np.ndarray:
    return rotations.quaternion_to_axis_angle(torch.from_numpy(quats)).numpy()  # (24, 3)


class BodySmoother:
    """Smooths one track's bodies: quaternions of the 24 rotations, translation, shape."""

    def __init__(self, rotation_filter: VectorFilter, translation_filter: VectorFilter, shape: ShapeConsolidator | None):
        self.rotation_filter = rotation_filter
        self.translation_filter = translation_filter
        self.shape = shape
        self.last_quats: np.ndarray | None = None  # (24, 4), the previous output

    def reset(self) -> None:
        self.rotation_filter.reset()
        self.translation_filter.reset()
        if self.shape is not None:
            self.shape.reset()
        self.last_quats = None

    def _output(self, quats: np.ndarray | None, transl: np.ndarray | None, betas: np.ndarray | None) -> BodyParams | None:
        if quats is None or transl is None:
            return None
        quats = quats.reshape(-1, 4)
        quats = quats / np.linalg.norm(quats, axis=-1, keepdims=True).clip(min=1e-12)
        pose = _to_axis_angle(quats)
        return BodyParams(
            global_orient=np.ascontiguousarray(pose[0], dtype=np.float32),
            body_pose=np.ascontiguousarray(pose[1:], dtype=np.float32),
            transl=np.ascontiguousarray(transl, dtype=np.float32),
            betas=None if betas is None else np.ascontiguousarray(betas, dtype=np.float32),
        )

    def predict(self, t_s: float) -> BodyParams | None:
        """The body expected at t_s (state unchanged); None before the first update."""
        betas = None if self.shape is None or self.shape.estimate is None else self.shape.estimate
        return self._output(self.rotation_filter.predict(t_s), self.translation_filter.predict(t_s), betas)

    def update(self, t_s: float, body: BodyParams | None) -> BodyParams | None:
        """Filter this frame's body; None for a frame where the track was not observed."""
        if body is None:
            quats = self.rotation_filter.update(t_s, None)
            transl = self.translation_filter.update(t_s, None)
            betas = self.shape.update(None) if self.shape is not None else None
            return self._output(quats, transl, betas)
        quats = _to_quaternions(body.global_orient, body.body_pose)
        if not np.isfinite(quats).all() or not np.isfinite(body.transl).all():
            raise ValueError("the body to smooth holds NaN or infinite values; pass None for a frame without a body")
        if self.last_quats is not None:
            # 1. q and -q are one rotation: take the one nearer the previous output.
            flip = (quats * self.last_quats).sum(-1, keepdims=True) < 0
            quats = np.where(flip, -quats, quats)
        # 2. Filter the 96 quaternion components and the translation; 3. renormalise (in _output).
        filtered = self.rotation_filter.update(t_s, quats.reshape(-1))
        transl = self.translation_filter.update(t_s, np.asarray(body.transl, np.float64))
        out_quats = filtered.reshape(-1, 4)
        self.last_quats = out_quats / np.linalg.norm(out_quats, axis=-1, keepdims=True).clip(min=1e-12)
        if self.shape is not None:
            betas = self.shape.update(body.betas)
        else:
            betas = body.betas
        return self._output(self.last_quats, transl, betas)


# Defaults, tuned on CMU clips at 30 fps with detector-like noise (docs/smoothing.md).
ONE_EURO_DEFAULTS = dict(min_cutoff=2.0, beta=5.0, d_cutoff=1.0, transl_min_cutoff=1.0, transl_beta=10.0)
KALMAN_DEFAULTS = dict(process_noise=30.0, measurement_noise=1e-3, transl_process_noise=30.0, transl_measurement_noise=2.5e-4)
SMOOTHING_KINDS = ("one-euro", "kalman", "none")  # causal: one frame in, one out (make_smoother)
SMOOTHING_CHOICES = ("auto", "rts", *SMOOTHING_KINDS)  # what the commands offer
LIVE_SMOOTHING = "one-euro"  # what "auto" means live


def resolve_smoothing(choice: str, policy: str) -> str:
    """The smoothing "auto" stands for: two-sided "rts" offline (no latency requirement), the
    causal LIVE_SMOOTHING live; any other choice is itself."""
    if choice not in SMOOTHING_CHOICES:
        raise ValueError(f"unknown smoothing {choice!r}; choose one of {', '.join(SMOOTHING_CHOICES)}")
    if choice != "auto":
        return choice
    return LIVE_SMOOTHING if policy == "live" else "rts"


def make_smoother(kind: str = "one-euro", consolidate_shape: bool = True, **params: float) -> BodySmoother:
    """A new per-track smoother.

    kind "one-euro": min_cutoff (Hz), beta, d_cutoff (Hz) for the rotations (quaternion
        components), transl_min_cutoff (Hz), transl_beta (per m/s) for the translation.
    kind "kalman": process_noise ((1/s^2)^2), measurement_noise for the rotations (quaternion
        components), transl_process_noise ((m/s^2)^2), transl_measurement_noise (m^2).
    kind "none": no temporal filtering (a missed frame repeats the last body).
    consolidate_shape: one shape per track (ShapeConsolidator); False passes betas through.
    Unknown parameters are an error.
    """
    shape = ShapeConsolidator() if consolidate_shape else None
    if kind == "one-euro":
        settings = _settings(kind, ONE_EURO_DEFAULTS, params)
        rotation = OneEuroFilter(settings["min_cutoff"], settings["beta"], settings["d_cutoff"])
        translation = OneEuroFilter(settings["transl_min_cutoff"], settings["transl_beta"], settings["d_cutoff"])
    elif kind == "kalman":
        settings = _settings(kind, KALMAN_DEFAULTS, params)
        rotation = ConstantVelocityKalman(settings["process_noise"], settings["measurement_noise"])
        translation = ConstantVelocityKalman(settings["transl_process_noise"], settings["transl_measurement_noise"])
    elif kind == "none":
        _settings(kind, {}, params)
        rotation, translation = PassThrough(), PassThrough()
    elif kind == "rts":
        raise ValueError("rts smoothing is two-sided (it needs later frames): use FixedLagSmoother, not make_smoother")
    else:
        raise ValueError(f"unknown smoothing {kind!r}; choose one of {', '.join(SMOOTHING_KINDS)}")
    return BodySmoother(rotation, translation, shape)


def _settings(kind: str, defaults: dict, params: dict) -> dict:
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {kind} smoothing parameters {sorted(unknown)}; known: {sorted(defaults) or 'none'}")
    return {**defaults, **{k: float(v) for k, v in params.items()}}


class SmootherBank:
    """One smoother per track id, made on first sight with make_smoother(kind, **params)."""

    def __init__(self, kind: str = "one-euro", **params: float):
        make_smoother(kind, **params)  # check the settings now, not on the first person
        self.kind, self.params = kind, params
        self.smoothers: dict[int, BodySmoother] = {}

    def update(self, t_s: float, track_id: int, body: BodyParams | None) -> BodyParams | None:
        if track_id not in self.smoothers:
            if body is None:
                return None
            self.smoothers[track_id] = make_smoother(self.kind, **self.params)
        return self.smoothers[track_id].update(t_s, body)

    def forget(self, track_id: int) -> None:
        """Drop a track's state (the track expired)."""
        self.smoothers.pop(track_id, None)

    def keep_only(self, track_ids) -> None:
        for track_id in set(self.smoothers) - set(int(t) for t in track_ids):
            del self.smoothers[track_id]


# ---------------------------------------------------------------------------------------------
# Two-sided smoothing (offline): a constant-velocity Kalman filter forward, Rauch-Tung-Striebel
# backward, over a fixed lag of frames.


def _constant_velocity_model(dt_s: float, process_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Transition F (2,2) and process noise Q (2,2) of a constant-velocity model over dt_s
    seconds with white-noise acceleration of variance process_noise (filterpy's
    Q_discrete_white_noise, written out)."""
    F = np.array([[1.0, dt_s], [0.0, 1.0]])
    Q = process_noise * np.array([[dt_s**4 / 4.0, dt_s**3 / 2.0], [dt_s**3 / 2.0, dt_s**2]])
    return F, Q


class RtsSegment:
    """One continuous stretch of a track, smoothed two-sided; D channels share one model.

    Forward, a constant-velocity Kalman filter (state (2, D): value and velocity per channel;
    every channel has the same model, noise and measurement times, so one (2, 2) covariance
    serves all). :meth:`smoothed` runs the Rauch-Tung-Striebel backward pass from the newest
    observation down to the one asked for, so an observation gets the information of all the
    observations after it so far. Missed frames are simply absent: the model spans the gap (dt
    is the time between observations).

    process_noise: variance of the white-noise acceleration, (units/s^2)^2 (higher: follows
        faster, smooths less). measurement_noise: variance of one measurement, units^2.
    """

    def __init__(self, process_noise: float, measurement_noise: float, initial_velocity_var: float = 10.0):
        if process_noise <= 0 or measurement_noise <= 0:
            raise ValueError(f"RTS noises must be positive; got {process_noise}, {measurement_noise}")
        self.process_noise = float(process_noise)
        self.measurement_noise = float(measurement_noise)
        self.initial_velocity_var = float(initial_velocity_var)
        self.times: list[float] = []
        self._filtered: list[tuple[np.ndarray, np.ndarray]] = []   # (x (2,D), P (2,2)) after the update
        self._predicted: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (x, P, F) before it
        self._first = 0  # index of self.times[0] among all observations (older ones are trimmed)

    def __len__(self) -> int:
        return self._first + len(self.times)

    def add(self, t_s: float, value: np.ndarray) -> int:
        """Filter one observation (D,); returns its index in the segment."""
        z = np.asarray(value, dtype=np.float64)
        r = self.measurement_noise
        if not self.times:
            x = np.stack([z, np.zeros_like(z)])
            P = np.diag([r, self.initial_velocity_var])
            self._predicted.append((x, P, np.eye(2)))
        else:
            dt = float(t_s) - self.times[-1]
            if not dt > 0:
                raise ValueError(f"timestamps must increase: got {t_s} after {self.times[-1]}")
            # 1. Predict.
            F, Q = _constant_velocity_model(dt, self.process_noise)
            x_prev, P_prev = self._filtered[-1]
            x_pred, P_pred = F @ x_prev, F @ P_prev @ F.T + Q
            self._predicted.append((x_pred, P_pred, F))
            # 2. Update with the value (H = [1, 0]).
            gain = P_pred[:, 0] / (P_pred[0, 0] + r)  # (2,)
            x = x_pred + gain[:, None] * (z - x_pred[0])[None, :]
            P = P_pred - np.outer(gain, P_pred[0])
        self.times.append(float(t_s))
        self._filtered.append((x, P))
        return len(self) - 1

    def smoothed(self, index: int) -> np.ndarray:
        """The value (D,) at observation ``index`` given every observation added so far."""
        k = index - self._first
        if not 0 <= k < len(self.times):
            raise IndexError(f"observation {index} is not held (held: {self._first}..{len(self) - 1})")
        x_next = self._filtered[-1][0]
        # Backward (Rauch-Tung-Striebel): x_s[t] = x[t] + C (x_s[t+1] - x_pred[t+1]),
        # C = P[t] F[t+1]^T P_pred[t+1]^-1.
        for j in range(len(self.times) - 2, k - 1, -1):
            x, P = self._filtered[j]
            x_pred, P_pred, F = self._predicted[j + 1]
            C = P @ F.T @ np.linalg.inv(P_pred)
            x_next = x + C @ (x_next - x_pred)
        return x_next[0].copy()

    def forget_before(self, index: int) -> None:
        """Drop what observations before ``index`` held (they are no longer asked for)."""
        drop = min(max(index - self._first, 0), len(self.times) - 1)
        if drop > 0:
            del self.times[:drop], self._filtered[:drop], self._predicted[:drop]
            self._first += drop


# Defaults of the two-sided smoother, tuned on the held-out sequences run through the body
# stage (tools/eval_sequences.py; docs/smoothing.md).
RTS_DEFAULTS = dict(process_noise=30.0, measurement_noise=1e-3, transl_process_noise=30.0,
                    transl_measurement_noise=2.5e-4)
RTS_LAG_FRAMES = 15


class _BodySegment:
    """One continuous stretch of a track: an RtsSegment for the 24 rotations (quaternions, 96
    channels) and one for the translation (3 channels)."""

    def __init__(self, settings: dict):
        self.rotations = RtsSegment(settings["process_noise"], settings["measurement_noise"])
        self.translation = RtsSegment(settings["transl_process_noise"], settings["transl_measurement_noise"])
        self.last_quats: np.ndarray | None = None  # (24, 4), the previous observation's
        self.last_t_s: float | None = None
        self.betas: np.ndarray | None = None  # the latest given

    def add(self, t_s: float, body: BodyParams) -> int:
        quats = _to_quaternions(body.global_orient, body.body_pose)
        if not np.isfinite(quats).all() or not np.isfinite(body.transl).all():
            raise ValueError("the body to smooth holds NaN or infinite values; pass None for a frame without a body")
        if self.last_quats is not None:
            # q and -q are one rotation: take the one nearer the previous observation.
            quats = np.where((quats * self.last_quats).sum(-1, keepdims=True) < 0, -quats, quats)
        self.last_quats, self.last_t_s = quats, float(t_s)
        if body.betas is not None:
            self.betas = np.asarray(body.betas, np.float32)
        index = self.rotations.add(t_s, quats.reshape(-1))
        self.translation.add(t_s, np.asarray(body.transl, np.float64))
        return index

    def body_at(self, index: int) -> BodyParams:
        quats = self.rotations.smoothed(index).reshape(24, 4)
        quats = quats / np.linalg.norm(quats, axis=-1, keepdims=True).clip(min=1e-12)
        pose = _to_axis_angle(quats)
        transl = self.translation.smoothed(index)
        self.rotations.forget_before(index)
        self.translation.forget_before(index)
        return BodyParams(
            global_orient=np.ascontiguousarray(pose[0], dtype=np.float32),
            body_pose=np.ascontiguousarray(pose[1:], dtype=np.float32),
            transl=np.ascontiguousarray(transl, dtype=np.float32),
            betas=None if self.betas is None else self.betas.copy(),
        )


@dataclass
class _HeldFrame:
    key: object
    entries: list[tuple[_BodySegment, int] | None]  # per person: where its observation is


class FixedLagSmoother:
    """Two-sided smoothing of every track's bodies, frame by frame, with a fixed delay.

    Each frame is held until ``lag_frames`` later frames have arrived; then each of its bodies
    is released as the Rauch-Tung-Striebel smoothed estimate (a constant-velocity Kalman filter
    run forward over the track, then backward from the newest observation): the frame gets the
    information of the frames before it and of up to ``lag_frames`` after it, so the smoothing
    adds no lag to the motion, only a delay of ``lag_frames`` frames before a frame comes out.
    Frames come out once each, in the order they went in; :meth:`flush` releases the frames
    still held (end of input, an error, Ctrl-C).

        smoother = FixedLagSmoother(lag_frames=15)
        for key, bodies in smoother.push(t_s, key, track_ids, bodies): ...   # 0 or more frames
        for key, bodies in smoother.flush(): ...

    Rotations are smoothed as quaternions (each put on the hemisphere of the track's previous
    one, renormalised after smoothing), translation in metres; a body's betas are the latest
    its track segment was given (the reconstructor consolidates them into one per track). A track unseen for more than ``forget_after_s``
    starts a new segment (nothing is smoothed across the gap); shorter gaps are spanned by the
    model. Parameters: process_noise, measurement_noise (quaternion components),
    transl_process_noise ((m/s^2)^2), transl_measurement_noise (m^2); see RTS_DEFAULTS.
    """

    def __init__(self, lag_frames: int = RTS_LAG_FRAMES, forget_after_s: float = 2.0, **params: float):
        if lag_frames < 0:
            raise ValueError(f"lag_frames must be >= 0, got {lag_frames}")
        self.lag_frames = int(lag_frames)
        self.forget_after_s = float(forget_after_s)
        self.settings = _settings("rts", RTS_DEFAULTS, params)
        self.params = params
        self.reset()

    def reset(self) -> None:
        """Forget every track and every held frame (call :meth:`flush` first to keep them)."""
        self._segments: dict[int, _BodySegment] = {}
        self._held: collections.deque[_HeldFrame] = collections.deque()
        self._last_t_s: float | None = None

    @property
    def held(self) -> int:
        """Frames waiting to be released."""
        return len(self._held)

    def push(self, t_s: float, key, track_ids, bodies: list[BodyParams | None]) -> list[tuple[object, list[BodyParams | None]]]:
        """Add one frame: its people's track ids and bodies (None: no body), in one order.

        Returns the frames released by this one, oldest first: (key, bodies in the order they
        were pushed). Raises ValueError when timestamps do not increase.
        """
        t_s = float(t_s)
        if self._last_t_s is not None and not t_s > self._last_t_s:
            raise ValueError(f"timestamps must increase: got {t_s} after {self._last_t_s}; flush() and reset() "
                             "when the timeline restarts")
        self._last_t_s = t_s
        track_ids = [int(t) for t in track_ids]
        if len(track_ids) != len(bodies):
            raise ValueError(f"{len(track_ids)} track ids for {len(bodies)} bodies")
        entries: list[tuple[_BodySegment, int] | None] = []
        for track, body in zip(track_ids, bodies):
            if body is None:
                entries.append(None)
                continue
            segment = self._segments.get(track)
            if segment is None or t_s - segment.last_t_s > self.forget_after_s:
                segment = self._segments[track] = _BodySegment(self.settings)
            entries.append((segment, segment.add(t_s, body)))
        self._held.append(_HeldFrame(key, entries))
        # Tracks long unseen: their segments are no longer extended (held frames keep theirs).
        for track in [k for k, s in self._segments.items() if t_s - s.last_t_s > self.forget_after_s]:
            del self._segments[track]
        released = []
        while len(self._held) > self.lag_frames:
            released.append(self._release(self._held.popleft()))
        return released

    def flush(self) -> list[tuple[object, list[BodyParams | None]]]:
        """Release every held frame (smoothed with what has arrived), oldest first."""
        released = [self._release(frame) for frame in self._held]
        self._held.clear()
        return released

    def _release(self, frame: _HeldFrame) -> tuple[object, list[BodyParams | None]]:
        bodies = [None if entry is None else entry[0].body_at(entry[1]) for entry in frame.entries]
        return frame.key, bodies
