"""The tflite importer: sparse weights, unsupported operators, parity with LiteRT, torch.export."""

from __future__ import annotations

import functools

import av
import cv2
import numpy as np
import pytest
import torch

from engines import models
from engines.pose import geometry as geo
from engines.tflite_import import UnsupportedOperatorError, densify, read_plan
from tests.conftest import DATA

MEDIA = DATA / "blazepose"


@pytest.fixture(scope="module")
def model_files():
    """The two networks, fetched with pip and converted if the cache lacks them."""
    models.fetch_models()
    return {name: models.tflite_path(name) for name in models.MODELS}


def _relative_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


@functools.lru_cache(maxsize=1)
def _real_inputs() -> dict[str, list[np.ndarray]]:
    """Detector and landmark inputs made from real frames: pose.jpg and two video frames."""
    images = [cv2.cvtColor(cv2.imread(str(MEDIA / "pose.jpg")), cv2.COLOR_BGR2RGB)]
    with av.open(str(MEDIA / "pose_squats.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in (0, 30):
                images.append(frame.to_ndarray(format="rgb24"))
            if index >= 30:
                break
    detector_inputs, landmark_inputs = [], []
    for image in images:
        detector_inputs.append(geo.letterbox(image)[0])
        height, width = image.shape[:2]
        # An upright region around the person's middle, rotated a little to exercise the warp.
        roi = geo.Roi(width * 0.5, height * 0.55, 0.8 * max(width, height), 0.1)
        landmark_inputs.append(geo.crop_roi(image, roi))
    return {"pose_detection": detector_inputs, "pose_landmark_full": landmark_inputs}


def test_densify_expands_the_csr_format_of_tflite():
    dense = np.array([[0, 1.5, 0, 0], [0, 0, 0, 0], [2.0, 0, 0, -3.0]], dtype=np.float32)
    # Row-major CSR: dimension 0 dense, dimension 1 sparse.
    segments = [None, np.array([0, 1, 1, 3])]
    indices = [None, np.array([1, 0, 3])]
    values = np.array([1.5, 2.0, -3.0], dtype=np.float32)
    out = densify(values, [3, 4], [0, 1], [], [0, 1], [3, 0], segments, indices)
    np.testing.assert_array_equal(out, dense)


def test_densify_handles_blocked_layouts():
    # A 4x4 matrix with 2x1 blocks along dimension 0: levels (row block, col, row-in-block).
    dense = np.zeros((4, 4), np.float32)
    dense[0:2, 1] = [1, 2]
    dense[2:4, 3] = [3, 4]
    segments = [None, np.array([0, 1, 2]), None]
    indices = [None, np.array([1, 3]), None]
    values = np.array([1, 2, 3, 4], np.float32)
    out = densify(values, [4, 4], [0, 1, 2], [0], [0, 1, 0], [2, 0, 2], segments, indices)
    np.testing.assert_array_equal(out, dense)


def test_the_detector_graph_has_its_sparse_weights_densified(model_files):
    plan = read_plan(model_files["pose_detection"])
    ops = {s["op"] for s in plan.steps}
    assert "DENSIFY" not in ops and "DEQUANTIZE" not in ops  # folded into constants
    # The 1x1 convolutions fed by DENSIFY keep about a quarter of their weights.
    conv_weights = [plan.constants[s["inputs"][1]] for s in plan.steps if s["op"] == "CONV_2D"]
    sparse = [w for w in conv_weights if w.shape[1:3] == (1, 1) and np.mean(w == 0) > 0.5]
    assert len(sparse) == 38
    assert all(abs(np.mean(w != 0) - 0.25) < 0.05 for w in sparse)


def test_an_unsupported_operator_is_named_in_the_error(model_files, tmp_path):
    import tflite

    data = bytearray(model_files["pose_detection"].read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    # Rewrite the CONCATENATION operator code as TOPK_V2 (48), an operator the importer lacks.
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == tflite.BuiltinOperator.CONCATENATION:
            for slot, width in ((4, 1), (10, 4)):  # deprecated_builtin_code int8, builtin_code int32
                offset = code._tab.Offset(slot)
                if offset:
                    position = code._tab.Pos + offset
                    data[position:position + width] = int(48).to_bytes(width, "little", signed=True)
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    with pytest.raises(UnsupportedOperatorError, match="TOPK_V2"):
        read_plan(broken)


@pytest.mark.parametrize("name", ["pose_detection", "pose_landmark_full"])
def test_every_output_matches_the_litert_interpreter_on_real_frames(model_files, name):
    from ai_edge_litert.interpreter import Interpreter

    module = models.load_module(name)
    interpreter = Interpreter(model_path=str(model_files[name]), num_threads=1)
    interpreter.allocate_tensors()
    inputs = _real_inputs()[name]
    for x in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[None])
        interpreter.invoke()
        with torch.inference_mode():
            outputs = module(torch.from_numpy(x[None]))
        details = interpreter.get_output_details()
        assert len(outputs) == len(details)
        for detail, output in zip(details, outputs):
            expected = interpreter.get_tensor(detail["index"])
            assert output.shape == expected.shape, detail["name"]
            error = _relative_l2(output.numpy(), expected)
            assert error < 1e-4, (name, detail["name"], error)


def test_torch_export_accepts_a_dynamic_batch(model_files):
    module = models.load_module("pose_landmark_full")
    batch = torch.export.Dim("batch", min=1, max=8)
    x = torch.from_numpy(np.stack(_real_inputs()["pose_landmark_full"][:2]))
    exported = torch.export.export(module, (x,), dynamic_shapes=(({0: batch},),))
    x3 = torch.from_numpy(np.stack(_real_inputs()["pose_landmark_full"]))
    with torch.inference_mode():
        ours = exported.module()(x3)
        eager = module(x3)
    assert ours[0].shape == (3, 195)
    for a, b in zip(ours, eager):
        assert _relative_l2(a.numpy(), b.numpy()) < 1e-5
