"""Frame sources on PyAV: video files, images and image folders, network streams, cameras.

Every source yields :class:`stream.frames.Frame` objects (RGB uint8) from :meth:`Source.frames`:

- ``pts_s`` comes from the container's time base (images: index / ``image_fps``);
- ``t_capture_ns`` is ``time.monotonic_ns()`` when the frame left the source;
- corrupt packets and undecodable data are skipped and counted in :attr:`Source.stats`.

Live sources (network streams, cameras, and files opened with ``realtime=True``, which are
paced by their timestamps) produce frames at their own pace; the pipeline drops stale ones.
Network streams have open and read timeouts and reconnect with exponential backoff when the
stream drops; reconnections are counted and logged.

Use :func:`open_source` to pick the right class from a string.
"""

from __future__ import annotations

import logging
import os
import re
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


class SourceError(Exception):
    """A source could not be opened or read; the message says what to check."""


@dataclass
class SourceStats:
    """Counters of one source. ``skipped`` keeps a short human-readable log of what was lost."""

    frames: int = 0
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
            "frames": self.frames, "corrupt_packets": self.corrupt_packets,
            "decode_errors": self.decode_errors, "reconnects": self.reconnects,
            "truncated": self.truncated,
        }


def _to_rgb(video_frame, max_side: int | None) -> np.ndarray:
    """An av.VideoFrame as (H, W, 3) uint8 RGB, scaled down so its long side is <= max_side."""
    width, height = video_frame.width, video_frame.height
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width = max(2, int(round(width * scale / 2)) * 2)
        height = max(2, int(round(height * scale / 2)) * 2)
        video_frame = video_frame.reformat(width=width, height=height)
    image = video_frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(image)


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
        """Decoded frames until the input ends or :meth:`stop` is called."""
        for frame in self._frames():
            if self._stop.is_set():
                return
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
    """Decodes the first video stream of an open av container, skipping bad packets."""

    def __init__(self, container, stats: SourceStats, what: str):
        import av

        self.av = av
        self.container = container
        self.stats = stats
        self.what = what
        if not container.streams.video:
            raise SourceError(f"{what} has no video stream")
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.time_base = self.stream.time_base
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None

    def decoded(self) -> Iterator:
        """av.VideoFrame objects; raises av.error.FFmpegError if demuxing itself fails."""
        av = self.av
        for packet in self.container.demux(self.stream):
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
                if video_frame.is_corrupt:
                    self.stats.corrupt_packets += 1
                    self.stats.note_skip(f"corrupt frame at pts {video_frame.pts}")
                    log.warning("%s: skipping a corrupt frame (pts %s)", self.what, video_frame.pts)
                    continue
                yield video_frame

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
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        if self.max_side and max(self.width, self.height) > self.max_side:
            scale = self.max_side / max(self.width, self.height)
            self.width = max(2, int(round(self.width * scale / 2)) * 2)
            self.height = max(2, int(round(self.height * scale / 2)) * 2)
        self.frame_count = int(stream.frames) if stream.frames else None
        self._duration_s = container.duration / 1e6 if container.duration else None
        self._start_s = container.start_time / 1e6 if container.start_time else 0.0
        return container, reader

    def _frames(self) -> Iterator[Frame]:
        import av

        pacer = _Pacer(self._stop) if self.live else None
        index = 0
        last_pts_s = None
        try:
            for video_frame in self._reader.decoded():
                pts_s = self._reader.pts_seconds(video_frame)
                if pts_s is None and self.fps:
                    pts_s = index / self.fps
                image = _to_rgb(video_frame, self.max_side)
                if pacer is not None and pts_s is not None:
                    pacer.wait(pts_s)
                    if self._stop.is_set():
                        return
                yield Frame(index, pts_s, time.monotonic_ns(), image)
                index += 1
                last_pts_s = pts_s
        except av.error.FFmpegError as exc:
            self.stats.truncated = True
            self.stats.note_skip(f"reading stopped after frame {index}: {exc}")
            log.warning("%s: reading stopped after %d frames: %s", self.path, index, exc)
        finally:
            self._container.close()
        self._check_complete(index, last_pts_s)

    def _check_complete(self, decoded: int, last_pts_s: float | None) -> None:
        """Flag a file that ended before its header said it would (truncated)."""
        if self._stop.is_set():
            return
        lost = []
        if self.frame_count and decoded + self.stats.corrupt_packets + self.stats.decode_errors < self.frame_count:
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

    pts_s = index / image_fps. With ``realtime=True`` frames leave at ``image_fps``.
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
        index = 0
        for path in self.files:
            try:
                with av.open(str(path)) as container:
                    video_frame = next(container.decode(video=0))
                    image = _to_rgb(video_frame, self.max_side)
            except (av.error.FFmpegError, StopIteration) as exc:
                self.stats.decode_errors += 1
                self.stats.note_skip(f"unreadable image {path.name}: {exc}")
                log.warning("skipping unreadable image %s: %s", path, exc)
                continue
            if self.width is None:
                self.height, self.width = image.shape[:2]
            pts_s = index / self.fps
            if pacer is not None:
                pacer.wait(pts_s)
            yield Frame(index, pts_s, time.monotonic_ns(), image)
            index += 1


