"""Whole video archives on a Ray cluster: one task per video on a pool of worker actors.

    jobs = find_videos(["archive/", "extra/*.mp4"], "out/")          # what to do, where it goes
    summary = process_archive(jobs, "out/", Config(max_people=2), address=None, workers=2)

- Each worker is a Ray actor that loads the body model and the lifter once (``Engines``) and then
  runs one chain per video, built by :func:`stream.compose.compose` from the base config with
  ``source`` and ``results`` (and ``render``) replaced.
- Outputs are written under a hidden staging name next to their final place
  (``out/.clip.npz.<token>.partial.npz``) and renamed into place only when the whole video is
  done; then the driver appends the video's line to ``out/manifest.jsonl``. A file without its
  manifest line (a worker killed after the rename, the driver killed before the line) counts
  as not done, so a killed worker never leaves a file that looks complete.
- A worker that dies (its process killed, its node lost) is replaced; its video goes back to
  the queue and runs again on another worker, at most ``retries`` more times. A video whose
  run fails is retried the same way, except when its input cannot be opened at all (that
  error is reported at once). Videos still failing are reported with their last error.
- Rerunning skips every video whose manifest line says done with the same input (size,
  modification time) and the same options, and whose outputs are still there.
- One progress bar counts frames over all workers (each worker reports to a small progress
  actor twice a second).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stream.config import Config
from stream.distributed import DistributedError, cluster_resources, connect

log = logging.getLogger("meshstream.archive")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv")
MANIFEST_NAME = "manifest.jsonl"
STAGING_MARK = ".partial"
# Options that say where a run reads and writes, not how it computes: left out of the fingerprint.
_PLACE_OPTIONS = ("source", "results", "render", "bvh", "glb", "vmc", "stats_json", "report_every_s", "publish",
                  "threads")


@dataclass
class VideoJob:
    """One video of an archive.

    key: its name inside the output folder without extension (``sub/clip``), unique in a run.
    outputs: final output paths by kind ("results": .npz, "render": .mp4).
    """

    key: str
    source: str
    outputs: dict[str, str]
    frames: int | None = None
    size: int = 0
    mtime_ns: int = 0

    def identity(self) -> dict:
        return {"size": self.size, "mtime_ns": self.mtime_ns}


@dataclass(frozen=True)
class Chunk:
    """A piece of a long video, run as its own task.

    keep: the frames [start, stop) this chunk contributes to the results.
    run: the frames [start, stop) its chain reads: ``overlap`` frames before ``keep`` to warm up
        the stages that carry state over time (landmark tracking, tracker, the fit's previous
        pose), and the smoothing lag after it, so that the two-sided smoother sees across the
        border as in one run. The warm-up rows also tie its track ids to the previous chunk's.
    """

    index: int
    count: int
    keep: tuple[int, int]
    run: tuple[int, int]


def plan_chunks(frames: int | None, chunk_frames: int | None, overlap: int, lag: int) -> list[Chunk | None]:
    """The chunks of a video of ``frames`` frames: ``[None]`` (one task for the whole video) when
    chunking is off, the length is unknown, or the video fits in one chunk."""
    if not chunk_frames or not frames or frames <= chunk_frames:
        return [None]
    starts = list(range(0, frames, chunk_frames))
    return [Chunk(i, len(starts), (a, min(a + chunk_frames, frames)),
                  (max(0, a - overlap), min(a + chunk_frames + lag, frames))) for i, a in enumerate(starts)]


@dataclass
class ArchiveSummary:
    """What a run did: lists of manifest records (dicts) and the totals."""

    done: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    workers: int = 0
    worker_load_s: list[float] = field(default_factory=list)
    lost_workers: int = 0

    @property
    def videos_per_minute(self) -> float:
        return 60.0 * len(self.done) / self.wall_s if self.wall_s > 0 else float("nan")

    def format(self) -> str:
        frames = sum(r.get("frames", 0) for r in self.done)
        lines = [f"done {len(self.done)}, failed {len(self.failed)}, skipped {len(self.skipped)} (already done) "
                 f"in {self.wall_s:.1f} s with {self.workers} workers: {self.videos_per_minute:.2f} videos/min, "
                 f"{frames} frames; workers lost and replaced: {self.lost_workers}"]
        if self.worker_load_s:
            lines.append(f"model load per worker: {min(self.worker_load_s):.1f}-{max(self.worker_load_s):.1f} s")
        for record in self.done:
            if record.get("truncated"):
                lines.append(f"  ended early (file cut short; the results hold what was read): {record['source']}")
        for record in self.failed:
            lines.append(f"  failed: {record['source']} after {record['attempts']} attempts: {record['error']}")
        return "\n".join(lines)


# 1. What to do --------------------------------------------------------------------------------------

def find_videos(inputs: list[str], output_dir: str | os.PathLike, render: bool = False) -> list[VideoJob]:
    """The videos named by ``inputs`` (files, folders searched recursively for video files, glob
    patterns) and where each one's outputs go in ``output_dir``: ``clip.npz`` (and ``clip.mp4``
    with ``render``), a folder's subfolders mirrored. DistributedError when an input matches
    nothing or two inputs would write the same output."""
    out = Path(output_dir)
    found: list[tuple[Path, str]] = []  # (video, key)
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not videos:
                raise DistributedError(f"{spec}: no video files in this folder (looked for {', '.join(VIDEO_EXTENSIONS)})")
            found += [(p, str(p.relative_to(path).with_suffix(""))) for p in videos]
        elif path.is_file():
            found.append((path, path.stem))
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
            if not matches:
                raise DistributedError(f"{spec}: the pattern matches no file")
            found += [(p, p.stem) for p in matches]
        else:
            raise DistributedError(f"{spec}: no such file or folder (give video files, folders or glob patterns)")
    jobs: dict[str, VideoJob] = {}
    for video, key in found:
        resolved = str(video.resolve())
        if key in jobs:
            if jobs[key].source == resolved:
                continue  # named twice
            raise DistributedError(f"{jobs[key].source} and {resolved} would both write {out / key}.npz: "
                                   "rename one, or process them into different folders")
        outputs = {"results": str(out / f"{key}.npz")}
        if render:
            outputs["render"] = str(out / f"{key}.mp4")
        if any(os.path.realpath(p) == resolved for p in outputs.values()):
            raise DistributedError(f"{resolved} is an input and would be an output: choose another output folder")
        stat = video.stat()
        jobs[key] = VideoJob(key, resolved, outputs, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return list(jobs.values())


def count_frames(path: str) -> int | None:
    """The frame count the video's header gives (None when it gives none or cannot be read)."""
    try:
        import av

        with av.open(path) as container:
            frames = container.streams.video[0].frames
            return int(frames) or None
    except Exception:  # noqa: BLE001 - a bad file is the worker's to report
        return None


