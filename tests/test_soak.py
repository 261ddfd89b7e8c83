"""The soak command (`meshstream bench --soak MINUTES`): a looping real-time source through the
whole live chain to a real subscriber, with the process's resources sampled. Short runs only:
the hour-long run and its figures are in docs/benchmarks.md ("Soak")."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from stream.bench import LoopingClipSource, process_resources, soak_summary
from tests.stream_helpers import ROOT, make_clip, meshstream


def test_looping_source_keeps_indices_and_timestamps_increasing_across_passes(tmp_path):
    clip = make_clip(tmp_path / "five.mp4", frames=5, fps=30)
    source = LoopingClipSource(clip)
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 13:
            source.stop()
    assert [f.index for f in frames] == list(range(13))
    steps = np.diff([f.pts_s for f in frames])
    assert np.allclose(steps, 1 / 30, atol=1e-3), steps  # no restart, no jump at the loop boundary
    assert source.loops == 2
    assert not any(f.new_timeline for f in frames)
    assert frames[5].image.shape == (64, 96, 3)
    # Played in real time: 12 frame intervals at 30 fps take at least 0.4 s.
    assert (frames[-1].t_capture_ns - frames[0].t_capture_ns) / 1e9 >= 12 / 30 - 0.02


def test_process_resources_reads_this_process():
    before = process_resources()
    handles = [open(os.devnull) for _ in range(5)]
    try:
        during = process_resources()
    finally:
        for handle in handles:
            handle.close()
    assert during["rss_mb"] > 10 and during["os_threads"] >= 1 and during["py_threads"] >= 1
    assert during["fds"] == before["fds"] + 5


def test_soak_summary_measures_growth_after_warmup():
    samples = [{"t_s": t, "rss_mb": 500 + (40 if t < 10 else t / 10), "os_threads": 20, "py_threads": 5,
                "fds": 30 + (t > 50)} for t in range(0, 101, 5)]
    summary = soak_summary(samples, warmup_s=10)
    rss = summary["rss_mb"]
    assert rss["after_warmup"] == 501 and rss["end"] == 510 and rss["growth_after_warmup"] == pytest.approx(9)
    assert rss["max"] == 540  # warm-up counts for the max only
    assert rss["first_10pct_median"] == 501 and rss["last_10pct_median"] == 510
    assert summary["os_threads"]["stable"] and not summary["fds"]["stable"]


def test_soak_runs_the_live_chain_to_a_subscriber_and_writes_its_series(tmp_path):
    out = tmp_path / "soak.json"
    result = meshstream("bench", "--soak", "0.15", "--soak-interval", "1", "--soak-warmup", "2",
                        "--soak-json", str(out), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RSS:" in result.stdout and "received" in result.stdout
    data = json.loads(out.read_text())
    samples, summary = data["samples"], data["summary"]
    assert len(samples) >= 5
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    for s in samples:
        assert s["rss_mb"] > 50 and s["os_threads"] >= s["py_threads"] >= 3 and s["fds"] > 3
        assert 0 <= s["received"] <= s["published"] <= s["frames_out"] <= s["frames_in"]
        assert s["degrade_level"] in (0, 1, 2, 3)
    assert data["config"]["stages"][-1] == "publish" and "body" in data["config"]["stages"]
    assert summary["received"] > 0 and summary["received"] + summary["missed"] <= summary["published"]
    assert summary["published"] == summary["frames_out"]
    assert summary["end_of_stream_received"] and summary["subscriber_error"] is None
    assert summary["frames_with_vertices"] == summary["received"]
    assert summary["rss_mb"]["max"] >= summary["rss_mb"]["end"] > 0
    assert data["machine"]["cpu_count"] >= 1


@pytest.mark.parametrize("args, message", [
    (["--soak", "0"], "more than 0"),
    (["--soak", "1", "--soak-interval", "-1"], "--soak-interval"),
    (["--soak", "1", "--soak-json", "/no/such/folder/soak.json"], "does not exist"),
])
def test_soak_refuses_bad_options_in_one_line(args, message):
    result = meshstream("bench", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_malloc_arenas_are_capped_unless_the_environment_says_otherwise():
    code = "from stream.allocator import limit_malloc_arenas; print(limit_malloc_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run = lambda env: subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,  # noqa: E731
                                     text=True, timeout=60).stdout.strip()
    assert run(env) == "True"
    assert run({**env, "MALLOC_ARENA_MAX": "8"}) == "False"
