"""Run live: read a camera, a stream or a file, and publish every frame's people over ZeroMQ.

With no SOURCE it plays the bundled sample clip in real time. A file ends the run when it
ends; --realtime paces a file by its timestamps (newest-frame-wins, as a camera). Ctrl-C
stops cleanly. Subscribers: `meshstream listen tcp://127.0.0.1:5556` or stream.client.Subscriber.

examples:
  meshstream run                                   the sample clip, on tcp://127.0.0.1:5556
  meshstream run /dev/video0 --publish tcp://*:5556
  meshstream run rtsp://camera/stream --source-name door
  meshstream run video.mp4 --realtime --config live.toml
  meshstream run --view                            also show the people in 3D at http://127.0.0.1:8080
"""

from __future__ import annotations

NAME = "run"
HELP = "live: publish per-frame body meshes from a camera, stream or file over ZeroMQ"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"
OPTIONS = ["realtime", "max_frames", "publish", "publish_vertices", "float16", "source_name", "curve_keys",
           "meta_interval_s", "linger_s", "wait_subscribers_s", "wait_subscribers_count", "open_timeout_s",
           "read_timeout_s", "max_reconnects", "vmc", "vmc_people", "view", "bvh", "glb", "stats_json",
           "report_every_s"]


def add_arguments(parser) -> None:
    from stream.commands._common import add_engine_arguments
    from stream.config import add_arguments as add_options

    parser.add_argument("source", nargs="?", default=None,
                        help="video file, image/folder, rtsp://, http://, tcp:// URL, or /dev/videoN "
                             "(default: the bundled sample clip, in real time)")
    add_options(parser, OPTIONS, defaults={"publish": DEFAULT_ADDRESS})
    add_engine_arguments(parser)


def run(args) -> int:
    import logging

    from stream.cli import UserError
    from stream.commands._common import build_chain, config_from_args, stop_on_sigterm
    from stream.pipeline import PipelineError

    log = logging.getLogger("meshstream.run")
    defaults = {"publish": DEFAULT_ADDRESS}
    if args.source is None:
        defaults["realtime"] = True
    config = config_from_args(args, **defaults)
    if config.source is None:
        log.info("no source given: playing the bundled sample clip in real time")
    stop_on_sigterm()
    chain = build_chain(config)
    try:
        log.info("publishing on %s", chain.publisher.bound_address)
        interrupted = False
        try:
            chain.run()
        except PipelineError as exc:
            raise UserError(str(exc)) from exc
        except KeyboardInterrupt:
            interrupted = True
        finally:
            chain.write_stats()
        if not getattr(args, "quiet", False):
            print(chain.pipeline.stats.format())
        print(f"source: {chain.source.stats.summary()}; published {chain.publisher.sent} messages, "
              f"dropped {chain.publisher.dropped}")
        for line in chain.source.stats.skipped[:10]:
            print(f"  skipped: {line}")
        if interrupted:
            raise KeyboardInterrupt
        return 0
    finally:
        chain.close()
