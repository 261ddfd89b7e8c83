"""The two BlazePose networks as :class:`engines.backends.NetworkSpec` (detector, landmarks)."""

from __future__ import annotations

import torch

from engines import models
from engines.backends import Engine, NetworkSpec, create_engine

DETECTOR = "pose_detection"
LANDMARKS = "pose_landmark_full"


def network_spec(name: str) -> NetworkSpec:
    """Spec of one BlazePose network (fetching and converting it first if needed).

    Detector: input (B, 224, 224, 3) in [-1, 1]; outputs (B, 2254, 12) raw boxes, (B, 2254, 1)
    score logits. Landmarks: input (B, 256, 256, 3) in [0, 1]; outputs (B, 195) landmarks,
    (B, 1) presence, (B, 256, 256, 1) mask logits, (B, 64, 64, 39) heatmap logits, (B, 117) world.
    """
    models.ensure_models()
    size = 224 if name == DETECTOR else 256
    return NetworkSpec(name=name, make_module=lambda: models.load_module(name), input_shapes=[(1, size, size, 3)],
                       weights_hash=models.weights_hash(name), tflite_file=models.tflite_path(name))


def build_engines(backend: str = "auto", device: str = "cpu", fp16: bool = False, max_batch: int = 4,
                  strict: bool = False) -> dict[str, Engine]:
    """Engines for both networks (``max_batch`` matters for TensorRT: the landmark batch)."""
    return {
        DETECTOR: create_engine(network_spec(DETECTOR), backend, device, fp16=fp16, max_batch=1, strict=strict),
        LANDMARKS: create_engine(network_spec(LANDMARKS), backend, device, fp16=fp16, max_batch=max_batch,
                                 strict=strict),
    }


def warm_up(engine: Engine, spec: NetworkSpec, batch: int = 1) -> None:
    """One call on zeros (compiles lazily-compiled back ends)."""
    engine(*[torch.zeros((batch, *s[1:])) for s in spec.input_shapes])
