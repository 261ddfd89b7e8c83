"""Input reliability: frame numbers that survive corrupt frames, what the results file says
was lost, rotated phone videos, network timeouts and reconnect limits, variable frame rates.

Everything is real: clips encoded with PyAV here, real bytes flipped inside a real packet, real
sockets served from threads, real overlay videos read back.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import av
import numpy as np
import pytest

from stream.frames import Packet, Person
from stream.sources import NetworkSource, SourceError, VideoFileSource, open_source
from stream.writers import NpzWriter, OverlayVideoWriter
from tests.stream_helpers import ROOT, free_port

FPS = 30
WIDTH, HEIGHT = 96, 64


def numbered_image(number: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A frame that shows its own number: a bright bar 3 * number pixels wide on the left."""
    image = np.full((height, width, 3), 30, np.uint8)
    image[:, : 3 * number] = 220
    return image


def shown_number(image: np.ndarray) -> int:
    """The number a :func:`numbered_image` shows (width of the bright bar / 3)."""
    return int(round((image[image.shape[0] // 2, :, 0] > 128).sum() / 3))


def encode(path: Path, images, times_s=None, codec: str = "libx264", options: dict | None = None,
           rotation: tuple[float, bool] | None = None, time_base: Fraction = Fraction(1, 1000)) -> Path:
    """Encode RGB images into ``path``: frame i at times_s[i] seconds (default i / FPS);
    ``rotation`` = (degrees counter-clockwise, hflip) stores a display matrix."""
    images = list(images)
    times_s = [i / FPS for i in range(len(images))] if times_s is None else times_s
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", **(options or {})}
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        for image, t in zip(images, times_s):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(round(t / time_base)), time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corrupt_packet(path: Path, which: int) -> Path:
    """Flip bits in the payload of video packet ``which`` (decode order) of a clip; returns a
    new file (the original is kept)."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[which]
    data = bytearray(path.read_bytes())
    for k in range(pos + size // 4, pos + size, 3):
        data[k] ^= 0x5A
    bad = path.with_name(f"corrupt_{path.name}")
    bad.write_bytes(bytes(data))
    return bad


# -- frame numbers after corrupt frames --------------------------------------------------------

CORRUPT_KINDS = {
    # intra-only H.264: the decoder conceals the damage and flags the frame corrupt
    "flagged corrupt": ("libx264", {"g": "1"}, "mkv"),
    # Motion JPEG: the decoder rejects the packet
    "undecodable": ("mjpeg", None, "mkv"),
}


@pytest.fixture(scope="module", params=sorted(CORRUPT_KINDS))
def corrupt_clip(request, tmp_path_factory) -> Path:
    codec, options, ext = CORRUPT_KINDS[request.param]
    clip = encode(tmp_path_factory.mktemp("corrupt") / f"clip.{ext}", (numbered_image(i) for i in range(30)),
                  codec=codec, options=options)
    return corrupt_packet(clip, 10)


def test_frames_after_a_corrupt_frame_keep_their_number_in_the_input(corrupt_clip):
    source = VideoFileSource(corrupt_clip)
    frames = list(source.frames())
    indices = [f.index for f in frames]
    assert 10 not in indices and 0 < len(frames) < 30
    # The index names the picture: each frame shows its own number and sits at index / fps.
    assert [shown_number(f.image) for f in frames] == indices
    assert np.allclose([f.pts_s * FPS for f in frames], indices, atol=0.05)
    stats = source.stats
    assert stats.frames == len(frames) and stats.skipped_frames == 30 - len(frames)
    assert stats.corrupt_packets + stats.decode_errors >= 1
    assert "skipped" in stats.summary()


def test_results_file_records_input_frame_numbers_and_what_the_source_skipped(corrupt_clip, tmp_path):
    source = VideoFileSource(corrupt_clip)
    results = NpzWriter(tmp_path / "results.npz", meta={"fps": source.fps}, source_stats=source.stats)
    delivered = []
    for frame in source.frames():
        delivered.append(frame.index)
        person = Person(track_id=1, score=0.9, bbox=np.array([0, 0, 3 * frame.index, HEIGHT], np.float32))
        results.add(Packet(frame, [person]))
    results.close()
    with np.load(tmp_path / "results.npz") as data:
        frame_index = data["frame_index"].tolist()
        bbox_right = data["bbox"][:, 2]
        meta = json.loads(str(data["meta"]))
    assert frame_index == delivered and 10 not in frame_index
    assert np.allclose(bbox_right, 3 * np.array(frame_index))  # each row is the frame it names
    counts = meta["source_stats"]
    assert counts["frames"] == len(delivered) and counts["skipped_frames"] == 30 - len(delivered)
    assert counts["corrupt_packets"] + counts["decode_errors"] >= 1


def test_results_file_takes_the_source_counts_from_a_callable(tmp_path):
    counts = {"frames": 0, "skipped_frames": 0}
    results = NpzWriter(tmp_path / "r.npz", source_stats=lambda: dict(counts))
    counts.update(frames=5, skipped_frames=2)  # read when the file is written, not before
    results.close()
    with np.load(tmp_path / "r.npz") as data:
        assert json.loads(str(data["meta"]))["source_stats"] == {"frames": 5, "skipped_frames": 2}


def test_first_frame_starts_a_timeline_and_a_backward_timestamp_starts_another(tmp_path):
    # Two recordings joined byte for byte (as MPEG-TS files often are): the clock restarts.
    joined = tmp_path / "joined.ts"
    joined.write_bytes(mpegts_bytes(10) + mpegts_bytes(10, first=10))
    frames = list(open_source(str(joined)).frames())
    starts = [k for k, f in enumerate(frames) if f.new_timeline]
    assert len(starts) == 2 and starts[0] == 0
    first, second = frames[: starts[1]], frames[starts[1]:]
    # The second recording's frames are numbered after all ten of the first (the demuxer may
    # flag a packet at the seam as corrupt: then the first has a gap, the second has not).
    assert [f.index for f in second] == list(range(10, 20))
    assert [shown_number(f.image) for f in second] == list(range(10, 20))
    assert 8 <= len(first) <= 10 and [f.index for f in first] == sorted({f.index for f in first})
    assert first[-1].index <= 9


# -- rotation ----------------------------------------------------------------------------------

def portrait_scene() -> np.ndarray:
    """An upright (96 tall, 64 wide) picture with a different mark in each corner."""
    image = np.full((96, 64, 3), 40, np.uint8)
    image[:16, :16] = (250, 30, 30)  # top-left red
    image[:16, -16:] = (30, 250, 30)  # top-right green
    image[-16:, :16] = (30, 30, 250)  # bottom-left blue
    return image


@pytest.mark.parametrize("degrees, hflip", [(90, False), (-90, False), (180, False), (90, True)])
def test_rotated_phone_video_is_read_upright(tmp_path, degrees, hflip):
    upright = portrait_scene()
    # A player shows the stored picture turned counter-clockwise by `degrees`, then mirrored
    # when hflip: store the picture that shows as `upright`.
    stored = np.rot90(upright[:, ::-1] if hflip else upright, k=-degrees // 90)
    clip = encode(tmp_path / "phone.mp4", [np.ascontiguousarray(stored)] * 3, rotation=(degrees, hflip))
    source = open_source(str(clip))
    assert (source.width, source.height) == (64, 96)  # reported upright, before any frame is read
    frames = list(source.frames())
    assert len(frames) == 3
    for frame in frames:
        assert frame.image.shape == (96, 64, 3) and frame.image.flags.c_contiguous
        assert np.abs(frame.image.astype(int) - upright).mean() < 6
    scaled = open_source(str(clip), max_side=48)
    assert (scaled.width, scaled.height) == (32, 48) and next(scaled.frames()).image.shape == (48, 32, 3)


def test_video_without_rotation_is_unchanged(tmp_path):
    scene = portrait_scene()
    clip = encode(tmp_path / "plain.mp4", [scene] * 2)
    frames = list(open_source(str(clip)).frames())
    assert frames[0].image.shape == (96, 64, 3) and np.abs(frames[0].image.astype(int) - scene).mean() < 6


# -- network timeouts and reconnect limits -----------------------------------------------------

class LoopbackServer:
    """A TCP server on 127.0.0.1 in a thread; ``handle(connection, number)`` serves each client
    (number counts from 0). ``accepted`` counts connections. Closes everything on exit."""

    def __init__(self, handle):
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            number, self.accepted = self.accepted, self.accepted + 1
            threading.Thread(target=self._run, args=(connection, number), daemon=True).start()

    def _run(self, connection, number) -> None:
        try:
            self.handle(connection, number)
        except OSError:
            pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.listener.close()
        for connection in self.connections:
            connection.close()


def mpegts_bytes(frames: int, first: int = 0) -> bytes:
    """``frames`` frames of live-style H.264 in MPEG-TS (key frame every 5), in memory; frame i
    shows the number first + i (modulo 30) and has timestamp i / FPS."""
    buffer = BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(numbered_image((first + i) % 30), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


# A stream's first second goes to probing it (and is not delivered): serve more than that.
LIVE_FRAMES = 3 * FPS


def test_rtsp_server_that_never_answers_gives_up_after_the_open_timeout_and_says_timed_out():
    silent = threading.Event()
    with LoopbackServer(lambda connection, number: silent.wait(30)) as server:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match="timed out") as error:
            NetworkSource(f"rtsp://127.0.0.1:{server.port}/live", open_timeout_s=1.5)  # default max_reconnects
        elapsed = time.monotonic() - t0
        silent.set()
    assert 1.3 < elapsed < 3.5, elapsed
    assert "Invalid data" not in str(error.value) and "--open-timeout" in str(error.value)


def test_refused_first_connection_is_retried_only_within_the_open_timeout():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open stream") as error:
        NetworkSource(f"tcp://127.0.0.1:{port}", open_timeout_s=1.0, backoff_s=0.1)
    assert time.monotonic() - t0 < 2.5
    assert "refused" in str(error.value).lower() and "attempt(s)" in str(error.value)


def test_stalled_stream_times_out_after_the_read_timeout_and_is_reopened(caplog):
    data = mpegts_bytes(LIVE_FRAMES)

    def send_then_stall(connection, number):
        connection.sendall(data)
        time.sleep(30)  # connected, but no more data

    with LoopbackServer(send_then_stall) as server:
        source = NetworkSource(f"tcp://127.0.0.1:{server.port}", open_timeout_s=3, read_timeout_s=1.0,
                               backoff_s=0.05)
        frames = []
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="meshstream.source"):
            for frame in source.frames():
                frames.append(frame)
                if source.stats.reconnects == 1 and not frame.new_timeline and len(frames) > 3:
                    break
                assert time.monotonic() - t0 < 20
        source.close()
    assert server.accepted == 2 and source.stats.reconnects == 1
    assert any("timed out: no data for 1 s" in r.getMessage() for r in caplog.records)
    # The reopened stream starts a new timeline; its frames keep counting after the first run's.
    second = [f for f in frames if f.new_timeline][1:]
    assert len(second) == 1 and second[0].index > frames[0].index
    assert np.all(np.diff([f.index for f in frames]) > 0)


def test_stalled_rtsp_stream_times_out_after_the_read_timeout_and_gives_up_when_it_stays_silent(caplog):
    port = free_port()
    # 45 frames, then silence on an open connection; the one-client server cannot answer again.
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stream_rtsp_server.py"), str(port), "0",
                               str(FPS), "45"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout.readline().strip() == "serving"
        source = NetworkSource(f"rtsp://127.0.0.1:{port}/live", open_timeout_s=2, read_timeout_s=1,
                               max_reconnects=1, backoff_s=0.05)
        frames = []
        with caplog.at_level(logging.WARNING, logger="meshstream.source"):
            with pytest.raises(SourceError, match=r"timed out.*gave up after 1 reconnection attempt") as error:
                for frame in source.frames():
                    frames.append(frame)
                    last_frame_s = time.monotonic()
        silent_s = time.monotonic() - last_frame_s
    finally:
        server.kill()
        server.wait()
    assert frames and "Invalid data" not in str(error.value)
    assert any("timed out: no data for 1 s" in r.getMessage() for r in caplog.records)
    assert silent_s < 1 + 2 + 2.5  # read timeout, then one reopening attempt limited by the open timeout


def test_reconnection_gives_up_after_max_reconnects_attempts_and_says_that_many():
    data = mpegts_bytes(LIVE_FRAMES)

    def first_client_gets_a_short_stream(connection, number):
        if number == 0:
            connection.sendall(data)
        connection.close()  # the stream ends; later clients are hung up on at once

    with LoopbackServer(first_client_gets_a_short_stream) as server:
        source = NetworkSource(f"tcp://127.0.0.1:{server.port}", open_timeout_s=2, read_timeout_s=2,
                               max_reconnects=3, backoff_s=0.05)
        frames = []
        with pytest.raises(SourceError, match=r"gave up after 3 reconnection attempt\(s\)"):
            for frame in source.frames():
                frames.append(frame)
        attempts = server.accepted - 1
    assert frames and attempts == 3


# -- variable frame rate -----------------------------------------------------------------------

def test_overlay_keeps_each_frame_time_of_a_variable_frame_rate_clip(tmp_path):
    gaps_ms = [20, 50, 33, 17, 66, 40, 25, 45, 33, 10, 80, 33, 21, 47, 33, 60, 15, 33, 33, 70]
    times_s = np.concatenate([[0], np.cumsum(gaps_ms)]) / 1000
    clip = encode(tmp_path / "vfr.mkv", (numbered_image(i) for i in range(len(times_s))), times_s=times_s)
    source = VideoFileSource(clip)
    overlay = OverlayVideoWriter(tmp_path / "overlay.mp4", source.fps, source.width, source.height)
    source_times = []
    for frame in source.frames():
        source_times.append(frame.pts_s)
        overlay.add(Packet(frame))
    overlay.close()
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        out = [(float(f.pts * stream.time_base), shown_number(f.to_ndarray(format="rgb24")))
               for f in container.decode(stream)]
    assert np.allclose(source_times, times_s, atol=1e-3)
    assert [n for _, n in out] == list(range(len(times_s)))
    out_times = np.array([t for t, _ in out])
    assert np.abs((out_times - out_times[0]) - (times_s - times_s[0])).max() <= 1e-3