def options_fingerprint(config: Config, chunking: tuple | None = None) -> str:
    """A short hash of the options that change results (not where they are read or written)."""
    values = {k: v for k, v in config.as_dict().items() if k not in _PLACE_OPTIONS}
    if chunking:
        values["chunking"] = list(chunking)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


# 2. The manifest -----------------------------------------------------------------------------------

class Manifest:
    """``manifest.jsonl`` in the output folder: one JSON line per finished or failed video,
    appended by the driver only (one writer), flushed and synced line by line. The last line
    of a key wins."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / MANIFEST_NAME

    def records(self) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        if not self.path.exists():
            return latest
        with open(self.path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict) and "key" in record:
                    latest[record["key"]] = record
        return latest

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def is_done(self, job: VideoJob, fingerprint: str, records: dict[str, dict]) -> bool:
        record = records.get(job.key)
        return (record is not None and record.get("status") == "done" and record.get("source") == job.source
                and record.get("input") == job.identity() and record.get("options") == fingerprint
                and all(Path(p).exists() for p in job.outputs.values()))


def staged_path(final: str, token: str) -> str:
    """Where an output is written until it is complete: hidden, next to its final place, with the
    same extension (``out/.clip.npz.<token>.partial.npz``)."""
    p = Path(final)
    return str(p.with_name(f".{p.name}.{token}{STAGING_MARK}{p.suffix}"))


def remove_staged(job: VideoJob) -> int:
    """Delete what killed attempts left of this job's outputs; returns how many files."""
    removed = 0
    for final in job.outputs.values():
        p = Path(final)
        for leftover in p.parent.glob(f".{glob.escape(p.name)}.*{STAGING_MARK}*"):
            try:
                leftover.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


