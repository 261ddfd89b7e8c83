"""Frame sources on PyAV: video files, images and image folders, network streams, cameras.

Every source yields :class:`stream.frames.Frame` objects (RGB uint8) from :meth:`Source.frames`:

- ``pts_s`` comes from the container's time base (images: index / ``image_fps``);
- ``t_capture_ns`` is ``time.monotonic_ns()`` when the frame left the source;
- ``index`` is the frame's number in the input: corrupt packets and undecodable data are
  skipped and counted in :attr:`Source.stats`, and the frames they cost leave gaps in the
  indices (so an index always names the same picture of the input);
- images are upright: a rotation or flip the container declares (a phone video's display
  matrix) is applied, and ``width``/``height`` are those of the upright frames;
- ``new_timeline`` is True on the first frame and after a break (a reconnect, timestamps
  going backwards).

Live sources (network streams, cameras, and files opened with ``realtime=True``, which are
paced by their timestamps) produce frames at their own pace; the pipeline drops stale ones.
Network streams have open and read timeouts and reconnect with exponential backoff when the
stream drops; reconnections are counted and logged. The first open gives up once the open
timeout has passed; after a drop, at most ``max_reconnects`` reconnection attempts are made.

Use :func:`open_source` to pick the right class from a string.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from stream.frames import Frame

log = logging.getLogger("meshstream.source")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "tcp", "udp", "srt", "rtp")
_NETWORK_URL = re.compile(rf"^({'|'.join(NETWORK_SCHEMES)})://", re.IGNORECASE)


MAX_PENDING_FRAMES = 4096  # demuxed frames kept for numbering while the decoder has not returned them


class SourceError(Exception):
    """A source could not be opened or read; the message says what to check."""


@dataclass
class SourceStats:
    """Counters of one source. ``skipped`` keeps a short human-readable log of what was lost.

    frames: frames delivered. skipped_frames: frames of the input that were not delivered
    (corrupt, undecodable, or dropped by the decoder): the gaps in ``Frame.index``.
    corrupt_packets: packets or decoded frames flagged corrupt (skipped). decode_errors:
    packets the decoder rejected (skipped). reconnects: network stream drops reconnected.
    truncated: the input ended before its header said it would.
    """

    frames: int = 0
    skipped_frames: int = 0
    corrupt_packets: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    truncated: bool = False
    skipped: list[str] = field(default_factory=list)

    def note_skip(self, what: str) -> None:
        if len(self.skipped) < 50:
            self.skipped.append(what)

    def summary(self) -> str:
        parts = [f"{self.frames} frames"]
        if self.skipped_frames:
            parts.append(f"{self.skipped_frames} frames of the input skipped (frame indices have gaps there)")
        if self.corrupt_packets:
            parts.append(f"{self.corrupt_packets} corrupt packets skipped")
        if self.decode_errors:
            parts.append(f"{self.decode_errors} undecodable packets skipped")
        if self.truncated:
            parts.append("input ended early (truncated or unreadable tail)")
        if self.reconnects:
            parts.append(f"{self.reconnects} reconnects")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {
            "frames": self.frames, "skipped_frames": self.skipped_frames, "corrupt_packets": self.corrupt_packets,
            "decode_errors": self.decode_errors, "reconnects": self.reconnects,
            "truncated": self.truncated,
        }


def display_matrix(video_frame) -> tuple[int, int, int, int] | None:
    """The 2x2 part (a, b, c, d) of the frame's display matrix, each rounded to -1, 0 or 1,
    or None when the frame has none. FFmpeg's convention: a stored pixel (x, y) is shown at
    (a x + c y, b x + d y) plus a translation; a phone video recorded upright on a phone held
    on its side carries one."""
    import av

    for side_data in video_frame.side_data:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX and len(bytes(side_data)) >= 36:
            a, b, _, c, d = struct.unpack("<5i", bytes(side_data)[:20])
            return tuple(int(round(v / 65536.0)) for v in (a, b, c, d))
    return None


def upright(image: np.ndarray, matrix: tuple[int, int, int, int] | None) -> np.ndarray:
    """The stored image (H, W, ...) as it is meant to be shown, given its display matrix
    (a, b, c, d) from :func:`display_matrix` (rotations by multiples of 90 degrees and flips;
    other matrices are ignored)."""
    if matrix is None:
        return image
    a, b, c, d = matrix
    if b == 0 and c == 0 and a in (-1, 1) and d in (-1, 1):
        shown = image[:: d, :: a]  # shown[d y, a x] = stored[y, x]
    elif a == 0 and d == 0 and b in (-1, 1) and c in (-1, 1):
        transposed = image.swapaxes(0, 1)  # transposed[x, y] = stored[y, x], shown at row b x, column c y
        shown = transposed[:: b, :: c]
    else:
        return image
    return np.ascontiguousarray(shown)


def _to_rgb(video_frame, max_side: int | None) -> np.ndarray:
    """An av.VideoFrame as (H, W, 3) uint8 RGB, upright (its display matrix applied) and scaled
    down so its long side is <= max_side."""
    width, height = video_frame.width, video_frame.height
    matrix = display_matrix(video_frame)
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width = max(2, int(round(width * scale / 2)) * 2)
        height = max(2, int(round(height * scale / 2)) * 2)
        video_frame = video_frame.reformat(width=width, height=height)
    image = video_frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(upright(image, matrix))


class Source:
    """Base class. Subclasses implement :meth:`_frames`; :meth:`frames` adds stats and stop."""

    live: bool = False

    def __init__(self, name: str, max_side: int | None = None):
        self.name = name
        self.max_side = max_side
        self.stats = SourceStats()
        self.fps: float | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.frame_count: int | None = None  # known total, if any (files)
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        """Decoded frames until the input ends or :meth:`stop` is called. Marks the first frame,
        and a frame whose timestamp goes back, as starting a new timeline."""
        last_pts_s = None
        for frame in self._frames():
            if self._stop.is_set():
                return
            if self.stats.frames == 0 or (frame.pts_s is not None and last_pts_s is not None
                                          and frame.pts_s < last_pts_s):
                frame.new_timeline = True
            if frame.pts_s is not None:
                last_pts_s = frame.pts_s
            self.stats.frames += 1
            yield frame

    def stop(self) -> None:
        """Ask :meth:`frames` to end after the current frame (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        """What a results file or the topology message says about this source."""
        return {"name": self.name, "fps": self.fps, "width": self.width, "height": self.height,
                "live": self.live}


class _ContainerReader:
    """Decodes the first video stream of an open av container, skipping bad packets, and
    numbers the frames it delivers by their place in the input.

    Every demuxed packet with data is one frame of the input. The decoder returns frames in
    presentation order, so a frame's number is the count of input frames before it: those
    already passed plus the demuxed packets with an earlier timestamp that never came out
    (corrupt, undecodable, or dropped by the decoder). Frames without timestamps are numbered
    one after the other. Where the decode timestamps go back (files joined end to end), a new
    timeline segment starts: timestamps are compared within a segment only.
    """

    def __init__(self, container, stats: SourceStats, what: str, first_index: int = 0):
        import av

        self.av = av
        self.container = container
        self.stats = stats
        self.what = what
        self.packets = 0  # video packets with data demuxed
        self.last_packet_s = time.monotonic()  # when the last packet arrived (read timeouts)
        self._pending: list[tuple[int, int]] = []  # sorted (segment, pts) of demuxed frames not yet placed
        self._segment = 0  # timeline segment of the last demuxed packet
        self._last_dts: int | None = None
        self._placed_segment = 0  # timeline segment of the last placed frame
        self._placed_pts: int | None = None
        self._passed = first_index  # input frames before the pending ones
        self._delivered_last = first_index - 1  # index of the last delivered frame
        self._finished = False
        if not container.streams.video:
            raise SourceError(f"{what} has no video stream")
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.time_base = self.stream.time_base
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None

    def _note_packet(self, packet) -> None:
        """Keep the timestamp of a demuxed packet with data (one frame of the input)."""
        self.packets += 1
        if packet.dts is not None:
            if self._last_dts is not None and packet.dts < self._last_dts:
                self._segment += 1
            self._last_dts = packet.dts
        if packet.pts is not None:
            bisect.insort(self._pending, (self._segment, packet.pts))
            if len(self._pending) > MAX_PENDING_FRAMES:  # frames that never come out (no timestamps on them)
                self._passed += len(self._pending) // 2
                del self._pending[: len(self._pending) // 2]

    def _place(self, pts: int | None) -> int:
        """The input frame number of a decoded frame with timestamp ``pts`` (stream time base)."""
        pending = self._pending
        if pts is None:
            index = self._passed
        else:
            if self._placed_pts is not None and pts < self._placed_pts and self._placed_segment < self._segment:
                self._placed_segment += 1
            self._placed_pts = pts
            key = (self._placed_segment, pts)
            before = bisect.bisect_left(pending, key)
            index = self._passed + before
            del pending[:before]
            if pending and pending[0] == key:
                del pending[0]
        self._passed = index + 1
        return index

    def _deliver(self, index: int) -> None:
        self.stats.skipped_frames += max(0, index - self._delivered_last - 1)
        self._delivered_last = index

    def finish(self) -> int:
        """Count the input frames after the last delivered one as skipped (once); returns the
        number of input frames seen, the index the next frame of a reopened stream gets."""
        seen = self._passed + len(self._pending)
        if not self._finished:
            self._finished = True
            self.stats.skipped_frames += max(0, seen - self._delivered_last - 1)
        return seen

    def decoded(self) -> Iterator[tuple[int, object]]:
        """(index, av.VideoFrame) pairs, index the frame's number in the input (see the class);
        raises av.error.FFmpegError if demuxing itself fails."""
        av = self.av
        for packet in self.container.demux(self.stream):
            self.last_packet_s = time.monotonic()
            if packet.size:
                self._note_packet(packet)
            if packet.is_corrupt:
                self.stats.corrupt_packets += 1
                self.stats.note_skip(f"corrupt packet at pts {packet.pts}")
                log.warning("%s: skipping a corrupt packet (pts %s)", self.what, packet.pts)
                continue
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                return
            except av.error.FFmpegError as exc:
                self.stats.decode_errors += 1
                self.stats.note_skip(f"undecodable packet at pts {packet.pts}: {exc}")
                log.warning("%s: skipping an undecodable packet (pts %s): %s", self.what, packet.pts, exc)
                continue
            for video_frame in decoded:
                index = self._place(video_frame.pts)
                if video_frame.is_corrupt:
                    self.stats.corrupt_packets += 1
                    self.stats.note_skip(f"corrupt frame {index} (pts {video_frame.pts})")
                    log.warning("%s: skipping corrupt frame %d (pts %s)", self.what, index, video_frame.pts)
                    continue
                self._deliver(index)
                yield index, video_frame
        self.finish()

    def pts_seconds(self, video_frame) -> float | None:
        if video_frame.pts is None or self.time_base is None:
            return None
        return float(video_frame.pts * self.time_base)


class _Pacer:
    """Sleeps so that frames leave at the pace of their timestamps (real-time playback)."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.t0_ns: int | None = None
        self.pts0: float | None = None

    def wait(self, pts_s: float) -> None:
        now = time.monotonic_ns()
        if self.t0_ns is None:
            self.t0_ns, self.pts0 = now, pts_s
            return
        due_ns = self.t0_ns + int((pts_s - self.pts0) * 1e9)
        if due_ns > now:
            self.stop.wait((due_ns - now) / 1e9)


class VideoFileSource(Source):
    """A video file. ``realtime=True`` paces frames by their timestamps, as a live source."""

    def __init__(self, path: str | os.PathLike, realtime: bool = False, max_side: int | None = None):
        super().__init__(str(path), max_side)
        self.path = Path(path)
        self.live = realtime
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path} (give a path to a video, an image, "
                              "a folder of images, a stream URL or /dev/videoN)")
        self._container, self._reader = self._open()

    def _open(self):
        import av

        try:
            container = av.open(str(self.path))
        except av.error.FFmpegError as exc:
            raise SourceError(f"cannot read {self.path} as a video: {exc} (is it a video? an MP4 cut short "
                              "loses its index and cannot be opened; MKV/TS keep their readable part)") from exc
        try:
            reader = _ContainerReader(container, self.stats, str(self.path))
        except Exception:
            container.close()
            raise
        stream = reader.stream
        self.fps = reader.fps
        self.frame_count = int(stream.frames) if stream.frames else None
        self._duration_s = container.duration / 1e6 if container.duration else None
        self._start_s = container.start_time / 1e6 if container.start_time else 0.0
        # Decode the first frame now: its display matrix says which way up the video is, so
        # width and height are those of the upright frames from the start.
        self._decoded = reader.decoded()
        self._first: tuple[int, object, np.ndarray] | None = None
        self._first_error: Exception | None = None
        try:
            first = next(self._decoded, None)
        except av.error.FFmpegError as exc:
            first, self._first_error = None, exc
        if first is not None:
            image = _to_rgb(first[1], self.max_side)
            self._first = (*first, image)
            self.height, self.width = image.shape[:2]
        else:
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            if self.max_side and max(self.width, self.height) > self.max_side:
                scale = self.max_side / max(self.width, self.height)
                self.width = max(2, int(round(self.width * scale / 2)) * 2)
                self.height = max(2, int(round(self.height * scale / 2)) * 2)
        return container, reader

    def _indexed_images(self) -> Iterator[tuple[int, object, np.ndarray]]:
        """(index, av.VideoFrame, upright RGB image), the frame decoded at open first."""
        if self._first_error is not None:
            raise self._first_error
        if self._first is not None:
            yield self._first
            self._first = None
        for index, video_frame in self._decoded:
            yield index, video_frame, _to_rgb(video_frame, self.max_side)

    def _frames(self) -> Iterator[Frame]:
        import av

        pacer = _Pacer(self._stop) if self.live else None
        delivered = 0
        last_pts_s = None
        try:
            for index, video_frame, image in self._indexed_images():
                pts_s = self._reader.pts_seconds(video_frame)
                if pts_s is None and self.fps:
                    pts_s = index / self.fps
                if pacer is not None and pts_s is not None:
                    pacer.wait(pts_s)
                    if self._stop.is_set():
                        return
                yield Frame(index, pts_s, time.monotonic_ns(), image)
                delivered += 1
                last_pts_s = pts_s
        except av.error.FFmpegError as exc:
            self.stats.truncated = True
            self.stats.note_skip(f"reading stopped after {delivered} frames: {exc}")
            log.warning("%s: reading stopped after %d frames: %s", self.path, delivered, exc)
        finally:
            self._container.close()
        seen = self._reader.finish()
        self._check_complete(delivered, seen, last_pts_s)

    def _check_complete(self, decoded: int, seen: int, last_pts_s: float | None) -> None:
        """Flag a file that ended before its header said it would (truncated). decoded: frames
        delivered; seen: frames of the input read (delivered or skipped)."""
        if self._stop.is_set():
            return
        lost = []
        if self.frame_count and seen < self.frame_count:
            lost.append(f"decoded {decoded} of {self.frame_count} frames")
        duration = self._duration_s
        if duration and self.fps and last_pts_s is not None and last_pts_s + 2.0 / self.fps < duration - self._start_s:
            lost.append(f"the video ends at {last_pts_s:.2f} s of {duration:.2f} s")
        elif duration and decoded == 0:
            lost.append("no frame could be decoded")
        if lost:
            self.stats.truncated = True
            self.stats.note_skip("; ".join(lost))
            log.warning("%s: input ended early: %s", self.path, "; ".join(lost))

    def close(self) -> None:
        super().close()
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing twice is fine
            pass


class ImageSource(Source):
    """One image file or a folder of images (sorted by name), decoded with PyAV.

    index: the image's position in the sorted folder (an unreadable image is skipped and
    leaves a gap); pts_s = index / image_fps. With ``realtime=True`` frames leave at ``image_fps``.
    """

    def __init__(self, path: str | os.PathLike, image_fps: float = 30.0, realtime: bool = False,
                 max_side: int | None = None):
        super().__init__(str(path), max_side)
        path = Path(path)
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.files:
                raise SourceError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {path}")
        elif path.is_file():
            self.files = [path]
        else:
            raise SourceError(f"image path not found: {path}")
        self.fps = float(image_fps)
        self.live = realtime
        self.frame_count = len(self.files)
        self._peek_size()

    def _peek_size(self) -> None:
        """Width and height of the first readable image (what the stream will report)."""
        import av

        for path in self.files[:5]:
            try:
                with av.open(str(path)) as container:
                    image = _to_rgb(next(container.decode(video=0)), self.max_side)
                self.height, self.width = image.shape[:2]
                return
            except (av.error.FFmpegError, StopIteration):
                continue

    def _frames(self) -> Iterator[Frame]:
        import av

        pacer = _Pacer(self._stop) if self.live else None
        for index, path in enumerate(self.files):
            try:
                with av.open(str(path)) as container:
                    video_frame = next(container.decode(video=0))
                    image = _to_rgb(video_frame, self.max_side)
            except (av.error.FFmpegError, StopIteration) as exc:
                self.stats.decode_errors += 1
                self.stats.skipped_frames += 1
                self.stats.note_skip(f"unreadable image {path.name}: {exc}")
                log.warning("skipping unreadable image %s: %s", path, exc)
                continue
            if self.width is None:
                self.height, self.width = image.shape[:2]
            pts_s = index / self.fps
            if pacer is not None:
                pacer.wait(pts_s)
            yield Frame(index, pts_s, time.monotonic_ns(), image)


class NetworkSource(Source):
    """An RTSP/HTTP/TCP/UDP/RTMP/SRT stream, with timeouts and reconnection.

    open_timeout_s: the first open gives up when the stream has not answered within this
    many seconds (refused connections are retried with backoff inside that time); each later
    reopening attempt is limited to it too. read_timeout_s: no data for this many seconds
    counts as a dropped stream. When the stream drops or ends, it is reopened after a
    backoff of ``backoff_s * 2**k`` (capped at ``max_backoff_s``), with at most
    ``max_reconnects`` failed attempts in a row (None: forever). Frame indices keep counting
    across reconnects; pts_s is the stream's own (it may restart after a reconnect), and the
    first frame after a reconnect has ``new_timeline`` set.
    """

    live = True

    def __init__(self, url: str, open_timeout_s: float = 5.0, read_timeout_s: float = 5.0,
                 reconnect: bool = True, max_reconnects: int | None = 10, backoff_s: float = 0.25,
                 max_backoff_s: float = 5.0, max_side: int | None = None, options: dict | None = None):
        super().__init__(url, max_side)
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # Live streams: probe briefly (FFmpeg's default reads up to 5 s of stream before the
        # first frame) and do not buffer ahead, so the first frame is fresh.
        self.options = {"analyzeduration": "1000000", "probesize": "1000000", "fflags": "nobuffer", **(options or {})}
        if url.lower().startswith(("rtsp://", "rtsps://")):
            self.options.setdefault("rtsp_transport", "tcp")
        self._container = None
        self._reader = None
        self._next_index = 0
        self._failed_in_a_row = 0  # reconnection attempts since the last frame that failed
        self._last_failure = ""
        self._connect(first=True)

    def _open_once(self):
        """Open the stream once; raises SourceError saying why not (``timed out`` included)."""
        import av

        t0 = time.monotonic()
        try:
            container = av.open(self.url, options=self.options,
                                timeout=(self.open_timeout_s, self.read_timeout_s))
        except (av.error.FFmpegError, OSError) as exc:
            # PyAV's timeout interrupts FFmpeg, which then reports whatever the protocol makes of
            # it ("Immediate exit requested", RTSP: "Invalid data found"): say what happened.
            if isinstance(exc, av.error.ExitError) or time.monotonic() - t0 >= 0.9 * self.open_timeout_s:
                raise SourceError(f"timed out: no answer within {self.open_timeout_s:g} s") from exc
            raise SourceError(str(exc)) from exc
        try:
            reader = _ContainerReader(container, self.stats, self.url, first_index=self._next_index)
        except Exception:
            container.close()
            raise
        self.fps = reader.fps or self.fps
        self.width = self.width or reader.stream.codec_context.width
        self.height = self.height or reader.stream.codec_context.height
        return container, reader

    def _connect(self, first: bool = False) -> bool:
        """Open the stream, retrying with backoff (see the class). Returns False if asked to stop
        meanwhile; raises SourceError when giving up. A reconnection that opens but delivers no
        frame before dropping again counts as a failed attempt."""
        t0 = time.monotonic()
        attempts = 0
        while not self._stop.is_set():
            if not first and self.max_reconnects is not None and self._failed_in_a_row >= self.max_reconnects:
                if self.max_reconnects == 0:
                    raise SourceError(f"stream {self.url} dropped ({self._last_failure}) and reconnecting "
                                      "is off (--max-reconnects 0)")
                raise SourceError(f"cannot reopen stream {self.url}: {self._last_failure}; gave up after "
                                  f"{self._failed_in_a_row} reconnection attempt(s) in a row without a frame "
                                  f"(--max-reconnects {self.max_reconnects}; check that the server is up)")
            attempts += 1
            try:
                self._container, self._reader = self._open_once()
                if not first:
                    log.info("%s: reconnected at attempt %d", self.url, self._failed_in_a_row + 1)
                return True
            except SourceError as exc:
                reason = str(exc)
            if first:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
                if not self.reconnect or time.monotonic() + delay >= t0 + self.open_timeout_s:
                    raise SourceError(f"cannot open stream {self.url}: {reason} ({attempts} attempt(s) in "
                                      f"{time.monotonic() - t0:.1f} s; check the address, that the server is "
                                      "up, and --open-timeout)")
                log.warning("%s: cannot open (%s); retrying in %.2f s", self.url, reason, delay)
            else:
                self._failed_in_a_row += 1
                self._last_failure = reason
                if self.max_reconnects is not None and self._failed_in_a_row >= self.max_reconnects:
                    continue  # gives up at the top of the loop, without waiting
                delay = self._backoff()
                log.warning("%s: cannot reopen (%s); retrying in %.2f s (attempt %d%s)", self.url, reason,
                            delay, self._failed_in_a_row,
                            "" if self.max_reconnects is None else f" of {self.max_reconnects}")
            self._stop.wait(delay)
        return False

    def _backoff(self) -> float:
        """Seconds to wait before the next reconnection attempt."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, self._failed_in_a_row - 1))

    def _frames(self) -> Iterator[Frame]:
        import av

        while not self._stop.is_set():
            reason = "the stream ended"
            new_timeline = True
            reader = self._reader
            try:
                for index, video_frame in reader.decoded():
                    image = _to_rgb(video_frame, self.max_side)
                    if new_timeline:
                        self.height, self.width = image.shape[:2]
                        self._failed_in_a_row = 0
                    yield Frame(index, reader.pts_seconds(video_frame), time.monotonic_ns(), image,
                                new_timeline=new_timeline)
                    new_timeline = False
                    if self._stop.is_set():
                        return
            except av.error.FFmpegError as exc:
                if isinstance(exc, av.error.ExitError) or \
                        time.monotonic() - reader.last_packet_s >= 0.9 * self.read_timeout_s:
                    reason = f"timed out: no data for {self.read_timeout_s:g} s"
                else:
                    reason = str(exc)
            finally:
                self._next_index = reader.finish()
                self._close_container()
            if self._stop.is_set() or not self.reconnect:
                return
            self.stats.reconnects += 1
            log.warning("%s: stream dropped after frame %d (%s); reconnecting (reconnect #%d)",
                        self.url, self._next_index - 1, reason, self.stats.reconnects)
            if new_timeline:  # this connection gave no frame: a failed attempt
                self._failed_in_a_row += 1
                self._last_failure = f"{reason} before any frame"
                if self.max_reconnects is None or self._failed_in_a_row < self.max_reconnects:
                    self._stop.wait(self._backoff())
            else:
                self._last_failure = reason
            if not self._connect():
                return

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001
                pass
            self._container = None

    def close(self) -> None:
        super().close()
        self._close_container()


class CameraSource(Source):
    """A camera through v4l2 (/dev/videoN). ``size`` as (width, height), ``fps`` requested."""

    live = True

    def __init__(self, device: str, size: tuple[int, int] | None = None, fps: float | None = None,
                 input_format: str | None = None, max_side: int | None = None):
        import av

        super().__init__(device, max_side)
        options = {}
        if size:
            options["video_size"] = f"{size[0]}x{size[1]}"
        if fps:
            options["framerate"] = str(fps)
        if input_format:
            options["input_format"] = input_format
        if not Path(device).exists():
            raise SourceError(f"camera {device} not found (list cameras with `ls /dev/video*`)")
        try:
            self._container = av.open(device, format="v4l2", options=options)
        except av.error.FFmpegError as exc:
            raise SourceError(f"cannot open camera {device}: {exc} (is it in use, or do you lack "
                              "permission? try another size/fps)") from exc
        self._reader = _ContainerReader(self._container, self.stats, device)
        self.fps = self._reader.fps
        self.width = self._reader.stream.codec_context.width
        self.height = self._reader.stream.codec_context.height

    def _frames(self) -> Iterator[Frame]:
        import av

        try:
            for index, video_frame in self._reader.decoded():
                yield Frame(index, self._reader.pts_seconds(video_frame), time.monotonic_ns(),
                            _to_rgb(video_frame, self.max_side))
        except av.error.FFmpegError as exc:
            raise SourceError(f"camera {self.name} stopped: {exc}") from exc
        finally:
            self._container.close()


def open_source(spec: str, realtime: bool = False, max_side: int | None = None,
                open_timeout_s: float = 5.0, read_timeout_s: float = 5.0,
                max_reconnects: int | None = 10, image_fps: float = 30.0) -> Source:
    """A source for ``spec``: a stream URL, /dev/videoN (or a bare camera number), an image,
    a folder of images, or a video file. Raises SourceError with advice when it cannot."""
    spec = str(spec)
    if _NETWORK_URL.match(spec):
        return NetworkSource(spec, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s,
                             max_reconnects=max_reconnects, max_side=max_side)
    if spec.isdigit():
        spec = f"/dev/video{spec}"
    if spec.startswith("/dev/video"):
        return CameraSource(spec, max_side=max_side)
    path = Path(spec)
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource(path, image_fps=image_fps, realtime=realtime, max_side=max_side)
    if "://" in spec:
        raise SourceError(f"unsupported URL scheme in {spec!r} (use one of: {', '.join(NETWORK_SCHEMES)})")
    return VideoFileSource(path, realtime=realtime, max_side=max_side)
