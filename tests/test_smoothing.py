"""Per-track smoothing: One Euro against the paper, Kalman, quaternion hemispheres, missed frames,
noise reduction and lag on real motion capture, one shape per track."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engines import rotations
from meshstream_tools import mocap
from meshstream_tools import smoothing_eval as evaluation
from meshstream_tools.one_euro_reference import golden_cases
from stream import smoothing
from stream.smoothing import BodyParams, ConstantVelocityKalman, OneEuroFilter, ShapeConsolidator, make_smoother

from conftest import DATA, MOCAP

GOLDEN = DATA / "one_euro_golden.json"


def _golden() -> list[dict]:
    return json.loads(GOLDEN.read_text())["cases"]


def test_vectorised_one_euro_matches_the_golden_file():
    for case in _golden():
        one_euro = OneEuroFilter(**case["params"])
        signals = np.array(case["signals"])  # (T, C): all channels filtered at once
        outputs = np.stack([one_euro.update(t, x) for t, x in zip(case["times_s"], signals)])
        np.testing.assert_allclose(outputs, np.array(case["outputs"]), rtol=0, atol=1e-12, err_msg=str(case["params"]))
        # The cases exercise the filter: it changed the signals.
        assert np.abs(outputs - signals).max() > 0.01


def test_golden_file_is_what_the_scalar_reference_gives():
    for stored, fresh in zip(_golden(), golden_cases()):
        assert stored["params"] == fresh["params"]
        np.testing.assert_allclose(np.array(stored["outputs"]), np.array(fresh["outputs"]), rtol=0, atol=1e-15)


def test_one_euro_lag_on_a_ramp_is_the_low_pass_lag_at_the_speed_cutoff():
    fps, speed = 30.0, 0.5
    one_euro = OneEuroFilter(min_cutoff=1.0, beta=2.0, d_cutoff=1.0)
    for frame in range(300):
        out = one_euro.update(frame / fps, np.array([speed * frame / fps]))[0]
    lag_frames = (speed * 299 / fps - out) / (speed / fps)
    # Steady state: an exponential filter lags (1 - alpha) / alpha samples on a ramp, and the
    # paper's speed, taken against the previous filtered value, reads speed * (1 + lag).
    expected = 0.0
    for _ in range(200):
        alpha = smoothing.smoothing_factor(1 / fps, 1.0 + 2.0 * speed * (1.0 + expected))
        expected = (1 - alpha) / alpha
    assert lag_frames == pytest.approx(expected, rel=1e-6)
    assert 1.0 < lag_frames < 2.0


def test_kalman_follows_a_ramp_without_lag_and_smooths_noise():
    rng = np.random.default_rng(0)
    kalman = ConstantVelocityKalman(process_noise=1.0, measurement_noise=1e-2)
    times = np.arange(200) / 30.0
    truth = 2.0 * times
    measured = truth + rng.normal(0, 0.1, times.shape)
    out = np.array([kalman.update(t, np.array([z]))[0] for t, z in zip(times, measured)])
    assert abs(out[-20:] - truth[-20:]).mean() < 0.05  # no steady lag on a constant velocity
    assert np.abs(out[50:] - truth[50:]).std() < 0.5 * np.abs(measured[50:] - truth[50:]).std()


@pytest.mark.parametrize("kind", ["one-euro", "kalman", "none"])
def test_quaternions_stay_on_one_hemisphere_through_half_a_turn(kind):
    """A body turning about y through 180 degrees: the axis-angle input flips from +179 to
    -179 degrees (its quaternion changes sign); the output must keep turning smoothly."""
    smoother = make_smoother(kind)
    angles = np.deg2rad(np.linspace(150.0, 210.0, 31))
    wrapped = np.where(angles > math.pi, angles - 2 * math.pi, angles)
    outputs = []
    for frame, angle in enumerate(wrapped):
        body = BodyParams(np.array([0.0, angle, 0.0], np.float32), np.zeros((23, 3), np.float32), np.zeros(3, np.float32))
        outputs.append(smoother.update(frame / 30.0, body).global_orient)
    matrices = rotations.axis_angle_to_matrix(torch.from_numpy(np.stack(outputs)).double())
    steps = rotations.matrix_to_axis_angle(matrices[1:] @ matrices[:-1].transpose(-1, -2)).norm(dim=-1)
    assert steps.max() < math.radians(2.5)  # input step is 2 degrees; no jump at the flip
    truth = rotations.axis_angle_to_matrix(torch.tensor([[0.0, a, 0.0] for a in angles], dtype=torch.float64))
    error = rotations.matrix_to_axis_angle(matrices @ truth.transpose(-1, -2)).norm(dim=-1)
    assert error.max() < math.radians(6.0)
    for out in outputs:
        assert np.isfinite(out).all()


@pytest.mark.parametrize("kind", ["one-euro", "kalman"])
def test_missed_frames_are_predicted_and_the_track_recovers(kind):
    smoother = make_smoother(kind)
    assert smoother.update(0.0, None) is None  # nothing seen yet: no guess
    smoother = make_smoother(kind)
    velocity = np.array([1.0, 0.0, 0.5])
    pose = np.zeros((23, 3), np.float32)
    outputs = {}
    for frame in range(60):
        t = frame / 30.0
        seen = not 40 <= frame < 45
        body = BodyParams(np.zeros(3, np.float32), pose, (velocity * t).astype(np.float32)) if seen else None
        outputs[frame] = smoother.update(t, body)
        assert outputs[frame] is not None and np.isfinite(outputs[frame].transl).all()
    # During the gap the translation keeps moving at the tracked velocity...
    for frame in range(40, 45):
        assert np.linalg.norm(outputs[frame].transl - velocity * frame / 30.0) < 0.05
    # ...and the step across the gap stays one frame's worth, not the whole gap's.
    gap_steps = [np.linalg.norm(outputs[f + 1].transl - outputs[f].transl) for f in range(38, 48)]
    assert max(gap_steps) < 2.0 * np.linalg.norm(velocity) / 30.0
    assert np.linalg.norm(outputs[59].transl - velocity * 59 / 30.0) < 0.03


def test_timestamps_must_increase():
    one_euro = OneEuroFilter()
    one_euro.update(1.0, np.zeros(2))
    with pytest.raises(ValueError, match="timestamps must increase"):
        one_euro.update(1.0, np.zeros(2))


@pytest.mark.parametrize("kind, max_lag_frames", [("one-euro", 1.0), ("kalman", 1.0)])
def test_smoothing_reduces_acceleration_error_on_noisy_mocap_with_little_lag(kind, max_lag_frames):
    motion, rest = mocap.load_clip("07_09", fps=30.0, root=MOCAP)  # a held-out walk
    noisy = evaluation.add_pose_noise(motion, rotation_std_rad=0.02, transl_std_m=0.01, seed=3)
    clean = evaluation.joints_mm(motion, rest)
    raw = evaluation.joints_mm(noisy, rest)
    smoothed = evaluation.joints_mm(evaluation.smooth_motion(noisy, kind), rest)
    raw_accel = evaluation.acceleration_error(raw, clean)
    smooth_accel = evaluation.acceleration_error(smoothed, clean)
    assert smooth_accel < 0.5 * raw_accel
    assert evaluation.lag_frames(smoothed, clean, max_lag=5.0) <= max_lag_frames
    # No worse than the raw input by more than a centimetre on average.
    assert evaluation.mean_joint_error(smoothed, clean) < evaluation.mean_joint_error(raw, clean) + 10.0


def test_lag_measure_finds_a_known_delay():
    times = np.arange(200)
    reference = np.sin(times / 10.0)[:, None]
    delayed = np.sin((times - 2.5) / 10.0)[:, None]
    assert evaluation.lag_frames(delayed, reference) == pytest.approx(2.5, abs=0.06)


def test_shape_freezes_on_the_robust_mean_of_a_tracks_betas():
    rng = np.random.default_rng(1)
    truth = rng.normal(0, 1, 10)
    shape = ShapeConsolidator(min_samples=10, tolerance=0.05, patience=5)
    for frame in range(200):
        betas = truth + rng.normal(0, 0.1, 10)
        if frame % 10 == 3:
            betas = betas + 5.0  # an outlier frame
        estimate = shape.update(betas)
        if shape.frozen:
            break
    assert shape.frozen and frame < 199
    assert np.linalg.norm(estimate - truth) < 0.15
    assert np.array_equal(shape.update(truth + 3.0), estimate)  # frozen: later frames ignored


def test_smoother_gives_one_shape_per_track():
    smoother = make_smoother("one-euro")
    rng = np.random.default_rng(2)
    shapes = []
    for frame in range(60):
        body = BodyParams(np.zeros(3, np.float32), np.zeros((23, 3), np.float32), np.zeros(3, np.float32),
                          betas=rng.normal(0, 0.05, 10).astype(np.float32))
        shapes.append(smoother.update(frame / 30.0, body).betas)
    assert np.array_equal(shapes[-1], shapes[-2]) and np.abs(shapes[-1]).max() < 0.1


def test_factory_rejects_unknown_kinds_and_parameters():
    with pytest.raises(ValueError, match="unknown smoothing"):
        make_smoother("median")
    with pytest.raises(ValueError, match="unknown kalman smoothing parameters"):
        make_smoother("kalman", min_cutoff=1.0)
    assert isinstance(make_smoother("kalman", process_noise=5.0).rotation_filter, ConstantVelocityKalman)


def test_bank_keeps_a_smoother_per_track_and_forgets_expired_ones():
    bank = smoothing.SmootherBank("one-euro")
    body = BodyParams(np.zeros(3, np.float32), np.zeros((23, 3), np.float32), np.array([1, 2, 3], np.float32))
    far = BodyParams(np.zeros(3, np.float32), np.zeros((23, 3), np.float32), np.array([9, 9, 9], np.float32))
    bank.update(0.0, 1, body)
    assert bank.update(0.0, 2, far).transl.tolist() == [9, 9, 9]  # a new track starts from its own body
    assert bank.update(0.1, 5, None) is None
    bank.keep_only([2])
    assert set(bank.smoothers) == {2}
