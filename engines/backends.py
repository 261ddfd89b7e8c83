"""Back ends: one interface to run any network eagerly, compiled, as a TensorRT engine or in LiteRT.

An :class:`Engine` is called with torch tensors and returns a tuple of torch tensors (float32),
whatever runs underneath. :func:`create_engine` picks the back end at run time and falls back
along a chain, logging each step:

    requested "auto" on CUDA: tensorrt -> compile -> eager
    requested "auto" on CPU:  litert (when the network has a .tflite file and ai-edge-litert is
                              installed; by measurement the fastest on CPU) -> eager
    requested X:              X -> the rest of that device's chain

Any ``nn.Module`` can be run through it (the BlazePose replays, the lifter, the body model);
``litert`` needs the original .tflite file and inputs in its own layout.

TensorRT engines are built ahead of time with ``torch_tensorrt`` (dynamo IR, dynamic batch)
and cached in ``cache_dir()/engines`` beside a sidecar JSON recording the input shapes,
precision, versions and weights hash; a cached engine is reused only when its sidecar matches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from engines.cache import cache_dir, file_sha256

log = logging.getLogger("meshstream.backends")

BACKENDS = ("eager", "compile", "tensorrt", "litert")


@contextlib.contextmanager
def intra_op_threads(count: int | None):
    """Run a block with ``count`` torch intra-op (OpenMP) threads, restoring the previous count.

    For engines made of many small operations (the lifter's MLP, the fit's 75-unknown solves,
    a few people at a time): their parallel regions cost more than they save, and on a busy
    machine each one waits for a second thread to be scheduled. Measured on the shared 2-core
    machine (load 6): the fit of one person 27 ms with 1 thread, 504 ms with 2; the lifter
    2.0 ms vs 202 ms. In a pipeline the cores are better spent running stages side by side.
    ``None`` leaves the setting alone.
    """
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class BackendUnavailableError(RuntimeError):
    """The requested back end cannot run here (missing package, no CUDA, no .tflite file)."""


@dataclass
class NetworkSpec:
    """What a back end needs to know about a network.

    ``name``: a stable identifier (cache file names); ``make_module``: builds the float32
    ``nn.Module`` (CPU); ``input_shapes``: per input, its shape with the batch first (the batch
    entry is a placeholder: the batch is dynamic); ``weights_hash``: identifies the weights;
    ``tflite_file``: the original network for LiteRT, if there is one (same input/output
    layout as the module).
    """

    name: str
    make_module: Callable[[], nn.Module]
    input_shapes: list[tuple[int, ...]]
    weights_hash: str
    tflite_file: Path | None = None
    extra: dict = field(default_factory=dict)


class Engine:
    """A runnable network. ``engine(*inputs)`` -> tuple of float32 torch tensors."""

    backend = "base"

    def __init__(self, spec: NetworkSpec, device: torch.device):
        self.spec = spec
        self.device = device

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.spec.name} on {self.backend} ({self.device})"


class TorchEngine(Engine):
    """Eager torch, or ``torch.compile`` of the same module (``compiled=True``)."""

    def __init__(self, spec: NetworkSpec, device: torch.device, compiled: bool = False, fp16: bool = False):
        super().__init__(spec, device)
        module = spec.make_module().eval().to(device)
        self.dtype = torch.float16 if fp16 else torch.float32
        if fp16:
            module = module.half()
        self.module = module
        self.backend = "compile" if compiled else "eager"
        # Inductor "freezing" folds the weights into the graph (prepacked convolutions on CPU):
        # about 1.6x faster than without on the BlazePose graphs; valid since engines only infer.
        self._run = torch.compile(module, dynamic=True, options={"freezing": True}) if compiled else module

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xs = [torch.as_tensor(x).to(self.device, self.dtype) for x in inputs]
        outs = self._run(*xs)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return tuple(o.float() for o in outs)


@contextlib.contextmanager
def _quiet_native_stderr():
    """LiteRT's C code prints an INFO line on stderr when it makes its XNNPACK delegate. When
    logging is set above INFO (``meshstream -q``), file descriptor 2 points at /dev/null meanwhile."""
    if logging.getLogger("meshstream").getEffectiveLevel() <= logging.INFO:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LiteRTEngine(Engine):
    """The original .tflite network in the LiteRT interpreter (XNNPACK), CPU only.

    The interpreter's batch is 1; a batch is run item by item.
    """

    backend = "litert"

    def __init__(self, spec: NetworkSpec, device: torch.device, num_threads: int | None = None):
        super().__init__(spec, torch.device("cpu"))
        if spec.tflite_file is None:
            raise BackendUnavailableError(f"{spec.name}: litert needs the original .tflite file; this network has none")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise BackendUnavailableError("litert needs the ai-edge-litert package: pip install ai-edge-litert") from exc
        threads = num_threads or torch.get_num_threads()
        with _quiet_native_stderr():
            self.interpreter = Interpreter(model_path=str(spec.tflite_file), num_threads=threads)
            self.interpreter.allocate_tensors()
        self._inputs = [d["index"] for d in self.interpreter.get_input_details()]
        self._outputs = [d["index"] for d in self.interpreter.get_output_details()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        arrays = [np.ascontiguousarray(torch.as_tensor(x).detach().cpu().numpy(), dtype=np.float32) for x in inputs]
        batch = arrays[0].shape[0]
        results: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for item in range(batch):
            for index, array in zip(self._inputs, arrays):
                self.interpreter.set_tensor(index, array[item:item + 1])
            self.interpreter.invoke()
            for k, index in enumerate(self._outputs):
                results[k].append(self.interpreter.get_tensor(index).copy())
        return tuple(torch.from_numpy(np.concatenate(r, axis=0)) for r in results)


# ---------------------------------------------------------------------------------------------
# TensorRT


def _trt_paths(spec: NetworkSpec, fp16: bool, max_batch: int) -> tuple[Path, Path]:
    folder = cache_dir() / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.name}.trt.{'fp16' if fp16 else 'fp32'}.b{max_batch}"
    return folder / f"{stem}.ep", folder / f"{stem}.json"


def tensorrt_sidecar(spec: NetworkSpec, fp16: bool, max_batch: int) -> dict:
    """What a cached TensorRT engine must have been built for to be reused."""
    import torch_tensorrt  # noqa: F401  (raises ImportError when absent)

    trt_version = None
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except ImportError:
        pass
    return {
        "network": spec.name,
        "input_shapes": [[1, *s[1:]] for s in spec.input_shapes],
        "batch": {"min": 1, "opt": 1, "max": max_batch},
        "precision": "fp16" if fp16 else "fp32",
        "weights_sha256": spec.weights_hash,
        "torch": torch.__version__,
        "torch_tensorrt": torch_tensorrt.__version__,
        "tensorrt": trt_version,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class TensorRTEngine(Engine):
    """A Torch-TensorRT ahead-of-time engine (dynamic batch 1..max_batch), cached on disk."""

    backend = "tensorrt"

    def __init__(self, spec: NetworkSpec, device: torch.device, fp16: bool = True, max_batch: int = 4,
                 rebuild: bool = False):
        super().__init__(spec, device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailableError("tensorrt needs a CUDA device")
        try:
            import torch_tensorrt
        except ImportError as exc:
            raise BackendUnavailableError("tensorrt needs the torch-tensorrt package: pip install torch-tensorrt") from exc
        self.fp16 = fp16
        self.dtype = torch.float16 if fp16 else torch.float32
        self.max_batch = max_batch
        engine_file, sidecar_file = _trt_paths(spec, fp16, max_batch)
        wanted = tensorrt_sidecar(spec, fp16, max_batch)
        cached = None
        if not rebuild and engine_file.exists() and sidecar_file.exists():
            try:
                cached = json.loads(sidecar_file.read_text())
            except ValueError:
                cached = None
        if cached is not None and {k: v for k, v in cached.items() if k != "engine_sha256"} == wanted \
                and cached.get("engine_sha256") == file_sha256(engine_file):
            log.info("%s: reusing TensorRT engine %s", spec.name, engine_file)
            self.module = torch.export.load(str(engine_file)).module()
        else:
            if cached is not None:
                log.info("%s: cached TensorRT engine does not match (%s); rebuilding", spec.name,
                         ", ".join(k for k in wanted if cached.get(k) != wanted[k]) or "hash")
            self.module = self._build(torch_tensorrt, engine_file, sidecar_file, wanted)

    def _build(self, torch_tensorrt, engine_file: Path, sidecar_file: Path, sidecar: dict):
        """1. export the module with a dynamic batch; 2. compile it with TensorRT (fp16: the
        module and its inputs in half precision, which every Torch-TensorRT typing mode
        respects); 3. save it as an ExportedProgram beside its sidecar."""
        module = self.spec.make_module().eval().to(self.device)
        if self.fp16:
            module = module.half()
        inputs = [torch_tensorrt.Input(min_shape=(1, *s[1:]), opt_shape=(1, *s[1:]), max_shape=(self.max_batch, *s[1:]),
                                       dtype=self.dtype) for s in self.spec.input_shapes]
        log.info("%s: building TensorRT engine (%s, batch 1..%d)", self.spec.name, sidecar["precision"], self.max_batch)
        compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=inputs, min_block_size=1)
        tmp = engine_file.with_name(f".{engine_file.name}.{os.getpid()}.tmp.ep")
        try:
            torch_tensorrt.save(compiled, str(tmp), arg_inputs=inputs)
        except TypeError:  # older Torch-TensorRT: example tensors under `inputs`
            examples = [torch.zeros((1, *s[1:]), device=self.device, dtype=self.dtype) for s in self.spec.input_shapes]
            torch_tensorrt.save(compiled, str(tmp), inputs=examples)
        os.replace(tmp, engine_file)
        sidecar = dict(sidecar, engine_sha256=file_sha256(engine_file))
        sidecar_file.write_text(json.dumps(sidecar, indent=1))
        return compiled

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        xs = [torch.as_tensor(x).to(self.device, self.dtype).contiguous() for x in inputs]
        batch = xs[0].shape[0]
        outs: list[list[torch.Tensor]] = []
        for start in range(0, batch, self.max_batch):
            part = self.module(*[x[start:start + self.max_batch] for x in xs])
            part = part if isinstance(part, (tuple, list)) else (part,)
            outs.append([p.float() for p in part])
        return tuple(torch.cat([o[k] for o in outs]) for k in range(len(outs[0])))


# ---------------------------------------------------------------------------------------------
# Choosing


def fallback_chain(backend: str, device: torch.device, has_tflite: bool) -> list[str]:
    """The back ends to try, in order, for a request on a device."""
    if device.type == "cuda":
        chain = ["tensorrt", "compile", "eager"]
    else:
        chain = (["litert"] if has_tflite else []) + ["eager"]
    if backend == "auto":
        return chain
    if backend not in BACKENDS:
        raise ValueError(f"unknown back end {backend!r}; choose one of {('auto',) + BACKENDS}")
    return [backend] + [b for b in chain if b != backend]


def create_engine(spec: NetworkSpec, backend: str = "auto", device: str | torch.device = "cpu", *,
                  fp16: bool = False, max_batch: int = 4, strict: bool = False) -> Engine:
    """Build an :class:`Engine` for ``spec``, trying ``backend`` then its fallback chain.

    ``strict``: raise :class:`BackendUnavailableError` instead of falling back. The choice and
    every fallback are logged (logger ``meshstream.backends``).
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device} requested but CUDA is not available; use device='cpu'")
    chain = fallback_chain(backend, device, spec.tflite_file is not None)
    errors = []
    for name in chain:
        try:
            if name == "eager":
                engine: Engine = TorchEngine(spec, device, fp16=fp16 and device.type == "cuda")
            elif name == "compile":
                engine = TorchEngine(spec, device, compiled=True, fp16=fp16 and device.type == "cuda")
            elif name == "tensorrt":
                engine = TensorRTEngine(spec, device, fp16=fp16, max_batch=max_batch)
            else:
                if device.type != "cpu":
                    raise BackendUnavailableError("litert runs on the CPU only")
                engine = LiteRTEngine(spec, device)
        except BackendUnavailableError as exc:
            if strict:
                raise
            errors.append(f"{name}: {exc}")
            log.info("%s: back end %s unavailable (%s); falling back", spec.name, name, exc)
            continue
        log.info("%s: using back end %s on %s (requested %s; chain %s)", spec.name, name, device, backend,
                 " -> ".join(chain))
        return engine
    raise BackendUnavailableError(f"{spec.name}: no back end could run: " + "; ".join(errors))


def available_backends(device: str | torch.device = "cpu") -> list[str]:
    """Back ends that can be created here for ``device`` (without building anything)."""
    device = torch.device(device)
    found = ["eager", "compile"]
    if device.type == "cpu":
        try:
            import ai_edge_litert  # noqa: F401

            found.append("litert")
        except ImportError:
            pass
    elif torch.cuda.is_available():
        try:
            import torch_tensorrt  # noqa: F401

            found.append("tensorrt")
        except ImportError:
            pass
    return found


def example_batch(spec: NetworkSpec, batch: int = 1, seed: int = 0) -> Sequence[torch.Tensor]:
    """Random inputs of the network's shapes (for warm-up and checks)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand((batch, *s[1:]), generator=generator) for s in spec.input_shapes]
