"""Runtime benchmark: per-stage and end-to-end figures, pipeline efficiency, live latency,
publisher throughput. Used by ``meshstream bench``; every function returns a JSON-able dict.

Definitions:
- stage alone: the stage run by itself, frame after frame, on frames decoded beforehand
  (decoding is measured alone the same way); fps = frames / time.
- pipeline efficiency = end-to-end fps of the offline pipeline / fps of the slowest stage
  alone (1.0 means the stages overlap perfectly; the source's decoding counts as a stage).
  Both sides are the best of the same number of passes (``meshstream bench --passes``), and
  each stage alone runs in a thread of its own, as in the pipeline.
- live: the clip re-timed to 30 fps and played in real time; p95 end-to-end latency is
  compared with two frame intervals (66.7 ms).
- publisher: single-person frame messages with vertices, published as fast as possible to
  one subscriber on loopback TCP; throughput, the time of one publish() call, and the added
  latency (publish call -> the subscriber has decoded it).
- soak (``meshstream bench --soak MINUTES``, :func:`soak`): the clip looped in real time through
  the whole live chain to a subscriber for MINUTES; resident memory, the C heap, threads, open
  files, frames and latency sampled every few seconds; growth counted after a warm-up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from stream.frames import Packet, Person

log = logging.getLogger("meshstream.bench")


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def retimed_clip(source_path: str | Path, fps: int = 30, min_frames: int = 300, max_side: int | None = None) -> Path:
    """A copy of the clip with its frames re-timed to ``fps`` and looped to at least
    ``min_frames`` frames, written once into the cache (bench/). Returns its path."""
    import av

    from engines.cache import cache_dir

    source_path = Path(source_path)
    out = cache_dir() / "bench" / f"{source_path.stem}_{fps}fps_{min_frames}_{max_side or 0}.mp4"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    from stream.sources import VideoFileSource

    frames = [f.image for f in VideoFileSource(source_path, max_side=max_side).frames()]
    if not frames:
        raise ValueError(f"no frame could be decoded from {source_path}")
    tmp = out.with_name(out.name + ".partial.mp4")
    height, width = frames[0].shape[0] // 2 * 2, frames[0].shape[1] // 2 * 2
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "23"}
        n = 0
        while n < min_frames:
            for image in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
                frame.pts = n
                for packet in stream.encode(frame):
                    container.mux(packet)
                n += 1
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(out)
    return out


def stages_alone(make_source: Callable, make_chain: Callable, max_frames: int | None = None, passes: int = 2) -> dict:
    """Each stage (and decoding) alone: {name: {"fps", "p50_ms", "p95_ms"}}, the best of
    ``passes`` passes (the first one also warms caches and lazy initialisation up).
    make_chain(source, policy=None): a :class:`stream.compose.Chain` (stream.compose.compose).

    Each stage is opened and run in a thread of its own, as the pipeline runs it (the stage's
    thread is where its engines set up their per-thread state, e.g. OpenMP teams): the figures
    alone and in the pipeline are then measured under the same threading. (On the main thread
    the lift stage once measured 20x slower than in the pipeline on a loaded 2-core machine, an
    artefact of the main thread's OpenMP team, which inflated the efficiency to 5.)
    """
    from stream.pipeline import PipelineContext

    results: dict[str, dict] = {}
    cpu = [0.0]  # process CPU seconds of the stage's frames (nothing else runs meanwhile)

    def keep_best(name: str, figures: dict) -> None:
        if name not in results or figures["fps"] > results[name]["fps"]:
            results[name] = figures

    def run_stage(stage, packets, context, times, errors):
        try:
            stage.open(context)
            cpu[0] = time.process_time()
            try:
                for packet in packets:
                    t = time.perf_counter()
                    stage.process_batch([packet])  # a stage may hold packets back (rts smoothing) ...
                    times.append((time.perf_counter() - t) * 1000)
                stage.flush()  # ... and gives them back at the end
                cpu[0] = time.process_time() - cpu[0]
            finally:
                stage.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    for _ in range(passes):
        chain = make_chain(make_source(), policy="offline")
        chain.source.close()
        source = make_source()
        t0, cpu0 = time.perf_counter(), time.process_time()
        packets = []
        for frame in source.frames():
            packets.append(Packet(frame, intrinsics=chain.camera.intrinsics(frame.width, frame.height)))
            if max_frames and len(packets) >= max_frames:
                break
        decode_s, decode_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        source.close()
        keep_best("decode", {"fps": len(packets) / decode_s if decode_s > 0 else float("nan"),
                             "mean_ms": 1000 * decode_s / max(1, len(packets)),
                             "cpu_ms_per_frame": 1000 * decode_cpu_s / max(1, len(packets))})
        context = PipelineContext(policy="offline")
        for stage in chain.stages:
            times: list[float] = []
            errors: list[BaseException] = []
            thread = threading.Thread(target=run_stage, name=f"alone-{stage.name}",
                                      args=(stage, packets, context, times, errors))
            thread.start()
            thread.join()
            if errors:
                raise errors[0]
            total_s = sum(times) / 1000
            keep_best(stage.name, {"fps": len(times) / total_s if total_s > 0 else float("inf"),
                                   "p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95),
                                   "cpu_ms_per_frame": 1000 * cpu[0] / max(1, len(times))})
    return results


class _CpuClockedSource:
    """A source that notes the process's CPU time when its first frame is asked for (after the
    stages have opened), so that the pipeline's CPU per frame leaves start-up out."""

    def __init__(self, source):
        self._source = source
        self.cpu_at_first_frame = time.process_time()

    def frames(self):
        self.cpu_at_first_frame = time.process_time()
        yield from self._source.frames()

    def __getattr__(self, name):
        return getattr(self._source, name)


