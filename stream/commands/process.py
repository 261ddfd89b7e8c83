"""Process a video offline (lossless): write a results file (.npz) and optionally an overlay video.

The .npz has one row per (frame, person); see stream/writers.py for the keys. Ctrl-C stops
reading, finishes the frames already read and leaves a valid file with what was done.
"""

from __future__ import annotations

NAME = "process"
HELP = "offline: video -> results .npz (+ overlay .mp4 with --render)"


def add_arguments(parser) -> None:
    from stream.commands._common import add_engine_arguments

    parser.add_argument("input", metavar="INPUT", help="video file, image, or folder of images")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="results file to write")
    parser.add_argument("--render", default=None, metavar="OUT.mp4", help="also write an overlay video")
    parser.add_argument("--vertices", action="store_true", help="store vertices (N, V, 3) in the results file")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--stats-json", default=None, metavar="PATH", help="write the run's statistics as JSON")
    add_engine_arguments(parser)


def run(args) -> int:
    import json
    import logging
    import sys

    from tqdm import tqdm

    from stream import __version__
    from stream.cli import UserError
    from stream.commands._common import engine_stages, open_input, source_intrinsics
    from stream.pipeline import OFFLINE, Pipeline, PipelineError
    from stream.stages import OverlayStage, ResultsStage
    from stream.writers import NpzWriter, OverlayVideoWriter, WriterError

    log = logging.getLogger("meshstream.process")
    from stream.commands._common import stop_on_sigterm

    stop_on_sigterm()
    source = open_input(args.input, realtime=False, max_side=args.max_side)
    stages, body_model, has_lifter = engine_stages(args)
    intrinsics = source_intrinsics(source, args.fov)
    meta = {
        "input": str(args.input), "fps": source.fps, "width": source.width, "height": source.height,
        "intrinsics": {"fx": intrinsics[0], "fy": intrinsics[1], "cx": intrinsics[2], "cy": intrinsics[3]},
        "body_model": getattr(body_model, "model_id", None), "meshstream_version": __version__,
        "stages": [s.name for s in stages],
    }
    try:
        results = NpzWriter(args.output, meta=meta, vertices=args.vertices)
        stages.append(ResultsStage(results))
        if args.render:
            faces = None if body_model is None else body_model.faces
            video = OverlayVideoWriter(args.render, source.fps, source.width, source.height,
                                       intrinsics=intrinsics, faces=faces)
            stages.append(OverlayStage(video))
    except WriterError as exc:
        raise UserError(str(exc)) from exc
    total = source.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    progress = tqdm(total=total, unit="frame", desc="process", disable=args.no_progress or None,
                    file=sys.stderr, dynamic_ncols=True)
    pipeline = Pipeline(source, stages, policy=OFFLINE, max_frames=args.max_frames,
                        on_result=lambda packet: progress.update(1))
    log.info("stages: %s", " -> ".join(s.name for s in stages))
    interrupted = False
    try:
        pipeline.run()
    except PipelineError as exc:
        raise UserError(f"{exc} (the results file holds the frames done before the failure)") from exc
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        summary = pipeline.stats.summary()
        summary["source"] = source.stats.as_dict()
        if args.stats_json:
            with open(args.stats_json, "w") as f:
                json.dump(summary, f, indent=1, default=float)
    print(pipeline.stats.format())
    print(f"source: {source.stats.summary()}")
    for line in source.stats.skipped[:10]:
        print(f"  skipped: {line}")
    print(f"wrote {args.output} ({results.frames} frames, {len(results._rows['frame_index'])} rows)"
          + (f" and {args.render} ({video.frames} frames)" if args.render else ""))
    if interrupted:
        print("interrupted: the results cover the frames processed so far", file=sys.stderr)
        return 130
    return 0
