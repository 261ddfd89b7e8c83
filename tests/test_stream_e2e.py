"""End to end: the `meshstream` commands as real subprocesses, talking over real sockets."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zmq

from tests.stream_helpers import ROOT, free_port, make_clip, meshstream, meshstream_popen, write_clip

SQUATS = ROOT / "stream" / "assets" / "sample.mp4"  # pose_squats.mp4, vendored

# A subscriber in its own process: validates every frame and prints one JSON line per message.
SUBSCRIBER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from stream.client import Subscriber
    address, count = sys.argv[1], int(sys.argv[2])
    with Subscriber(address) as sub:
        frames = 0
        for msg in sub.frames(timeout_s=20):
            h = msg.header
            arrays = {}
            for name, a in msg.arrays.items():
                arrays[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "finite": bool(np.isfinite(a).all())}
            if "keypoints" in msg.arrays and len(h["people"]):
                k = msg.arrays["keypoints"]
                arrays["keypoints"]["in_image"] = bool(((k[..., 0] > -0.2 * h["width"]) & (k[..., 0] < 1.2 * h["width"])).mean() > 0.8)
            meta = sub.meta.header if sub.meta is not None else None
            print(json.dumps({"seq": h["seq"], "frame_index": h["frame_index"], "people": h["people"],
                              "arrays": arrays, "meta": meta, "faces": None if sub.meta is None or "faces" not in sub.meta.arrays
                              else list(sub.meta.arrays["faces"].shape)}), flush=True)
            frames += 1
            if frames == count:
                break
        print(json.dumps({"stats": sub.stats}), flush=True)
""")


