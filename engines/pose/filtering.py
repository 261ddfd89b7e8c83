"""MediaPipe's landmark smoothing for BlazePose (pose_landmark_filtering), per tracked person.

Three One Euro filters and a visibility low-pass, with MediaPipe's parameters:

- body landmarks (pixels): min cutoff 0.05, beta 80, derivative cutoff 1, velocities scaled by
  1 / object size (mean of the landmarks' box width and height, pixels);
- auxiliary landmarks 33/34 (they give the next frame's region): min cutoff 0.01, beta 10;
- world landmarks (metres): min cutoff 0.1, beta 40, no value scaling;
- visibility: exponential low-pass, alpha 0.1.

The project's general smoothing of poses lives in stream/smoothing.py; this one exists so the
engine can reproduce MediaPipe's tracking behaviour (region stability) and outputs.
"""

from __future__ import annotations

import math

import numpy as np


class OneEuro:
    """Vectorised One Euro filter (MediaPipe's variant: the first derivative is 0, the rate comes
    from the timestamps, default rate ``frequency`` until two timestamps are seen)."""

    def __init__(self, min_cutoff: float, beta: float, derivative_cutoff: float = 1.0, frequency: float = 30.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self.frequency = frequency
        self.last_time: float | None = None
        self.value: np.ndarray | None = None      # filtered
        self.raw: np.ndarray | None = None        # last raw input
        self.derivative: np.ndarray | None = None

    def _alpha(self, cutoff):
        te = 1.0 / self.frequency
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    def __call__(self, value: np.ndarray, time_s: float, value_scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.last_time is not None and time_s <= self.last_time:
            return value
        if self.last_time is not None:
            self.frequency = 1.0 / (time_s - self.last_time)
        self.last_time = time_s
        rate = (value - self.raw) * value_scale * self.frequency if self.raw is not None else np.zeros_like(value)
        alpha_d = self._alpha(self.derivative_cutoff)
        self.derivative = rate if self.derivative is None else alpha_d * rate + (1 - alpha_d) * self.derivative
        alpha = self._alpha(self.min_cutoff + self.beta * np.abs(self.derivative))
        self.value = value if self.value is None else alpha * value + (1 - alpha) * self.value
        self.raw = value
        return self.value.copy()


def object_scale(points_xy: np.ndarray) -> float:
    """Mean of the width and height of the points' bounding box (pixels)."""
    span = points_xy.max(0) - points_xy.min(0)
    return float(span[0] + span[1]) / 2


class PoseSmoother:
    """Smoothing state of one tracked person (see the module docstring)."""

    MIN_OBJECT_SCALE = 1e-6

    def __init__(self):
        self.body = OneEuro(min_cutoff=0.05, beta=80.0)
        self.aux = OneEuro(min_cutoff=0.01, beta=10.0)
        self.world = OneEuro(min_cutoff=0.1, beta=40.0)
        self.visibility: np.ndarray | None = None

    def landmarks(self, xyz: np.ndarray, time_s: float) -> np.ndarray:
        """Body landmarks (L, 3) x, y, z pixels -> smoothed (L, 3)."""
        scale = object_scale(xyz[:, :2])
        if scale < self.MIN_OBJECT_SCALE:
            return xyz
        return self.body(xyz, time_s, 1.0 / scale)

    def auxiliary(self, xyz: np.ndarray, time_s: float) -> np.ndarray:
        """Auxiliary landmarks (2, 3) pixels -> smoothed."""
        scale = object_scale(xyz[:, :2])
        if scale < self.MIN_OBJECT_SCALE:
            return xyz
        return self.aux(xyz, time_s, 1.0 / scale)

    def world_landmarks(self, xyz: np.ndarray, time_s: float) -> np.ndarray:
        return self.world(xyz, time_s, 1.0)

    def visibilities(self, visibility: np.ndarray, alpha: float = 0.1) -> np.ndarray:
        if self.visibility is None:
            self.visibility = np.asarray(visibility, dtype=np.float64)
        else:
            self.visibility = alpha * visibility + (1 - alpha) * self.visibility
        return self.visibility.copy()
