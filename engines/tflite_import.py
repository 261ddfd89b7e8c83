"""Import a TensorFlow Lite graph as a torch ``nn.Module``.

The importer reads the flatbuffer with the ``tflite`` package and turns it into a *plan*: plain
Python data (one step per operator, with its options and tensor ids) plus the constant weights as
float32 arrays. :class:`TFLiteModule` replays the plan with torch ops. The plan and the weights
can be saved with ``torch.save`` and loaded without the ``tflite`` package.

Conventions:

1. The module's inputs and outputs have the tflite graph's own shapes and layout (image inputs
   NHWC ``(B, H, W, C)`` float32), so it can stand in for the interpreter. The batch dimension is
   free (``torch.export`` with a dynamic batch works).
2. Inside, 4-D tensors are NCHW (torch's layout); the importer converts axes of RESHAPE,
   CONCATENATION and PAD accordingly.
3. Constant tensors are folded at import time: fp16 weights behind DEQUANTIZE become float32,
   sparse weights behind DENSIFY are expanded with the tflite sparsity format
   (:func:`densify`).

Supported operators: CONV_2D, DEPTHWISE_CONV_2D, ADD, MUL, PAD, RESHAPE, CONCATENATION,
RESIZE_BILINEAR, DEPTH_TO_SPACE, MAX_POOL_2D, AVERAGE_POOL_2D, LOGISTIC, RELU, RELU6, DEQUANTIZE
and DENSIFY on constants. Anything else raises :class:`UnsupportedOperatorError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PLAN_FORMAT = 1

# tflite TensorType -> numpy dtype (schema.fbs).
_TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8}
# tflite ActivationFunctionType -> name.
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
# NHWC axis -> NCHW axis for 4-D tensors.
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class UnsupportedOperatorError(ValueError):
    """The tflite graph uses an operator (or an option) the importer does not replay."""


@dataclass
class Plan:
    """A tflite graph as plain data.

    ``steps``: one dict per operator (``op``, ``inputs``, ``outputs`` tensor ids, options);
    ``constants``: tensor id -> float32/int array; ``shapes``: tensor id -> tflite shape (batch 1);
    ``inputs``/``outputs``: graph tensor ids; ``names``: tensor id -> tflite name.
    """

    steps: list[dict]
    constants: dict[int, np.ndarray]
    shapes: dict[int, list[int]]
    inputs: list[int]
    outputs: list[int]
    names: dict[int, str] = field(default_factory=dict)

    def to_state(self) -> dict:
        """Everything as ``torch.save``-able builtins and tensors (loadable with weights_only)."""
        return {
            "format": PLAN_FORMAT,
            "steps": self.steps,
            "constants": {str(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.constants.items()},
            "shapes": {str(k): list(v) for k, v in self.shapes.items()},
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "names": {str(k): v for k, v in self.names.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> "Plan":
        if state.get("format") != PLAN_FORMAT:
            raise ValueError(f"converted model has plan format {state.get('format')}, expected {PLAN_FORMAT}; "
                             "rebuild it with `meshstream models fetch --force`")
        return cls(
            steps=state["steps"],
            constants={int(k): v.numpy() for k, v in state["constants"].items()},
            shapes={int(k): list(v) for k, v in state["shapes"].items()},
            inputs=list(state["inputs"]),
            outputs=list(state["outputs"]),
            names={int(k): v for k, v in state["names"].items()},
        )


# --------------------------------------------------------------------------------------------
# Reading the flatbuffer


def _vector_values(table, type_code):
    """Values of a sparsity index vector (a flatbuffer union of int32/uint16/uint8 vectors)."""
    import tflite

    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(type_code)
    if cls is None:
        raise UnsupportedOperatorError(f"sparse tensor index vector of type {type_code} is not supported")
    vector = cls()
    vector.Init(table.Bytes, table.Pos)
    return vector.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: list[int], traversal_order: list[int], block_map: list[int],
            dim_formats: list[int], dense_sizes: list[int], segments: list, indices: list) -> np.ndarray:
    """Expand a tflite sparse tensor to a dense array.

    The tensor of rank ``n = len(shape)`` is stored as ``n + len(block_map)`` levels visited in
    ``traversal_order``; level ``i`` describes dimension ``traversal_order[i]``. Dimensions
    ``n + k`` are the inner block of original dimension ``block_map[k]``. A DENSE level (format 0)
    holds every coordinate ``0..dense_size-1``; a SPARSE_CSR level (format 1) holds, for parent
    position ``p``, the coordinates ``indices[segments[p]:segments[p+1]]``. Leaf positions index
    ``values``. Returns an array of ``shape`` and the dtype of ``values``.
    """
    rank = len(shape)
    levels = len(traversal_order)
    positions = np.zeros(1, dtype=np.int64)          # position of each path so far
    coords = np.zeros((1, levels), dtype=np.int64)   # coordinate per expanded dimension
    for level in range(levels):
        dim = traversal_order[level]
        if dim_formats[level] == 0:  # DENSE
            size = int(dense_sizes[level])
            child = np.arange(size, dtype=np.int64)
            new_positions = (positions[:, None] * size + child[None, :]).reshape(-1)
            new_coords = np.repeat(coords, size, axis=0)
            new_coords[:, dim] = np.tile(child, len(positions))
        else:  # SPARSE_CSR
            seg = np.asarray(segments[level], dtype=np.int64)
            idx = np.asarray(indices[level], dtype=np.int64)
            starts, ends = seg[positions], seg[positions + 1]
            counts = ends - starts
            parent = np.repeat(np.arange(len(positions)), counts)
            new_positions = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(parent) else np.zeros(0, np.int64)
            new_coords = coords[parent].copy()
            new_coords[:, dim] = idx[new_positions]
        positions, coords = new_positions, new_coords
    full = coords[:, :rank].copy()
    for k, orig in enumerate(block_map):
        block_level = list(traversal_order).index(rank + k)
        block_size = int(dense_sizes[block_level])
        full[:, orig] = full[:, orig] * block_size + coords[:, rank + k]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(full.T)] = values[positions]
    return dense


def _operator_name(model, op) -> str:
    import tflite

    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    for name, value in tflite.BuiltinOperator.__dict__.items():
        if not name.startswith("_") and value == builtin:
            return name
    return f"builtin #{builtin}"


def _options(op, cls):
    table = op.BuiltinOptions()
    options = cls()
    options.Init(table.Bytes, table.Pos)
    return options


def read_plan(path: str | Path) -> Plan:
    """Read a .tflite file into a :class:`Plan` (constants folded, float32)."""
    import tflite

    data = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise UnsupportedOperatorError(f"{path}: {model.SubgraphsLength()} subgraphs; only single-graph models are supported")
    graph = model.Subgraphs(0)

    shapes: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    constants: dict[int, np.ndarray] = {}
    sparse: dict[int, object] = {}
    for tid in range(graph.TensorsLength()):
        tensor = graph.Tensors(tid)
        shapes[tid] = [int(s) for s in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        names[tid] = tensor.Name().decode()
        buffer = model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            continue
        dtype = _TENSOR_DTYPES.get(tensor.Type())
        if dtype is None:
            raise UnsupportedOperatorError(f"{path}: tensor {names[tid]!r} has unsupported type {tensor.Type()}")
        raw = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype)
        if tensor.Sparsity() is not None:
            sparse[tid] = tensor.Sparsity()
            constants[tid] = raw  # still compressed; DENSIFY expands it
        else:
            constants[tid] = raw.reshape(shapes[tid]) if shapes[tid] else raw.reshape(())

    steps: list[dict] = []
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        name = _operator_name(model, op)
        inputs = [int(i) for i in op.InputsAsNumpy()]
        outputs = [int(i) for i in op.OutputsAsNumpy()]
        if name == "DENSIFY":
            tid = inputs[0]
            if tid not in sparse:
                raise UnsupportedOperatorError(f"{path}: DENSIFY of a non-constant tensor {names[tid]!r}")
            sp = sparse[tid]
            levels = sp.DimMetadataLength()
            formats, sizes, segs, idxs = [], [], [], []
            for level in range(levels):
                meta = sp.DimMetadata(level)
                formats.append(meta.Format())
                sizes.append(meta.DenseSize())
                if meta.Format() == 1:
                    segs.append(_vector_values(meta.ArraySegments(), meta.ArraySegmentsType()))
                    idxs.append(_vector_values(meta.ArrayIndices(), meta.ArrayIndicesType()))
                else:
                    segs.append(None)
                    idxs.append(None)
            constants[outputs[0]] = densify(
                constants[tid], shapes[tid], [int(t) for t in sp.TraversalOrderAsNumpy()],
                [int(b) for b in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else [], formats, sizes, segs, idxs)
            continue
        if name == "DEQUANTIZE":
            tid = inputs[0]
            if tid not in constants:
                raise UnsupportedOperatorError(f"{path}: DEQUANTIZE of a non-constant tensor {names[tid]!r}")
            source = constants[tid]
            tensor = graph.Tensors(tid)
            quant = tensor.Quantization()
            if source.dtype in (np.int8, np.uint8) and quant is not None and quant.ScaleLength():
                scale = quant.ScaleAsNumpy().astype(np.float32)
                zero = quant.ZeroPointAsNumpy().astype(np.float32)
                axis = quant.QuantizedDimension()
                bshape = [1] * source.ndim
                if scale.size > 1:
                    bshape[axis] = -1
                constants[outputs[0]] = ((source.astype(np.float32) - zero.reshape(bshape)) * scale.reshape(bshape))
            else:
                constants[outputs[0]] = source.astype(np.float32)
            continue
        steps.append(_plan_step(name, op, inputs, outputs, shapes, constants, names, path))

    for tid in list(constants):
        if constants[tid].dtype == np.float16:
            constants[tid] = constants[tid].astype(np.float32)
    used = {i for s in steps for i in s["inputs"]}
    constants = {k: v for k, v in constants.items() if k in used}
    return Plan(steps=steps, constants=constants, shapes=shapes,
                inputs=[int(i) for i in graph.InputsAsNumpy()], outputs=[int(i) for i in graph.OutputsAsNumpy()],
                names=names)


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial axis: the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _plan_step(name, op, inputs, outputs, shapes, constants, names, path) -> dict:
    import tflite

    step = {"op": name, "inputs": inputs, "outputs": outputs}
    where = f"{path}: operator {name} (output {names[outputs[0]]!r})"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = _options(op, cls)
        in_shape, w_shape = shapes[inputs[0]], shapes[inputs[1]]
        if inputs[1] not in constants:
            raise UnsupportedOperatorError(f"{where}: non-constant weights are not supported")
        step.update(stride=(o.StrideH(), o.StrideW()), dilation=(o.DilationHFactor(), o.DilationWFactor()),
                    activation=_ACTIVATIONS[o.FusedActivationFunction()], kernel=(w_shape[1], w_shape[2]))
        if o.Padding() == 0:  # SAME
            ph = _same_padding(in_shape[1], w_shape[1], o.StrideH(), o.DilationHFactor())
            pw = _same_padding(in_shape[2], w_shape[2], o.StrideW(), o.DilationWFactor())
            step["padding"] = [pw[0], pw[1], ph[0], ph[1]]
        else:
            step["padding"] = [0, 0, 0, 0]
        step["groups"] = in_shape[3] if name == "DEPTHWISE_CONV_2D" else 1
    elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = _options(op, tflite.Pool2DOptions)
        in_shape = shapes[inputs[0]]
        step.update(stride=(o.StrideH(), o.StrideW()), kernel=(o.FilterHeight(), o.FilterWidth()),
                    activation=_ACTIVATIONS[o.FusedActivationFunction()])
        if o.Padding() == 0:
            ph = _same_padding(in_shape[1], o.FilterHeight(), o.StrideH())
            pw = _same_padding(in_shape[2], o.FilterWidth(), o.StrideW())
            step["padding"] = [pw[0], pw[1], ph[0], ph[1]]
        else:
            step["padding"] = [0, 0, 0, 0]
    elif name in ("ADD", "MUL"):
        cls = tflite.AddOptions if name == "ADD" else tflite.MulOptions
        step["activation"] = _ACTIVATIONS[_options(op, cls).FusedActivationFunction()] if op.BuiltinOptions() else "none"
    elif name == "CONCATENATION":
        o = _options(op, tflite.ConcatenationOptions)
        rank = len(shapes[outputs[0]])
        axis = o.Axis() % rank
        step["axis"] = _NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis
        step["activation"] = _ACTIVATIONS[o.FusedActivationFunction()]
    elif name == "PAD":
        pads = constants.get(inputs[1])
        if pads is None:
            raise UnsupportedOperatorError(f"{where}: non-constant paddings are not supported")
        pads = np.asarray(pads).reshape(-1, 2)
        if len(pads) != 4 or pads[0].any():
            raise UnsupportedOperatorError(f"{where}: only 4-D spatial/channel padding is supported")
        # F.pad order on NCHW: W, H, C.
        step["padding"] = [int(pads[2, 0]), int(pads[2, 1]), int(pads[1, 0]), int(pads[1, 1]), int(pads[3, 0]), int(pads[3, 1])]
        step["inputs"] = inputs[:1]
        if len(inputs) > 2 and inputs[2] in constants and float(np.asarray(constants[inputs[2]]).reshape(-1)[0]) != 0.0:
            raise UnsupportedOperatorError(f"{where}: non-zero constant padding is not supported")
    elif name == "RESHAPE":
        step["shape"] = shapes[outputs[0]][1:]
        step["in_rank"] = len(shapes[inputs[0]])
        step["inputs"] = inputs[:1]
    elif name == "RESIZE_BILINEAR":
        o = _options(op, tflite.ResizeBilinearOptions)
        if o.AlignCorners() or not o.HalfPixelCenters():
            raise UnsupportedOperatorError(f"{where}: only half_pixel_centers=True, align_corners=False is supported")
        step["size"] = shapes[outputs[0]][1:3]
        step["inputs"] = inputs[:1]
    elif name == "DEPTH_TO_SPACE":
        step["block"] = _options(op, tflite.DepthToSpaceOptions).BlockSize()
    elif name in ("LOGISTIC", "RELU", "RELU6"):
        pass
    else:
        raise UnsupportedOperatorError(f"{where}: the tflite operator {name} is not supported by engines.tflite_import; "
                                       f"supported: CONV_2D, DEPTHWISE_CONV_2D, ADD, MUL, PAD, RESHAPE, CONCATENATION, "
                                       f"RESIZE_BILINEAR, DEPTH_TO_SPACE, MAX_POOL_2D, AVERAGE_POOL_2D, LOGISTIC, RELU, RELU6")
    return step


# --------------------------------------------------------------------------------------------
# Replaying the plan in torch


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "none":
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if activation == "relu_n1_to_1":
        return F.hardtanh(x, -1.0, 1.0)
    if activation == "tanh":
        return torch.tanh(x)
    raise UnsupportedOperatorError(f"fused activation {activation!r} is not supported")


class _Conv(nn.Module):
    """CONV_2D / DEPTHWISE_CONV_2D with TF padding and a fused activation (NCHW)."""

    def __init__(self, step: dict, weight: np.ndarray, bias: np.ndarray | None):
        super().__init__()
        if step["op"] == "CONV_2D":
            w = np.transpose(weight, (0, 3, 1, 2))          # (O, KH, KW, I) -> (O, I, KH, KW)
        else:
            w = np.transpose(weight, (3, 0, 1, 2))          # (1, KH, KW, C*M) -> (C*M, 1, KH, KW)
        self.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)), requires_grad=False)
        b = bias if bias is not None else np.zeros(w.shape[0], np.float32)
        self.bias = nn.Parameter(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)), requires_grad=False)
        left, right, top, bottom = step["padding"]
        self.symmetric = left == right and top == bottom
        self.pad = (left, right, top, bottom)
        self.stride = tuple(step["stride"])
        self.dilation = tuple(step["dilation"])
        self.groups = step["groups"]
        self.activation = step["activation"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            y = F.conv2d(x, self.weight, self.bias, self.stride, (self.pad[2], self.pad[0]), self.dilation, self.groups)
        else:
            y = F.conv2d(F.pad(x, self.pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return _activate(y, self.activation)


class TFLiteModule(nn.Module):
    """A tflite graph replayed in torch.

    ``forward(*inputs)`` takes the graph's inputs in their tflite layout (NHWC images, float32,
    any batch size) and returns a tuple of its outputs in their tflite shapes, batch first.
    """

    def __init__(self, plan: Plan):
        super().__init__()
        self.input_ids = list(plan.inputs)
        self.output_ids = list(plan.outputs)
        self.input_shapes = [plan.shapes[i] for i in plan.inputs]
        self.output_shapes = [plan.shapes[i] for i in plan.outputs]
        self.input_names = [plan.names.get(i, str(i)) for i in plan.inputs]
        self.output_names = [plan.names.get(i, str(i)) for i in plan.outputs]
        self.steps = [dict(s) for s in plan.steps]
        self.layers = nn.ModuleDict()
        consts = {}
        for n, step in enumerate(self.steps):
            if step["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                bias = plan.constants.get(step["inputs"][2]) if len(step["inputs"]) > 2 and step["inputs"][2] >= 0 else None
                self.layers[str(n)] = _Conv(step, plan.constants[step["inputs"][1]], bias)
                step["inputs"] = step["inputs"][:1]
            else:
                for tid in step["inputs"]:
                    if tid in plan.constants:
                        consts[tid] = plan.constants[tid]
        for tid, value in consts.items():
            value = np.asarray(value, dtype=np.float32)
            if value.ndim == 4:
                value = np.transpose(value, (0, 3, 1, 2))
            elif value.ndim == 1 and value.size > 1:
                value = value.reshape(-1, 1, 1)  # a per-channel vector broadcast against NCHW
            self.register_buffer(f"const_{tid}", torch.from_numpy(np.ascontiguousarray(value)), persistent=True)
        self._const_ids = set(consts)

    def _value(self, env: dict, tid: int) -> torch.Tensor:
        if tid in self._const_ids:
            return getattr(self, f"const_{tid}")
        return env[tid]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_ids):
            raise ValueError(f"expected {len(self.input_ids)} inputs {self.input_names}, got {len(inputs)}")
        env: dict[int, torch.Tensor] = {}
        for tid, x in zip(self.input_ids, inputs):
            env[tid] = x.permute(0, 3, 1, 2) if x.dim() == 4 else x
        for n, step in enumerate(self.steps):
            op = step["op"]
            x = self._value(env, step["inputs"][0])
            if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                y = self.layers[str(n)](x)
            elif op == "ADD":
                y = _activate(x + self._value(env, step["inputs"][1]), step["activation"])
            elif op == "MUL":
                y = _activate(x * self._value(env, step["inputs"][1]), step["activation"])
            elif op == "PAD":
                y = F.pad(x, step["padding"])
            elif op == "RESHAPE":
                if step["in_rank"] == 4:
                    x = x.permute(0, 2, 3, 1)
                y = x.reshape([x.shape[0]] + list(step["shape"]))
                if len(step["shape"]) == 3:
                    y = y.permute(0, 3, 1, 2)
            elif op == "CONCATENATION":
                y = _activate(torch.cat([self._value(env, t) for t in step["inputs"]], dim=step["axis"]), step["activation"])
            elif op == "RESIZE_BILINEAR":
                y = F.interpolate(x, size=tuple(step["size"]), mode="bilinear", align_corners=False)
            elif op == "DEPTH_TO_SPACE":
                b = step["block"]
                n_, c, h, w = x.shape
                y = x.reshape(n_, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n_, c // (b * b), h * b, w * b)
            elif op == "MAX_POOL_2D":
                y = F.max_pool2d(F.pad(x, step["padding"], value=float("-inf")), step["kernel"], step["stride"])
                y = _activate(y, step["activation"])
            elif op == "AVERAGE_POOL_2D":
                if any(step["padding"]):
                    raise UnsupportedOperatorError("AVERAGE_POOL_2D with SAME padding is not supported")
                y = _activate(F.avg_pool2d(x, step["kernel"], step["stride"]), step["activation"])
            elif op == "LOGISTIC":
                y = torch.sigmoid(x)
            elif op == "RELU":
                y = F.relu(x)
            elif op == "RELU6":
                y = F.hardtanh(x, 0.0, 6.0)
            else:  # pragma: no cover - rejected at import
                raise UnsupportedOperatorError(op)
            env[step["outputs"][0]] = y
        outs = []
        for tid in self.output_ids:
            y = env[tid]
            outs.append(y.permute(0, 2, 3, 1).contiguous() if y.dim() == 4 else y)
        return tuple(outs)


def load_tflite_module(path: str | Path) -> TFLiteModule:
    """Read a .tflite file and return its torch replay (float32, CPU, eval mode)."""
    return TFLiteModule(read_plan(path)).eval()
