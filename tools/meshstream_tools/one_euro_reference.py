"""A straightforward scalar One Euro filter written from the paper's equations, independent of
stream.smoothing: the reference that tests/data/one_euro_golden.json is generated from.

Casiez, Roussel, Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy Input in
Interactive Systems", CHI 2012:
    tau = 1 / (2 pi f_c);  alpha = 1 / (1 + tau / T_e)          (T_e: sampling period)
    X_hat_i = alpha X_i + (1 - alpha) X_hat_{i-1}                (first sample: X_hat = X)
    dX_i = (X_i - X_hat_{i-1}) / T_e;  dX_hat from the same low-pass with cutoff d_cutoff
    f_c = f_c_min + beta |dX_hat_i|
"""

from __future__ import annotations

import math


class ScalarLowPass:
    def __init__(self) -> None:
        self.previous: float | None = None

    def filter(self, value: float, alpha: float) -> float:
        if self.previous is None:
            self.previous = value
        else:
            self.previous = alpha * value + (1.0 - alpha) * self.previous
        return self.previous


def alpha(period_s: float, cutoff_hz: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / period_s)


class ScalarOneEuro:
    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = ScalarLowPass()
        self.dx = ScalarLowPass()
        self.last_time: float | None = None

    def filter(self, value: float, time_s: float) -> float:
        if self.last_time is None:
            self.last_time = time_s
            self.dx.filter(0.0, 1.0)
            return self.x.filter(value, 1.0)
        period = time_s - self.last_time
        self.last_time = time_s
        speed = (value - self.x.previous) / period
        speed_hat = self.dx.filter(speed, alpha(period, self.d_cutoff))
        cutoff = self.min_cutoff + self.beta * abs(speed_hat)
        return self.x.filter(value, alpha(period, cutoff))


def golden_cases(seed: int = 7) -> list[dict]:
    """Signals, timestamps (30 fps with jitter and a dropped frame) and parameter sets."""
    import random

    rng = random.Random(seed)
    times, t = [], 0.0
    for frame in range(90):
        times.append(t)
        t += (1.0 / 30.0) * (1.0 + rng.uniform(-0.2, 0.2)) * (2.0 if frame == 40 else 1.0)
    channels = []
    for name in ("noisy_sine", "ramp", "step"):
        values = []
        for frame, time_s in enumerate(times):
            if name == "noisy_sine":
                values.append(math.sin(2 * math.pi * 0.7 * time_s) + rng.gauss(0.0, 0.05))
            elif name == "ramp":
                values.append(max(0.0, time_s - 1.0) * 0.8 + rng.gauss(0.0, 0.01))
            else:
                values.append((1.0 if frame >= 45 else 0.0) + rng.gauss(0.0, 0.02))
        channels.append(values)
    cases = []
    for min_cutoff, beta, d_cutoff in ((1.0, 0.0, 1.0), (1.0, 10.0, 1.0), (0.3, 3.0, 2.0)):
        outputs = []
        for values in channels:
            reference = ScalarOneEuro(min_cutoff, beta, d_cutoff)
            outputs.append([reference.filter(v, time_s) for v, time_s in zip(values, times)])
        cases.append(dict(
            params=dict(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff),
            times_s=times,
            signals=[list(row) for row in zip(*channels)],  # (T, C)
            outputs=[list(row) for row in zip(*outputs)],   # (T, C)
        ))
    return cases
