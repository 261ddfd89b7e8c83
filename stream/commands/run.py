"""Run live: read a camera, a stream or a file, and publish every frame's people over ZeroMQ.

With no SOURCE it plays the bundled sample clip in real time. A file ends the run when it
ends; --realtime paces a file by its timestamps (newest-frame-wins, as a camera). Ctrl-C
stops cleanly. Subscribers: `meshstream listen tcp://127.0.0.1:5556` or stream.client.Subscriber.
"""

from __future__ import annotations

NAME = "run"
HELP = "live: publish per-frame body meshes from a camera, stream or file over ZeroMQ"


def add_arguments(parser) -> None:
    from stream.commands._common import add_engine_arguments

    parser.add_argument("source", nargs="?", default=None,
                        help="video file, image/folder, rtsp://, http://, tcp:// URL, or /dev/videoN "
                             "(default: the bundled sample clip, in real time)")
    parser.add_argument("--publish", default="tcp://127.0.0.1:5556", metavar="ADDR",
                        help="ZeroMQ address to bind (default tcp://127.0.0.1:5556; tcp://*:5556 for all interfaces)")
    parser.add_argument("--realtime", action="store_true", help="pace a file by its timestamps (live policy)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--no-vertices", action="store_true", help="do not send vertices (parameters and joints only)")
    parser.add_argument("--float16", action="store_true", help="send vertices as float16 (half the bytes)")
    parser.add_argument("--source-name", default=None, metavar="NAME",
                        help="publish frames on topic meshstream.frame.NAME (to tell several sources apart)")
    parser.add_argument("--curve-keys", default=None, metavar="DIR",
                        help="CURVE-encrypt and authenticate: DIR has server.key_secret and authorized_clients/*.key")
    parser.add_argument("--meta-interval", type=float, default=2.0, metavar="S", help="republish topology every S seconds")
    parser.add_argument("--linger", type=float, default=0.5, metavar="S",
                        help="at exit, wait at most S seconds to flush queued messages (default 0.5)")
    parser.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                        help="before reading the source, wait up to S seconds for a first subscriber")
    parser.add_argument("--open-timeout", type=float, default=5.0, metavar="S", help="stream URLs: connection timeout")
    parser.add_argument("--read-timeout", type=float, default=5.0, metavar="S",
                        help="stream URLs: no data for S seconds counts as a dropped stream")
    parser.add_argument("--max-reconnects", type=int, default=10, metavar="N",
                        help="stream URLs: give up after N failed reconnection attempts in a row (-1: never)")
    parser.add_argument("--stats-json", default=None, metavar="PATH", help="write the run's statistics as JSON")
    parser.add_argument("--report-every", type=float, default=10.0, metavar="S",
                        help="log a progress line every S seconds (0: never)")
    add_engine_arguments(parser)


def run(args) -> int:
    import json
    import logging

    from stream.cli import UserError
    from stream.commands._common import SAMPLE_CLIP, engine_stages, open_input, source_intrinsics
    from stream.pipeline import Pipeline, PipelineError
    from stream.publisher import PublishError, Publisher
    from stream.stages import PublishOptions, PublishStage, topology_fields

    log = logging.getLogger("meshstream.run")
    if args.source_name is not None and not all(c.isalnum() or c in "-_" for c in args.source_name):
        raise UserError(f"--source-name {args.source_name!r}: use letters, digits, '-' and '_' only")
    from stream.commands._common import stop_on_sigterm

    stop_on_sigterm()
    spec = args.source
    realtime = args.realtime
    if spec is None:
        spec, realtime = str(SAMPLE_CLIP), True
        log.info("no source given: playing the bundled sample clip %s in real time", SAMPLE_CLIP.name)
    # 1. Publisher first: a wrong address or a port in use fails before anything heavy loads.
    try:
        publisher = Publisher(args.publish, meta_interval_s=args.meta_interval, linger_ms=int(args.linger * 1000),
                              curve_keys_dir=args.curve_keys).start()
    except PublishError as exc:
        raise UserError(str(exc)) from exc
    try:
        source = open_input(spec, realtime=realtime, max_side=args.max_side, open_timeout_s=args.open_timeout,
                            read_timeout_s=args.read_timeout,
                            max_reconnects=None if args.max_reconnects < 0 else args.max_reconnects)
        stages, body_model, has_lifter = engine_stages(args)
        intrinsics = source_intrinsics(source, args.fov)
        fields, arrays = topology_fields(body_model, intrinsics, source.width, source.height,
                                         source=source.describe(), lifter=has_lifter,
                                         stages=[s.name for s in stages] + ["publish"])
        publisher.set_meta(fields, arrays)
        options = PublishOptions(vertices=not args.no_vertices, vertices_dtype="float16" if args.float16 else "float32",
                                 keypoints=any(s.name == "pose" for s in stages), source_name=args.source_name)
        stages.append(PublishStage(publisher, options))
        log.info("publishing on %s (stages: %s)", publisher.bound_address, " -> ".join(s.name for s in stages))
        if args.wait_subscribers > 0 and not publisher.wait_for_subscriber(args.wait_subscribers):
            log.warning("no subscriber after %.1f s; starting anyway", args.wait_subscribers)
        pipeline = Pipeline(source, stages, max_frames=args.max_frames, report_every_s=args.report_every or None)
        pipeline.context.info.update(intrinsics=intrinsics, width=source.width, height=source.height, fps=source.fps)
        try:
            stats = pipeline.run()
        except PipelineError as exc:
            raise UserError(str(exc)) from exc
        finally:
            summary = pipeline.stats.summary()
            summary["source"] = source.stats.as_dict()
            summary["publisher"] = publisher.stats()
            summary["policy"] = pipeline.policy
            if args.stats_json:
                with open(args.stats_json, "w") as f:
                    json.dump(summary, f, indent=1, default=float)
        print(stats.format())
        print(f"source: {source.stats.summary()}; published {publisher.sent} messages, dropped {publisher.dropped}")
        for line in source.stats.skipped[:10]:
            print(f"  skipped: {line}")
        return 0
    finally:
        publisher.close()
