"""The staged pipeline: a source thread and one thread per stage, joined by bounded queues.

Each :class:`Stage` declares the packet fields it needs (``inputs``) and the ones it adds
(``outputs``); :class:`Pipeline` checks the chain before running. Two policies:

- ``live``: the newest frame wins. The queue after the source holds one frame; a frame that
  arrives while the previous one is still waiting replaces it and is counted as dropped at the
  source. Queues between stages hold one packet, so each stage has at most one frame in
  flight (what a GPU stage needs) and latency cannot grow. Under overload the pipeline raises
  its degrade level; stages read ``context.degrade_level`` (e.g. detect less often) and stages
  marked ``optional`` are skipped.
- ``offline``: lossless. Bounded queues give back-pressure to the source; a stage with
  ``batch_size > 1`` receives up to that many waiting packets at once.

Shutdown: the source thread sends a sentinel from ``finally`` (end of input, error, stop,
Ctrl-C); every stage forwards it after the packets before it and after the packets it still
held back (:meth:`Stage.flush`; a stage may emit fewer packets than it took, e.g. a fixed-lag
smoother), so queues drain in order; each
stage is opened and closed in its own thread (files finalized, sockets closed there). A stage
error stops the source, the rest drains, and :meth:`Pipeline.run` raises it. Ctrl-C stops the
source, drains, closes, and re-raises KeyboardInterrupt (a second Ctrl-C stops draining).

Statistics (:class:`PipelineStats`): per-stage latency p50/p95/max, budget overruns and skips,
end-to-end latency from capture to the end of the last stage, throughput, drops.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from stream.frames import Camera, Packet

log = logging.getLogger("meshstream.pipeline")

LIVE = "live"
OFFLINE = "offline"
_SENTINEL = object()  # end of stream marker; never dropped


class PipelineError(Exception):
    """The pipeline could not be built, a stage failed to open, or a stage failed while running."""


@dataclass
class PipelineContext:
    """What stages may read while running (shared, read-mostly).

    policy: "live" or "offline". degrade_level: 0 = normal; 1..3 = progressively shed work.
    """

    policy: str = OFFLINE
    degrade_level: int = 0


class Stage:
    """One step of the pipeline. Subclass and override :meth:`process` (and open/close).

    name: shown in stats. inputs/outputs: packet fields needed / added ("frame" comes from
    the source; "people" from the pose stage; ...). budget_ms: time allowed per frame.
    optional: may be skipped under overload (live).
    batch_size: offline only, the most packets one :meth:`process_batch` call receives.
    """

    name: str = "stage"
    inputs: tuple[str, ...] = ("frame",)
    outputs: tuple[str, ...] = ()
    budget_ms: float = 33.0
    optional: bool = False
    batch_size: int = 1

    def open(self, context: PipelineContext) -> None:
        """Acquire resources (models, sockets, files). Runs in the stage's own thread."""
        self.context = context

    def process(self, packet: Packet) -> Packet:
        """Work on one packet and return it (usually the same object, updated)."""
        return packet

    def process_batch(self, packets: list[Packet]) -> list[Packet]:
        """Work on several packets (offline batching). Default: one by one.

        A stage that holds packets back (e.g. a smoother that needs later frames) overrides
        this method (not :meth:`process`): it returns fewer packets than it took, and more
        later; it must return every packet once, in order, and give back what it still holds
        from :meth:`flush`. The pipeline always calls this method."""
        return [self.process(p) for p in packets]

    def flush(self) -> list[Packet]:
        """The packets still held back, in order; called once after the last packet (end of
        input, stop, Ctrl-C, or an error anywhere; not after a second Ctrl-C, which stops at
        once), before :meth:`close`. Default: none."""
        return []

    def close(self) -> None:
        """Release resources; called once, in the stage's thread, after the last packet."""


