"""Sources: real decoding with PyAV of clips made here, images, a live TCP server that drops."""

import subprocess
import sys
import time

import numpy as np
import pytest

from stream.sources import ImageSource, NetworkSource, SourceError, VideoFileSource, open_source
from tests.stream_helpers import ROOT, free_port, make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mkv", frames=12, fps=30)


def test_video_file_gives_rgb_frames_with_index_and_container_timestamps(clip):
    frames = list(open_source(str(clip)).frames())
    assert [f.index for f in frames] == list(range(12))
    assert np.allclose([f.pts_s for f in frames], np.arange(12) / 30, atol=1e-3)
    image = frames[3].image
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert image[16, 5 * 3 + 8, 0] > 200  # the bright square of frame 3
    captures = [f.t_capture_ns for f in frames]
    assert captures == sorted(captures)


def test_realtime_file_is_paced_by_its_timestamps(clip):
    source = VideoFileSource(clip, realtime=True)
    assert source.live
    t0 = time.monotonic()
    frames = list(source.frames())
    elapsed = time.monotonic() - t0
    assert len(frames) == 12
    gaps_s = np.diff([f.t_capture_ns for f in frames]) / 1e9
    # Pacing never lets a frame out early (late is possible on a busy machine).
    assert elapsed >= 11 / 30 - 0.005
    assert np.median(gaps_s) >= 1 / 30 - 0.005


def test_max_side_scales_frames_down(clip):
    source = open_source(str(clip), max_side=48)
    frame = next(source.frames())
    assert max(frame.image.shape[:2]) == 48 and (source.width, source.height) == (48, 32)


def test_corrupt_video_keeps_the_readable_part_and_counts_what_was_skipped(tmp_path):
    data = bytearray(make_clip(tmp_path / "ok.mkv", frames=30).read_bytes())
    for k in range(len(data) // 3, len(data) // 3 + 400, 7):
        data[k] ^= 0x5A
    bad = tmp_path / "corrupt.mkv"
    bad.write_bytes(bytes(data))
    source = open_source(str(bad))
    frames = list(source.frames())
    assert 0 < len(frames) < 30
    assert source.stats.corrupt_packets + source.stats.decode_errors > 0
    assert "skipped" in source.stats.summary()


def test_truncated_video_processes_the_readable_part_and_says_it_ended_early(tmp_path):
    data = make_clip(tmp_path / "ok.mkv", frames=30).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    source = open_source(str(cut))
    frames = list(source.frames())
    assert 5 < len(frames) < 30
    assert source.stats.truncated
    assert any("ends at" in line for line in source.stats.skipped)


def test_image_file_and_folder_sources(tmp_path):
    import av

    for i in range(3):
        image = np.full((20, 30, 3), 60 * i, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        with av.open(str(tmp_path / f"img{i}.png"), "w") as c:
            s = c.add_stream("png")
            s.width, s.height, s.pix_fmt = 30, 20, "rgb24"
            for p in s.encode(frame):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    folder = ImageSource(tmp_path, image_fps=10)
    frames = list(folder.frames())
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 60, 120]
    # broken.jpg sorts first: it keeps its place, so every image keeps its number in the folder.
    assert [f.index for f in frames] == [1, 2, 3]
    assert [f.pts_s for f in frames] == [0.1, 0.2, 0.3]
    assert folder.stats.decode_errors == 1 and folder.stats.skipped_frames == 1
    assert (folder.width, folder.height) == (30, 20)
    single = list(open_source(str(tmp_path / "img2.png")).frames())
    assert len(single) == 1 and single[0].image.shape == (20, 30, 3)


def test_missing_or_unsupported_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "nope.mp4"))
    (tmp_path / "text.mp4").write_text("hello")
    with pytest.raises(SourceError, match="cannot read"):
        open_source(str(tmp_path / "text.mp4"))
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        open_source("gopher://example/stream")
    with pytest.raises(SourceError, match="cannot open stream"):
        NetworkSource(f"tcp://127.0.0.1:{free_port()}", open_timeout_s=1, max_reconnects=1, backoff_s=0.05)


SERVERS = {"tcp": ("stream_ts_server.py", "tcp://127.0.0.1:{port}"),
           "http": ("stream_ts_server.py", "http://127.0.0.1:{port}/live.ts"),
           "rtsp": ("stream_rtsp_server.py", "rtsp://127.0.0.1:{port}/live")}


def _serve(scheme: str, port: int, first: int) -> subprocess.Popen:
    script = str(ROOT / "tests" / SERVERS[scheme][0])
    extra = ["30", scheme] if scheme == "http" else []
    return subprocess.Popen([sys.executable, script, str(port), str(first), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("scheme", sorted(SERVERS))
def test_network_stream_that_drops_is_reconnected_and_frames_keep_coming(scheme):
    port = free_port()
    server = _serve(scheme, port, 0)
    try:
        time.sleep(0.8)
        url = SERVERS[scheme][1].format(port=port)
        source = NetworkSource(url, open_timeout_s=5, read_timeout_s=3, backoff_s=0.1)
        indices, new_timeline = [], []
        for frame in source.frames():
            indices.append(frame.index)
            new_timeline.append(frame.new_timeline)
            skipped = source.stats.skipped_frames
            if len(indices) == 15:
                server.kill()  # 1. the stream drops
                server.wait()
                time.sleep(0.3)
                server = _serve(scheme, port, 100)  # 2. and comes back
            if len(indices) == 40:
                break
        assert source.stats.reconnects >= 1
        # Indices keep counting across the reconnect; frames received but not decodable (those
        # before the first key frame of each connection) leave gaps, counted as skipped.
        gaps = np.diff([-1] + indices) - 1
        assert (gaps >= 0).all() and gaps.sum() == skipped
        # The first frame, and the first after each reconnect, start a new timeline.
        assert new_timeline[0] and sum(new_timeline) == 1 + source.stats.reconnects
    finally:
        server.kill()
        server.wait()
