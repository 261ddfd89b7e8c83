"""Many live streams on a Ray cluster: one pipeline actor per camera, URL or file.

A streams file (TOML) names the streams; every option of :class:`stream.config.Config` may be
set for all of them under ``[defaults]`` and per stream::

    [defaults]
    max_people = 2

    [streams.door]                     # publishes on topic meshstream.frame.door
    source = "rtsp://10.0.0.7/stream"
    publish = "tcp://*:5601"

    [streams.hall]
    source = "hall.mp4"                # files play in real time; loop = true starts them over
    loop = true
    publish = "tcp://*:5602"
    max_people = 4
    cpus = 2                           # Ray resources of this stream's actor (default 1 CPU, 0 GPUs)

Each stream runs as one actor (:class:`StreamPipeline`): it loads the models once, binds its own
publisher (its own address; frames on ``meshstream.frame.<name>``), and runs chains built by
:func:`stream.compose.compose` one after another: a chain that fails starts again after a
back-off, a looping file starts over. A stream whose process dies is restarted by Ray (the
actor's ``max_restarts``); the others never notice. :class:`StreamSupervisor` starts the actors
and gathers each one's status (state, fps, end-to-end latency, drops, restarts), which
``meshstream serve`` prints and serves as JSON over HTTP (``meshstream status``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stream.config import Config, ConfigError, load_toml, options_from_mapping
from stream.distributed import DistributedError, connect

log = logging.getLogger("meshstream.serve")

# Keys of a stream's table that are not Config options.
STREAM_KEYS = {"loop": bool, "cpus": (int, float), "gpus": (int, float)}


@dataclass
class StreamSpec:
    """One stream of a streams file: its options (``config.source_name`` is the stream's name,
    ``config.publish`` its address), whether a file starts over, and its actor's resources."""

    name: str
    config: Config
    loop: bool = False
    cpus: float = 1.0
    gpus: float = 0.0

    @property
    def topic(self) -> str:
        return f"meshstream.frame.{self.name}"


def read_streams(path: str | os.PathLike) -> list[StreamSpec]:
    """The streams of a TOML streams file (see the module docstring); ConfigError says what is wrong."""
    data = load_toml(path, f"streams file {path}")
    unknown = set(data) - {"defaults", "streams"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(sorted(unknown))} (use [defaults] and [streams.NAME])")
    streams = data.get("streams")
    if not isinstance(streams, dict) or not streams:
        raise ConfigError(f"{path}: no streams: add one [streams.NAME] table per camera or URL with source and publish")
    defaults = data.get("defaults", {})
    specs, addresses = [], {}
    for name, table in streams.items():
        where = f"{path}: [streams.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with source and publish")
        extras = {k: table[k] for k in STREAM_KEYS if k in table}
        for key, kind in STREAM_KEYS.items():
            if key in extras and (not isinstance(extras[key], kind) or isinstance(extras[key], bool) != (kind is bool)):
                raise ConfigError(f"{where}: {key} must be {'true or false' if kind is bool else 'a number'}")
        options = {"realtime": True, **options_from_mapping({k: v for k, v in defaults.items() if k not in STREAM_KEYS},
                                                            f"{path}: [defaults]"),
                   **options_from_mapping({k: v for k, v in table.items() if k not in STREAM_KEYS}, where)}
        if not options.get("source"):
            raise ConfigError(f"{where}: give its source (a camera, an rtsp:// URL or a file)")
        if not options.get("publish"):
            raise ConfigError(f"{where}: give its publish address (e.g. tcp://*:5601); each stream needs its own")
        if options["publish"] in addresses:
            raise ConfigError(f"{where}: publish {options['publish']} is also [streams.{addresses[options['publish']]}]'s; "
                              "give each stream its own address")
        addresses[options["publish"]] = name
        if "source_name" in options and options["source_name"] != name:
            raise ConfigError(f"{where}: the stream's topic is its name; leave source_name out")
        try:
            config = Config(**{**options, "source_name": name})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for flag, value in (("results", config.results), ("render", config.render), ("bvh", config.bvh),
                            ("glb", config.glb)):
            if value:
                raise ConfigError(f"{where}: {flag} is for processing files (meshstream process), not for live streams")
        specs.append(StreamSpec(name, config, loop=bool(extras.get("loop", False)), cpus=float(extras.get("cpus", 1)),
                                gpus=float(extras.get("gpus", 0))))
    return specs


