"""Show a meshstream publisher's people in 3D in the browser, live.

Subscribes to ADDR (a `meshstream run`, by default tcp://127.0.0.1:5556) and serves a web page
at http://HOST:PORT with each person's body mesh in a colour of its own, the floor and the
camera, updating as frames arrive (at most --rate times a second). The page keeps the last
frame when the publisher ends its stream and follows the next one. Ctrl-C (or SIGTERM) stops.

examples:
  meshstream view                                  the local `meshstream run`, on http://127.0.0.1:8080
  meshstream view tcp://192.168.1.20:5556 --port 8090
  meshstream view --host 0.0.0.0                   let other machines open the page
"""

from __future__ import annotations

NAME = "view"
HELP = "show a publisher's people in 3D in the browser, live"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"


def add_arguments(parser) -> None:
    parser.add_argument("address", metavar="ADDR", nargs="?", default=DEFAULT_ADDRESS,
                        help=f"publisher address (default {DEFAULT_ADDRESS})")
    parser.add_argument("--port", type=int, default=8080, help="the page's HTTP port (default 8080; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to serve the page on (default 127.0.0.1, this machine only; 0.0.0.0: all)")
    parser.add_argument("--rate", type=float, default=15.0, metavar="HZ",
                        help="most updates of the page per second (default 15)")
    parser.add_argument("--curve-keys", default=None, metavar="DIR",
                        help="this client's CURVE key folder (DIR/NAME of `meshstream keys DIR`): server.key and "
                             "<client-name>.key_secret")
    parser.add_argument("--client-name", default="client", help="which <name>.key_secret to use (default client)")


def run(args) -> int:
    import logging
    import sys
    import time

    from stream.cli import UserError
    from stream.client import Subscriber, SubscriberError
    from stream.commands._common import stop_on_sigterm
    from stream.protocol import ProtocolError
    from stream.viewer import MeshViewer, ViewerError

    log = logging.getLogger("meshstream.view")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}")
    if not args.rate > 0:
        raise UserError(f"--rate must be more than 0, got {args.rate}")
    try:
        sub = Subscriber(args.address, curve_keys_dir=args.curve_keys, client_name=args.client_name)
    except SubscriberError as exc:
        raise UserError(str(exc)) from exc
    try:
        viewer = MeshViewer(port=args.port, host=args.host, max_rate_hz=args.rate)
    except ViewerError as exc:
        sub.close()
        raise UserError(str(exc)) from exc
    stop_on_sigterm()
    print(f"viewer: open {viewer.url} in a browser (frames from {args.address}; Ctrl-C stops)", flush=True)
    pending = None  # the newest frame not shown yet (under the rate limit, or before the topology)
    started = time.monotonic()
    warned_silence = False
    try:
        while True:
            try:
                message = sub.recv(0.05)
            except ProtocolError as exc:
                print(f"malformed message skipped: {exc}", file=sys.stderr)
                continue
            if message is None:
                if not warned_silence and sub.stats["frames"] == 0 and time.monotonic() - started > 10:
                    warned_silence = True
                    log.warning("nothing received from %s yet (is `meshstream run` publishing there? right "
                                "port? CURVE keys?); still waiting", args.address)
            elif message.kind == "meta":
                viewer.set_topology(message.arrays.get("faces"), message.header.get("parents"))
                viewer.set_camera(message.header.get("intrinsics") or None)
            elif message.kind == "end":
                print(f"end of stream ({message.header.get('reason', 'finished')}); showing its last frame, "
                      "waiting for the next (Ctrl-C stops)", flush=True)
            else:
                pending = message
            if pending is not None and viewer.due() and (viewer.faces is not None or sub.meta is not None):
                viewer.show_message(pending)
                pending = None
    except KeyboardInterrupt:
        pass
    finally:
        s = sub.stats
        print(f"received {s['frames']} frames, showed {viewer.frames_shown}; missed {s['missed']}, "
              f"malformed {s['malformed']}", file=sys.stderr)
        viewer.close()
        sub.close()
    return 0
