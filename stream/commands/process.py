"""Process a video offline (lossless): write a results file (.npz) and optionally an overlay video.

The .npz has one row per (frame, person); see stream/writers.py for the keys. Ctrl-C stops
reading, finishes the frames already read and leaves a valid file with what was done.

examples:
  meshstream process video.mp4 -o out.npz
  meshstream process video.mp4 -o out.npz --render out.mp4 --max-people 2
  meshstream process frames/ -o out.npz --fov 75 --config offline.toml
  meshstream process --ray archive/ more/*.mp4 -o results/     on a Ray cluster (docs/SCALING.md)
"""

from __future__ import annotations

NAME = "process"
HELP = "offline: video -> results .npz (+ overlay .mp4 with --render)"
OPTIONS = ["results", "render", "render_keypoints", "render_side_view", "results_vertices", "bvh", "glb", "vmc",
           "vmc_people", "max_frames", "stats_json"]


def add_arguments(parser) -> None:
    from stream.commands._common import add_engine_arguments
    from stream.config import add_arguments as add_options

    parser.add_argument("source", metavar="INPUT", nargs="?", default=None,
                        help="video file, image, or folder of images")
    parser.add_argument("more_inputs", metavar="INPUT", nargs="*", default=[],
                        help="with --ray: more inputs (video files, folders of videos, glob patterns)")
    add_options(parser, OPTIONS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    from stream.distributed.command import add_archive_arguments

    add_archive_arguments(parser)


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from stream.cli import UserError
    from stream.commands._common import build_chain, config_from_args, stop_on_sigterm
    from stream.pipeline import OFFLINE, PipelineError

    if args.ray is not None:
        from stream.distributed.command import process_on_ray

        return process_on_ray(args)
    if args.source is None:
        raise UserError("give an input: meshstream process VIDEO -o OUT.npz")
    if args.more_inputs:
        raise UserError(f"{1 + len(args.more_inputs)} inputs given: process takes one, or any number with --ray "
                        "(a local Ray on this machine when no address follows it; docs/SCALING.md)")
    config = config_from_args(args, report_every_s=0.0)
    if config.results is None:
        raise UserError("give a results file: -o OUT.npz")
    stop_on_sigterm()
    progress = tqdm(unit="frame", desc="process", disable=args.no_progress or None, file=sys.stderr,
                    dynamic_ncols=True)
    chain = build_chain(config, policy=OFFLINE, on_result=lambda packet: progress.update(1))
    total = chain.source.frame_count
    if config.max_frames is not None:
        total = min(total, config.max_frames) if total else config.max_frames
    progress.total = total or None
    interrupted = False
    try:
        chain.run()
    except PipelineError as exc:
        raise UserError(f"{exc} (the results file holds the frames done before the failure)") from exc
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        chain.write_stats()
    if not getattr(args, "quiet", False):
        print(chain.pipeline.stats.format())
    print(f"source: {chain.source.stats.summary()}")
    for line in chain.source.stats.skipped[:10]:
        print(f"  skipped: {line}")
    results = chain.writers["results"]
    overlay = chain.writers.get("overlay")
    print(f"wrote {config.results} ({results.frames} frames, {len(results._rows['frame_index'])} rows)"
          + (f" and {config.render} ({overlay.frames} frames)" if overlay is not None else ""))
    for name in ("bvh", "glb"):
        if name in chain.writers:
            print(f"wrote {', '.join(str(p) for p in chain.writers[name].written)}")
    if interrupted:
        print("interrupted: the results cover the frames processed so far", file=sys.stderr)
        return 130
    return 0
