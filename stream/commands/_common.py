"""Pieces the commands share: the engine options, turning parsed flags into a Config, SIGTERM."""

from __future__ import annotations

from stream.cli import UserError

# The engine options every command that builds a chain offers, in --help order.
ENGINE_OPTIONS = ["device", "backend", "body_model", "threads", "max_people", "pose", "fov_deg", "max_side",
                  "smoothing", "smoothing_lag", "fit_iterations", "fit_tolerance", "fit_anchor", "lifter",
                  "lifter_shape", "refine", "world", "lock_feet"]


def add_engine_arguments(parser) -> None:
    from stream.config import add_arguments

    add_arguments(parser.add_argument_group("engines"), ENGINE_OPTIONS, with_config=False)


def config_from_args(args, **defaults):
    """The Config of these flags (after ``--config FILE``, after the command's ``defaults``);
    a bad value is a UserError before anything loads."""
    from stream.config import Config, ConfigError

    try:
        return Config.from_args(args, **defaults)
    except ConfigError as exc:
        raise UserError(str(exc)) from exc


def build_chain(config, **kwargs):
    """stream.compose.compose with its errors as UserError."""
    from stream.compose import ComposeError, compose
    from stream.config import ConfigError

    try:
        return compose(config, **kwargs)
    except (ComposeError, ConfigError) as exc:
        raise UserError(str(exc)) from exc


def stop_on_sigterm() -> None:
    """Treat SIGTERM (e.g. `docker stop`, a service manager) like Ctrl-C: stop cleanly."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
