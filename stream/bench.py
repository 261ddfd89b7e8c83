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
"""

from __future__ import annotations

import logging
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