def pipeline_run(make_source: Callable, make_chain: Callable, policy: str | None = None,
                 max_frames: int | None = None) -> dict:
    """One pipeline run (``make_chain(source, policy)``, at most ``max_frames``); its stats summary."""
    source = _CpuClockedSource(make_source())
    pipeline = make_chain(source, policy=policy).pipeline
    pipeline.max_frames = max_frames
    pipeline.run()
    cpu_s = time.process_time() - source.cpu_at_first_frame  # every thread, from the first frame on
    summary = pipeline.stats.summary()
    summary["policy"] = pipeline.policy
    summary["cpu_ms_per_frame"] = 1000 * cpu_s / max(1, summary.get("frames_out") or 0)
    return summary


def best_pipeline_run(make_source: Callable, make_chain: Callable, passes: int = 2, **kwargs) -> dict:
    """The pipeline run ``passes`` times; the summary of the fastest run (throughput), with every
    run's throughput under "passes_fps". The stages alone are also the best of their passes, so
    the efficiency compares like with like on a machine whose load varies between runs."""
    runs = [pipeline_run(make_source, make_chain, **kwargs) for _ in range(max(1, passes))]
    best = dict(max(runs, key=lambda run: run["throughput_fps"]))
    best["passes_fps"] = [run["throughput_fps"] for run in runs]
    return best