# 3. The workers -------------------------------------------------------------------------------------

class VideoWorker:
    """A Ray actor: the models loaded once, then one chain per video (:meth:`process`)."""

    def __init__(self, config: dict, progress=None):
        logging.basicConfig(level=logging.WARNING)
        from stream.compose import load_engines

        t0 = time.perf_counter()
        self.config = Config(**config)
        self.engines = load_engines(self.config)
        self.load_s = time.perf_counter() - t0
        self.progress = progress

    def describe(self) -> dict:
        import socket

        return {"pid": os.getpid(), "host": socket.gethostname(), "load_s": self.load_s}

    def process(self, job: VideoJob, attempt: int, chunk: Chunk | None = None) -> dict:
        """Run one video (or one chunk of it) to staged outputs; a whole video's are renamed into
        place, a chunk's results stay staged for the driver to join. Returns the record (status
        "done", or "failed" with the error and whether another attempt could help)."""
        from stream.compose import ComposeError, compose
        from stream.config import ConfigError
        from stream.pipeline import OFFLINE

        token = uuid.uuid4().hex[:12] + ("" if chunk is None else f".chunk{chunk.index:04d}")
        staged = {kind: staged_path(path, token) for kind, path in job.outputs.items()}
        progress_key = job.key if chunk is None else f"{job.key}#{chunk.index}"
        t0 = time.perf_counter()
        frames = 0

        def count(packet) -> None:
            nonlocal frames
            if chunk is None or chunk.keep[0] <= packet.frame.index < chunk.keep[1]:
                frames += 1

        record = {"key": job.key, "source": job.source, "attempt": attempt, **self.describe()}
        if chunk is not None:
            record["chunk"] = dataclasses.asdict(chunk)
        keep_staged = False
        try:
            try:
                config = self.config.replace(source=job.source, results=staged["results"], render=staged.get("render"))
                source = None
                if chunk is not None:
                    source = FrameRangeSource(job.source, *chunk.run, max_side=config.max_side)
                chain = compose(config, engines=self.engines, source=source, policy=OFFLINE, on_result=count)
            except (ComposeError, ConfigError) as exc:
                return {**record, "status": "failed", "error": str(exc), "retryable": False}
            except Exception as exc:  # noqa: BLE001 - e.g. the source, opened here for a chunk
                return {**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "retryable": False}
            t_run = time.perf_counter()
            reporting = self._report_progress(chain, progress_key, attempt, chunk)
            try:
                chain.run()
            finally:
                reporting.set()
            if chunk is None:
                for kind, path in staged.items():
                    os.replace(path, job.outputs[kind])
            else:
                keep_staged = True
        except Exception as exc:  # noqa: BLE001 - reported with the video, retried by the driver
            return {**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "retryable": True}
        finally:
            for path in staged.values():
                for leftover in ((path + ".partial.npz",) if keep_staged else (path, path + ".partial.npz")):
                    if os.path.exists(leftover):
                        os.unlink(leftover)
        if self.progress is not None:
            self.progress.report.remote(progress_key, attempt, frames)
        source_stats = chain.source.stats.as_dict()
        record.update(status="done", frames=frames, rows=len(chain.writers["results"]._rows["frame_index"]),
                      seconds=time.perf_counter() - t0, setup_s=t_run - t0, truncated=bool(source_stats.get("truncated")))
        if chunk is None:
            record["outputs"] = job.outputs
        else:
            record["part"] = staged["results"]
        return record


    def _report_progress(self, chain, key: str, attempt: int, chunk: Chunk | None, every_s: float = 0.5):
        """Report twice a second how many of the task's frames the pose stage has done (the
        frames finished lag behind it by the smoothing lag); returns the Event that stops it."""
        import threading

        stop = threading.Event()
        if self.progress is None:
            return stop

        def report():
            while not stop.wait(every_s):
                stage = chain.pipeline.stats.stages.get("pose")
                done = stage.frames if stage is not None else chain.pipeline.stats.frames_out
                if chunk is not None:
                    done = max(0, min(done - (chunk.keep[0] - chunk.run[0]), chunk.keep[1] - chunk.keep[0]))
                self.progress.report.remote(key, attempt, done)

        threading.Thread(target=report, name="progress", daemon=True).start()
        return stop


