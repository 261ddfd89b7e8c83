"""The staged pipeline, run on real decoded clips with small real stages (OpenCV work)."""

import threading
import time

import cv2
import pytest

from stream.pipeline import LIVE, OFFLINE, Pipeline, PipelineError, Stage, Watchdog
from stream.sources import VideoFileSource
from tests.stream_helpers import make_clip


class Blur(Stage):
    """Blurs the frame; optionally sleeps to stand for a slow model."""

    name = "blur"
    outputs = ("blurred",)

    def __init__(self, extra_s=0.0, budget_ms=33.0, name="blur", optional=False):
        self.extra_s, self.budget_ms, self.name, self.optional = extra_s, budget_ms, name, optional
        self.closed = False
        self.levels = []

    def process(self, packet):
        self.levels.append(self.context.degrade_level)
        packet.blurred = cv2.GaussianBlur(packet.frame.image, (5, 5), 0)
        if self.extra_s:
            time.sleep(self.extra_s)
        return packet

    def close(self):
        self.closed = True


class Brightness(Stage):
    name = "brightness"
    inputs = ("blurred",)
    outputs = ("brightness",)

    def __init__(self, fail_at=None):
        self.fail_at = fail_at
        self.closed = False
        self.batches = []

    def process_batch(self, packets):
        self.batches.append(len(packets))
        time.sleep(0.01)  # a fixed cost per call, which batching amortizes
        return [self.process(p) for p in packets]

    def process(self, packet):
        if packet.frame.index == self.fail_at:
            raise RuntimeError(f"cannot measure frame {packet.frame.index}")
        packet.brightness = float(packet.blurred.mean())
        return packet

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("p") / "clip.mkv", frames=30, fps=30)


def test_offline_pipeline_is_lossless_and_in_order(clip):
    done = []
    brightness = Brightness()
    brightness.batch_size = 4
    pipeline = Pipeline(VideoFileSource(clip), [Blur(), brightness],
                        on_result=lambda p: done.append((p.frame.index, p.brightness)))
    stats = pipeline.run()
    assert pipeline.policy == OFFLINE
    assert [i for i, _ in done] == list(range(30))
    assert all(b > 0 for _, b in done)
    s = stats.summary()
    assert s["frames_in"] == s["frames_out"] == 30 and s["dropped_at_source"] == 0
    assert s["stages"]["blur"]["frames"] == 30
    assert sum(brightness.batches) == 30 and max(brightness.batches) > 1 and max(brightness.batches) <= 4


def test_stages_run_concurrently_on_different_frames(clip):
    intervals = {"a": [], "b": []}

    class Timed(Blur):
        def process(self, packet):
            start = time.monotonic()
            packet = super().process(packet)
            intervals[self.name].append((packet.frame.index, start, time.monotonic()))
            return packet

    a, b = Timed(extra_s=0.02, name="a"), Timed(extra_s=0.02, name="b")
    b.inputs = ("blurred",)
    Pipeline(VideoFileSource(clip), [a, b]).run()
    # Some frame i+1 was in stage a while frame i was in stage b: the stages overlap.
    overlaps = [(i, j) for i, a0, a1 in intervals["a"] for j, b0, b1 in intervals["b"]
                if i == j + 1 and a0 < b1 and b0 < a1]
    assert len(overlaps) > 10


def test_live_policy_drops_stale_frames_at_the_source_and_degrades(clip):
    slow = Blur(extra_s=0.09, budget_ms=30)
    optional = Blur(name="optional-refine", optional=True)
    optional.inputs = ("blurred",)
    out = []
    pipeline = Pipeline(VideoFileSource(clip, realtime=True), [slow, optional],
                        on_result=lambda p: out.append(p.frame.index))
    stats = pipeline.run().summary()
    assert pipeline.policy == LIVE
    assert stats["dropped_at_source"] > 0
    assert stats["frames_out"] + stats["dropped_at_source"] == stats["frames_in"] == 30
    assert out == sorted(out)  # newest wins, but never out of order
    # Latency stays bounded instead of growing with a backlog (which would reach ~2 s here).
    assert stats["e2e_max_ms"] < 10 * 90
    assert stats["stages"]["blur"]["overruns"] == stats["stages"]["blur"]["frames"]
    assert stats["max_degrade_level"] >= 1 and stats["stages"]["optional-refine"]["skipped"] > 0


def test_a_stage_that_fails_stops_the_run_with_its_error_and_everything_closes(clip):
    blur, brightness = Blur(), Brightness(fail_at=7)
    with pytest.raises(PipelineError, match="stage brightness failed: cannot measure frame 7"):
        Pipeline(VideoFileSource(clip), [blur, brightness]).run()
    assert blur.closed and brightness.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("stage-")]


def test_a_stage_that_cannot_open_is_reported_before_any_frame_is_read(clip):
    class NoModel(Stage):
        name = "model"

        def open(self, context):
            raise FileNotFoundError("weights.pt missing")

    blur = Blur()
    with pytest.raises(PipelineError, match="'model' could not start: weights.pt missing"):
        Pipeline(VideoFileSource(clip), [blur, NoModel()]).run()
    assert blur.closed


def test_chain_with_a_missing_input_is_refused():
    with pytest.raises(PipelineError, match="needs \\['blurred'\\]"):
        Pipeline(None, [Brightness(), Blur()])


def test_stop_from_another_thread_ends_the_run_cleanly(clip):
    done = []
    pipeline = Pipeline(VideoFileSource(clip, realtime=True), [Blur()], on_result=lambda p: done.append(p))
    threading.Timer(0.3, pipeline.stop).start()
    stats = pipeline.run().summary()
    assert 3 < stats["frames_out"] < 30 and len(done) == stats["frames_out"]


def test_watchdog_reports_a_stalled_stage(clip):
    stalls = []
    watchdog = Watchdog(stall_after_s=0.2, interval_s=0.05, action=lambda name, s: stalls.append(name))
    stuck = Blur(extra_s=0.5)
    Pipeline(VideoFileSource(clip), [stuck], max_frames=2, watchdog=watchdog).run()
    assert stalls and set(stalls) == {"blur"} and watchdog.stalls == len(stalls)


def test_max_frames_limits_the_run(clip):
    stats = Pipeline(VideoFileSource(clip), [Blur()], max_frames=5).run().summary()
    assert stats["frames_in"] == stats["frames_out"] == 5


def test_degrader_waits_longer_before_recovering_after_a_premature_recovery():
    from stream.pipeline import _Degrader

    degrader = _Degrader(budget_ms=100.0, hold=10)
    # 1. Overload raises the level; calm frames lower it after `hold` frames.
    levels = [degrader.update(500.0, 0) for _ in range(12)]
    assert max(levels) == 1
    calm = [degrader.update(10.0, 0) for _ in range(40)]
    assert calm[-1] == 0 and degrader.recover_hold == 10
    # 2. Overload right after that recovery: the next recovery must wait twice as long.
    for _ in range(12):
        degrader.update(500.0, 0)
    assert degrader.level >= 1 and degrader.recover_hold == 20
    waited = 0
    while degrader.level > 0 and waited < 500:
        degrader.update(10.0, 0)
        waited += 1
    assert 20 <= waited < 500
