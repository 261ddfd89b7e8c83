"""Make CURVE keys for an encrypted, authenticated publisher and its subscribers.

`meshstream keys DIR` makes DIR/server (the publisher's key pair and authorized_clients/) and
DIR/client (one subscriber's key pair and the server's public key); --client NAME (repeatable)
names the subscribers. Run it again with new names to add subscribers to an existing DIR.
Secret key files are written readable by their owner only (0600). Give the publisher DIR/server
and each subscriber only its own folder:

    meshstream run --publish tcp://*:5556 --curve-keys DIR/server
    meshstream listen tcp://HOST:5556 --curve-keys DIR/client
"""

from __future__ import annotations

NAME = "keys"
HELP = "make CURVE key folders for the publisher and its subscribers"


def add_arguments(parser) -> None:
    parser.add_argument("directory", metavar="DIR", help="folder to make the keys in (created if missing)")
    parser.add_argument("--client", action="append", default=None, metavar="NAME",
                        help="a subscriber's name (repeatable; default: one named 'client')")


def run(args) -> int:
    from pathlib import Path

    from stream.cli import UserError
    from stream.keys import CurveKeyError, create_curve_keys

    clients = args.client or ["client"]
    try:
        directory = create_curve_keys(args.directory, clients)
    except CurveKeyError as exc:
        raise UserError(str(exc)) from exc
    except OSError as exc:
        raise UserError(f"cannot write keys in {args.directory}: {exc.strerror or exc}") from exc
    directory = Path(directory)
    print(f"publisher: --curve-keys {directory / 'server'}")
    for name in clients:
        name_option = f" --client-name {name}" if name != "client" else ""
        print(f"subscriber {name}: --curve-keys {directory / name}{name_option}")
    return 0
