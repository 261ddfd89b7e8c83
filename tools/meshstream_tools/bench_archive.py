"""Throughput of ``meshstream process --ray`` against single-process loops (docs/SCALING.md).

    python tools/bench_archive.py --videos 4 --frames 12 --workers 1 2 --out out/bench_archive

Makes ``--videos`` clips of ``--frames`` frames each from the bundled sample clip, then times:

1. the shell loop: one ``meshstream process`` per video (a new process each: imports, models);
2. the in-process loop: models loaded once, one chain per video (the best one process can do);
3. the archive runner on a local Ray with each worker count of ``--workers`` (the local Ray's
   start is timed apart; the runner's wall time includes its workers loading the models).

Every run uses one engine thread per chain (``--threads 1``; a worker takes one CPU). Prints a
Markdown table (videos per minute, ratio to the shell loop, seconds per video) and the bytes
that pass through Ray's object store per video, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_clips(folder: Path, videos: int, frames: int, width: int, height: int) -> list[Path]:
    """``videos`` clips of ``frames`` frames: consecutive pieces of the sample clip, looped."""
    import av
    import cv2
    import numpy as np

    with av.open(str(ROOT / "stream" / "assets" / "sample.mp4")) as container:
        images = [cv2.resize(f.to_ndarray(format="rgb24"), (width, height)) for f in container.decode(video=0)]
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k in range(videos):
        path = folder / f"clip{k}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(images[(k * frames + i) % len(images)]),
                                                   format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        clips.append(path)
    return clips


def shell_loop(clips: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    for clip in clips:
        subprocess.run([sys.executable, "-m", "stream", "-q", "process", str(clip), "-o", str(out / f"{clip.stem}.npz"),
                        "--threads", "1", "--no-progress"], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def in_process_loop(clips: list[Path], out: Path) -> dict:
    from stream.compose import compose, load_engines
    from stream.config import Config

    out.mkdir(parents=True, exist_ok=True)
    config = Config(threads=1)
    t0 = time.perf_counter()
    engines = load_engines(config)
    load_s = time.perf_counter() - t0
    per_video = []
    for clip in clips:
        t = time.perf_counter()
        compose(config.replace(source=str(clip), results=str(out / f"{clip.stem}.npz")), engines=engines).run()
        per_video.append(time.perf_counter() - t)
    return {"wall_s": time.perf_counter() - t0, "load_s": load_s, "per_video_s": per_video}


def archive_runs(clips: list[Path], out: Path, worker_counts: list[int], local_cpus: int) -> dict:
    import ray

    from stream.config import Config
    from stream.distributed.archive import find_videos, process_archive

    t0 = time.perf_counter()
    ray.init(num_cpus=local_cpus, include_dashboard=False, logging_level="WARNING")
    start_s = time.perf_counter() - t0
    runs = {}
    try:
        for workers in worker_counts:
            folder = out / f"ray{workers}"
            jobs = find_videos([str(c) for c in clips], folder)
            job_bytes = len(pickle.dumps(jobs[0]))
            summary = process_archive(jobs, folder, Config(threads=1), workers=workers, progress_bar=False)
            assert len(summary.done) == len(clips), summary.format()
            runs[workers] = {"wall_s": summary.wall_s, "load_s": summary.worker_load_s,
                             "per_video_s": [r["seconds"] for r in summary.done],
                             "setup_s": [r["setup_s"] for r in summary.done],
                             "job_bytes": job_bytes,
                             "record_bytes": max(len(pickle.dumps(r)) for r in summary.done)}
    finally:
        ray.shutdown()
    return {"ray_start_s": start_s, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12, help="frames per video")
    parser.add_argument("--size", default="180x320", help="WIDTHxHEIGHT of the clips (the sample is 720x1280)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--local-cpus", type=int, default=2)
    parser.add_argument("--out", default="out/bench_archive")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    clips = make_clips(out / "clips", args.videos, args.frames, width, height)
    shell_s = shell_loop(clips, out / "shell")
    inproc = in_process_loop(clips, out / "inprocess")
    archive = archive_runs(clips, out, args.workers, args.local_cpus)
    n = len(clips)
    rows = [("shell loop (`meshstream process` per video)", shell_s),
            ("in-process loop (models loaded once)", inproc["wall_s"])]
    rows += [(f"`process --ray`, {w} worker{'s' if w > 1 else ''}", r["wall_s"]) for w, r in archive["runs"].items()]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"{n} videos x {args.frames} frames ({width}x{height}); {os.cpu_count()} cores ({cpu}); "
          f"local Ray start {archive['ray_start_s']:.1f} s (not in the runner's times)")
    print("| run | wall s | videos/min | vs shell loop | s per video |")
    print("|---|---|---|---|---|")
    for name, wall in rows:
        print(f"| {name} | {wall:.1f} | {60 * n / wall:.2f} | {shell_s / wall:.2f}x | {wall / n:.1f} |")
    for workers, run in archive["runs"].items():
        print(f"ray {workers}: model load per worker {', '.join(f'{s:.1f}' for s in run['load_s'])} s; per video "
              f"{', '.join(f'{s:.1f}' for s in run['per_video_s'])} s (chain set-up {max(run['setup_s']):.2f} s at most); "
              f"object store per video: job {run['job_bytes']} B out, record {run['record_bytes']} B back")
    print(f"in-process: model load {inproc['load_s']:.1f} s; per video {', '.join(f'{s:.1f}' for s in inproc['per_video_s'])} s")
    with open(out / "bench_archive.json", "w") as f:
        json.dump({"videos": n, "frames": args.frames, "size": [width, height], "cpu": cpu, "cores": os.cpu_count(),
                   "shell_loop_s": shell_s, "in_process": inproc, "archive": archive,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
