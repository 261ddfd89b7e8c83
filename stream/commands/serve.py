"""Serve many live streams at once on a Ray cluster (or a local Ray on this machine).

One pipeline per camera, URL or file, each a Ray actor with its own models, budgets and
publisher: frames of stream NAME go out on its own address, topic meshstream.frame.NAME. A
stream that fails starts again without touching the others. Each stream's fps, latency and
drops: printed every --print-every seconds, and as JSON on http://127.0.0.1:PORT/status
(`meshstream status`). Ctrl-C stops every stream cleanly. The streams file: docs/SCALING.md.

examples:
  meshstream serve streams.toml                       a local Ray on this machine
  meshstream serve streams.toml --ray auto            the cluster `ray start` made
  meshstream status                                   each stream's fps, latency, drops
"""

from __future__ import annotations

NAME = "serve"
HELP = "live: many cameras or streams at once, one Ray actor each (docs/SCALING.md)"
DEFAULT_STATUS_PORT = 8470


def add_arguments(parser) -> None:
    parser.add_argument("streams", metavar="STREAMS.toml", help="the streams file: [defaults] and [streams.NAME] tables")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="the Ray cluster: 'auto' (the one `ray start` made here) or ray://HOST:10001; "
                             "default: a local Ray on this machine")
    parser.add_argument("--local-cpus", type=int, default=None, metavar="N",
                        help="without --ray: the CPUs the local Ray may use (default: all)")
    parser.add_argument("--status-port", type=int, default=DEFAULT_STATUS_PORT, metavar="PORT",
                        help=f"serve each stream's status as JSON on http://127.0.0.1:PORT/status (0: off); "
                             f"default {DEFAULT_STATUS_PORT}")
    parser.add_argument("--status-host", default="127.0.0.1", metavar="HOST",
                        help="the status address's interface (0.0.0.0: every interface); default 127.0.0.1")
    parser.add_argument("--print-every", type=float, default=10.0, metavar="S",
                        help="print the status table every S seconds (0: never); default 10")
    parser.add_argument("--max-restarts", type=int, default=-1, metavar="N",
                        help="restart a stream whose process died at most N times (-1: always); default -1")
    parser.add_argument("--status-json", default=None, metavar="PATH",
                        help="at the end, write each stream's last status as JSON")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop every stream after S seconds (default: run until Ctrl-C or all streams end)")


def run(args) -> int:
    import json
    import sys
    import time

    from stream.cli import UserError
    from stream.commands._common import stop_on_sigterm
    from stream.config import ConfigError
    from stream.distributed import DistributedError
    from stream.distributed.serve import (StreamSupervisor, format_status, read_streams, resolve_sources,
                                          serve_status)

    try:
        specs = resolve_sources(read_streams(args.streams))
    except (ConfigError, DistributedError) as exc:
        raise UserError(str(exc)) from exc
    stop_on_sigterm()
    server = None
    latest: dict = {"status": {}}  # replaced whole, so the status server never sees it half-made
    supervisor = StreamSupervisor(specs, address=args.ray, local_cpus=args.local_cpus, max_restarts=args.max_restarts)
    if args.status_port:
        try:
            server = serve_status(lambda: latest["status"], (args.status_host, args.status_port))
        except OSError as exc:
            raise UserError(f"cannot serve the status on {args.status_host}:{args.status_port}: {exc} "
                            "(pick another --status-port, or 0 for none)") from exc
    try:
        try:
            supervisor.start()
        except DistributedError as exc:
            raise UserError(str(exc)) from exc
        names = ", ".join(f"{s.name} on {s.config.publish}" for s in specs)
        print(f"serving {len(specs)} streams: {names}" + (f"; status on http://{args.status_host}:"
                                                             f"{server.server_address[1]}/status" if server else ""),
              flush=True)
        t0 = time.monotonic()
        next_print = t0 + args.print_every if args.print_every else None
        while args.duration is None or time.monotonic() - t0 < args.duration:
            status = latest["status"] = supervisor.status()
            if next_print is not None and time.monotonic() >= next_print:
                next_print = time.monotonic() + args.print_every
                print(format_status(status), file=sys.stderr, flush=True)
            if status and all(s.get("state") in ("finished", "stopped") for s in status.values()):
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        final = supervisor.status() if supervisor.ray is not None else {}
        supervisor.stop()
        if server is not None:
            server.shutdown()
    print(format_status(final))
    if args.status_json:
        with open(args.status_json, "w") as f:
            json.dump(final, f, indent=1, default=str)
    return 0
