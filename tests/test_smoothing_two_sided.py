"""Two-sided (Rauch-Tung-Striebel, fixed-lag) smoothing: no lag, less acceleration, missed
frames, gaps and track ends, every frame released once and in order, in the pipeline too."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from meshstream_tools import mocap
from meshstream_tools import smoothing_eval as evaluation
from stream.frames import Person
from stream.pipeline import Pipeline, PipelineError, Stage
from stream.smoothing import BodyParams, FixedLagSmoother, RtsSegment, make_smoother, resolve_smoothing
from stream.sources import VideoFileSource
from stream.stages.smooth import SmoothStage

from tests.conftest import MOCAP
from tests.stream_helpers import make_clip

FPS = 30.0


def body(orient_x: float = 0.0, transl=(0.0, 0.0, 3.0), knee: float = 0.0) -> BodyParams:
    pose = np.zeros((23, 3), np.float32)
    pose[3, 0] = knee  # left knee (SMPL joint 4) bends about x
    return BodyParams(np.array([orient_x, 0.0, 0.0], np.float32), pose, np.asarray(transl, np.float32),
                      np.zeros(10, np.float32))


def run_all(smoother: FixedLagSmoother, frames) -> list:
    """Push (t_s, track_ids, bodies) frames; the released (key, bodies), flush included."""
    released = []
    for key, (t_s, ids, bodies) in enumerate(frames):
        released += smoother.push(t_s, key, ids, bodies)
    return released + smoother.flush()


def test_two_sided_smoother_has_no_lag_on_a_ramp():
    # A person walking at 1.2 m/s while turning at 0.6 rad/s and bending a knee at 1 rad/s.
    frames = [(i / FPS, [7], [body(0.6 * i / FPS, (1.2 * i / FPS, 0.0, 3.0), 1.0 * i / FPS)]) for i in range(60)]
    out = run_all(FixedLagSmoother(lag_frames=15), frames)
    assert [key for key, _ in out] == list(range(60))
    transl = np.array([bodies[0].transl[0] for _, bodies in out])
    knee = np.array([bodies[0].body_pose[3, 0] for _, bodies in out])
    orient = np.array([bodies[0].global_orient[0] for _, bodies in out])
    truth = np.arange(60) / FPS
    assert np.abs(transl - 1.2 * truth).max() < 1e-3      # metres: a linear motion is followed exactly
    assert np.abs(knee - 1.0 * truth).max() < 2e-3        # radians (quaternions are not linear in angle)
    assert np.abs(orient - 0.6 * truth).max() < 2e-3
    # A causal low-pass filter lags the same ramp; the two-sided one does not.
    causal = make_smoother("one-euro")
    causal_transl = np.array([causal.update(t, b[0]).transl[0] for t, _, b in frames])
    assert (1.2 * truth - causal_transl)[30:].mean() > 0.005
    assert abs((1.2 * truth - transl)[30:].mean()) < 1e-4


def test_two_sided_smoother_lowers_acceleration_of_a_noisy_sine_without_lag():
    rng = np.random.default_rng(0)
    t = np.arange(120) / FPS
    knee = 0.6 + 0.5 * np.sin(2 * np.pi * 0.8 * t)  # a squat rhythm, radians
    noisy = knee + rng.normal(0.0, 0.05, t.shape)
    frames = [(t[i], [1], [body(knee=noisy[i])]) for i in range(len(t))]
    out = np.array([bodies[0].body_pose[3, 0] for _, bodies in run_all(FixedLagSmoother(), frames)])

    def accel_error(x):
        return np.abs(np.diff(x, 2) - np.diff(knee, 2)).mean()

    assert accel_error(out) < 0.1 * accel_error(noisy)
    assert np.abs(out - knee).mean() < 0.5 * np.abs(noisy - knee).mean()
    assert evaluation.lag_frames(out[:, None], knee[:, None], max_lag=3.0) <= 0.1


def test_two_sided_smoothing_of_noisy_mocap_beats_the_causal_filters_with_no_lag():
    motion, rest = mocap.load_clip("07_09", fps=30.0, root=MOCAP)  # a held-out walk
    motion = mocap.SmplMotion(motion.global_orient[:150], motion.body_pose[:150], motion.transl[:150],
                              motion.fps, motion.name, motion.scale)
    noisy = evaluation.add_pose_noise(motion, rotation_std_rad=0.02, transl_std_m=0.01, seed=3)
    clean = evaluation.joints_mm(motion, rest)
    accel = {kind: evaluation.acceleration_error(evaluation.joints_mm(evaluation.smooth_motion(noisy, kind), rest), clean)
             for kind in ("none", "kalman", "rts")}
    rts = evaluation.joints_mm(evaluation.smooth_motion(noisy, "rts"), rest)
    assert accel["rts"] < 0.6 * accel["kalman"] and accel["rts"] < 0.25 * accel["none"]
    assert evaluation.lag_frames(rts, clean, max_lag=3.0) <= 0.1
    assert evaluation.mean_joint_error(rts, clean) < evaluation.mean_joint_error(evaluation.joints_mm(noisy, rest), clean)


def test_missed_frames_get_no_body_and_the_model_spans_them():
    frames = []
    for i in range(40):
        seen = i % 5 != 2  # every fifth frame missed
        frames.append((i / FPS, [3], [body(transl=(1.0 * i / FPS, 0.0, 3.0)) if seen else None]))
    out = run_all(FixedLagSmoother(lag_frames=4), frames)
    assert [key for key, _ in out] == list(range(40))
    for key, (smoothed,) in out:
        if key % 5 == 2:
            assert smoothed is None  # no body for a frame without one, not a guess
        else:
            assert smoothed.transl[0] == pytest.approx(key / FPS, abs=1e-3)


def test_a_long_gap_starts_a_new_segment_and_a_track_end_still_releases_its_frames():
    smoother = FixedLagSmoother(lag_frames=10, forget_after_s=0.5)
    frames = [(i / FPS, [1], [body(transl=(0.0, 0.0, 3.0))]) for i in range(20)]
    # Track 1 vanishes for 1 s, then comes back 2 m to the side; track 2 appears and ends early.
    frames += [((20 + i) / FPS, [2] if i < 5 else [], [body(transl=(-1.0, 0.0, 3.0))] if i < 5 else [])
               for i in range(30)]
    frames += [((50 + i) / FPS, [1], [body(transl=(2.0, 0.0, 3.0))]) for i in range(20)]
    out = run_all(smoother, frames)
    assert [key for key, _ in out] == list(range(70))
    before = [bodies[0].transl[0] for key, bodies in out if key < 20]
    after = [bodies[0].transl[0] for key, bodies in out if key >= 50]
    track_2 = [bodies[0].transl[0] for key, bodies in out if 20 <= key < 25]
    assert np.allclose(before, 0.0, atol=1e-4)  # not pulled towards where the track reappeared
    assert np.allclose(after, 2.0, atol=1e-4)
    assert np.allclose(track_2, -1.0, atol=1e-4)  # the track ended; its held frames still came out
    assert all(not bodies for key, bodies in out if 25 <= key < 50)


def test_frames_come_out_once_in_order_with_people_in_their_order():
    smoother = FixedLagSmoother(lag_frames=3)
    released = []
    for i in range(12):
        ids = [5, 9] if i % 2 else [9, 5]
        bodies = [body(transl=(float(track), 0.0, 3.0)) for track in ids]
        got = smoother.push(i / FPS, f"frame{i}", ids, bodies)
        assert len(got) == (1 if i >= 3 else 0)  # each frame waits for three later ones
        released += [(key, ids_of, got_bodies) for (key, got_bodies), ids_of in zip(got, [None] * len(got))]
        assert smoother.held == min(i + 1, 3)
    released += [(key, None, b) for key, b in smoother.flush()]
    assert [key for key, _, _ in released] == [f"frame{i}" for i in range(12)]
    for i, (_, _, bodies) in enumerate(released):
        expected = [9.0, 5.0] if i % 2 == 0 else [5.0, 9.0]
        assert [b.transl[0] for b in bodies] == pytest.approx(expected, abs=1e-4)
    assert smoother.flush() == [] and smoother.held == 0
    with pytest.raises(ValueError, match="timestamps must increase"):
        smoother.push(0.0, "late", [5], [body()])


def test_lag_zero_releases_each_frame_at_once_as_the_forward_filter():
    smoother = FixedLagSmoother(lag_frames=0)
    assert smoother.push(0.0, "a", [1], [body()])[0][0] == "a"
    assert smoother.push(1 / FPS, "b", [1], [body(transl=(0.1, 0.0, 3.0))])[0][0] == "b"
    assert smoother.held == 0


def test_segment_forgets_old_observations_without_changing_the_rest():
    full, trimmed = (RtsSegment(process_noise=1.0, measurement_noise=1e-3) for _ in range(2))
    for i in range(8):
        for segment in (full, trimmed):
            segment.add(i / FPS, np.array([float(i % 3)]))
    trimmed.forget_before(5)
    for i in (5, 6, 7):
        assert trimmed.smoothed(i) == pytest.approx(full.smoothed(i), abs=1e-12)
    with pytest.raises(IndexError, match="not held"):
        trimmed.smoothed(4)


def test_auto_means_two_sided_offline_and_causal_live_and_rts_is_not_a_causal_filter():
    assert resolve_smoothing("auto", "offline") == "rts"
    assert resolve_smoothing("auto", "live") in ("one-euro", "kalman")
    assert resolve_smoothing("none", "live") == "none"
    with pytest.raises(ValueError, match="unknown smoothing"):
        resolve_smoothing("spline", "offline")
    with pytest.raises(ValueError, match="two-sided"):
        make_smoother("rts")
    from stream.config import SMOOTHING_CHOICES
    from stream.smoothing import SMOOTHING_CHOICES as choices

    assert SMOOTHING_CHOICES == choices


# ---------------------------------------------------------------------------------------------
# In the pipeline: a stage that holds frames in a FixedLagSmoother, on a real decoded clip.


class PositionStage(Stage):
    """Gives each frame one person (track 0) at x = frame index / 100 m (a real smoothing workload)."""

    name = "position"
    outputs = ("body_params",)

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at

    def process(self, packet):
        if packet.frame.index == self.fail_at:
            raise RuntimeError(f"no person in frame {packet.frame.index}")
        given = body(transl=(packet.frame.index / 100.0, 0.0, 3.0))
        packet.people = [Person(track_id=0, global_orient=given.global_orient, body_pose=given.body_pose,
                                transl=given.transl, betas=given.betas)]
        return packet


def HoldingSmootherStage(lag_frames: int):
    """The pipeline's own smooth stage, two-sided: holds packets, flushes at the end."""
    return SmoothStage("rts", lag_frames=lag_frames)