def FrameRangeSource(path: str, start: int, stop: int, max_side: int | None = None):
    """A video file read from frame ``start`` to ``stop`` (exclusive), frames keeping their
    indices and timestamps in the whole video (the frames before ``start`` are decoded and dropped)."""
    from stream.sources import VideoFileSource

    class _FrameRange(VideoFileSource):
        def _frames(self):
            for frame in super()._frames():
                if frame.index >= stop:
                    return
                if frame.index >= start:
                    yield frame

    source = _FrameRange(path, max_side=max_side)
    source.frame_count = stop - start
    return source


def join_chunks(parts: list[tuple[Chunk, str]], final: str, iou_threshold: float = 0.3) -> dict:
    """Join the chunks' results files into one results file at ``final`` (written atomically).

    Each chunk gives the rows of its ``keep`` frames. Its track ids are tied to the previous
    chunk's through the warm-up frames both saw: each of its tracks takes the id of the joined
    track whose boxes overlap it most there (mean IoU above ``iou_threshold``, one to one);
    tracks not seen in the warm-up get new ids. Returns the joined file's counts.
    """
    import numpy as np

    parts = sorted(parts, key=lambda item: item[0].index)
    joined: dict[str, list] = {}
    meta = None
    frames = 0
    previous = None  # the previous chunk's kept rows (frame_index, track_id, bbox) after renaming
    next_id = 0
    for chunk, path in parts:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "meta"}
            part_meta = json.loads(str(data["meta"]))
        meta = meta or part_meta
        ids = arrays["track_id"]
        rename: dict[int, int] = {}
        if previous is not None:
            warm = (arrays["frame_index"] >= chunk.run[0]) & (arrays["frame_index"] < chunk.keep[0])
            scores = []
            for track in np.unique(ids[warm]):
                mine = warm & (ids == track)
                for other in np.unique(previous["track_id"]):
                    theirs = previous["track_id"] == other
                    common = np.intersect1d(arrays["frame_index"][mine], previous["frame_index"][theirs])
                    if len(common) == 0:
                        continue
                    ious = [_iou(arrays["bbox"][mine & (arrays["frame_index"] == f)][0],
                                 previous["bbox"][theirs & (previous["frame_index"] == f)][0]) for f in common]
                    scores.append((float(np.mean(ious)), int(track), int(other)))
            for score, track, other in sorted(scores, reverse=True):
                if score >= iou_threshold and track not in rename and other not in rename.values():
                    rename[track] = other
        for track in map(int, np.unique(ids)):
            if track not in rename:
                rename[track] = track if previous is None else next_id
                next_id = max(next_id, rename[track] + 1)
        kept = (arrays["frame_index"] >= chunk.keep[0]) & (arrays["frame_index"] < chunk.keep[1])
        arrays["track_id"] = np.array([rename[int(t)] for t in ids], np.int64).reshape(ids.shape)
        for name, values in arrays.items():
            joined.setdefault(name, []).append(values[kept])
        previous = {k: arrays[k][kept] for k in ("frame_index", "track_id", "bbox")}
        frames += chunk.keep[1] - chunk.keep[0]
    out = {name: np.concatenate(values) for name, values in joined.items()}
    meta.update(frames=frames, rows=int(len(out["frame_index"])), chunks=len(parts))
    out["meta"] = np.array(json.dumps(meta))
    staged = staged_path(final, uuid.uuid4().hex[:12] + ".join")
    np.savez(staged, **out)
    os.replace(staged, final)
    return {"frames": frames, "rows": int(len(out["frame_index"]))}


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class Progress:
    """A Ray actor counting frames per video over the cluster (the latest attempt of each wins)."""

    def __init__(self):
        self.frames: dict[str, tuple[int, int]] = {}

    def report(self, key: str, attempt: int, frames: int) -> None:
        if key not in self.frames or attempt >= self.frames[key][0]:
            self.frames[key] = (attempt, frames)

    def snapshot(self) -> dict[str, int]:
        """Frames done per video (per ``key#chunk`` for chunks) in its latest attempt."""
        return {key: frames for key, (_, frames) in self.frames.items()}


