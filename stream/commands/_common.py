"""Pieces the commands share: argument groups, opening inputs, building the engine stages."""

from __future__ import annotations

import logging
from pathlib import Path

from stream.cli import UserError

log = logging.getLogger("meshstream")

_warned: dict[str, bool] = {}
# stream.smoothing.SMOOTHING_CHOICES, written out so that building the parser imports no torch.
SMOOTHING_CHOICES = ("auto", "rts", "one-euro", "kalman", "none")
SAMPLE_CLIP = Path(__file__).resolve().parents[1] / "assets" / "sample.mp4"


def add_engine_arguments(parser) -> None:
    group = parser.add_argument_group("engines")
    group.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    group.add_argument("--backend", default="auto", help="pose back end: auto, eager, compile, tensorrt, litert")
    group.add_argument("--body-model", default="open", metavar="open|PATH",
                       help="body model: the bundled open model, or a path to SMPL/SMPL+H/SMPL-X files")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="threads per engine (pose networks, lifter): default half the CPU cores, at least "
                            "1, since the pose and lift stages run at the same time")
    group.add_argument("--max-people", type=int, default=4, help="most people tracked per frame (default 4)")
    group.add_argument("--pose", choices=("auto", "off"), default="auto",
                       help="auto: run the pose engine when installed; off: frames only (transport tests)")
    group.add_argument("--fov", type=float, default=60.0,
                       help="horizontal-or-vertical (longer side) field of view in degrees for the default intrinsics")
    group.add_argument("--max-side", type=int, default=None, metavar="PIXELS",
                       help="scale frames down so their longer side is at most this")
    group.add_argument("--smoothing", choices=SMOOTHING_CHOICES, default="auto",
                       help="temporal smoothing of each person's body: auto (default) = rts for offline runs "
                            "(two-sided, no lag, frames come out --smoothing-lag frames later), a causal "
                            "filter (one-euro) live; docs/smoothing.md")
    group.add_argument("--smoothing-lag", type=int, default=15, metavar="FRAMES",
                       help="rts: later frames each frame waits for before it is smoothed (default 15)")
    group.add_argument("--fit-iterations", type=int, default=6, metavar="N",
                       help="the most Levenberg-Marquardt iterations of the body fit per frame (default 6)")
    group.add_argument("--fit-tolerance", type=float, default=0.003, metavar="FRACTION",
                       help="stop a person's fit once an iteration lowers its energy by less than this "
                            "fraction (default 0.003; 0 runs every iteration)")
    group.add_argument("--fit-anchor", type=float, default=None, metavar="WEIGHT",
                       help="weight of the learned lifter's joint rotations in the fit (default 80; the lifter's "
                            "depths are held separately): larger trusts the lifter's pose over the keypoints "
                            "(looser 2D fit), smaller follows the keypoints more; docs/accuracy.md")
    group.add_argument("--lifter", choices=("auto", "off"), default="auto",
                       help="auto: the learned lifter anchors the body fit (default); off: the fit alone")
    group.add_argument("--lifter-shape", action="store_true",
                       help="take body shape from the lifter's silhouette network (experimental: trained on "
                            "synthetic silhouettes; default: the average body)")
    group.add_argument("--no-refine", action="store_true",
                       help="skip the fit to the keypoints (needs the learned lifter)")


def open_input(spec: str, realtime: bool = False, max_side: int | None = None, **network):
    """A stream.sources.Source for spec; user-facing errors become UserError. ``network``:
    open_timeout_s, read_timeout_s, max_reconnects for stream URLs."""
    from stream.sources import SourceError, open_source

    try:
        return open_source(spec, realtime=realtime, max_side=max_side, **network)
    except SourceError as exc:
        raise UserError(str(exc)) from exc


def engine_threads(requested: int | None) -> int:
    """Intra-op threads per engine: ``requested``, or half the cores (at least 1). The pipeline
    runs its stages at once, so engines that each take every core only contend (on 2 cores:
    61 fps with 2 threads each, 66 fps with 1; docs/benchmarks.md)."""
    import os

    if requested is not None:
        if requested < 1:
            raise UserError(f"--threads must be at least 1, got {requested}")
        return requested
    return max(1, (os.cpu_count() or 2) // 2)


def engine_stages(args, lifter_wanted: bool = True) -> tuple[list, object, bool]:
    """The engine stages available here: pose (+ids), lift, body; with the intra-op threads of
    :func:`engine_threads` (set for the whole process: engines read it when they are built).

    Returns (stages, body_model or None, has_lifter).
    """
    import torch

    from stream.stages import BodyStage, LiftStage, PoseStage, TrackStage, load_body_model_for, module_exists

    torch.set_num_threads(engine_threads(getattr(args, "threads", None)))
    stages: list = []
    if args.pose != "off":
        if module_exists("engines.pose"):
            stages += [PoseStage(backend=args.backend, device=args.device, max_people=args.max_people), TrackStage()]
        elif not _warned.get("pose"):
            _warned["pose"] = True
            log.warning("engines.pose is not installed: running without people (frames only)")
    try:
        body_model = load_body_model_for(args.body_model, device=args.device)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(f"cannot load body model {args.body_model!r}: {exc}") from exc
    has_lifter = False
    if lifter_wanted and stages and body_model is not None:
        lifter = load_lifter_for(args.lifter, body_model, device=args.device, backend=args.backend)
        if lifter is not None and args.lifter_shape:
            stages[0].keep_masks = True  # the lifter's shape network reads the person masks
        if args.fit_anchor is not None and args.fit_anchor < 0:
            raise UserError(f"--fit-anchor must be at least 0, got {args.fit_anchor}")
        if lifter is None and args.no_refine:
            raise UserError("--no-refine needs the learned lifter (--lifter auto and its weights)")
        stages.append(LiftStage(body_model, fov_deg=args.fov, smoothing=args.smoothing, smoothing_lag=args.smoothing_lag,
                                refine=not args.no_refine,
                                fit_iterations=args.fit_iterations, fit_tolerance=args.fit_tolerance,
                                fit_anchor=args.fit_anchor, lifter=lifter, lifter_shape=args.lifter_shape))
        stages.append(BodyStage(body_model))
        has_lifter = True
    return stages, body_model, has_lifter


def load_lifter_for(choice: str, body_model, device: str = "cpu", backend: str = "auto"):
    """The shipped lifter, or None when turned off, when its weights are missing, or when the
    body model is not the one it was trained for (it predicts that model's parameters).
    ``backend``: the engine back end asked for the pose networks; the lifter takes it when it is
    one of its own (eager, compile, tensorrt), else chooses by device."""
    if choice == "off":
        return None
    from engines.lift import Lifter

    try:
        lifter = Lifter.load(device=device, backend=backend if backend in ("eager", "compile", "tensorrt") else "auto")
    except FileNotFoundError as exc:
        log.warning("no lifter: %s; fitting bodies without it", exc)
        return None
    trained_for = lifter.metadata.get("body_model")
    if trained_for is not None and trained_for != getattr(body_model, "model_id", None):
        log.warning("the shipped lifter was trained for %s, not %s: fitting bodies without it "
                    "(retrain it for this model: docs/lifter.md)", trained_for, body_model.model_id)
        return None
    return lifter


def source_intrinsics(source, fov_deg: float) -> tuple[float, float, float, float]:
    from stream.stages import default_intrinsics

    return default_intrinsics(source.width or 640, source.height or 480, fov_deg)


def stop_on_sigterm() -> None:
    """Treat SIGTERM (e.g. `docker stop`, a service manager) like Ctrl-C: stop cleanly."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