def _subscriber(address: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SUBSCRIBER, address, str(count)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def squats10(tmp_path_factory):
    """The first 10 frames of the real squats clip (a person in every frame), 5 fps, 360 px."""
    from stream.sources import VideoFileSource

    path = tmp_path_factory.mktemp("real") / "squats10.mp4"
    frames = []
    for f in VideoFileSource(SQUATS, max_side=360).frames():
        frames.append(f.image)
        if len(frames) == 10:
            break
    return write_clip(path, frames, fps=5)


def test_run_publishes_every_frame_in_order_with_valid_arrays_and_topology(squats10):
    address = f"tcp://127.0.0.1:{free_port()}"
    sub = _subscriber(address, 10)
    run = meshstream("run", str(squats10), "--realtime", "--publish", address, "--wait-subscribers", "20")
    out, err = sub.communicate(timeout=60)
    assert run.returncode == 0, run.stderr
    lines = _lines(out)
    frames, stats = lines[:-1], lines[-1]["stats"]
    assert [f["seq"] for f in frames] == list(range(10))
    assert [f["frame_index"] for f in frames] == list(range(10))
    assert stats["missed"] == 0 and stats["malformed"] == 0
    meta = frames[-1]["meta"]
    assert meta["v"] == 1 and len(meta["joint_names"]) == 24 and len(meta["parents"]) == 24
    assert len(meta["keypoint_names"]) == 33 and meta["intrinsics"]["width"] == 202
    for f in frames:
        assert all(a["finite"] for a in f["arrays"].values())
        for name, a in f["arrays"].items():
            assert a["shape"][0] == len(f["people"]), name
    if "pose" in meta["stages"]:  # the pose engine ran: there is a person in every frame of this clip
        assert all(len(f["people"]) >= 1 and f["arrays"]["keypoints"]["in_image"] for f in frames)
        assert len({f["people"][0]["id"] for f in frames}) == 1  # one stable id


def test_a_late_subscriber_still_gets_the_topology():
    from stream.client import Subscriber

    address = f"tcp://127.0.0.1:{free_port()}"
    run = meshstream_popen("run", str(SQUATS), "--realtime", "--pose", "off", "--max-frames", "20",
                           "--publish", address, "--meta-interval", "600")
    try:
        with Subscriber(address) as early:  # 1. wait until frames are flowing
            first = next(early.frames(timeout_s=30)).header["frame_index"]
        # 2. join late (the periodic resend is 10 minutes away)
        with Subscriber(address) as late:
            meta = late.wait_for_meta(10)
            later = next(late.frames(timeout_s=10)).header["frame_index"]
        assert meta.topic == "meshstream.meta" and meta.header["kind"] == "meta"
        assert len(meta.header["joint_names"]) == 24 and meta.header["meta_interval_s"] == 600
        assert later > first  # it joined late
    finally:
        run.wait(timeout=30)
    assert run.returncode == 0


def test_a_slow_subscriber_never_stalls_the_publisher(tmp_path):
    clip = make_clip(tmp_path / "c.mkv", frames=60, fps=30)
    address = f"tcp://127.0.0.1:{free_port()}"
    slow = meshstream_popen("listen", address, "--slow", "0.25", "--timeout", "30")
    fast = _subscriber(address, 60)
    time.sleep(1.0)
    stats_path = tmp_path / "stats.json"
    run = meshstream("run", str(clip), "--realtime", "--pose", "off", "--publish", address,
                     "--wait-subscribers", "20", "--wait-count", "2", "--stats-json", str(stats_path))
    slow.send_signal(signal.SIGINT)
    slow_out, slow_err = slow.communicate(timeout=20)
    fast_out, _ = fast.communicate(timeout=30)
    assert run.returncode == 0, run.stderr
    frames = _lines(fast_out)[:-1]
    assert [f["seq"] for f in frames] == list(range(60))
    # The run published all 60 frames while the slow subscriber had read only a handful:
    # nothing waited for it.
    slow_frames = [line for line in slow_out.splitlines() if line.startswith("frame")]
    assert len(slow_frames) < 30
    stats = json.loads(stats_path.read_text())
    assert stats["frames_out"] == 60 and stats["publisher"]["sent"] == 60


def test_process_writes_the_results_file_and_a_playable_overlay_video(squats10, tmp_path):
    import av

    out, video = tmp_path / "out.npz", tmp_path / "out.mp4"
    result = meshstream("process", str(squats10), "-o", str(out), "--render", str(video))
    assert result.returncode == 0, result.stderr
    data = np.load(out)
    meta = json.loads(str(data["meta"]))
    assert meta["frames"] == 10 and meta["width"] == 202 and meta["height"] == 360
    n = len(data["frame_index"])
    shapes = {"pts_s": (n,), "track_id": (n,), "global_orient": (n, 3), "body_pose": (n, 23, 3), "betas": (n, 10),
              "transl": (n, 3), "joints": (n, 24, 3), "keypoints2d": (n, 33, 3)}
    for key, shape in shapes.items():
        assert data[key].shape == shape, key
    if "pose" in meta["stages"]:
        assert n >= 10 and sorted(set(data["frame_index"].tolist())) == list(range(10))
        assert np.isfinite(data["keypoints2d"]).all()
    with av.open(str(video)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 10 and decoded[0].shape == (360, 202, 3)


def test_process_on_a_truncated_video_keeps_the_readable_part_and_says_what_was_lost(tmp_path):
    data = make_clip(tmp_path / "ok.mkv", frames=30).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    out = tmp_path / "cut.npz"
    result = meshstream("process", str(cut), "-o", str(out), "--pose", "off")
    assert result.returncode == 0, result.stderr
    assert "input ended early" in result.stdout and "skipped:" in result.stdout
    frames = json.loads(str(np.load(out)["meta"]))["frames"]
    assert 5 < frames < 30


def test_ctrl_c_during_process_leaves_a_valid_results_file_and_video(tmp_path):
    import av

    clip = make_clip(tmp_path / "long.mkv", frames=900, width=320, height=240)
    out, video = tmp_path / "partial.npz", tmp_path / "partial.mp4"
    # The pose engine runs, so 900 frames take seconds: Ctrl-C lands in the middle of the run.
    proc = meshstream_popen("process", str(clip), "-o", str(out), "--render", str(video))
    deadline = time.monotonic() + 60
    while not video.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr
    frames = json.loads(str(np.load(out)["meta"]))["frames"]
    assert 0 < frames < 900
    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == frames


def test_wrong_address_port_in_use_and_missing_input_get_clear_errors(tmp_path):
    clip = make_clip(tmp_path / "c.mkv", frames=3)
    bad = meshstream("run", str(clip), "--pose", "off", "--publish", "tcp://127.0.0.1")
    assert bad.returncode == 2 and "not a valid ZeroMQ address" in bad.stderr
    port = free_port()
    ctx = zmq.Context()
    holder = ctx.socket(zmq.PUB)
    holder.bind(f"tcp://127.0.0.1:{port}")
    try:
        busy = meshstream("run", str(clip), "--pose", "off", "--publish", f"tcp://127.0.0.1:{port}")
        assert busy.returncode == 2 and "already in use" in busy.stderr
    finally:
        holder.close(0)
        ctx.term()
    missing = meshstream("run", str(tmp_path / "nope.mp4"), "--pose", "off", "--publish", f"tcp://127.0.0.1:{free_port()}")
    assert missing.returncode == 2 and "not found" in missing.stderr
    nobody = meshstream("run", f"rtsp://127.0.0.1:{free_port()}/live", "--pose", "off", "--max-reconnects", "0",
                        "--publish", f"tcp://127.0.0.1:{free_port()}")
    assert nobody.returncode == 2 and "cannot open stream" in nobody.stderr
    listen = meshstream("listen", "not-an-address", "--count", "1")
    assert listen.returncode == 2 and "cannot connect" in listen.stderr
    unwritable = meshstream("process", str(clip), "-o", str(tmp_path / "no" / "dir" / "x.npz"), "--pose", "off")
    assert unwritable.returncode == 2 and "does not exist" in unwritable.stderr


def test_run_reconnects_an_rtsp_stream_that_drops_and_goes_on(tmp_path):
    from stream.client import Subscriber

    # The server drops each client after 75 frames (2.5 s) and takes the next: 90 frames need
    # at least one reconnection, however late the run starts reading.
    port, address = free_port(), f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stream_rtsp_server.py"), str(port), "0", "30",
                               "75", "drop"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stats_path = tmp_path / "stats.json"
    assert server.stdout.readline().strip() == "serving"
    run = meshstream_popen("run", f"rtsp://127.0.0.1:{port}/live", "--pose", "off", "--max-frames", "90",
                           "--publish", address, "--stats-json", str(stats_path))
    seen = []
    try:
        with Subscriber(address) as sub:
            first = next(sub.frames(timeout_s=60), None)  # the run starts (slowly on a busy machine)
            assert first is not None, "no frame from the run"
            seen.append(first.header["frame_index"])
            for msg in sub.frames(timeout_s=8):  # until the run has stopped publishing
                seen.append(msg.header["frame_index"])
        run.communicate(timeout=30)
    finally:
        server.kill()
        server.wait()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0
    stats = json.loads(stats_path.read_text())
    assert stats["source"]["reconnects"] >= 1 and stats["frames_in"] == 90
    assert stats["frames_out"] + stats["dropped_at_source"] == 90  # live: a burst may drop stale frames
    # Frame indices number the frames of the input: frames the decoder could not deliver (those
    # before the first key frame of each connection) leave gaps, counted as skipped.
    assert seen == sorted(set(seen))
    assert 89 <= seen[-1] <= 89 + stats["source"]["skipped_frames"]


def test_run_without_a_source_plays_the_bundled_sample_and_ctrl_c_stops_it_cleanly(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    stats_path = tmp_path / "stats.json"
    run = meshstream_popen("run", "--pose", "off", "--publish", address, "--stats-json", str(stats_path))
    from stream.client import Subscriber

    with Subscriber(address) as sub:
        first = next(sub.frames(timeout_s=20))
        assert sub.wait_for_meta(5).header["source"]["name"].endswith("sample.mp4")
    assert first.header["width"] == 720 and first.header["height"] == 1280
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=20)
    assert run.returncode == 130 and "interrupted" in stderr
    assert "frames in" in stdout and "published" in stdout  # the summary, also after Ctrl-C
    stats = json.loads(stats_path.read_text())
    assert 0 < stats["frames_out"] < 65 and stats["policy"] == "live"


def test_curve_keys_let_the_authorised_listener_in_and_keep_a_plain_one_out(tmp_path):
    from stream.publisher import create_curve_keys

    keys = create_curve_keys(tmp_path / "keys")
    address = f"tcp://127.0.0.1:{free_port()}"
    run = meshstream_popen("run", str(SQUATS), "--realtime", "--pose", "off", "--max-frames", "15",
                           "--publish", address, "--curve-keys", str(keys / "server"))
    try:
        plain = meshstream_popen("listen", address, "--count", "1", "--timeout", "4")
        allowed = meshstream("listen", address, "--count", "3", "--curve-keys", str(keys / "client"), "--timeout", "20")
        plain_out, plain_err = plain.communicate(timeout=30)
    finally:
        run.wait(timeout=30)
    assert allowed.returncode == 0, allowed.stderr
    lines = allowed.stdout.splitlines()
    assert sum(line.startswith("topology:") for line in lines) == 1
    assert sum(line.startswith("frame ") for line in lines) == 3
    assert plain.returncode == 2 and "nothing received" in plain_err and "frame" not in plain_out


def test_bench_prints_one_json_object_with_stage_end_to_end_and_publisher_figures(tmp_path):
    clip = make_clip(tmp_path / "b.mkv", frames=20)
    result = meshstream("bench", str(clip), "--json", "--pose", "off", "--long-frames", "0",
                        "--publish-messages", "20", "--no-engine-bench")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["alone"]) >= {"decode", "publish"}
    assert report["offline"]["frames_out"] == 20 and report["efficiency"] > 0
    assert report["offline"]["stages"]["publish"]["p95_ms"] >= 0
    for figures in report["publisher"] + report["publisher_latency_30hz"]:
        assert figures["received"] > 0 and figures["num_vertices"] > 0 and figures["messages_per_s"] > 0


def test_a_named_source_publishes_on_its_own_topic(tmp_path):
    from stream.client import Subscriber

    clip = make_clip(tmp_path / "c.mkv", frames=5)
    address = f"tcp://127.0.0.1:{free_port()}"
    with Subscriber(address, topics=("meshstream.frame.cam-1",)) as sub:
        run = meshstream("run", str(clip), "--pose", "off", "--source-name", "cam-1", "--publish", address,
                         "--wait-subscribers", "20")
        messages = list(sub.frames(timeout_s=1))  # the run has ended: its messages wait in the socket
    assert run.returncode == 0, run.stderr
    assert [m.topic for m in messages] == ["meshstream.frame.cam-1"] * 5
    bad = meshstream("run", str(clip), "--pose", "off", "--source-name", "a b", "--publish", address)
    assert bad.returncode == 2 and "--source-name" in bad.stderr