def publisher_throughput(num_vertices: int = 6890, messages: int = 300, dtype: str = "float32",
                         rate_hz: float | None = None) -> dict:
    """Single-person messages with vertices, to one subscriber on loopback TCP (see module doc).

    rate_hz: None publishes as fast as possible (throughput); a rate paces the messages, which
    is how the added latency of publishing is measured (no queue builds up).
    """
    from stream.client import Subscriber
    from stream.publisher import Publisher
    from stream.protocol import frame_message

    publisher = Publisher("tcp://127.0.0.1:*", sndhwm=messages + 10, handover_hwm=messages + 10).start()
    address = publisher.bound_address
    received: list[tuple[int, int]] = []  # (t_publish_ns, t_decoded_ns)
    ready = threading.Event()
    bytes_seen = [0]

    def subscribe():
        with Subscriber(address, rcvhwm=messages + 10) as sub:
            ready.set()
            while len(received) < messages:
                msg = sub.recv(timeout_s=3.0)
                if msg is None:
                    return
                if msg.kind == "frame":
                    received.append((msg.header["t_publish_ns"], time.monotonic_ns()))
                    bytes_seen[0] += sum(a.nbytes for a in msg.arrays.values())

    thread = threading.Thread(target=subscribe, daemon=True)
    thread.start()
    ready.wait()
    publisher.wait_for_subscriber(5.0)
    rng = np.random.default_rng(0)
    person = Person(track_id=0, score=0.9, bbox=np.array([10, 20, 200, 400], np.float32),
                    keypoints=rng.random((33, 3), dtype=np.float32),
                    global_orient=rng.random(3, dtype=np.float32), body_pose=rng.random((23, 3), dtype=np.float32),
                    betas=rng.random(10, dtype=np.float32), transl=rng.random(3, dtype=np.float32),
                    joints=rng.random((24, 3), dtype=np.float32),
                    vertices=rng.random((num_vertices, 3), dtype=np.float32))
    from stream.frames import Frame

    image = np.zeros((4, 4, 3), np.uint8)
    call_ms = []
    t0 = time.perf_counter()
    for i in range(messages):
        if rate_hz:
            due = t0 + i / rate_hz
            while time.perf_counter() < due:
                time.sleep(max(0.0, min(0.002, due - time.perf_counter())))
        packet = Packet(Frame(i, i / 30, time.monotonic_ns(), image), [person])
        t = time.perf_counter()
        fields, arrays = frame_message(packet, vertices=True, vertices_dtype=dtype)
        publisher.publish(fields, arrays)
        call_ms.append((time.perf_counter() - t) * 1000)
    thread.join(timeout=30)
    elapsed = time.perf_counter() - t0
    publisher.close()
    added = [(done - pub) / 1e6 for pub, done in received]
    return {
        "num_vertices": num_vertices, "dtype": dtype, "messages": messages, "received": len(received),
        "rate_hz": rate_hz,
        "messages_per_s": len(received) / elapsed if elapsed > 0 else float("nan"),
        "MB_per_s": bytes_seen[0] / elapsed / 1e6 if elapsed > 0 else float("nan"),
        "bytes_per_message": bytes_seen[0] / max(1, len(received)),
        "publish_call_p50_ms": _pct(call_ms, 50), "publish_call_p95_ms": _pct(call_ms, 95),
        "added_latency_p50_ms": _pct(added, 50), "added_latency_p95_ms": _pct(added, 95),
    }


def engine_benchmarks(device: str = "cpu", pose_backends: tuple[str, ...] | None = ("litert",)) -> dict:
    """engines.pose.bench.benchmark(), where it exists. (The body model's comparison with
    smplx is a measurement on a generated SMPL-format file: python -m meshstream_tools.body_bench.)

    pose_backends: the back ends the pose benchmark times (None: its own default list, which
    includes torch.compile and takes minutes on a CPU).
    """
    import contextlib
    import importlib
    import inspect
    import sys

    from stream.config import _installed as module_exists

    wanted = {"engines.pose.bench": {"device": device, "backends": pose_backends}}
    out = {}
    for name, kwargs in wanted.items():
        if not module_exists(name):
            out[name] = "not installed"
            continue
        try:
            function = importlib.import_module(name).benchmark
            accepted = inspect.signature(function).parameters
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout clean for --json
                out[name] = function(**{k: v for k, v in kwargs.items() if k in accepted and v is not None})
        except Exception as exc:  # noqa: BLE001 - reported, the rest of the bench goes on
            log.warning("%s.benchmark() failed: %s", name, exc)
            out[name] = f"failed: {exc}"
    return out


# Soak ------------------------------------------------------------------------------------------
# ``meshstream bench --soak MINUTES``: the clip looped in real time through the whole live chain,
# published on loopback to a subscriber in this process, with the process's resources sampled.


