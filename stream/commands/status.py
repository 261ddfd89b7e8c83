"""Show each stream of a running `meshstream serve`: state, fps, latency, drops, restarts.

examples:
  meshstream status                               the serve on this machine (port 8470)
  meshstream status http://10.0.0.5:8470/status --json
"""

from __future__ import annotations

NAME = "status"
HELP = "the streams of a running `meshstream serve`: fps, latency, drops"


def add_arguments(parser) -> None:
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8470/status",
                        help="the serve's status address; default http://127.0.0.1:8470/status")
    parser.add_argument("--json", action="store_true", help="print the JSON as it came")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="give up after S seconds; default 5")


def run(args) -> int:
    import json
    import urllib.error
    import urllib.request

    from stream.cli import UserError

    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
            status = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"no status from {args.url}: {exc} (is `meshstream serve` running, with this --status-port?)") \
            from exc
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    from stream.distributed.serve import format_status

    print(format_status(status))
    return 0
