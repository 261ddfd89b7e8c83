"""``meshstream process --ray``: the command-line side of :mod:`stream.distributed.archive`."""

from __future__ import annotations


def add_archive_arguments(parser) -> None:
    """The cluster options of ``process`` (only used with --ray)."""
    group = parser.add_argument_group("cluster (--ray; docs/SCALING.md)")
    group.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="run the inputs on a Ray cluster, one task per video: ADDRESS is 'auto' (the cluster "
                            "`ray start` made here), ray://HOST:10001, or nothing for a local Ray on this machine; "
                            "-o (and --render) then name output folders")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker actors, each loading the models once (default: as many as the cluster's "
                            "CPUs allow with --cpus-per-worker, at most one per video)")
    group.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="N",
                       help="CPUs each worker takes (and its engine threads); default 1")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="N",
                       help="GPUs each worker takes (with --device cuda; 0.5 puts two workers on one GPU); default 0")
    group.add_argument("--retries", type=int, default=2, metavar="N",
                       help="further attempts for a video whose worker died or whose run failed; default 2")
    group.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                       help="split videos longer than N frames into chunks of N frames, each its own task (long "
                            "videos on many workers); default: one task per video")
    group.add_argument("--chunk-overlap", type=int, default=30, metavar="N",
                       help="with --chunk-frames: frames each chunk reads before its own to warm up tracking and "
                            "the fit, and to tie its track ids to the previous chunk's; default 30")
    group.add_argument("--local-cpus", type=int, default=None, metavar="N",
                       help="without an address: the CPUs the local Ray may use (default: all)")


def is_ray_address(text: str) -> bool:
    """Whether ``--ray``'s value is a cluster address ("local", "auto", ray://HOST:PORT, HOST:PORT)."""
    import re

    return text in ("local", "auto") or "://" in text or re.fullmatch(r"[A-Za-z0-9_.-]+:\d+", text) is not None


def process_on_ray(args) -> int:
    """Run ``process`` over many inputs on Ray; prints the summary; exit status 1 when a video failed."""
    import logging
    from pathlib import Path

    from stream.cli import UserError
    from stream.commands._common import config_from_args, stop_on_sigterm
    from stream.distributed import DistributedError, require_ray
    from stream.distributed.archive import find_videos, process_archive

    inputs = ([args.source] if args.source is not None else []) + list(args.more_inputs)
    if not is_ray_address(args.ray):  # `--ray clip.mp4 ...`: the first input, not an address
        inputs.insert(0, args.ray)
        args.ray = "local"
    if not inputs:
        raise UserError("give the inputs: video files, folders of videos or glob patterns")
    if args.results is None:
        raise UserError("give an output folder: -o DIR (with --ray, -o names a folder for one results file per video)")
    for flag, value in (("--bvh", args.bvh), ("--glb", args.glb), ("--vmc", args.vmc), ("--stats-json", args.stats_json)):
        if value is not None:
            raise UserError(f"{flag} is not available with --ray (results and --render only)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.chunk_frames is not None and args.chunk_frames < 1:
        raise UserError(f"--chunk-frames must be at least 1, got {args.chunk_frames}")
    if args.chunk_overlap < 1:
        raise UserError(f"--chunk-overlap must be at least 1 (the warm-up ties track ids), got {args.chunk_overlap}")
    if args.retries < 0:
        raise UserError(f"--retries must be at least 0, got {args.retries}")
    output_dir, render_dir = args.results, args.render
    if Path(output_dir).suffix.lower() == ".npz":
        raise UserError(f"-o {output_dir}: with --ray, -o names a folder (one results file per video inside it)")
    if render_dir is not None and render_dir != output_dir:
        raise UserError("with --ray the overlay videos go next to the results: give --render the same folder as -o")
    args.results = args.render = args.source = None
    config = config_from_args(args, report_every_s=0.0)
    stop_on_sigterm()
    try:
        require_ray()
        jobs = find_videos(inputs, output_dir, render=render_dir is not None)
        print(f"{len(jobs)} videos -> {output_dir}", flush=True)
        summary = process_archive(jobs, output_dir, config, address=None if args.ray == "local" else args.ray,
                                  workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                                  gpus_per_worker=args.gpus_per_worker, retries=args.retries,
                                  progress_bar=not args.no_progress, local_cpus=args.local_cpus,
                                  chunk_frames=args.chunk_frames, chunk_overlap=args.chunk_overlap)
    except DistributedError as exc:
        raise UserError(str(exc)) from exc
    except KeyboardInterrupt:
        logging.getLogger("meshstream.archive").warning(
            "interrupted: finished videos are in the manifest; rerun the same command to do the rest")
        return 130
    print(summary.format())
    print(f"manifest: {Path(output_dir) / 'manifest.jsonl'}")
    return 1 if summary.failed else 0