class LoopingClipSource:
    """A video file played in real time over and over, as one endless live stream.

    Each pass decodes the file afresh (a new container: opening and closing files is part of
    what a soak exercises). Frame indices and timestamps keep increasing across passes (pts_s
    of pass k = pts in the file + k x the clip's length), so the chain sees one timeline and
    never a restart. ``loops``: passes finished; ``t_first_frame``: time.monotonic() when the
    first frame left (None before).
    """

    live = True

    def __init__(self, path: str | Path, max_side: int | None = None):
        from stream.sources import SourceStats, VideoFileSource

        self.path = Path(path)
        probe = VideoFileSource(self.path, max_side=max_side)
        probe.close()
        self.max_side = max_side
        self.fps = probe.fps or 30.0
        self.width, self.height = probe.width, probe.height
        self.frame_count = None  # endless
        self.name = f"{self.path} (looped)"
        self.loops = 0
        self.t_first_frame: float | None = None
        self.stats = SourceStats()
        self._stop = threading.Event()

    def describe(self) -> dict:
        return {"name": self.name, "fps": self.fps, "width": self.width, "height": self.height, "live": True}

    def frames(self):
        """Frames (stream.frames.Frame) until :meth:`stop`, paced by their timestamps."""
        from stream.frames import Frame
        from stream.sources import SourceError, VideoFileSource

        index, offset_s = 0, 0.0
        t0_ns = None
        while not self._stop.is_set():
            clip = VideoFileSource(self.path, max_side=self.max_side)
            last_pts_s = None
            try:
                for frame in clip.frames():
                    pts_s = offset_s + (frame.pts_s if frame.pts_s is not None else frame.index / self.fps)
                    now = time.monotonic_ns()
                    if t0_ns is None:
                        t0_ns = now - int(pts_s * 1e9)
                        self.t_first_frame = time.monotonic()
                    due_ns = t0_ns + int(pts_s * 1e9)
                    if due_ns > now and self._stop.wait((due_ns - now) / 1e9):
                        return
                    if self._stop.is_set():
                        return
                    self.stats.frames += 1
                    yield Frame(index, pts_s, time.monotonic_ns(), frame.image)
                    index += 1
                    last_pts_s = pts_s
            finally:
                clip.close()
            if last_pts_s is None:
                raise SourceError(f"no frame could be decoded from {self.path}")
            offset_s = last_pts_s + 1.0 / self.fps
            self.loops += 1

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()


def _heap_counters():
    """glibc's mallinfo2 (None elsewhere): how much of the C heap is in use and how much is free
    but kept by the allocator (fragmentation), which tells a leak from a heap that only spreads."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    mallinfo2.argtypes = []
    return mallinfo2


_MALLINFO2 = None


def process_resources() -> dict:
    """This process's resident memory (MB), OS threads, Python threads and open file descriptors
    (Linux /proc; psutil where /proc is missing; None for what neither gives); with glibc, the C
    heap's bytes in use, free but kept, and mapped on their own (MB)."""
    global _MALLINFO2
    out = {"rss_mb": None, "os_threads": None, "py_threads": threading.active_count(), "fds": None,
           "heap_in_use_mb": None, "heap_free_mb": None, "heap_mmapped_mb": None}
    if _MALLINFO2 is None:
        _MALLINFO2 = _heap_counters() or False
    if _MALLINFO2:
        info = _MALLINFO2()
        out["heap_in_use_mb"] = info.uordblks / 2**20  # allocated from the arenas
        out["heap_free_mb"] = info.fordblks / 2**20  # free, kept in the arenas
        out["heap_mmapped_mb"] = info.hblkhd / 2**20  # large blocks mapped on their own
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = int(line.split()[1]) / 1024
                elif line.startswith("Threads:"):
                    out["os_threads"] = int(line.split()[1])
        out["fds"] = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself holds
    except OSError:
        try:
            import psutil

            process = psutil.Process()
            out["rss_mb"] = process.memory_info().rss / 2**20
            out["os_threads"] = process.num_threads()
            out["fds"] = process.num_fds() if hasattr(process, "num_fds") else None
        except ImportError:
            pass
    return out


