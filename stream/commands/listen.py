"""Subscribe to a meshstream publisher and print what arrives.

Prints the topology once (body model, joints, faces, intrinsics), then one line per frame:
index, pts, people, arrays and latency (capture -> receipt, same machine only). With --json,
one JSON object per line instead ({"topic", "header", "latency_ms"}; arrays described, not dumped).
Exits 0 when the publisher ends its stream, after --count frames, or on Ctrl-C; 2 when nothing
arrives for --timeout seconds. Malformed messages are reported on stderr and skipped.
"""

from __future__ import annotations

NAME = "listen"
HELP = "subscribe to a meshstream publisher and print one line per frame"


def add_arguments(parser) -> None:
    parser.add_argument("address", metavar="ADDR", help="publisher address, e.g. tcp://127.0.0.1:5556")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="exit after N frames")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="exit with an error if nothing arrives for S seconds (default: wait forever)")
    parser.add_argument("--curve-keys", default=None, metavar="DIR",
                        help="this client's CURVE key folder (DIR/NAME of `meshstream keys DIR`): server.key and "
                             "<client-name>.key_secret")
    parser.add_argument("--max-message-mb", type=float, default=64.0, metavar="MB",
                        help="drop any message part larger than MB mebibytes unread (default 64; 0: no limit)")
    parser.add_argument("--client-name", default="client", help="which <name>.key_secret to use (default client)")
    parser.add_argument("--slow", type=float, default=0.0, metavar="S",
                        help="sleep S seconds after each frame (to see how a slow subscriber loses messages)")


def _describe_meta(meta) -> str:
    h = meta.header
    faces = meta.arrays.get("faces")
    intr = h.get("intrinsics", {})
    return (f"topology: body model {h.get('body_model')}, {len(h.get('joint_names', []))} joints, "
            f"{h.get('num_vertices', 0)} vertices, {0 if faces is None else len(faces)} faces, "
            f"{len(h.get('keypoint_names', []))} keypoints, intrinsics fx={intr.get('fx', 0):.1f} "
            f"fy={intr.get('fy', 0):.1f} {intr.get('width')}x{intr.get('height')}")


def _describe_frame(message, now_ns: int, as_json: bool = False) -> str:
    """One line for a decoded frame message; latency from its capture time to ``now_ns``."""
    import json

    header = message.header
    latency_ms = (now_ns - header["t_capture_ns"]) / 1e6
    if as_json:
        return json.dumps({"topic": message.topic, "header": header, "latency_ms": round(latency_ms, 3)})
    arrays = " ".join(f"{name}{list(a.shape)}" for name, a in message.arrays.items())
    pts_s = header["pts_s"] if header["pts_s"] is not None else float("nan")
    return (f"frame {header['frame_index']:6d} seq {header['seq']:6d} pts {pts_s:8.3f} s "
            f"people {len(header['people'])} latency {latency_ms:7.1f} ms {arrays}")


def run(args) -> int:
    import json
    import sys
    import time

    from stream.cli import UserError
    from stream.client import Subscriber, SubscriberError
    from stream.protocol import ProtocolError

    if args.max_message_mb < 0:
        raise UserError(f"--max-message-mb must be at least 0, got {args.max_message_mb}")
    max_bytes = int(args.max_message_mb * (1 << 20)) if args.max_message_mb > 0 else -1
    try:
        sub = Subscriber(args.address, curve_keys_dir=args.curve_keys, client_name=args.client_name,
                         max_message_bytes=max_bytes)
    except SubscriberError as exc:
        raise UserError(str(exc)) from exc
    frames = 0
    meta_printed = False
    try:
        while args.count is None or frames < args.count:
            try:
                message = sub.recv(args.timeout)
            except ProtocolError as exc:
                print(f"malformed message skipped: {exc}", file=sys.stderr)
                continue
            if message is None:
                raise UserError(f"nothing received from {args.address} for {args.timeout} s "
                                "(is the publisher running there? right port? CURVE keys?)")
            now = time.monotonic_ns()
            header = message.header
            if message.kind == "end":
                if args.json:
                    print(json.dumps({"topic": message.topic, "header": header}), flush=True)
                else:
                    print(f"end of stream ({header.get('reason', 'finished')}): the publisher sent "
                          f"{header['seq']} frames", flush=True)
                break
            if message.kind == "meta":
                if not meta_printed:
                    meta_printed = True
                    if args.json:
                        print(json.dumps({"topic": message.topic, "header": header}), flush=True)
                    else:
                        print(_describe_meta(message), flush=True)
                continue
            frames += 1
            print(_describe_frame(message, now, args.json), flush=True)
            if args.slow:
                time.sleep(args.slow)
    except KeyboardInterrupt:
        pass
    finally:
        s = sub.stats
        print(f"received {s['frames']} frames, {s['meta']} topology messages, missed {s['missed']}, "
              f"malformed {s['malformed']}", file=sys.stderr)
        sub.close()
    return 0
