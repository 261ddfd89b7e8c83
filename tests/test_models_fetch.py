"""Obtaining the networks: pip download, hash checks, conversion, corrupt caches, offline errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from engines import models
from engines.cache import file_sha256
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def fetched():
    """The real cache, filled by `fetch_models` (pip download on a fresh machine)."""
    return models.fetch_models()


def _copy_tflite_files(target_cache):
    folder = target_cache / "blazepose"
    folder.mkdir(parents=True)
    for name in models.MODELS:
        shutil.copy(models.tflite_path(name), folder / f"{name}.tflite")


def test_fetch_leaves_every_network_valid_with_the_published_hashes(fetched):
    assert [s["name"] for s in fetched] == list(models.MODELS)
    assert all(s["valid"] for s in fetched)
    for name, source in models.MODELS.items():
        assert file_sha256(models.tflite_path(name)) == source.sha256


def test_a_corrupt_converted_file_is_detected_and_rebuilt(fetched, tmp_path, monkeypatch):
    _copy_tflite_files(tmp_path)
    monkeypatch.setenv("MESHSTREAM_CACHE", str(tmp_path))
    models.fetch_models()  # converts from the copied .tflite files, no download
    converted = models.converted_path("pose_detection")
    data = bytearray(converted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    converted.write_bytes(bytes(data))
    assert models.check_model("pose_detection")["converted"] == "corrupt"
    module = models.load_module("pose_detection")  # first use repairs the cache
    assert models.check_model("pose_detection")["valid"]
    assert len(module.output_shapes) == 2


def test_a_corrupt_tflite_file_is_fetched_again_with_pip(fetched, tmp_path, monkeypatch):
    _copy_tflite_files(tmp_path)
    monkeypatch.setenv("MESHSTREAM_CACHE", str(tmp_path))
    models.tflite_path("pose_landmark_full").write_bytes(b"not a model")
    assert models.check_model("pose_landmark_full")["tflite"] == "corrupt"
    statuses = models.fetch_models()
    assert all(s["valid"] for s in statuses)


def test_offline_fetch_names_the_missing_files_and_the_fixing_command(tmp_path):
    env = dict(os.environ, MESHSTREAM_CACHE=str(tmp_path), PIP_INDEX_URL="http://127.0.0.1:9/simple",
               PIP_EXTRA_INDEX_URL="", PIP_FIND_LINKS="", PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1",
               PIP_RETRIES="0", PIP_TIMEOUT="2")
    out = subprocess.run([sys.executable, "-m", "stream", "models", "fetch"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "pose_detection.tflite" in out.stderr and "pose_landmark_full.tflite" in out.stderr
    assert "meshstream models fetch" in out.stderr


def test_models_list_reports_valid_networks(fetched):
    out = subprocess.run([sys.executable, "-m", "stream", "models", "list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pose_detection" in out.stdout and "valid" in out.stdout


def test_models_list_fails_on_an_empty_cache(tmp_path):
    env = dict(os.environ, MESHSTREAM_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "stream", "models", "list"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert "missing" in out.stdout and "meshstream models fetch" in out.stdout