class _CountingSubscriber:
    """A stream.client.Subscriber in a thread of its own: counts frames, seq gaps and the
    latency from publish to decoded, until the publisher's end-of-stream message (or stop())."""

    def __init__(self, address: str):
        from stream.client import Subscriber

        self.subscriber = Subscriber(address, rcvhwm=1000)
        self.frames = 0
        self.people = 0
        self.vertices_frames = 0  # frames whose message carried vertices
        self.lag_ms: list[float] = []  # since the last take_lag() call
        self.ended = False
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="soak-subscriber", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from stream.protocol import ProtocolError

        try:
            while not self._stop.is_set():
                try:
                    message = self.subscriber.recv(timeout_s=0.5)
                except ProtocolError:
                    continue  # counted in subscriber.stats["malformed"]
                if message is None:
                    continue
                if message.kind == "end":
                    self.ended = True
                    return
                if message.kind != "frame":
                    continue
                lag_ms = (time.monotonic_ns() - message.header["t_publish_ns"]) / 1e6
                with self._lock:
                    self.frames += 1
                    self.people += len(message.header.get("people", []))
                    self.vertices_frames += "vertices" in message.arrays
                    self.lag_ms.append(lag_ms)
        except BaseException as exc:  # noqa: BLE001 - reported in the summary
            self.error = exc

    def take_lag(self) -> list[float]:
        with self._lock:
            lag, self.lag_ms = self.lag_ms, []
        return lag

    @property
    def missed(self) -> int:
        return self.subscriber.stats["missed"]

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` for the end of the stream, then stop and close."""
        self.thread.join(timeout_s)
        self._stop.set()
        self.thread.join(2.0)
        self.subscriber.close()


def _tail(values, n: int) -> list:
    """The last ``n`` items of a deque or list (a copy)."""
    if n <= 0:
        return []
    values = list(values)
    return values[-n:]


def soak(config, minutes: float, interval_s: float | None = None, warmup_s: float | None = None,
         on_sample: Callable[[dict], None] | None = None, trace_memory: bool = False) -> dict:
    """Play ``config.source`` (default: the sample clip) looped in real time through the whole
    live chain for ``minutes``, publishing on a loopback address to a subscriber in this
    process; sample the process every ``interval_s`` seconds.

    Returns {"config", "samples": [sample...], "summary"}; a sample is {"t_s" (since the first
    frame), "rss_mb", "os_threads", "py_threads", "fds", "frames_in", "frames_out",
    "published", "received", "missed", "dropped_at_source", "e2e_p95_ms" (frames finished in
    the window), "lag_p95_ms" (publish -> subscriber decoded, in the window), "degrade_level",
    "loops"}. The summary is :func:`soak_summary` of the samples (warm-up: ``warmup_s``,
    default the first 10 % of the run, at most 60 s). trace_memory: compare tracemalloc
    snapshots at the end of warm-up and at the end (the 15 largest growths, by line), which
    slows the run down.
    """
    from stream.compose import compose
    from stream.config import SAMPLE_CLIP

    duration_s = max(0.0, minutes * 60.0)
    if interval_s is None:
        interval_s = max(0.5, min(10.0, duration_s / 20))
    if warmup_s is None:
        warmup_s = min(60.0, 0.1 * duration_s)
    path = config.source or str(SAMPLE_CLIP)
    source = LoopingClipSource(path, max_side=config.max_side)
    config = config.replace(source=path, realtime=True, publish="tcp://127.0.0.1:*", max_frames=None,
                            wait_subscribers_s=max(config.wait_subscribers_s, 10.0), report_every_s=0.0)
    chain = compose(config, source=source, policy="live")
    subscriber = _CountingSubscriber(chain.publisher.bound_address)
    pipeline = chain.pipeline
    samples: list[dict] = []
    tracemalloc_report: list[str] = []
    done = threading.Event()

    def sample(t_s: float, last: dict) -> dict:
        stats = pipeline.stats
        finished = stats.frames_out - last.get("frames_out", 0)
        lag = subscriber.take_lag()
        row = {"t_s": round(t_s, 2), **process_resources(),
               "frames_in": stats.frames_in, "frames_out": stats.frames_out,
               "published": chain.publisher.sent, "received": subscriber.frames, "missed": subscriber.missed,
               "dropped_at_source": getattr(pipeline._first_queue, "dropped", 0),
               "e2e_p95_ms": _pct(_tail(stats.e2e_ms, finished), 95), "lag_p95_ms": _pct(lag, 95),
               "degrade_level": pipeline.context.degrade_level, "loops": source.loops}
        samples.append(row)
        if on_sample is not None:
            on_sample(row)
        return row

    def sampler() -> None:
        import tracemalloc

        while source.t_first_frame is None and not done.wait(0.05):
            pass
        if done.is_set():
            return
        start = source.t_first_frame
        last = sample(time.monotonic() - start, {})
        snapshot = None
        k = 1
        while True:
            due = start + k * interval_s
            if done.wait(max(0.0, min(due, start + duration_s) - time.monotonic())):
                return
            t_s = time.monotonic() - start
            last = sample(t_s, last)
            k += 1
            if trace_memory and snapshot is None and t_s >= warmup_s and tracemalloc.is_tracing():
                snapshot = tracemalloc.take_snapshot()
            if t_s >= duration_s:
                if snapshot is not None:
                    growth = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
                    tracemalloc_report.extend(str(stat) for stat in growth[:15])
                chain.stop()
                return

    if trace_memory:
        import tracemalloc

        tracemalloc.start(1)
    thread = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
    thread.start()
    interrupted = False
    try:
        chain.run()
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the samples so far still make a report
        interrupted = True
    finally:
        done.set()
        thread.join(5.0)
        subscriber.close()
        chain.close()
        if trace_memory:
            import tracemalloc

            tracemalloc.stop()
    summary = soak_summary(samples, warmup_s)
    summary.update({
        "interrupted": interrupted, "frames_in": pipeline.stats.frames_in, "frames_out": pipeline.stats.frames_out,
        "published": chain.publisher.sent, "publisher_dropped": chain.publisher.dropped,
        "received": subscriber.frames, "missed": subscriber.missed, "people_received": subscriber.people,
        "frames_with_vertices": subscriber.vertices_frames, "end_of_stream_received": subscriber.ended,
        "subscriber_error": None if subscriber.error is None else repr(subscriber.error),
        "loops": source.loops, "max_degrade_level": pipeline.stats.max_degrade_level,
        "dropped_at_source": pipeline.stats.dropped_at_source,
        "e2e_p95_ms": _pct(pipeline.stats.e2e_ms, 95),
    })
    if trace_memory:
        summary["tracemalloc_top_growth"] = tracemalloc_report
    return {"config": {"input": path, "minutes": minutes, "interval_s": interval_s, "warmup_s": warmup_s,
                       "fps": source.fps, "width": source.width, "height": source.height,
                       "stages": [s.name for s in chain.stages]},
            "samples": samples, "summary": summary}


def soak_summary(samples: list[dict], warmup_s: float) -> dict:
    """Resource growth over a soak's samples (see :func:`soak`).

    rss: at the end of warm-up (the first sample at or after ``warmup_s``), at the end, growth
    between the two, max; and the medians of the first and last 10 % of the samples after
    warm-up (at least one each) and their difference, which one noisy sample does not sway.
    threads and fds: their range after warm-up; "stable" when the last sample holds no more
    than the first one after warm-up.
    """
    if not samples:
        return {"samples": 0}
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples[-1:]
    tenth = max(1, len(after) // 10)
    rss = [s["rss_mb"] for s in after if s["rss_mb"] is not None]
    out = {"samples": len(samples), "duration_s": samples[-1]["t_s"], "warmup_s": warmup_s}
    if rss:
        first10, last10 = float(np.median(rss[:tenth])), float(np.median(rss[-tenth:]))
        out["rss_mb"] = {"start": samples[0]["rss_mb"], "after_warmup": rss[0], "end": rss[-1],
                         "growth_after_warmup": rss[-1] - rss[0], "max": max(s["rss_mb"] or 0 for s in samples),
                         "first_10pct_median": first10, "last_10pct_median": last10,
                         "growth_first_to_last_10pct": last10 - first10}
    for key in ("heap_in_use_mb", "heap_free_mb", "heap_mmapped_mb"):
        values = [s[key] for s in after if s.get(key) is not None]
        if values:
            out[key] = {"after_warmup": values[0], "end": values[-1], "growth": values[-1] - values[0],
                        "max": max(values)}
    for key in ("os_threads", "py_threads", "fds"):
        values = [s[key] for s in after if s.get(key) is not None]
        if values:
            out[key] = {"after_warmup": values[0], "end": values[-1], "min": min(values), "max": max(values),
                        "stable": values[-1] <= values[0]}
    return out


def format_soak(result: dict) -> str:
    """A few human-readable lines of a :func:`soak` result."""
    s, c = result["summary"], result["config"]
    lines = [f"soak: {c['input']} looped in real time ({c['fps']:.0f} fps, {c['width']}x{c['height']}), "
             f"{s.get('duration_s', 0) / 60:.1f} min, {s['samples']} samples every {c['interval_s']:g} s, "
             f"warm-up {c['warmup_s']:g} s; stages {' -> '.join(c['stages'])}"]
    if "rss_mb" in s:
        r = s["rss_mb"]
        lines.append(f"RSS: {r['start']:.1f} MB at the first frame, {r['after_warmup']:.1f} MB after warm-up, "
                     f"{r['end']:.1f} MB at the end (growth {r['growth_after_warmup']:+.1f} MB; medians of the "
                     f"first/last 10 %: {r['first_10pct_median']:.1f} / {r['last_10pct_median']:.1f} MB, "
                     f"{r['growth_first_to_last_10pct']:+.1f} MB), max {r['max']:.1f} MB")
    if "heap_in_use_mb" in s:
        lines.append("C heap (glibc): " + ", ".join(
            f"{label} {s[key]['after_warmup']:.1f} -> {s[key]['end']:.1f} MB" for key, label in
            (("heap_in_use_mb", "in use"), ("heap_free_mb", "free but kept"), ("heap_mmapped_mb", "mapped"))))
    for key, label in (("os_threads", "OS threads"), ("py_threads", "Python threads"), ("fds", "open files")):
        if key in s:
            v = s[key]
            lines.append(f"{label}: {v['after_warmup']} after warm-up, {v['end']} at the end (range {v['min']}-"
                         f"{v['max']}; {'stable' if v['stable'] else 'GREW'})")
    lines.append(f"frames: {s['frames_in']} from the source ({s['loops']} loops), {s['frames_out']} through the "
                 f"chain, {s['published']} published, {s['received']} received, {s['missed']} missed (seq gaps), "
                 f"dropped at source {s['dropped_at_source']}, degrade level max {s['max_degrade_level']}, "
                 f"end-to-end p95 {s['e2e_p95_ms']:.1f} ms; end of stream received: {s['end_of_stream_received']}")
    if s.get("interrupted"):
        lines.append("interrupted before the end: the figures cover the run until then")
    if s.get("subscriber_error"):
        lines.append(f"subscriber failed: {s['subscriber_error']}")
    for line in s.get("tracemalloc_top_growth", []):
        lines.append(f"  tracemalloc: {line}")
    return "\n".join(lines)
