"""The lifter's network through the engine interface (engines/lift/engine.py): eager,
torch.compile and TensorRT give the same answers; unavailable back ends fall back, logged."""

from __future__ import annotations

import logging

import pytest
import torch

from engines.lift import Lifter, LiftNetwork
from engines.lift.engine import create_lifter_engine, lifter_spec, weights_hash

INTRINSICS = torch.tensor([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])


def _inputs(count: int, seed: int = 0):
    """People's keypoints, boxes, world landmarks and masks (plausible ranges, random)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([640.0, 360.0]) + 200 * torch.randn(count, 1, 2, generator=g)
    uv = centre + 150 * torch.randn(count, 33, 2, generator=g)
    keypoints = torch.cat([uv, torch.rand(count, 33, 1, generator=g)], -1)
    keypoints[..., 2] = keypoints[..., 2].clamp(min=0.6)
    boxes = torch.cat([uv.min(1).values, uv.max(1).values], -1)
    world = 0.4 * torch.randn(count, 33, 3, generator=g)
    masks = (torch.rand(count, 64, 64, generator=g) > 0.5).float()
    return keypoints, boxes, world, masks


def _engine_inputs(count: int):
    keypoints, boxes, world, masks = _inputs(count)
    ones = torch.ones(count)
    return keypoints, boxes, INTRINSICS.expand(count, 3, 3), world, ones, masks, ones


@pytest.fixture(scope="module")
def shipped():
    return Lifter.load()


def test_lifter_runs_through_an_eager_engine_by_default_on_cpu(shipped):
    assert shipped.engine.backend == "eager"
    keypoints, boxes, world, masks = _inputs(3)
    shipped.mirror_average = False  # the network's own answer, not averaged with the mirror image's
    try:
        result = shipped(keypoints, boxes, INTRINSICS, world, masks)
    finally:
        shipped.mirror_average = True
    with torch.no_grad():
        direct = shipped.network(keypoints, boxes, INTRINSICS, world, torch.ones(3), masks, torch.ones(3))
    torch.testing.assert_close(result.body_pose, direct[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(result.transl, direct[3], rtol=0, atol=1e-6)


def test_compiled_lifter_agrees_with_eager():
    # The shipped architecture with fewer blocks: the same operations, a shorter compile (~30 s).
    torch.manual_seed(0)
    network = LiftNetwork(width=64, blocks=1, shape_width=32).eval()
    eager = create_lifter_engine(network, "eager", strict=True)
    compiled = create_lifter_engine(network, "compile", strict=True)
    assert compiled.backend == "compile"
    for count in (2, 3):  # a dynamic batch: one compiled graph for any number of people (> 1)
        inputs = _engine_inputs(count)
        for a, b in zip(eager(*inputs), compiled(*inputs)):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_tensorrt_without_cuda_falls_back_and_says_so(caplog):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the gpu test covers TensorRT")
    network = LiftNetwork(width=32, blocks=1, shape_width=16)
    with caplog.at_level(logging.INFO, logger="meshstream.backends"):
        engine = create_lifter_engine(network, "tensorrt")
    assert engine.backend == "eager"
    assert "tensorrt unavailable" in caplog.text and "using back end eager" in caplog.text


def test_weights_hash_identifies_the_weights():
    torch.manual_seed(0)
    first, second = LiftNetwork(width=32, blocks=1, shape_width=16), LiftNetwork(width=32, blocks=1, shape_width=16)
    assert weights_hash(first) != weights_hash(second)
    second.load_state_dict(first.state_dict())
    assert weights_hash(first) == weights_hash(second) == lifter_spec(first).weights_hash


@pytest.mark.gpu
def test_tensorrt_lifter_agrees_with_eager_on_cuda(shipped):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("torch_tensorrt")
    eager = create_lifter_engine(shipped.network, "eager", "cuda", strict=True)
    trt = create_lifter_engine(shipped.network, "tensorrt", "cuda", strict=True, max_batch=4)
    assert trt.backend == "tensorrt"
    inputs = [x.cuda() for x in _engine_inputs(3)]
    for a, b in zip(eager(*inputs), trt(*inputs)):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