class Recorder(Stage):
    name = "record"
    inputs = ("body_params",)

    def __init__(self):
        self.seen = []

    def process(self, packet):
        self.seen.append((packet.frame.index, float(packet.people[0].transl[0])))
        return packet


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("fixed_lag") / "clip.mkv", frames=30, fps=30)


def test_pipeline_emits_every_frame_in_order_with_a_fixed_lag_stage_at_the_end_of_input(clip):
    holder, recorder = HoldingSmootherStage(lag_frames=8), Recorder()
    finished = []
    stats = Pipeline(VideoFileSource(clip), [PositionStage(), holder, recorder],
                     on_result=lambda p: finished.append(p.frame.index)).run().summary()
    assert finished == list(range(30)) and stats["frames_out"] == 30
    assert [i for i, _ in recorder.seen] == list(range(30))
    assert np.allclose([x for _, x in recorder.seen], np.arange(30) / 100.0, atol=1e-3)


def test_pipeline_flushes_held_frames_when_stopped_midway(clip):
    holder, recorder = HoldingSmootherStage(lag_frames=20), Recorder()
    pipeline = None

    class StopEarly(PositionStage):
        def process(self, packet):
            if packet.frame.index == 12:
                threading.Thread(target=pipeline.stop).start()  # as Ctrl-C does: stop reading, drain
            return super().process(packet)

    finished: list[int] = []
    pipeline = Pipeline(VideoFileSource(clip), [StopEarly(), holder, recorder], queue_size=1,
                        on_result=lambda p: finished.append(p.frame.index))
    stats = pipeline.run().summary()
    read = stats["frames_in"]
    assert 12 < read < 30  # stopped before the end, with fewer than 20 frames after the first
    assert finished == list(range(read)) and stats["frames_out"] == read