# 4. The driver --------------------------------------------------------------------------------------

def process_archive(jobs: list[VideoJob], output_dir: str | os.PathLike, config: Config, address: str | None = None,
                    workers: int | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                    retries: int = 2, progress_bar: bool = True, local_cpus: int | None = None,
                    chunk_frames: int | None = None, chunk_overlap: int = 30, on_start=None,
                    on_progress=None) -> ArchiveSummary:
    """Process ``jobs`` (from :func:`find_videos`) on the Ray cluster at ``address`` (None: a local
    Ray on this machine with ``local_cpus`` CPUs).

    config: the options of every video (its source and outputs are replaced per video).
    workers: worker actors (default: as many as the cluster's CPUs (GPUs) allow, at most one per
        task); each takes ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs.
    retries: further attempts for a task whose worker died or whose run failed.
    chunk_frames: split videos longer than this into chunks of this many frames, each its own
        task, read with ``chunk_overlap`` warm-up frames before and the smoothing lag after
        (:class:`Chunk`); None: one task per video. Results only (no --render).
    on_start(worker_actor, job, attempt): called by the driver as each attempt is sent;
    on_progress(frames by video): called about twice a second (both for tests and tools).
    """
    if chunk_frames is not None and any("render" in job.outputs for job in jobs):
        raise DistributedError("chunked videos give results files only: drop --render or --chunk-frames")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(output)
    chunking = (chunk_frames, chunk_overlap) if chunk_frames else None
    fingerprint = options_fingerprint(config, chunking)
    records = manifest.records()
    summary = ArchiveSummary()
    todo = []
    for job in jobs:
        if manifest.is_done(job, fingerprint, records):
            summary.skipped.append(job.key)
        else:
            todo.append(job)
    for job in todo:
        for path in job.outputs.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # a folder's subfolders, mirrored
        if remove_staged(job):
            log.info("%s: removed what an interrupted earlier run left", job.key)
    if not todo:
        return summary
    lag = config.smoothing_lag if config.smoothing in ("auto", "rts") else 0
    tasks: list[tuple[VideoJob, Chunk | None]] = []
    for job in todo:
        job.frames = count_frames(job.source)
        if job.frames and config.max_frames:
            job.frames = min(job.frames, config.max_frames)
        tasks += [(job, chunk) for chunk in plan_chunks(job.frames, chunk_frames, chunk_overlap, lag)]

    ray = connect(address, num_cpus=local_cpus)
    resources = cluster_resources(ray)
    if workers is None:
        by_cpu = int(resources["CPU"] // cpus_per_worker) if cpus_per_worker > 0 else len(tasks)
        by_gpu = int(resources["GPU"] // gpus_per_worker) if gpus_per_worker > 0 else len(tasks)
        workers = max(1, min(by_cpu, by_gpu, len(tasks)))
    if cpus_per_worker > resources["CPU"] or gpus_per_worker > resources["GPU"]:
        raise DistributedError(f"each worker asks for {cpus_per_worker:g} CPUs and {gpus_per_worker:g} GPUs, but the "
                               f"cluster has {resources['CPU']:g} CPUs and {resources['GPU']:g} GPUs in all")
    if config.threads is None:
        config = config.replace(threads=max(1, int(cpus_per_worker)))
    base = {k: v for k, v in config.as_dict().items() if k not in ("source", "results", "render")}
    progress = ray.remote(num_cpus=0)(Progress).remote()
    worker_class = ray.remote(VideoWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
                                                   max_restarts=0, max_task_retries=0)

    def new_worker():
        return worker_class.remote(base, progress)

    from tqdm import tqdm

    total = sum(job.frames or 0 for job in todo) if all(job.frames for job in todo) else None
    bar = tqdm(total=total, unit="frame", desc=f"{len(todo)} videos", disable=not progress_bar or None,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    # (job, chunk, attempt, workers tried)
    queue: list[tuple[VideoJob, Chunk | None, int, set]] = [(job, chunk, 1, set()) for job, chunk in tasks]
    parts: dict[str, list] = {job.key: [] for job in todo}  # finished chunk records per video
    failed_keys: set[str] = set()
    idle = [new_worker() for _ in range(workers)]
    summary.workers = workers
    described: set = set()
    running: dict = {}  # ObjectRef -> (worker, job, chunk, attempt, tried)

    def finish(job: VideoJob, record: dict) -> None:
        record.update(input=job.identity(), options=fingerprint)
        manifest.append(record)
        (summary.done if record["status"] == "done" else summary.failed).append(record)

    try:
        while queue or running:
            while queue and idle:
                job, chunk, attempt, tried = queue.pop(0)
                if job.key in failed_keys:
                    continue  # another chunk of this video failed for good
                worker = next((w for w in idle if w not in tried), idle[0])  # another worker when there is one
                idle.remove(worker)
                if on_start is not None:
                    on_start(worker, job, attempt)
                running[worker.process.remote(job, attempt, chunk)] = (worker, job, chunk, attempt, tried)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            done_frames = ray.get(progress.snapshot.remote())
            bar.n = sum(done_frames.values())
            bar.refresh()
            if on_progress is not None:
                on_progress(done_frames)
            for ref in ready:
                worker, job, chunk, attempt, tried = running.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the worker's process or node is gone
                    summary.lost_workers += 1
                    log.warning("%s: worker lost (%s); a new worker takes its place", job.key, type(exc).__name__)
                    record = {"key": job.key, "source": job.source, "attempt": attempt, "status": "failed",
                              "error": f"worker lost: {_actor_error(exc)}", "retryable": True}
                    worker = new_worker()
                else:
                    if worker not in described:
                        described.add(worker)
                        summary.worker_load_s.append(record.get("load_s", float("nan")))
                idle.append(worker)
                if job.key in failed_keys:
                    continue
                if record["status"] == "done" and chunk is None:
                    finish(job, record)
                elif record["status"] == "done":
                    parts[job.key].append((chunk, record))
                    if len(parts[job.key]) == chunk.count:
                        finish(job, _joined_record(job, parts.pop(job.key)))
                elif record.pop("retryable", False) and attempt <= retries:
                    log.warning("%s: attempt %d failed (%s); trying again", job.key, attempt, record["error"])
                    if chunk is None:
                        remove_staged(job)
                    queue.append((job, chunk, attempt + 1, tried | {worker}))
                else:
                    record["attempts"] = attempt
                    failed_keys.add(job.key)
                    remove_staged(job)
                    finish(job, record)
    finally:
        bar.close()
        summary.wall_s = time.perf_counter() - t0
        for worker in idle + [w for w, *_ in running.values()]:
            ray.kill(worker)
        ray.kill(progress)
        for job in todo:
            if job.key in failed_keys or job.key in parts:  # failed, or interrupted before its chunks were joined
                remove_staged(job)
    return summary


def _actor_error(exc: Exception) -> str:
    """One line for a dead actor: the error its constructor raised (the last line of the
    traceback Ray gives), else Ray's first line (killed, node lost)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if "creation task" in lines[0] else lines[0]


def _joined_record(job: VideoJob, parts: list[tuple[Chunk, dict]]) -> dict:
    """Join a video's chunks into its results file; its record sums theirs."""
    try:
        counts = join_chunks([(chunk, record["part"]) for chunk, record in parts], job.outputs["results"])
    except (OSError, ValueError, KeyError) as exc:
        return {"key": job.key, "source": job.source, "status": "failed", "attempts": 1,
                "error": f"joining its chunks failed: {exc}"}
    finally:
        remove_staged(job)
    records = [record for _, record in sorted(parts, key=lambda item: item[0].index)]
    return {"key": job.key, "source": job.source, "status": "done", "attempt": max(r["attempt"] for r in records),
            "chunks": len(records), "frames": counts["frames"], "rows": counts["rows"],
            "seconds": sum(r["seconds"] for r in records), "setup_s": max(r["setup_s"] for r in records),
            "load_s": records[0].get("load_s"), "pid": [r["pid"] for r in records],
            "outputs": job.outputs, "truncated": any(r.get("truncated") for r in records)}


__all__ = ["ArchiveSummary", "Chunk", "Manifest", "VideoJob", "find_videos", "join_chunks", "plan_chunks",
           "process_archive", "staged_path"]
