"""The parts of the cluster runner that need no Ray: finding the videos of an archive, the
manifest, chunk plans, joining chunks, and the streams file. (With Ray: test_distributed.py.)"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from stream.config import ConfigError
from stream.distributed import DistributedError
from stream.distributed.archive import (Chunk, Manifest, find_videos, join_chunks, options_fingerprint, plan_chunks,
                                        remove_staged, staged_path)
from stream.distributed.serve import read_streams


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folders_globs_and_files_become_one_job_per_video_with_mirrored_outputs(tmp_path):
    archive = tmp_path / "archive"
    _touch(archive / "a.mp4")
    _touch(archive / "day1" / "cam2.MKV")
    _touch(archive / "notes.txt")
    _touch(archive / ".hidden" / "skip.mp4")
    _touch(tmp_path / "extra" / "b.mov")
    jobs = find_videos([str(archive), str(tmp_path / "extra" / "*.mov"), str(archive / "a.mp4")], tmp_path / "out",
                       render=True)
    by_key = {job.key: job for job in jobs}
    assert sorted(by_key) == ["a", "b", "day1/cam2"]  # a.mp4 named twice is one job
    assert by_key["day1/cam2"].outputs == {"results": str(tmp_path / "out" / "day1" / "cam2.npz"),
                                           "render": str(tmp_path / "out" / "day1" / "cam2.mp4")}
    assert by_key["b"].source == str((tmp_path / "extra" / "b.mov").resolve())


def test_inputs_that_match_nothing_or_collide_are_refused_before_anything_runs(tmp_path):
    _touch(tmp_path / "x" / "clip.mp4")
    _touch(tmp_path / "y" / "clip.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistributedError, match="would both write"):
        find_videos([str(tmp_path / "x"), str(tmp_path / "y")], tmp_path / "out")
    with pytest.raises(DistributedError, match="no video files"):
        find_videos([str(tmp_path / "empty")], tmp_path / "out")
    with pytest.raises(DistributedError, match="matches no file"):
        find_videos([str(tmp_path / "*.avi")], tmp_path / "out")
    with pytest.raises(DistributedError, match="is an input and would be an output"):
        find_videos([str(tmp_path / "x" / "clip.mp4")], tmp_path / "x", render=True)  # clip.mp4 overwritten
    with pytest.raises(DistributedError, match="no such file or folder"):
        find_videos([str(tmp_path / "missing.mp4")], tmp_path / "out")


def test_a_video_is_done_only_with_its_manifest_line_same_input_same_options_and_its_file(tmp_path):
    from stream.config import Config

    video = _touch(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    out.mkdir()
    [job] = find_videos([str(video)], out)
    fingerprint = options_fingerprint(Config())
    manifest = Manifest(out)
    assert not manifest.is_done(job, fingerprint, manifest.records())
    _touch(out / "clip.npz")  # an output without its line: not done
    assert not manifest.is_done(job, fingerprint, manifest.records())
    manifest.append({"key": "clip", "source": job.source, "status": "done", "input": job.identity(),
                     "options": fingerprint})
    with open(manifest.path, "a") as f:
        f.write('{"key": "cut sho')  # a line cut short by a crash is ignored
    records = manifest.records()
    assert manifest.is_done(job, fingerprint, records)
    assert not manifest.is_done(job, options_fingerprint(Config(max_people=1)), records)  # other options
    assert options_fingerprint(Config(threads=3, results="a.npz")) == fingerprint  # where and how fast: the same
    os.utime(video, ns=(0, 0))
    [changed] = find_videos([str(video)], out)
    assert not manifest.is_done(changed, fingerprint, records)  # the input changed
    (out / "clip.npz").unlink()
    assert not manifest.is_done(job, fingerprint, records)  # its output is gone


def test_staged_files_are_hidden_keep_their_extension_and_are_swept(tmp_path):
    out = tmp_path / "out"
    [job] = find_videos([str(_touch(tmp_path / "clip.mp4"))], out, render=True)
    staged = staged_path(job.outputs["results"], "abc")
    assert os.path.basename(staged).startswith(".clip.npz.abc") and staged.endswith(".npz")
    _touch(out / os.path.basename(staged))
    _touch(out / (os.path.basename(staged_path(job.outputs["render"], "def")) + ".partial.npz"))
    _touch(out / "clip.npz")
    _touch(out / ".other.npz.abc.partial.npz")  # another video's: kept
    assert remove_staged(job) == 2
    assert sorted(p.name for p in out.iterdir()) == [".other.npz.abc.partial.npz", "clip.npz"]


def test_chunk_plans_cover_every_frame_once_with_warm_up_before_and_the_lag_after():
    assert plan_chunks(100, None, 30, 15) == [None]
    assert plan_chunks(None, 20, 30, 15) == [None]
    assert plan_chunks(20, 20, 30, 15) == [None]
    chunks = plan_chunks(65, 20, 8, 15)
    assert [c.keep for c in chunks] == [(0, 20), (20, 40), (40, 60), (60, 65)]
    assert [c.run for c in chunks] == [(0, 35), (12, 55), (32, 65), (52, 65)]
    assert {c.count for c in chunks} == {4}


def _part(path, frames, tracks, boxes, meta_frames):
    """A results file as a chunk writes it: rows (frame, track) with their boxes."""
    n = len(frames)
    np.savez(path, frame_index=np.array(frames, np.int64), track_id=np.array(tracks, np.int64),
             bbox=np.array(boxes, np.float32).reshape(n, 4), joints=np.zeros((n, 24, 3), np.float32),
             meta=np.array(json.dumps({"input": "v.mp4", "frames": meta_frames})))
    return str(path)


def test_joined_chunks_keep_each_frame_once_and_carry_track_ids_over_the_border(tmp_path):
    left, right = [0, 0, 10, 10], [50, 0, 60, 10]
    first = Chunk(0, 2, keep=(0, 4), run=(0, 6))
    second = Chunk(1, 2, keep=(4, 8), run=(2, 8))
    # chunk 0: tracks 1 (left) and 2 (right) over frames 0-5
    a = _part(tmp_path / "a.npz", [f for f in range(6) for _ in (0, 1)], [1, 2] * 6, [left, right] * 6, 6)
    # chunk 1 (fresh tracker): the left person is its track 5, the right one its track 1, and a newcomer 7 at frame 7
    rows = [(f, t, box) for f in range(2, 8) for t, box in ((5, left), (1, right))] + [(7, 7, [100, 0, 110, 10])]
    b = _part(tmp_path / "b.npz", [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], 6)
    final = tmp_path / "v.npz"
    counts = join_chunks([(second, b), (first, a)], str(final))
    got = np.load(final)
    assert counts == {"frames": 8, "rows": 17}
    assert json.loads(str(got["meta"]))["frames"] == 8 and json.loads(str(got["meta"]))["chunks"] == 2
    assert sorted(got["frame_index"].tolist()) == sorted([f for f in range(8) for _ in (0, 1)] + [7])
    for frame, track, box in zip(got["frame_index"], got["track_id"], got["bbox"]):
        if box[0] == 0:
            assert track == 1, frame  # left: track 1 in both chunks
        elif box[0] == 50:
            assert track == 2, frame  # right: chunk 1's track 1 became 2
        else:
            assert track == 3 and frame == 7  # the newcomer gets a new id
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_streams_file_errors_name_the_stream_and_the_option(tmp_path):
    cases = {
        '[streams.a]\nsource = "x.mp4"\n': "give its publish address",
        '[streams.a]\nsource = "x.mp4"\npublish = "tcp://*:1"\n[streams.b]\nsource = "y.mp4"\npublish = "tcp://*:1"\n':
            "give each stream its own address",
        '[streams.a]\nsource = "x.mp4"\npublish = "tcp://*:1"\nmax_peple = 2\n': "unknown option 'max_peple'",
        '[streams."bad name"]\nsource = "x.mp4"\npublish = "tcp://*:1"\n': "letters, digits",
        '[stream.a]\nsource = "x.mp4"\n': "unknown table",
        '[streams.a]\nsource = "x.mp4"\npublish = "tcp://*:1"\nloop = "yes"\n': "loop must be true or false",
        '[streams.a]\nsource = "x.mp4"\npublish = "tcp://*:1"\noutput = "a.npz"\n': "not for live streams",
        '[defaults]\nmax_people = 0\n[streams.a]\nsource = "x.mp4"\npublish = "tcp://*:1"\n': "max-people",
    }
    for text, expected in cases.items():
        path = tmp_path / "streams.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            read_streams(path)


def test_streams_file_gives_each_stream_its_topic_options_and_resources(tmp_path):
    path = tmp_path / "streams.toml"
    path.write_text('[defaults]\nmax_people = 2\nmax-side = 320\n'
                    '[streams.door]\nsource = "rtsp://cam/1"\npublish = "tcp://*:5601"\n'
                    '[streams.hall]\nsource = "hall.mp4"\npublish = "tcp://*:5602"\nloop = true\nmax_people = 4\n'
                    'cpus = 2\ngpus = 0.5\n')
    door, hall = read_streams(path)
    assert (door.name, door.topic, door.config.source_name) == ("door", "meshstream.frame.door", "door")
    assert door.config.max_people == 2 and hall.config.max_people == 4 and hall.config.max_side == 320
    assert door.config.realtime and not door.loop and hall.loop
    assert (door.cpus, door.gpus, hall.cpus, hall.gpus) == (1.0, 0.0, 2.0, 0.5)


def test_status_table_shows_each_stream_and_why_one_is_not_running():
    from stream.distributed.serve import format_status

    table = format_status({
        "door": {"state": "running", "fps": 12.5, "latency_p50_ms": 80.0, "latency_p95_ms": 120.0,
                 "dropped_at_source": 3, "publish_dropped": 1, "restarts": 1, "address": "tcp://*:5601"},
        "hall": {"state": "failed", "error": "PublishError: the port is already in use", "restarts": 0,
                 "address": "tcp://*:5602"},
    }).splitlines()
    assert table[0].split()[:4] == ["stream", "state", "fps", "p50"]
    assert table[1].split()[:7] == ["door", "running", "12.5", "80", "120", "4", "1"]
    assert table[2].split()[:6] == ["hall", "failed", "-", "-", "-", "0"] and "port is already in use" in table[2]