def test_pipeline_flushes_held_frames_when_an_earlier_stage_fails(clip):
    holder, recorder = HoldingSmootherStage(lag_frames=20), Recorder()
    with pytest.raises(PipelineError, match="no person in frame 9"):
        Pipeline(VideoFileSource(clip), [PositionStage(fail_at=9), holder, recorder]).run()
    assert [i for i, _ in recorder.seen] == list(range(9))  # the frames done before the failure


def test_linearised_lag_finds_a_known_delay_and_ignores_jitter():
    rng = np.random.default_rng(1)
    times = np.arange(300)
    reference = np.sin(times / 10.0)[:, None] + rng.normal(0.0, 0.01, (300, 1))  # jittery truth
    delayed = np.sin((times - 0.6) / 10.0)[:, None]
    assert evaluation.lag_behind(delayed, np.sin(times / 10.0)[:, None]) == pytest.approx(0.6, abs=0.02)
    assert evaluation.lag_behind(np.sin(times / 10.0)[:, None], reference) == pytest.approx(0.0, abs=0.05)


def test_smooth_stage_refuses_two_sided_smoothing_live():
    from stream.pipeline import PipelineContext

    with pytest.raises(ValueError, match="cannot run live"):
        SmoothStage("rts").open(PipelineContext(policy="live"))
    with pytest.raises(ValueError, match="unknown smoothing"):
        SmoothStage("savgol")


def test_smooth_stage_releases_held_frames_and_starts_over_on_a_new_timeline():
    """A reconnected stream restarts the clock: the frames held so far come out, smoothed with
    what came before, and the new timeline is smoothed on its own."""
    from stream.frames import Frame, Packet
    from stream.pipeline import PipelineContext

    stage = SmoothStage("rts", lag_frames=5)
    stage.open(PipelineContext(policy="offline"))
    out = []
    for k, t_s in enumerate([0.0, 0.1, 0.2, 0.3, 0.0, 0.1]):
        given = body(transl=(k / 10.0, 0.0, 3.0))
        packet = Packet(Frame(k, t_s, 0, np.zeros((2, 2, 3), np.uint8), new_timeline=k == 4),
                        [Person(track_id=0, global_orient=given.global_orient, body_pose=given.body_pose,
                                transl=given.transl, betas=given.betas)])
        out += stage.process_batch([packet])
    assert [p.frame.index for p in out] == [0, 1, 2, 3]  # released by the restart, in order
    assert [p.frame.index for p in stage.flush()] == [4, 5]
