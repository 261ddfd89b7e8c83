"""The library API: open a source with options, iterate per-frame results, close cleanly.

    import meshstream

    with meshstream.open("video.mp4", max_people=2, results="out.npz") as run:
        for frame in run:
            for person in frame.people:
                print(frame.index, person.id, person.joints[meshstream.Joint.LEFT_WRIST])

Options are :class:`stream.config.Config`'s fields (checked before anything loads); sinks from
code (:class:`stream.pipeline.Stage` objects, or writers with ``add(packet)`` and ``close()``)
go in ``sinks=`` or :meth:`Run.add_sink` before the first frame. The chain is built by
:func:`stream.compose.compose` and runs in background threads; leaving the ``with`` block (a
``break``, an error, Ctrl-C) stops the source, lets the frames already read finish, and closes
every sink, so files hold everything computed.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from stream.config import Config
from stream.frames import Intrinsics, Packet

_END = object()


@dataclass(frozen=True)
class PersonResult:
    """One person in one frame. Arrays are float32; body values are None for a person who got
    no body (too little of them seen), in metres and the camera frame (x right, y down, z forward).

    id: stable track id. score: detection confidence in [0, 1]. bbox: (4,) x0, y0, x1, y1 pixels.
    keypoints: (33, 3) x, y pixels and visibility (index with :class:`meshstream.Landmark`).
    global_orient: (3,) and body_pose: (23, 3) axis-angle radians; betas: (10,); transl: (3,).
    joints: (24, 3) (index with :class:`meshstream.Joint`); vertices: (V, 3).
    """

    id: int
    score: float
    bbox: np.ndarray | None
    keypoints: np.ndarray | None
    global_orient: np.ndarray | None
    body_pose: np.ndarray | None
    betas: np.ndarray | None
    transl: np.ndarray | None
    joints: np.ndarray | None
    vertices: np.ndarray | None

    @property
    def has_body(self) -> bool:
        return self.global_orient is not None


@dataclass(frozen=True)
class FrameResult:
    """One frame's results. index: the frame's number in the source; pts_s: its time in the
    video (seconds, None if unknown); t_capture_ns: monotonic time it was read; intrinsics:
    the camera the bodies are placed with; image: (H, W, 3) uint8 RGB."""

    index: int
    pts_s: float | None
    t_capture_ns: int
    intrinsics: Intrinsics | None
    people: list[PersonResult]
    image: np.ndarray

    @property
    def bodies(self) -> list[PersonResult]:
        """The people who have a body."""
        return [p for p in self.people if p.has_body]


def frame_result(packet: Packet) -> FrameResult:
    """The typed result of a finished pipeline packet."""
    people = [PersonResult(p.track_id, float(p.score), p.bbox, p.keypoints, p.global_orient, p.body_pose, p.betas,
                           p.transl, p.joints, p.vertices) for p in packet.people]
    frame = packet.frame
    return FrameResult(frame.index, frame.pts_s, frame.t_capture_ns, packet.intrinsics, people, frame.image)


class Run:
    """A chain over one source; iterate it for :class:`FrameResult` objects, in order.

    Offline (files, unless ``realtime``) nothing is dropped: the pipeline waits for the reader.
    Live, a reader slower than the source misses the oldest results (counted in ``missed``);
    the sinks still get every frame.
    """

    def __init__(self, config: Config, sinks=(), queue_size: int = 8):
        self.config = config
        self._sinks = list(sinks)
        self._results: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.chain = None
        self.missed = 0

    def add_sink(self, sink) -> "Run":
        """Add an output (a Stage, or a writer with add/close) before the first frame."""
        if self.chain is not None:
            raise RuntimeError("add sinks before the run starts (before iterating)")
        self._sinks.append(sink)
        return self

    def start(self) -> "Run":
        """Build the chain (the models load here) and start reading. Iterating starts it too."""
        if self.chain is None:
            from stream.compose import compose

            self.chain = compose(self.config, sinks=self._sinks, on_result=self._deliver)
            self._thread = threading.Thread(target=self._run, name="meshstream-run", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.chain.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reader's thread
            self._error = exc
        finally:
            self._put(_END, block=True)

    def _deliver(self, packet: Packet) -> None:
        self._put(frame_result(packet), block=self.chain.pipeline.policy != "live")

    def _put(self, item, block: bool) -> None:
        while True:
            try:
                self._results.put(item, timeout=0.1) if block else self._results.put_nowait(item)
                return
            except queue.Full:
                if not block:
                    try:
                        self._results.get_nowait()
                        self.missed += 1
                    except queue.Empty:
                        pass
                elif self._closing:
                    return

    _closing = False

    def __iter__(self):
        self.start()
        while True:
            item = self._results.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        """Stop reading, finish the frames already read, close every sink (idempotent)."""
        if self.chain is None:
            return
        self._closing = True
        self.chain.stop()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._results.get(timeout=0.1)
                except queue.Empty:
                    pass
        self.chain.close()

    @property
    def stats(self) -> dict:
        """The run's statistics so far (pipeline, source, publisher)."""
        return {} if self.chain is None else self.chain.summary()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(source: str | None = None, *, sinks=(), config: Config | None = None, **options) -> Run:  # noqa: A001
    """A :class:`Run` over ``source`` (a file, folder, URL, /dev/videoN; None: the bundled
    sample clip). ``options`` are :class:`stream.config.Config` fields (``max_people=2``,
    ``results="out.npz"``, ``render="out.mp4"``, ``publish="tcp://127.0.0.1:5556"``...), applied
    over ``config``; a bad value raises :class:`stream.config.ConfigError` at once."""
    base = config or Config()
    if source is not None:
        options["source"] = str(source)
    return Run(base.replace(**options) if options else base, sinks=sinks)