class StreamPipeline:
    """A Ray actor running one stream: models loaded once, its own publisher, chains one after another.

    :meth:`status` answers while the stream runs (the chains run in a thread of the actor).
    """

    def __init__(self, name: str, config: dict, loop: bool = False, retry_s: float = 2.0, window_s: float = 5.0):
        logging.basicConfig(level=logging.WARNING)
        from stream.compose import load_engines
        from stream.publisher import Publisher

        self.name = name
        self.config = Config(**config)
        self.loop = loop
        self.retry_s = retry_s
        self.window_s = window_s
        t0 = time.perf_counter()
        self.engines = load_engines(self.config)
        self.load_s = time.perf_counter() - t0
        self.publisher = Publisher(self.config.publish, meta_interval_s=self.config.meta_interval_s,
                                   linger_ms=int(self.config.linger_s * 1000),
                                   curve_keys_dir=self.config.curve_keys).start()
        self.state = "starting"
        self.error: str | None = None
        self.chains = 0
        self.failures = 0
        self.frames = 0
        self._recent: collections.deque = collections.deque(maxlen=4096)  # (finish time s, e2e ms)
        self._lock = threading.Lock()
        self._chain = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{name}", daemon=True)
        self._thread.start()

    def _finished(self, packet) -> None:
        now_ns = time.monotonic_ns()
        with self._lock:
            self.frames += 1
            self._recent.append((now_ns / 1e9, (now_ns - packet.frame.t_capture_ns) / 1e6))

    def _run(self) -> None:
        from stream.compose import compose

        while not self._stop.is_set():
            try:
                chain = compose(self.config, engines=self.engines, publisher=self.publisher,
                                on_result=self._finished)
                with self._lock:
                    self._chain = chain
                    self.chains += 1
                    self.state = "running"
                chain.run()
                if not self.loop:
                    break
            except Exception as exc:  # noqa: BLE001 - the stream starts again; the others are not touched
                self.failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                self.state = "retrying"
                log.warning("stream %s failed (%s); starting again in %.0f s", self.name, self.error, self.retry_s)
                self._stop.wait(self.retry_s)
        self.state = "stopped" if self._stop.is_set() else "finished"
        self.publisher.end_of_stream("interrupted" if self._stop.is_set() else "finished")

    def status(self) -> dict:
        """The stream now: state, fps and end-to-end latency over the last ``window_s``, drops."""
        import numpy as np
        import ray

        now = time.monotonic()
        with self._lock:
            recent = [(t, ms) for t, ms in self._recent if now - t <= self.window_s]
            chain = self._chain
            frames = self.frames
        latencies = np.array([ms for _, ms in recent]) if recent else np.zeros(0)
        span = min(self.window_s, now - recent[0][0]) if len(recent) > 1 else 0.0
        dropped_at_source = getattr(getattr(chain.pipeline, "_first_queue", None), "dropped", 0) if chain else 0
        return {
            "name": self.name, "state": self.state, "error": self.error, "pid": os.getpid(),
            "restarted": ray.get_runtime_context().was_current_actor_reconstructed,
            "address": self.publisher.bound_address or self.config.publish, "topic": f"meshstream.frame.{self.name}",
            "source": self.config.source, "frames": frames, "chains": self.chains, "failures": self.failures,
            "fps": (len(recent) - 1) / span if span > 0 else 0.0,
            "latency_p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "latency_p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else None,
            "dropped_at_source": int(dropped_at_source), "publish_dropped": int(self.publisher.dropped),
            "published": int(self.publisher.sent), "degrade_level": chain.pipeline.context.degrade_level if chain else 0,
            "load_s": self.load_s,
        }

    def stop(self) -> None:
        """Stop reading; the stream ends its publishing with an ``end`` message."""
        self._stop.set()
        with self._lock:
            chain = self._chain
        if chain is not None:
            chain.stop()
        self._thread.join(timeout=10)
        self.publisher.close()


