"""Every option of a meshstream run in one validated object.

:class:`Config` is a plain dataclass: each field has its default, its unit and its allowed range
(in the field's metadata, shown by ``--help``), and the whole object is checked when it is built,
before any model loads. The command line, a TOML file (``--config FILE.toml``) and the library
(:func:`meshstream.open`) all make one, and :func:`stream.compose.compose` builds the chain from
it::

    config = Config(source="video.mp4", max_people=2, results="out.npz")
    config = Config.from_toml("run.toml", max_people=2)       # file, then overrides
    config = Config.from_args(args)                            # argparse: file, then given flags

A TOML file holds the same names as the fields (``max_people = 2``; ``max-people`` works too),
at the top level or under a ``[meshstream]`` table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_CLIP = Path(__file__).resolve().parent / "assets" / "sample.mp4"
SMOOTHING_CHOICES = ("auto", "rts", "one-euro", "kalman", "none")  # stream.smoothing's, without importing torch
BACKENDS = ("auto", "eager", "compile", "tensorrt", "litert")


class ConfigError(ValueError):
    """An option has a value that cannot work; the text names the option and what to do."""


def _option(default, help: str, flag: str | None = None, unit: str | None = None, low=None, high=None,
            choices: tuple | None = None, metavar: str | None = None, low_open: bool = False,
            high_open: bool = False, invert: bool = False, short: str | None = None, const=None):
    """A field with its command-line flag, help, unit and range (checked by Config). const: the
    value of the flag given without one (its value is then optional)."""
    meta = dict(help=help, flag=flag, unit=unit, low=low, high=high, choices=choices, metavar=metavar,
                low_open=low_open, high_open=high_open, invert=invert, short=short, const=const)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """The options of one run. Units and ranges are in each field's help (``--help``)."""

    # Input.
    source: str | None = _option(None, "video file, image or folder, rtsp:// / http:// / tcp:// URL, or /dev/videoN",
                                 metavar="SOURCE")
    realtime: bool = _option(False, "pace a file by its timestamps, newest frame wins (the live policy)")
    max_frames: int | None = _option(None, "stop after N frames", low=1, metavar="N")
    max_side: int | None = _option(None, "scale frames down so that their longer side is at most this",
                                   unit="pixels", low=16, metavar="PIXELS")
    open_timeout_s: float = _option(5.0, "stream URLs: give up connecting after this long", flag="--open-timeout",
                                    unit="s", low=0, low_open=True, metavar="S")
    read_timeout_s: float = _option(5.0, "stream URLs: no data for this long counts as a dropped stream",
                                    flag="--read-timeout", unit="s", low=0, low_open=True, metavar="S")
    max_reconnects: int = _option(10, "stream URLs: give up after N failed reconnection attempts in a row "
                                  "(-1: never)", low=-1, metavar="N")
    # Engines.
    device: str = _option("cpu", "where the networks run: cpu, cuda or cuda:N", metavar="DEVICE")
    backend: str = _option("auto", "pose back end: auto picks the fastest that runs here; an explicit one that "
                           "cannot run is an error", choices=BACKENDS)
    threads: int | None = _option(None, "threads per engine (default: half the CPU cores, at least 1; the pose and "
                                  "lift stages run at the same time)", low=1, high=256, metavar="N")
    pose: str = _option("auto", "auto: find people; off: frames only (transport tests)", choices=("auto", "off"))
    max_people: int = _option(4, "most people tracked per frame", low=1, high=64, metavar="N")
    body_model: str = _option("open", "the bundled open body model, or a path to SMPL / SMPL+H / SMPL-X files",
                              metavar="open|PATH")
    fov_deg: float = _option(60.0, "field of view of the longer image side, for the default intrinsics",
                             flag="--fov", unit="degrees", low=0, high=180, low_open=True, high_open=True,
                             metavar="DEGREES")
    lifter: str = _option("auto", "auto: the learned lifter anchors the body fit; off: the fit alone",
                          choices=("auto", "off"))
    lifter_shape: bool = _option(False, "take body shape from the lifter's silhouette network (experimental; "
                                 "default: the average body)")
    refine: bool = _option(True, "skip the fit to the keypoints (needs the learned lifter)", flag="--no-refine",
                           invert=True)
    fit_iterations: int = _option(6, "the most Levenberg-Marquardt iterations of the body fit per frame",
                                  low=1, high=100, metavar="N")
    fit_tolerance: float = _option(0.003, "stop a person's fit once an iteration lowers its energy by less than "
                                   "this fraction (0: run every iteration)", low=0, high=1, metavar="FRACTION")
    fit_anchor: float | None = _option(None, "weight of the lifter's joint rotations in the fit (default 80): "
                                       "larger trusts the lifter over the keypoints", low=0, metavar="WEIGHT")
    smoothing: str = _option("auto", "temporal smoothing of each person's body: auto = rts offline (two-sided, "
                             "frames come out --smoothing-lag frames later), one-euro live; docs/smoothing.md",
                             choices=SMOOTHING_CHOICES)
    smoothing_lag: int = _option(15, "rts: later frames each frame waits for before it is smoothed",
                                 unit="frames", low=0, high=1000, metavar="FRAMES")
    world: bool = _option(True, "skip the world frame (floor, camera height and pitch, each person's root motion and "
                          "foot contacts, y up; for a static camera; docs/world.md)", flag="--no-world", invert=True)
    lock_feet: bool = _option(False, "keep feet that are on the floor from sliding in the world-frame root motion "
                              "(results, stream, BVH/GLB; docs/world.md)")
    # Outputs.
    publish: str | None = _option(None, "ZeroMQ address to publish on (tcp://127.0.0.1:5556; tcp://*:5556 for all "
                                  "interfaces)", metavar="ADDR")
    publish_vertices: bool = _option(True, "do not publish vertices (parameters and joints only)",
                                     flag="--no-vertices", invert=True)
    float16: bool = _option(False, "publish vertices as float16 (half the bytes)")
    source_name: str | None = _option(None, "publish frames on topic meshstream.frame.NAME", metavar="NAME")
    curve_keys: str | None = _option(None, "CURVE-encrypt and authenticate with the server's keys in DIR (DIR/server of "
                                     "`meshstream keys DIR`; docs/SECURITY.md)",
                                     metavar="DIR")
    meta_interval_s: float = _option(2.0, "republish the topology every S seconds", flag="--meta-interval",
                                     unit="s", low=0, low_open=True, metavar="S")
    linger_s: float = _option(0.5, "at exit, wait at most S seconds to flush queued messages", flag="--linger",
                              unit="s", low=0, metavar="S")
    wait_subscribers_s: float = _option(0.0, "before reading the source, wait up to S seconds for a subscriber",
                                        flag="--wait-subscribers", unit="s", low=0, metavar="S")
    wait_subscribers_count: int = _option(1, "with --wait-subscribers: how many subscribers to wait for",
                                          flag="--wait-count", low=1, high=1000, metavar="N")
    results: str | None = _option(None, "results file to write (.npz)", flag="--output", short="-o",
                                  metavar="OUT.npz")
    results_vertices: bool = _option(False, "store vertices (N, V, 3) in the results file", flag="--vertices")
    render: str | None = _option(None, "also write an overlay video (.mp4)", metavar="OUT.mp4")
    render_keypoints: bool = _option(False, "overlay video: also draw the 2D keypoints", flag="--keypoints")
    render_side_view: bool = _option(False, "overlay video: add a panel with the bodies seen from the side (twice "
                                     "as wide)", flag="--side-view")
    bvh: str | None = _option(None, "also write each person's animation as BVH (the most-seen person to OUT.bvh, "
                              "others to OUT.<id>.bvh; docs/CONSUMERS.md)", metavar="OUT.bvh")
    glb: str | None = _option(None, "also write the bodies as binary glTF: skinned mesh, one animation per person "
                              "(docs/CONSUMERS.md)", metavar="OUT.glb")
    vmc: str | None = _option(None, "also send bodies over the VMC protocol (OSC over UDP) to HOST:PORT, e.g. "
                              "127.0.0.1:39539 for VSeeFace, Warudo, Unity (docs/CONSUMERS.md)", metavar="HOST:PORT")
    vmc_people: int = _option(1, "VMC: people sent, the k-th to PORT+k", low=1, high=16, metavar="K")
    view: int | None = _option(None, "also show the people in 3D in the browser, live, at http://127.0.0.1:PORT "
                               "(PORT 8080 when not given; docs/CONSUMERS.md)", low=0, high=65535, metavar="PORT",
                               const=8080)
    stats_json: str | None = _option(None, "write the run's statistics as JSON", metavar="PATH")
    report_every_s: float = _option(10.0, "log a progress line every S seconds (0: never)", flag="--report-every",
                                    unit="s", low=0, metavar="S")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            self._check_field(f, getattr(self, f.name))
        self._check_combinations()

    # 1. Each value on its own: type, range, choices.
    def _check_field(self, f: dataclasses.Field, value) -> None:
        meta, name = f.metadata, option_name(f)
        if value is None:
            if f.default is not None:
                raise ConfigError(f"{name} needs a value")
            return
        kind = _base_type(f)
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{name} is true or false, got {value!r}")
            return
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"{name} must be a number, got {value!r}")
        elif kind is str and not isinstance(value, str):
            raise ConfigError(f"{name} must be text, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise ConfigError(f"{name} {value!r} is not one of: {', '.join(meta['choices'])}")
        low, high = meta["low"], meta["high"]
        too_low = low is not None and (value <= low if meta["low_open"] else value < low)
        too_high = high is not None and (value >= high if meta["high_open"] else value > high)
        if too_low or too_high:
            raise ConfigError(f"{name} must be {_range_text(meta)}, got {value!r}")

    # 2. Values that depend on each other or on this machine (still no model loaded).
    def _check_combinations(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"--device {self.device!r}: use cpu, cuda or cuda:N")
        if self.device != "cpu":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {self.device}: this machine has no CUDA device (or torch was built "
                                  "without CUDA); use --device cpu")
        if self.backend == "tensorrt" and not _installed("torch_tensorrt"):
            raise ConfigError("--backend tensorrt: torch-tensorrt is not installed (pip install "
                              "'meshstream[tensorrt]' on a CUDA machine), or use --backend auto")
        if self.backend == "tensorrt" and self.device == "cpu":
            raise ConfigError("--backend tensorrt runs on a GPU: add --device cuda, or use --backend auto")
        if self.backend == "litert" and not _installed("ai_edge_litert"):
            raise ConfigError("--backend litert: ai-edge-litert is not installed (pip install "
                              "'meshstream[litert]'), or use --backend auto")
        if self.body_model != "open" and not Path(self.body_model).exists():
            raise ConfigError(f"--body-model {self.body_model}: no such file or folder (give SMPL/SMPL-X files, "
                              "or 'open' for the bundled model)")
        if self.lock_feet and not self.world:
            raise ConfigError("--lock-feet needs the world frame (drop --no-world)")
        if not self.refine and self.lifter == "off":
            raise ConfigError("--no-refine needs the learned lifter (drop --lifter off)")
        if self.source_name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", self.source_name):
            raise ConfigError(f"--source-name {self.source_name!r}: use letters, digits, '-' and '_' only")
        if self.results is not None and not self.results.endswith(".npz"):
            raise ConfigError(f"--output {self.results}: the results file must end in .npz")
        if self.render is not None and not self.render.lower().endswith((".mp4", ".mkv", ".mov")):
            raise ConfigError(f"--render {self.render}: the overlay video must end in .mp4 (or .mkv, .mov)")
        if self.bvh is not None and not self.bvh.lower().endswith(".bvh"):
            raise ConfigError(f"--bvh {self.bvh}: the animation file must end in .bvh")
        if self.glb is not None and not self.glb.lower().endswith(".glb"):
            raise ConfigError(f"--glb {self.glb}: the glTF file must end in .glb")
        if self.curve_keys is not None and self.publish is None:
            raise ConfigError("--curve-keys needs an address to publish on")
        self._check_outputs_spare_inputs()

    def _check_outputs_spare_inputs(self) -> None:
        """No output may be the input or another output: a file the user gave is never overwritten."""
        outputs = [(flag, path) for flag, path in (("--output", self.results), ("--render", self.render),
                                                   ("--bvh", self.bvh), ("--glb", self.glb),
                                                   ("--stats-json", self.stats_json)) if path]
        seen: dict[str, str] = {}
        source = _identity(self.source) if self.source and Path(self.source).exists() else None
        for flag, path in outputs:
            key = _identity(path)
            if source is not None and key == source:
                raise ConfigError(f"{flag} {path} is the input file: choose another output path (meshstream never "
                                  "overwrites its input)")
            if key in seen:
                raise ConfigError(f"{flag} {path} is also given as {seen[key]}: give each output its own path")
            seen[key] = flag

    # 3. Making one.
    def replace(self, **changes) -> "Config":
        """A copy with ``changes`` (checked like a new one)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides) -> "Config":
        """The options in a TOML file, then ``overrides`` (which win)."""
        return cls(**{**read_toml(path), **overrides})

    @classmethod
    def from_args(cls, args, **defaults) -> "Config":
        """From an argparse namespace made with :func:`add_arguments`: ``defaults`` (a command's
        own, e.g. run's publish address), then the ``--config`` file, then the flags given."""
        values = dict(defaults)
        if getattr(args, "config", None):
            values.update(read_toml(args.config))
        names = {f.name for f in dataclasses.fields(cls)}
        values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def option_name(f: dataclasses.Field) -> str:
    """How an option is named to the user: its flag, and its field name when they differ."""
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    return flag if flag.lstrip("-").replace("-", "_") == f.name else f"{flag} ({f.name})"


def load_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A TOML file's contents; ConfigError naming ``what`` (e.g. "--config x.toml") when the
    file is missing or not TOML."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what}: not valid TOML: {exc}") from None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The options of a TOML file as field names and values; unknown names are an error."""
    data = load_toml(path, f"--config {path}")
    if isinstance(data.get("meshstream"), dict):
        data = data["meshstream"]
    return options_from_mapping(data, f"--config {path}")


def options_from_mapping(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Option names and values of a TOML table (keys as field names or flags, ``max-people`` or
    ``max_people``); an unknown name is a ConfigError that starts with ``where``."""
    by_flag = {(f.metadata.get("flag") or f.name).lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(Config)}
    known = {f.name for f in dataclasses.fields(Config)}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        name = name if name in known else by_flag.get(name)
        if name is None:
            raise ConfigError(f"{where}: unknown option {key!r} (known: {', '.join(sorted(known))})")
        values[name] = float(value) if _base_type(_FIELDS[name]) is float and isinstance(value, int) \
            and not isinstance(value, bool) else value
    return values


def add_arguments(parser, names: list[str], defaults: dict[str, Any] | None = None, with_config: bool = True) -> None:
    """Add the flags of the fields ``names`` (in that order) to an argparse parser (and
    ``--config`` when ``with_config``). Flags default to None, so that :meth:`Config.from_args`
    knows which were given; the help shows the real default (``defaults``: this command's own)."""
    defaults = defaults or {}
    if with_config:
        parser.add_argument("--config", metavar="FILE.toml", default=None,
                            help="read options from a TOML file (the fields of stream.config.Config; flags given "
                                 "override it)")
    for name in names:
        f = _FIELDS[name]
        meta = f.metadata
        flags = [meta.get("flag") or "--" + name.replace("_", "-")]
        if meta.get("short"):
            flags.insert(0, meta["short"])
        default = defaults.get(name, f.default)
        help_text = meta["help"]
        if meta["unit"]:
            help_text += f" ({meta['unit']})"
        if meta["low"] is not None or meta["high"] is not None:
            help_text += f"; {_range_text(meta)}"
        kind = _base_type(f)
        if kind is bool:
            action = "store_false" if meta["invert"] else "store_true"
            parser.add_argument(*flags, dest=name, action=action, default=None, help=help_text)
            continue
        if default is not None:
            help_text += f"; default {default}"
        optional = {"nargs": "?", "const": meta["const"]} if meta.get("const") is not None else {}
        parser.add_argument(*flags, dest=name, type=_parse_as(kind, flags[-1]), default=None, help=help_text,
                            choices=meta["choices"], metavar=None if meta["choices"] else meta["metavar"], **optional)


def _parse_as(kind, flag: str):
    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            import argparse

            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None

    parse.__name__ = kind.__name__
    return parse if kind in (int, float) else str


def _base_type(f: dataclasses.Field):
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text.split(" |")[0].strip() == name:
            return kind
    raise TypeError(f"Config.{f.name}: unsupported type {text}")


def _range_text(meta) -> str:
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        if meta["low_open"] or meta["high_open"]:
            return f"between {low} and {high}" + (" (exclusive)" if meta["low_open"] and meta["high_open"] else "")
        return f"from {low} to {high}"
    if low is not None:
        return f"more than {low}" if meta["low_open"] else f"at least {low}"
    return f"less than {high}" if meta["high_open"] else f"at most {high}"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _identity(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
