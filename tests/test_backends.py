"""The back-end interface: choice and fallback, any nn.Module, LiteRT vs torch, TensorRT on GPU."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from engines import backends, models
from engines.backends import BackendUnavailableError, NetworkSpec, create_engine, fallback_chain
from engines.pose import geometry as geo
from engines.pose.networks import DETECTOR, LANDMARKS, network_spec
from tests.conftest import DATA, ROOT


@pytest.fixture(scope="module")
def fetched():
    models.fetch_models()


def _small_spec() -> NetworkSpec:
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    return NetworkSpec(name="small_test_net", make_module=make, input_shapes=[(1, 3, 8, 8)], weights_hash="seed0")


def _photo_crop() -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(DATA / "blazepose" / "pose.jpg")), cv2.COLOR_BGR2RGB)
    return geo.crop_roi(image, geo.Roi(492.0, 468.0, 632.0, -0.03))[None]


def test_any_module_runs_eagerly_through_the_interface():
    spec = _small_spec()
    engine = create_engine(spec, "eager")
    x = torch.rand(5, 3, 8, 8)
    (out,) = engine(x)
    torch.testing.assert_close(out, spec.make_module()(x))
    assert engine.backend == "eager"


def test_torch_compile_back_end_gives_the_eager_result():
    spec = _small_spec()
    x = torch.rand(2, 3, 8, 8)
    (compiled,) = create_engine(spec, "compile", strict=True)(x)
    torch.testing.assert_close(compiled, spec.make_module()(x), rtol=1e-4, atol=1e-5)


def test_litert_without_a_tflite_file_falls_back_to_eager_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="meshstream.backends"):
        engine = create_engine(_small_spec(), "litert")
    assert engine.backend == "eager"
    assert "litert unavailable" in caplog.text and "using back end eager" in caplog.text
    with pytest.raises(BackendUnavailableError, match="tflite"):
        create_engine(_small_spec(), "litert", strict=True)


def test_fallback_chains_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fallback_chain("auto", cpu, has_tflite=True) == ["litert", "eager"]
    assert fallback_chain("auto", cpu, has_tflite=False) == ["eager"]
    assert fallback_chain("auto", cuda, has_tflite=True) == ["tensorrt", "compile", "eager"]
    assert fallback_chain("compile", cpu, has_tflite=True) == ["compile", "litert", "eager"]
    with pytest.raises(ValueError, match="unknown back end"):
        fallback_chain("onnx", cpu, has_tflite=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_tensorrt_without_cuda_is_refused_clearly():
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        create_engine(_small_spec(), "tensorrt", "cuda", strict=True)
    out = subprocess.run([sys.executable, "-m", "stream", "models", "build", "--backend", "tensorrt", "--fp16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "CUDA" in out.stderr


def test_cpu_default_is_litert_and_agrees_with_the_torch_replay(fetched):
    spec = network_spec(LANDMARKS)
    default = create_engine(spec, "auto")
    assert default.backend == "litert"
    crop = torch.from_numpy(np.concatenate([_photo_crop(), _photo_crop()[:, ::-1].copy()]))
    ours = create_engine(spec, "eager")(crop)
    theirs = default(crop)
    assert theirs[0].shape == (2, 195)
    for a, b in zip(ours, theirs):
        assert float(torch.linalg.norm(a - b) / torch.linalg.norm(b)) < 1e-4


def test_benchmark_reports_every_back_end_against_litert(fetched):
    from engines.pose.bench import benchmark, format_table

    result = benchmark(backends=("eager", "litert"), repeats=2, warmup=1)
    assert set(result["results"]) == {"eager", "litert"}
    for entry in result["results"].values():
        assert entry["detector"]["median_ms"] > 0 and entry["landmarks"]["median_ms"] > 0
    assert result["results"]["litert"]["vs_litert"] == pytest.approx(1.0)
    assert "| eager |" in format_table(result)


@pytest.mark.gpu
def test_tensorrt_engine_is_cached_reused_and_rebuilt_when_its_sidecar_differs(fetched, tmp_path, monkeypatch):
    torch_tensorrt = pytest.importorskip("torch_tensorrt")
    del torch_tensorrt
    monkeypatch.setenv("MESHSTREAM_CACHE", str(tmp_path))
    models.fetch_models()
    spec = network_spec(DETECTOR)
    engine = backends.TensorRTEngine(spec, torch.device("cuda"), fp16=True, max_batch=2)
    engine_file, sidecar_file = backends._trt_paths(spec, True, 2)
    sidecar = json.loads(sidecar_file.read_text())
    assert sidecar["precision"] == "fp16" and sidecar["weights_sha256"] == spec.weights_hash
    stamp = engine_file.stat().st_mtime_ns
    backends.TensorRTEngine(spec, torch.device("cuda"), fp16=True, max_batch=2)
    assert engine_file.stat().st_mtime_ns == stamp  # reused
    sidecar["torch"] = "0.0"
    sidecar_file.write_text(json.dumps(sidecar))
    backends.TensorRTEngine(spec, torch.device("cuda"), fp16=True, max_batch=2)
    assert engine_file.stat().st_mtime_ns != stamp  # rebuilt
    x = torch.rand(2, 224, 224, 3) * 2 - 1
    reference = create_engine(spec, "eager", "cuda")(x)
    for a, b in zip(engine(x), reference):
        assert float(torch.linalg.norm(a.cpu() - b.cpu()) / torch.linalg.norm(b.cpu())) < 2e-2


@pytest.mark.gpu
def test_fp16_landmarks_stay_close_to_fp32_on_a_real_crop(fetched):
    spec = network_spec(LANDMARKS)
    crop = torch.from_numpy(_photo_crop())
    full = create_engine(spec, "eager", "cuda")(crop)
    half = create_engine(spec, "auto", "cuda", fp16=True)(crop)
    landmarks_full = full[0].reshape(39, 5)[:33, :2]
    landmarks_half = half[0].reshape(39, 5)[:33, :2]
    assert float((landmarks_full - landmarks_half).abs().max()) < 2.0  # crop pixels (of 256)