class NetworkSource(Source):
    """An RTSP/HTTP/TCP/UDP/RTMP/SRT stream, with timeouts and reconnection.

    open_timeout_s / read_timeout_s: seconds to wait for the connection / for data.
    When the stream drops or ends, it is reopened after a backoff of
    ``backoff_s * 2**k`` (capped at ``max_backoff_s``), for at most ``max_reconnects``
    consecutive failed attempts (None: forever). Frame indices keep counting across
    reconnects; pts_s is the stream's own (it may restart after a reconnect).
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
        self._connect(first=True)

    def _open_once(self):
        import av

        container = av.open(self.url, options=self.options,
                            timeout=(self.open_timeout_s, self.read_timeout_s))
        try:
            reader = _ContainerReader(container, self.stats, self.url)
        except Exception:
            container.close()
            raise
        self.fps = reader.fps or self.fps
        self.width = self.width or reader.stream.codec_context.width
        self.height = self.height or reader.stream.codec_context.height
        return container, reader

    def _connect(self, first: bool = False) -> bool:
        """Open the stream, retrying with backoff. Returns False if asked to stop meanwhile."""
        import av

        attempt = 0
        while not self._stop.is_set():
            try:
                self._container, self._reader = self._open_once()
                if not first:
                    log.info("%s: reconnected after %d attempt(s)", self.url, attempt + 1)
                return True
            except (av.error.FFmpegError, OSError, SourceError) as exc:
                if first and not self.reconnect:
                    raise SourceError(f"cannot open stream {self.url}: {exc} (check the address, "
                                      "that the server is up, and the timeouts)") from exc
                attempt += 1
                if self.max_reconnects is not None and attempt > self.max_reconnects:
                    raise SourceError(f"cannot {'open' if first else 'reopen'} stream {self.url} after "
                                      f"{attempt} attempts: {exc} (check the address and that the server is up)"
                                      ) from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                log.warning("%s: cannot open (%s); retrying in %.2f s (attempt %d)", self.url, exc, delay, attempt)
                self._stop.wait(delay)
        return False

    def _frames(self) -> Iterator[Frame]:
        import av

        index = 0
        while not self._stop.is_set():
            reason = "the stream ended"
            try:
                for video_frame in self._reader.decoded():
                    pts_s = self._reader.pts_seconds(video_frame)
                    image = _to_rgb(video_frame, self.max_side)
                    yield Frame(index, pts_s, time.monotonic_ns(), image)
                    index += 1
                    if self._stop.is_set():
                        return
            except av.error.FFmpegError as exc:
                reason = str(exc)
            finally:
                self._close_container()
            if self._stop.is_set() or not self.reconnect:
                return
            self.stats.reconnects += 1
            log.warning("%s: stream dropped after frame %d (%s); reconnecting (reconnect #%d)",
                        self.url, index, reason, self.stats.reconnects)
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

        index = 0
        try:
            for video_frame in self._reader.decoded():
                yield Frame(index, self._reader.pts_seconds(video_frame), time.monotonic_ns(),
                            _to_rgb(video_frame, self.max_side))
                index += 1
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
