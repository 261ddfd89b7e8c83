"""The ``meshstream`` command line.

Each subcommand is a module in :mod:`stream.commands` that defines::

    NAME = "run"                      # the subcommand's name
    HELP = "one line for the overview"
    def add_arguments(parser): ...    # its options (argparse)
    def run(args) -> int: ...         # does the work; returns the exit status

Subcommands are discovered, so adding one means adding a module. Heavy imports (torch, av)
belong inside ``run`` so that ``meshstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from stream import __version__

log = logging.getLogger("meshstream")


class UserError(Exception):
    """An error caused by the user's input or environment: printed as one clear line, exit 2."""


def _command_modules():
    from stream import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"stream.commands.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshstream",
        description="Turn video of people into 3D body meshes, frame by frame, "
        "and publish them over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"meshstream {__version__}")
    # -v/-q work before or after the subcommand (the subcommand's own default must not reset them).
    verbosity = argparse.ArgumentParser(add_help=False)
    group = verbosity.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging (-vv for debug)")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors")
    for action in verbosity._actions:
        parser._add_action(action)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "__doc__", None) or module.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter, parents=[verbosity])
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    from stream.allocator import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread allocates: live runs keep a flat footprint (stream/allocator.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"meshstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"meshstream {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