class StreamSupervisor:
    """Starts one :class:`StreamPipeline` actor per stream and gathers their status.

    max_restarts: how often Ray restarts a stream whose process died (-1: always).
    """

    def __init__(self, specs: list[StreamSpec], address: str | None = None, local_cpus: int | None = None,
                 max_restarts: int = -1):
        self.specs = {spec.name: spec for spec in specs}
        self.address = address
        self.local_cpus = local_cpus
        self.max_restarts = max_restarts
        self.actors: dict[str, object] = {}
        self.restarts: dict[str, int] = {name: 0 for name in self.specs}
        self._pids: dict[str, int] = {}
        self._last: dict[str, dict] = {}
        self.ray = None

    def start(self) -> "StreamSupervisor":
        self.ray = ray = connect(self.address, num_cpus=self.local_cpus)
        actor_class = ray.remote(StreamPipeline)
        for name, spec in self.specs.items():
            config = {k: v for k, v in spec.config.as_dict().items()}
            self.actors[name] = actor_class.options(
                name=f"meshstream-stream-{name}-{os.getpid()}", num_cpus=spec.cpus, num_gpus=spec.gpus,
                max_restarts=self.max_restarts, max_task_retries=0, max_concurrency=4,
            ).remote(name, config, loop=spec.loop)
        return self

    def status(self, timeout_s: float = 2.0) -> dict[str, dict]:
        """Each stream's status (see :meth:`StreamPipeline.status`); a stream whose actor does not
        answer yet is "starting" (loading models), later "unreachable" (its process died and Ray
        is starting it again), and "failed" when its actor could not start (the error says why)."""
        ray = self.ray
        refs = {name: actor.status.remote() for name, actor in self.actors.items()}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        ready = set(ready)
        out = {}
        for name, ref in refs.items():
            spec = self.specs[name]
            base = {"name": name, "address": spec.config.publish, "topic": spec.topic, "source": spec.config.source}
            waiting = "starting" if name not in self._pids else "unreachable"  # loading models, or restarting
            if ref not in ready:
                out[name] = {**base, "state": waiting, "restarts": self.restarts[name]}
                continue
            try:
                status = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                from stream.distributed.archive import _actor_error

                out[name] = {**base, "state": "failed" if "creation task" in str(exc) else waiting,
                             "error": _actor_error(exc), "restarts": self.restarts[name]}
                continue
            previous = self._pids.get(name)
            if previous is not None and previous != status["pid"]:
                self.restarts[name] += 1
            self._pids[name] = status["pid"]
            out[name] = {**status, "restarts": self.restarts[name]}
        self._last = out
        return out

    def pid(self, name: str, timeout_s: float = 30.0) -> int:
        """The process id of a stream's actor (waits until it answers)."""
        return self.ray.get(self.actors[name].status.remote(), timeout=timeout_s)["pid"]

    def stop(self) -> None:
        ray = self.ray
        if ray is None:
            return
        refs = [actor.stop.remote() for actor in self.actors.values()]
        try:
            ray.wait(refs, num_returns=len(refs), timeout=15)
        finally:
            for actor in self.actors.values():
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass


# Status over HTTP ----------------------------------------------------------------------------------

def serve_status(supervisor_status, address: tuple[str, int]):
    """Serve ``GET /status`` (JSON: each stream's status) on ``address`` in a thread; returns the
    server (``shutdown()`` to stop). ``supervisor_status()`` gives the latest status dict."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path.rstrip("/") not in ("", "/status"):
                self.send_error(404, "GET /status")
                return
            body = json.dumps(supervisor_status(), default=str, indent=1).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(address, Handler)
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server


def format_status(status: dict[str, dict]) -> str:
    """A table of streams: state, fps, latency, drops, restarts."""
    lines = [f"{'stream':<14} {'state':<12} {'fps':>6} {'p50 ms':>8} {'p95 ms':>8} {'drops':>6} {'restarts':>8}  address"]
    for name, s in status.items():
        def num(key, fmt):
            value = s.get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "-".rjust(int(fmt.split(".")[0]))
        drops = (s.get("dropped_at_source") or 0) + (s.get("publish_dropped") or 0)
        lines.append(f"{name:<14} {s.get('state', '?'):<12} {num('fps', '6.1f')} {num('latency_p50_ms', '8.0f')} "
                     f"{num('latency_p95_ms', '8.0f')} {drops:>6} {s.get('restarts', 0):>8}  {s.get('address')}"
                     + (f"  ({s['error']})" if s.get("error") and s.get("state") != "running" else ""))
    return "\n".join(lines)


def resolve_sources(specs: list[StreamSpec]) -> list[StreamSpec]:
    """File sources made absolute (actors may run in another folder); DistributedError for a
    file that does not exist (cameras and URLs are checked by their actor)."""
    out = []
    for spec in specs:
        source = spec.config.source
        if "://" not in source and not source.startswith("/dev/"):
            if not Path(source).exists():
                raise DistributedError(f"[streams.{spec.name}]: source {source}: no such file")
            spec = StreamSpec(spec.name, spec.config.replace(source=str(Path(source).resolve())), spec.loop,
                              spec.cpus, spec.gpus)
        out.append(spec)
    return out


__all__ = ["StreamPipeline", "StreamSpec", "StreamSupervisor", "format_status", "read_streams", "serve_status"]