class LatestQueue:
    """A one-slot queue where a new item replaces a waiting one ("newest wins").

    put() never blocks; each replaced item is counted in ``dropped``. The end-of-stream
    sentinel never replaces a frame: it is delivered after the frame that is waiting.
    """

    def __init__(self):
        self._item = None
        self._has_item = False
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if item is _SENTINEL:
                self._closed = True
            else:
                if self._has_item:
                    self.dropped += 1
                self._item, self._has_item = item, True
            self._cond.notify()

    def get(self, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                raise queue.Empty
            if self._has_item:
                item, self._item, self._has_item = self._item, None, False
                return item
            return _SENTINEL

    def get_nowait(self):
        return self.get(timeout=0)


def _percentile(values: Iterable[float], q: float) -> float:
    values = list(values)
    return float(np.percentile(values, q)) if values else float("nan")


class StageStats:
    """Latency (ms) and counters of one stage."""

    def __init__(self, name: str, budget_ms: float):
        self.name = name
        self.budget_ms = budget_ms
        self.latencies_ms: collections.deque = collections.deque(maxlen=100_000)
        self.frames = 0
        self.overruns = 0
        self.skipped = 0
        self.errors = 0
        self.busy_since_ns: int | None = None

    def record(self, ms_per_frame: float, frames: int = 1) -> None:
        for _ in range(frames):
            self.latencies_ms.append(ms_per_frame)
        self.frames += frames
        if ms_per_frame > self.budget_ms:
            self.overruns += frames

    def summary(self) -> dict:
        lat = self.latencies_ms
        mean = float(np.mean(lat)) if lat else float("nan")
        return {
            "frames": self.frames, "budget_ms": self.budget_ms,
            "p50_ms": _percentile(lat, 50), "p95_ms": _percentile(lat, 95),
            "max_ms": float(max(lat)) if lat else float("nan"), "mean_ms": mean,
            "fps_if_alone": 1000.0 / mean if lat and mean > 0 else float("nan"),
            "overruns": self.overruns, "skipped": self.skipped, "errors": self.errors,
        }


class PipelineStats:
    """Whole-pipeline figures; ``summary()`` gives one dict (JSON-ready)."""

    def __init__(self):
        self.stages: dict[str, StageStats] = {}
        self.e2e_ms: collections.deque = collections.deque(maxlen=100_000)
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_at_source = 0
        self.t_start_ns: int | None = None
        self.t_end_ns: int | None = None
        self.max_degrade_level = 0

    def summary(self) -> dict:
        wall_s = ((self.t_end_ns or time.monotonic_ns()) - (self.t_start_ns or time.monotonic_ns())) / 1e9
        return {
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "dropped_at_source": self.dropped_at_source, "wall_s": wall_s,
            "throughput_fps": self.frames_out / wall_s if wall_s > 0 else float("nan"),
            "e2e_p50_ms": _percentile(self.e2e_ms, 50), "e2e_p95_ms": _percentile(self.e2e_ms, 95),
            "e2e_max_ms": float(max(self.e2e_ms)) if self.e2e_ms else float("nan"),
            "max_degrade_level": self.max_degrade_level,
            "stages": {name: s.summary() for name, s in self.stages.items()},
        }

    def format(self) -> str:
        """A few human-readable lines."""
        return format_summary(self.summary())


def format_summary(s: dict, title: str | None = None) -> str:
    """Human-readable lines of a :meth:`PipelineStats.summary` (also one read back from JSON)."""
    head = f"{title}: " if title else ""
    lines = [f"{head}{s['frames_out']} frames in {s['wall_s']:.2f} s ({s['throughput_fps']:.1f} fps), "
             f"end-to-end p50 {s['e2e_p50_ms']:.1f} ms p95 {s['e2e_p95_ms']:.1f} ms max {s['e2e_max_ms']:.1f} ms, "
             f"dropped at source {s['dropped_at_source']}, degrade level max {s['max_degrade_level']}"]
    for name, st in s["stages"].items():
        lines.append(f"  {name:<10} p50 {st['p50_ms']:7.2f} ms  p95 {st['p95_ms']:7.2f} ms  max {st['max_ms']:7.2f} ms"
                     f"  budget {st['budget_ms']:.0f} ms  overruns {st['overruns']}  skipped {st['skipped']}")
    return "\n".join(lines)


class Watchdog:
    """Watches for a stage stuck on one packet longer than ``stall_after_s``.

    The default action only logs a warning (once per stall) and does nothing else; pass
    ``action(stage_name, seconds)`` to do more (e.g. stop the pipeline).
    """

    def __init__(self, stall_after_s: float = 10.0, interval_s: float = 1.0,
                 action: Callable[[str, float], None] | None = None):
        self.stall_after_s = stall_after_s
        self.interval_s = interval_s
        self.action = action
        self.stalls = 0
        self._reported: set[tuple[str, int]] = set()

    def check(self, stats: PipelineStats) -> None:
        now = time.monotonic_ns()
        for name, st in list(stats.stages.items()):
            since = st.busy_since_ns
            if since is None:
                continue
            busy_s = (now - since) / 1e9
            if busy_s > self.stall_after_s and (name, since) not in self._reported:
                self._reported.add((name, since))
                self.stalls += 1
                log.warning("watchdog: stage %s has been busy on one frame for %.1f s", name, busy_s)
                if self.action is not None:
                    self.action(name, busy_s)


class _Degrader:
    """Raises the degrade level when live latency exceeds its budget, lowers it when it recovers.

    1. Each finished frame updates an exponential moving average of end-to-end latency.
    2. Above the budget, or when the source dropped frames since the last check, the level
       goes up one step (at most every ``hold`` frames, up to 3).
    3. Below 60% of the budget for ``recover_hold`` frames in a row, it goes down one step.
    4. A step down that proves premature (overload again within 4 x recover_hold frames)
       doubles recover_hold, up to ``max_recover_hold``: work the machine cannot afford is not
       tried again every few frames (each retry is a latency spike).
    """

    def __init__(self, budget_ms: float, hold: int = 10, max_recover_hold: int = 600):
        self.budget_ms = budget_ms
        self.hold = hold
        self.recover_hold = hold
        self.max_recover_hold = max_recover_hold
        self.ema_ms: float | None = None
        self.level = 0
        self._since_change = 0
        self._since_down: int | None = None
        self._calm = 0
        self._last_drops = 0

    def update(self, e2e_ms: float, drops: int) -> int:
        self.ema_ms = e2e_ms if self.ema_ms is None else 0.8 * self.ema_ms + 0.2 * e2e_ms
        self._since_change += 1
        if self._since_down is not None:
            self._since_down += 1
        new_drops = drops > self._last_drops
        self._last_drops = drops
        if (self.ema_ms > self.budget_ms or new_drops) and self._since_change >= self.hold and self.level < 3:
            if self._since_down is not None and self._since_down < 4 * self.recover_hold:
                self.recover_hold = min(2 * self.recover_hold, self.max_recover_hold)
            self._since_down = None  # one step down is judged once
            self.level += 1
            self._since_change = 0
            self._calm = 0
            log.info("overload: end-to-end %.1f ms (budget %.1f ms); degrade level %d",
                     self.ema_ms, self.budget_ms, self.level)
        elif self.ema_ms < 0.6 * self.budget_ms and not new_drops:
            self._calm += 1
            if self._calm >= self.recover_hold and self.level > 0:
                self.level -= 1
                self._calm = 0
                self._since_change = 0
                self._since_down = 0
        else:
            self._calm = 0
        return self.level


class Pipeline:
    """A source and a chain of stages run concurrently.

    source: a :class:`stream.sources.Source` (anything with ``frames()`` and ``stop()``).
    stages: run in order; the last one's finished packets are counted as output.
    policy: "live" or "offline" (default: live if the source is live).
    queue_size: offline queue length between stages. max_frames: stop after this many.
    latency_budget_ms: live end-to-end budget for degrading (default: sum of stage budgets).
    on_result: called with each finished packet, in the last stage's thread.
    report_every_s: log a one-line progress report this often (None: never).
    camera: gives every packet its intrinsics (default: a 60 degree field of view).

    Every packet gets its intrinsics here. Stages that keep state over time start over on
    :attr:`stream.frames.Frame.new_timeline`, which the source sets (never on the clock).
    """

    def __init__(self, source, stages: list[Stage], policy: str | None = None, queue_size: int = 8,
                 max_frames: int | None = None, latency_budget_ms: float | None = None,
                 on_result: Callable[[Packet], None] | None = None, watchdog: Watchdog | None = None,
                 context: PipelineContext | None = None, report_every_s: float | None = None,
                 camera: Camera | None = None):
        self.source = source
        self.camera = camera or Camera()
        self.stages = list(stages)
        self.policy = policy or (LIVE if getattr(source, "live", False) else OFFLINE)
        if self.policy not in (LIVE, OFFLINE):
            raise PipelineError(f"unknown policy {self.policy!r}: use 'live' or 'offline'")
        self.queue_size = queue_size
        self.max_frames = max_frames
        self.on_result = on_result
        self.report_every_s = report_every_s
        self._next_report = time.monotonic() + report_every_s if report_every_s else None
        self.watchdog = watchdog if watchdog is not None else Watchdog()
        self.context = context or PipelineContext()
        self.context.policy = self.policy
        budget = latency_budget_ms or sum(s.budget_ms for s in self.stages) or 100.0
        self._degrader = _Degrader(budget)
        self.stats = PipelineStats()
        for stage in self.stages:
            if stage.name in self.stats.stages:
                raise PipelineError(f"two stages are named {stage.name!r}; give each a unique name")
            self.stats.stages[stage.name] = StageStats(stage.name, stage.budget_ms)
        self._check_chain()
        self._stop = threading.Event()
        self._hard_stop = threading.Event()
        self._errors: list[tuple[str, BaseException, str]] = []
        self._lock = threading.Lock()

    # 1. Wiring checks -------------------------------------------------------------------
    def _check_chain(self) -> None:
        available = {"frame"}
        for stage in self.stages:
            missing = [name for name in stage.inputs if name not in available]
            if missing:
                raise PipelineError(f"stage {stage.name!r} needs {missing}, which no earlier stage "
                                    f"produces (available: {sorted(available)}); add or reorder stages")
            available.update(stage.outputs)

    # 2. Threads ----------------------------------------------------------------------------
    def _make_queue(self, first: bool):
        if self.policy == LIVE:
            return LatestQueue() if first else queue.Queue(maxsize=1)
        return queue.Queue(maxsize=self.queue_size)

    def _put(self, q, item) -> None:
        """Blocking put that still notices a hard stop (so no thread hangs at shutdown)."""
        if isinstance(q, LatestQueue):
            q.put(item)
            return
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._hard_stop.is_set() and item is not _SENTINEL:
                    return

    def _fail(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self._errors.append((where, exc, traceback.format_exc()))
        log.error("%s failed: %s", where, exc)
        self.stop()

    def _source_loop(self, out_q) -> None:
        try:
            for frame in self.source.frames():
                if self._stop.is_set():
                    break
                self.stats.frames_in += 1
                self._put(out_q, Packet(frame, intrinsics=self.camera.intrinsics(frame.width, frame.height)))
                if self.max_frames is not None and self.stats.frames_in >= self.max_frames:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._fail("source", exc)
        finally:
            if isinstance(out_q, LatestQueue):
                self.stats.dropped_at_source = out_q.dropped
            self._put(out_q, _SENTINEL)

    def _take(self, in_q, batch_size: int) -> list:
        """Up to batch_size items: one blocking get, then whatever is already waiting."""
        items = [in_q.get()]
        while len(items) < batch_size and items[-1] is not _SENTINEL:
            try:
                items.append(in_q.get_nowait())
            except queue.Empty:
                break
        return items

    def _stage_loop(self, index: int, stage: Stage, in_q, out_q, opened: threading.Event,
                    open_errors: list) -> None:
        stats = self.stats.stages[stage.name]
        is_last = out_q is None
        batch_size = stage.batch_size if self.policy == OFFLINE else 1
        try:
            stage.open(self.context)
        except BaseException as exc:  # noqa: BLE001
            open_errors.append((stage.name, exc))
            opened.set()
            return
        opened.set()
        failed = False
        try:
            while True:
                items = self._take(in_q, batch_size)
                done = items[-1] is _SENTINEL
                packets = [p for p in items if p is not _SENTINEL]
                if packets and not failed and not self._hard_stop.is_set():
                    try:
                        packets = self._run_stage(stage, stats, packets)
                        for packet in packets:
                            if is_last:
                                self._finish(packet)
                            else:
                                self._put(out_q, packet)
                    except Exception as exc:  # noqa: BLE001 - the stage failed: drain from here on
                        stats.errors += 1
                        failed = True
                        self._fail(f"stage {stage.name}", exc)
                if done:
                    if not self._hard_stop.is_set():
                        self._flush_stage(stage, out_q)
                    break
        finally:
            if out_q is not None:
                self._put(out_q, _SENTINEL)
            try:
                stage.close()
            except BaseException as exc:  # noqa: BLE001
                self._fail(f"closing stage {stage.name}", exc)

    def _flush_stage(self, stage: Stage, out_q) -> None:
        """Pass on the packets a stage still holds (also after it failed: they were done)."""
        try:
            held = stage.flush()
        except Exception as exc:  # noqa: BLE001
            self._fail(f"flushing stage {stage.name}", exc)
            return
        for packet in held:
            if out_q is None:
                self._finish(packet)
            else:
                self._put(out_q, packet)

    def _run_stage(self, stage: Stage, stats: StageStats, packets: list[Packet]) -> list[Packet]:
        if stage.optional and self.policy == LIVE and self.context.degrade_level > 0:
            stats.skipped += len(packets)
            return packets
        t0 = time.monotonic_ns()
        stats.busy_since_ns = t0
        try:
            out = stage.process_batch(packets)
        finally:
            stats.busy_since_ns = None
        ms = (time.monotonic_ns() - t0) / 1e6 / len(packets)
        stats.record(ms, len(packets))
        for packet in packets:
            packet.stage_ms[stage.name] = ms
        return out

    def _finish(self, packet: Packet) -> None:
        now = time.monotonic_ns()
        e2e_ms = (now - packet.frame.t_capture_ns) / 1e6
        self.stats.e2e_ms.append(e2e_ms)
        self.stats.frames_out += 1
        self.stats.t_end_ns = now
        if self.policy == LIVE:
            drops = self._first_queue.dropped if isinstance(self._first_queue, LatestQueue) else 0
            level = self._degrader.update(e2e_ms, drops)
            self.context.degrade_level = level
            self.stats.max_degrade_level = max(self.stats.max_degrade_level, level)
        if self._next_report is not None and time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + self.report_every_s
            recent = list(self.stats.e2e_ms)[-200:]
            log.info("%d frames, end-to-end p95 %.1f ms (last %d), dropped at source %d, degrade level %d",
                     self.stats.frames_out, _percentile(recent, 95), len(recent),
                     getattr(self._first_queue, "dropped", 0), self.context.degrade_level)
        if self.on_result is not None:
            self.on_result(packet)

    # 3. Control ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop reading; packets already read still go through (thread-safe)."""
        self._stop.set()
        try:
            self.source.stop()
        except Exception:  # noqa: BLE001
            pass

    def run(self) -> PipelineStats:
        """Run to the end of the input (or stop/error/Ctrl-C); returns the stats.

        Raises PipelineError if a stage fails to open or fails while running, and re-raises
        KeyboardInterrupt after a clean shutdown.
        """
        queues = [self._make_queue(i == 0) for i in range(len(self.stages))]
        self._first_queue = queues[0] if queues else None
        threads: list[threading.Thread] = []
        open_errors: list = []
        for i, stage in enumerate(self.stages):
            opened = threading.Event()
            out_q = queues[i + 1] if i + 1 < len(self.stages) else None
            t = threading.Thread(target=self._stage_loop, name=f"stage-{stage.name}", daemon=True,
                                 args=(i, stage, queues[i], out_q, opened, open_errors))
            t.start()
            threads.append(t)
            opened.wait()
            if open_errors:
                break
        if open_errors:
            # 1. Unwind: the stages already running receive the sentinel and close.
            self._hard_stop.set()
            self._put(queues[0], _SENTINEL)
            for t in threads:
                t.join(timeout=10)
            try:
                self.source.stop()
                getattr(self.source, "close", lambda: None)()
            except Exception:  # noqa: BLE001
                pass
            name, exc = open_errors[0]
            raise PipelineError(f"stage {name!r} could not start: {exc}") from exc
        self.stats.t_start_ns = time.monotonic_ns()
        source_thread = threading.Thread(target=self._source_loop, name="source", daemon=True, args=(queues[0],))
        source_thread.start()
        interrupted = False
        try:
            self._wait(threads)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: finishing the frames already read (Ctrl-C again to stop at once)")
            self.stop()
            try:
                self._wait(threads)
            except KeyboardInterrupt:
                self._hard_stop.set()
                self._wait(threads, timeout_s=10)
        source_thread.join(timeout=5)
        if isinstance(queues[0], LatestQueue):
            self.stats.dropped_at_source = queues[0].dropped
        if self.stats.t_end_ns is None:
            self.stats.t_end_ns = time.monotonic_ns()
        try:
            getattr(self.source, "close", lambda: None)()
        except Exception:  # noqa: BLE001
            pass
        if interrupted:
            raise KeyboardInterrupt
        if self._errors:
            where, exc, tb = self._errors[0]
            log.debug("%s", tb)
            raise PipelineError(f"{where} failed: {exc}") from exc
        return self.stats

    def _wait(self, threads: list[threading.Thread], timeout_s: float | None = None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        next_check = time.monotonic()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.1)
                if time.monotonic() >= next_check:
                    self.watchdog.check(self.stats)
                    next_check = time.monotonic() + self.watchdog.interval_s
                if deadline is not None and time.monotonic() > deadline:
                    return
