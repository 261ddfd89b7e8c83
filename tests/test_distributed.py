"""meshstream on a local Ray (2 CPUs): archives (`process --ray`) and many live streams (`serve`).

Needs Ray (`make test-ray` installs it); skipped without it. Real worker processes are killed
with SIGKILL mid-run; results are compared with the single-process chain.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: `make test-ray` (pip install 'meshstream[ray]')")

from stream_helpers import free_port, meshstream, meshstream_popen, write_clip  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_CLIP = 10
MAX_SIDE = 256
# Chunks start with fresh landmark tracking, tracker and fit warm start; after the warm-up frames
# their bodies agree with the single-process run's to within this (metres, any joint).
CHUNK_JOINT_TOLERANCE_M = 0.02


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module, on 2 CPUs (the machine is shared)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Three short clips of people: consecutive pieces of the bundled sample clip."""
    import av
    import cv2

    folder = tmp_path_factory.mktemp("clips")
    with av.open(str(ROOT / "stream" / "assets" / "sample.mp4")) as container:
        images = []
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            images.append(cv2.resize(image, (144, 256)))  # (width, height): the sample is 720 x 1280
            if len(images) == 3 * FRAMES_PER_CLIP:
                break
    return [write_clip(folder / f"clip{k}.mp4", images[k * FRAMES_PER_CLIP:(k + 1) * FRAMES_PER_CLIP], fps=25)
            for k in range(3)]


def _config():
    from stream.config import Config

    return Config(max_side=MAX_SIDE, max_people=1, threads=1)


@pytest.fixture(scope="module")
def single_process_results(clips, tmp_path_factory) -> dict[str, Path]:
    """Each clip run by the single-process chain (what `meshstream process` does)."""
    from stream.compose import compose

    folder = tmp_path_factory.mktemp("single")
    out = {}
    for clip in clips:
        out[clip.stem] = folder / f"{clip.stem}.npz"
        chain = compose(_config().replace(source=str(clip), results=str(out[clip.stem])))
        chain.run()
    return out


def _assert_same_results(path: Path, reference: Path) -> None:
    got, want = np.load(path), np.load(reference)
    assert json.loads(str(got["meta"]))["frames"] == FRAMES_PER_CLIP
    assert set(got.files) == set(want.files)
    for name in want.files:
        if name == "meta":
            continue
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5, err_msg=name)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name]


def test_archive_command_reports_a_broken_video_and_skips_the_done_ones(clips, single_process_results, tmp_path):
    out = tmp_path / "out"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    # A file whose output exists but has no manifest line (a worker killed after the rename) is redone.
    out.mkdir()
    (out / "clip1.npz").write_bytes(b"left by a killed worker")
    (out / ".clip2.npz.0123456789ab.partial.npz").write_bytes(b"half written")
    options = ["--max-side", str(MAX_SIDE), "--max-people", "1", "--threads", "1", "--no-progress"]
    run = meshstream("process", "--ray", "--local-cpus", "2", "--workers", "1", str(clips[1]), str(clips[2]),
                     str(broken), "-o", str(out), *options, timeout=400)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "done 2, failed 1, skipped 0" in run.stdout
    assert f"failed: {broken.resolve()} after 1 attempts: cannot read" in run.stdout
    for key in ("clip1", "clip2"):
        _assert_same_results(out / f"{key}.npz", single_process_results[key])
    assert _leftovers(out) == []
    records = {r["key"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["broken"]["status"] == "failed" and records["clip1"]["status"] == "done"

    rerun = meshstream("process", "--ray", "--local-cpus", "2", str(clips[1]), str(clips[2]), "-o", str(out),
                       *options, timeout=200)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "done 0, failed 0, skipped 2" in rerun.stdout


def _frames_by_topic(addresses: dict[str, str], seconds: float) -> dict[str, int]:
    """Frame messages received per topic from each address during ``seconds``."""
    from stream.client import Subscriber

    subscribers = {name: Subscriber(address) for name, address in addresses.items()}
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for sub in subscribers.values():
                message = sub.recv(timeout_s=0.05)
                if message is not None and message.kind == "frame":
                    counts[message.topic] = counts.get(message.topic, 0) + 1
    finally:
        for sub in subscribers.values():
            sub.close()
    return counts


def _status(url: str) -> dict:
    """`meshstream status URL --json`: each stream's status from the running serve."""
    out = meshstream("status", url, "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_serve_two_looping_streams_and_a_killed_one_restarts_alone(clips, tmp_path):
    """`meshstream serve` with two looping files on a local Ray: both topics arrive, `meshstream
    status` shows fps, latency and drops; killing one stream's process leaves the other publishing
    and the killed one comes back."""
    from stream.distributed.serve import read_streams

    ports = {"left": free_port(), "right": free_port()}
    streams = tmp_path / "streams.toml"
    streams.write_text(f"""
[defaults]
max_side = {MAX_SIDE}
max_people = 1
threads = 1

[streams.left]
source = "{clips[0]}"
loop = true
publish = "tcp://127.0.0.1:{ports['left']}"

[streams.right]
source = "{clips[1]}"
loop = true
publish = "tcp://127.0.0.1:{ports['right']}"
""")
    specs = read_streams(streams)
    assert [s.topic for s in specs] == ["meshstream.frame.left", "meshstream.frame.right"]
    addresses = {s.name: s.config.publish for s in specs}
    url = f"http://127.0.0.1:{free_port()}/status"
    serve = meshstream_popen("serve", str(streams), "--local-cpus", "2", "--status-port", url.split(":")[2].split("/")[0],
                             "--print-every", "0", "--duration", "240")
    try:
        deadline = time.monotonic() + 150
        status: dict = {}
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                status = _status(url)
            except AssertionError:  # not serving yet
                status = {}
            if status and all(s.get("state") == "running" and s.get("frames", 0) > 0 for s in status.values()):
                break
            time.sleep(2.0)
        assert set(status) == {"left", "right"} and all(s["state"] == "running" for s in status.values()), status
        counts = _frames_by_topic(addresses, 15.0)
        assert counts.get("meshstream.frame.left", 0) >= 2 and counts.get("meshstream.frame.right", 0) >= 2, counts
        status = _status(url)
        for s in status.values():
            assert s["fps"] > 0 and s["latency_p50_ms"] > 0 and s["dropped_at_source"] >= 0 and s["restarts"] == 0
        table = meshstream("status", url, timeout=30).stdout
        assert "left" in table and "right" in table and "fps" in table

        left_pid = status["left"]["pid"]
        os.kill(left_pid, signal.SIGKILL)
        during = _frames_by_topic({"right": addresses["right"]}, 6.0)
        assert during.get("meshstream.frame.right", 0) >= 2, during

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = _status(url)
            if status["left"].get("state") == "running" and status["left"].get("frames", 0) > 0:
                break
            time.sleep(2.0)
        assert status["left"]["pid"] != left_pid and status["left"]["restarted"] is True, status["left"]
        assert status["left"]["restarts"] == 1 and status["right"]["restarts"] == 0
        counts = _frames_by_topic(addresses, 10.0)
        assert counts.get("meshstream.frame.left", 0) >= 1 and counts.get("meshstream.frame.right", 0) >= 1, counts
    finally:
        serve.send_signal(signal.SIGINT)
        stdout, stderr = serve.communicate(timeout=120)
    assert serve.returncode == 0, stderr[-3000:]
    assert "left" in stdout and "right" in stdout


def test_archive_survives_a_killed_worker_and_matches_the_single_process_run(local_ray, clips,
                                                                             single_process_results, tmp_path):
    from stream.distributed.archive import Manifest, find_videos, process_archive

    out = tmp_path / "out"
    jobs = find_videos([str(clips[0].parent)], out)
    assert sorted(j.key for j in jobs) == ["clip0", "clip1", "clip2"]
    pids: dict = {}  # video -> pid of the worker running its latest attempt
    killed: list[tuple[str, int]] = []
    timers: list[threading.Timer] = []

    def kill(key: str) -> None:
        if not killed:
            killed.append((key, pids[key]))
            os.kill(pids[key], signal.SIGKILL)

    def on_start(worker, job, attempt):
        pids[job.key] = ray.get(worker.describe.remote())["pid"]
        if not timers and attempt == 1:
            # A quiet machine can finish a 10-frame clip between two progress reports: then the
            # first video is killed 1 s after it started (its worker is still warming the pose
            # networks up, about 2.5 s, so the video is in progress).
            timers.append(threading.Timer(1.0, kill, args=(job.key,)))
            timers[0].start()

    def on_progress(frames: dict):  # kill the first video seen between its first and last frame
        if killed:
            return
        for key, done in frames.items():
            if 1 <= done < FRAMES_PER_CLIP - 2 and key in pids:
                kill(key)
                return

    summary = process_archive(jobs, out, _config(), workers=2, retries=2, progress_bar=False, on_start=on_start,
                              on_progress=on_progress)

    assert len(killed) == 1, "no video was seen mid-run"
    killed_key, killed_pid = killed[0]
    assert summary.lost_workers == 1
    assert summary.failed == []
    assert sorted(r["key"] for r in summary.done) == ["clip0", "clip1", "clip2"]  # each exactly once
    retried = next(r for r in summary.done if r["key"] == killed_key)
    assert retried["attempt"] == 2 and retried["pid"] != killed_pid
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == ["clip0", "clip1", "clip2"]
    assert all(line["status"] == "done" for line in lines)
    assert _leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["clip0.npz", "clip1.npz", "clip2.npz", "manifest.jsonl"]
    for key, reference in single_process_results.items():
        _assert_same_results(out / f"{key}.npz", reference)

    # Rerunning skips what is done (no worker starts).
    again = process_archive(find_videos([str(clips[0].parent)], out), out, _config(), workers=2, progress_bar=False)
    assert sorted(again.skipped) == ["clip0", "clip1", "clip2"] and again.done == [] and again.failed == []
    assert len(Manifest(out).records()) == 3


def test_chunks_of_a_long_video_join_into_one_results_file_like_the_single_process_run(local_ray, tmp_path):
    """A 40-frame clip in chunks of 16 (8 warm-up frames, the smoothing lag after): every frame
    once, one track id throughout, bodies close to the single-process run's."""
    import av
    import cv2

    from stream.compose import compose
    from stream.distributed.archive import find_videos, process_archive

    with av.open(str(ROOT / "stream" / "assets" / "sample.mp4")) as container:
        images = [cv2.resize(f.to_ndarray(format="rgb24"), (144, 256)) for _, f in zip(range(40), container.decode(video=0))]
    clip = write_clip(tmp_path / "long.mp4", images, fps=25)
    reference = tmp_path / "single.npz"
    compose(_config().replace(source=str(clip), results=str(reference))).run()

    out = tmp_path / "out"
    summary = process_archive(find_videos([str(clip)], out), out, _config(), workers=2, progress_bar=False,
                              chunk_frames=16, chunk_overlap=8)
    assert summary.failed == [] and len(summary.done) == 1 and summary.done[0]["chunks"] == 3
    assert _leftovers(out) == []
    got, want = np.load(out / "long.npz"), np.load(reference)
    assert json.loads(str(got["meta"]))["frames"] == 40
    np.testing.assert_array_equal(got["frame_index"], want["frame_index"])
    assert len(np.unique(got["track_id"])) == len(np.unique(want["track_id"])) == 1
    first_chunk = got["frame_index"] < 16  # read exactly as in one run: the same numbers
    np.testing.assert_allclose(got["joints"][first_chunk], want["joints"][first_chunk], atol=1e-5)
    joint_error_m = np.linalg.norm(got["joints"] - want["joints"], axis=-1)
    assert joint_error_m.max() < CHUNK_JOINT_TOLERANCE_M, joint_error_m.max(axis=1)


def test_archive_command_refuses_bad_arguments_in_one_line(tmp_path, clips):
    several = meshstream("process", str(clips[0]), str(clips[1]), "-o", str(tmp_path / "x.npz"))
    assert several.returncode == 2 and "--ray" in several.stderr
    npz_folder = meshstream("process", "--ray", str(clips[0]), "-o", str(tmp_path / "x.npz"))
    assert npz_folder.returncode == 2 and "names a folder" in npz_folder.stderr
    missing = meshstream("process", "--ray", str(tmp_path / "nothing*.mp4"), "-o", str(tmp_path / "out"))
    assert missing.returncode == 2 and "matches no file" in missing.stderr
