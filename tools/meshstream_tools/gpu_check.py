"""The GPU check: every engine on a device against the CPU reference, timed, in one report.

    python -m meshstream_tools.gpu_check --device cuda --out gpu_check.md   # writes .md and .json
    python -m meshstream_tools.gpu_check --device cpu --quick --out /tmp/check.md

On a machine with CUDA it runs in under 8 minutes (``--budget-s``, default 460 s) and writes one
report (Markdown, and the same figures as JSON beside it):

1. correctness of each engine on the device against the CPU reference (eager torch, float32),
   on real frames of the bundled sample clip: BlazePose keypoints (px) and world landmarks
   (mm), the lifter's joints (mm), the body layer's joints and vertices (mm), the fit's joints
   (mm); limits 1 px and 1 mm;
2. per-stage timings: eager, torch.compile, CUDA graphs and fp16 where they apply (synchronised,
   warmed up, median of N calls, inputs handed over as the pipeline hands them);
3. Torch-TensorRT: its version and engines where it imports, "not installed" where it does not;
4. offline fps of the whole pipeline for 1 person (the sample clip) and 10 people (the clip's
   frames tiled 5 x 2);
5. live end-to-end p95 at 30 fps (the clip looped and played in real time, as `meshstream
   bench` does);
6. the body layer at batch 1 and 64.

Each part runs in a child process of its own with a time limit, and the report is rewritten
after each one, so a part that fails or runs out of time loses only its own figures (the
report says which). The run on ``--device cpu --quick`` is the CPU half that
tests/test_gpu_check.py runs, so that the script cannot rot.

The engines are tried as the product builds them first. Where that fails on the device (an
engine or stage that leaves a tensor on the CPU, say), the error goes into the report and the
figures are taken again with the workaround named beside them.

Needs the BlazePose networks in the cache (``$MESHSTREAM_CACHE`` or ~/.cache/meshstream):
the device machine has no network, so ``tools/gpu_check.sh prepare`` copies them beside the
checkout for the run to carry (see that script and docs/benchmarks.md, "GPU check").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The parts (each one child process) and their time limits in seconds (full run, quick run).
PARTS = {
    "tensorrt": (15, 10),
    "pose": (150, 40),
    "lift": (50, 20),
    "fit": (40, 20),
    "body": (80, 15),
    "offline": (70, 40),
    "live": (45, 25),
}
FULL_BUDGET_S, QUICK_BUDGET_S = 460.0, 240.0
PIXEL_LIMIT = 1.0  # px
MM_LIMIT = 1.0  # mm
TENSORRT_NOTE = "not installed (pip install torch-tensorrt)"


# ---------------------------------------------------------------------------------------------
# Shared helpers (child processes)


class Recorder:
    """A part's results, rewritten to its JSON file after every addition (a part killed at its
    time limit keeps what it had)."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"correctness": [], "timings": [], "notes": []}
        self.flush()

    def add(self, key: str, row) -> None:
        self.data.setdefault(key, []).append(row)
        self.flush()

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, default=_jsonable, indent=1))
        os.replace(tmp, self.path)


def _jsonable(value):
    from stream.commands.bench import _jsonable as jsonable  # one definition: the bench's

    return jsonable(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


WARMUP_CALLS = 3  # untimed calls before each figure (1 in a quick run)


def time_call(function, device, repeats: int, warmup: int | None = None) -> dict:
    """Median, min and p90 wall milliseconds of ``function()``, synchronised with the device."""
    for _ in range(WARMUP_CALLS if warmup is None else min(warmup, WARMUP_CALLS)):
        function()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return {"median_ms": statistics.median(samples), "min_ms": samples[0],
            "p90_ms": samples[min(len(samples) - 1, int(0.9 * len(samples)))], "n": repeats}


def tensorrt_status() -> tuple[bool, str]:
    """(importable, version or the reason it is not)."""
    try:
        import torch_tensorrt
    except ImportError:
        return False, TENSORRT_NOTE
    except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
        return False, f"import failed: {_first_line(exc)}"
    return True, str(getattr(torch_tensorrt, "__version__", "unknown version"))


def sample_frames(count: int, scale: float = 1.0) -> tuple[list, str]:
    """The first ``count`` frames of the bundled sample clip as (H, W, 3) uint8 RGB, and the
    decoder used: PyAV (the product's sources) where it imports, else OpenCV (the device
    machine's image has no PyAV; both sides of every comparison see the same frames)."""
    import cv2
    import numpy as np

    from stream.config import SAMPLE_CLIP

    frames: list = []
    try:
        from stream.sources import VideoFileSource

        import av  # noqa: F401

        source = VideoFileSource(SAMPLE_CLIP)
        for frame in source.frames():
            frames.append(frame.image)
            if len(frames) >= count:
                break
        source.close()
        decoder = "PyAV"
    except ImportError:
        capture = cv2.VideoCapture(str(SAMPLE_CLIP))
        while len(frames) < count:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        capture.release()
        decoder = "OpenCV"
    if not frames:
        raise RuntimeError(f"no frame could be decoded from {SAMPLE_CLIP}")
    if scale != 1.0:
        frames = [np.ascontiguousarray(cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
                  for f in frames]
    return frames, decoder


def tiled(frames: list, columns: int = 5, rows: int = 2) -> list:
    """Each frame's half-size copy tiled ``columns`` x ``rows``: ten people where the clip has one."""
    import cv2
    import numpy as np

    out = []
    for image in frames:
        small = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        row = np.concatenate([small] * columns, axis=1)
        out.append(np.ascontiguousarray(np.concatenate([row] * rows, axis=0)))
    return out


class GraphEngine:
    """An engine's module replayed as CUDA graphs, one graph per input shape (captured on the
    first call with that shape). Same calling convention as :class:`engines.backends.Engine`."""

    backend = "CUDA graphs"

    def __init__(self, engine):
        self.engine = engine
        self.module = engine.module
        self.device = engine.device
        self.dtype = getattr(engine, "dtype", None)
        self.graphs: dict = {}

    def _capture(self, inputs):
        import torch

        static = [x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.module(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = self.module(*static)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return graph, static, outs

    def __call__(self, *inputs):
        import torch

        with torch.inference_mode():
            xs = [torch.as_tensor(x).to(self.device, self.dtype or torch.float32) for x in inputs]
            key = tuple(tuple(x.shape) for x in xs)
            if key not in self.graphs:
                self.graphs[key] = self._capture(xs)
            graph, static, outs = self.graphs[key]
            for buffer, x in zip(static, xs):
                buffer.copy_(x)
            graph.replay()
            return tuple(o.float().clone() for o in outs)


def variants(device: str, quick: bool, litert: bool = False) -> list[tuple[str, dict]]:
    """(label, how) of the engines to check on ``device``: on CUDA eager, torch.compile, CUDA
    graphs, fp16 and TensorRT where it imports; on the CPU eager (and LiteRT for BlazePose),
    plus torch.compile unless quick."""
    if device.startswith("cuda"):
        # CUDA graphs: the eager module captured with torch.cuda.CUDAGraph, one graph per input
        # shape (GraphEngine); fp16: module and inputs in half precision, outputs back in float32.
        # Cheap ones first: a part stopped at its time limit keeps the variants it finished.
        found = [("eager", {"backend": "eager"}), ("CUDA graphs", {"backend": "eager", "graphs": True}),
                 ("fp16", {"backend": "eager", "fp16": True}), ("torch.compile", {"backend": "compile"})]
        if tensorrt_status()[0]:
            found.append(("TensorRT fp16", {"backend": "tensorrt", "fp16": True}))
        return found
    found = [("eager", {"backend": "eager"})]
    if litert:
        try:
            import ai_edge_litert  # noqa: F401

            found.append(("LiteRT", {"backend": "litert"}))
        except ImportError:
            pass
    if not quick:
        found.append(("torch.compile", {"backend": "compile"}))
    return found


def max_diff(a, b, scale: float = 1.0) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.nanmax(np.abs(a - b)) * scale)


def correctness_row(engine: str, variant: str, metric: str, value: float, limit: float, unit: str,
                    note: str = "") -> dict:
    return {"engine": engine, "variant": variant, "metric": metric, "max_diff": value, "limit": limit,
            "unit": unit, "pass": bool(value <= limit), "note": note}


def reference_people(frames: list, max_people: int = 1):
    """CPU eager BlazePose on ``frames``: per frame (rois, observations) from its own tracking,
    and the estimator (its landmarks() is the reference for any region)."""
    from engines.pose import PoseEstimator

    estimator = PoseEstimator(backend="eager", device="cpu", max_people=max_people)
    per_frame = []
    for index, image in enumerate(frames):
        people = estimator(image, timestamp_s=index / 30.0)
        per_frame.append(([p.roi for p in people], people))
    return estimator, per_frame


# The pose and lifter back end of the pipeline runs (--pipeline-backend). Default: eager on CUDA,
# so that no compilation counts in the fps (each stage's torch.compile figures are in the
# timings); the product's own choice (auto: LiteRT) on the CPU.
PIPELINE_BACKEND = "eager"

WORK_DIR: Path | None = None  # where parts share what they computed (the parent's temporary folder)


def reference_observations(count: int) -> tuple[list, list]:
    """The first ``count`` sample frames and, per frame, the CPU reference's people as arrays
    (roi, keypoints, bbox, world landmarks); computed once per run and shared through WORK_DIR."""
    import pickle

    frames, _ = sample_frames(count)
    cached = WORK_DIR / f"reference_{count}.pickle" if WORK_DIR else None
    if cached is not None and cached.is_file():
        return frames, pickle.loads(cached.read_bytes())
    _, per_frame = reference_people(frames)
    people = [[{"roi": p.roi, "keypoints": p.keypoints, "bbox": p.bbox, "world": p.world_landmarks}
               for p in found] for _, found in per_frame]
    if cached is not None:  # written whole or not at all: a part stopped meanwhile leaves no half file
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        partial.write_bytes(pickle.dumps(people))
        os.replace(partial, cached)
    return frames, people


def intrinsics_for(image):
    from stream.frames import Camera

    height, width = image.shape[:2]
    return Camera().intrinsics(width, height).matrix().astype("float32")


# ---------------------------------------------------------------------------------------------
# Parts


def part_pose(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """BlazePose: keypoints (px) and world landmarks (mm) of each engine on the device against
    CPU eager, on the regions the reference tracked in real frames; detector and landmark
    network timings at batch 1 (and 10 for the landmarks)."""
    import torch

    from engines.pose import PoseEstimator
    from engines.pose import geometry as geo

    frames, decoder = sample_frames(frame_count(quick))
    rec.add("notes", f"{len(frames)} frame(s) of the sample clip ({frames[0].shape[1]}x{frames[0].shape[0]}, "
                     f"decoded with {decoder}) for the correctness checks")
    _, people = reference_observations(len(frames))
    per_frame = [([p["roi"] for p in found], found) for found in people]
    if not any(rois for rois, _ in per_frame):
        raise RuntimeError("the CPU reference found nobody in the sample frames")
    reference = PoseEstimator(backend="eager", device="cpu", max_people=10)
    ref_landmarks = [reference.landmarks(image, [geo.Roi(*r) for r in rois]) for image, (rois, _) in
                     zip(frames, per_frame)]
    ref_detections = [reference.detect_once(image) for image in frames]
    det_input = torch.from_numpy(geo.letterbox(frames[0])[0][None])
    first_roi = geo.Roi(*per_frame[0][0][0])
    crop = torch.from_numpy(geo.crop_roi(frames[0], first_roi)[None])
    batches = {"detector": [(1, det_input)],
               "landmarks": [(1, crop)] + ([] if quick else [(10, crop.repeat(10, 1, 1, 1))])}

    def timings(label: str, estimator, where: str) -> None:
        for stage, engine in (("detector", estimator.detector), ("landmarks", estimator.landmarker)):
            for batch, x in batches[stage]:
                try:
                    figures = time_call(lambda: engine(x), where, repeats)
                    rec.add("timings", {"stage": f"pose {stage}", "batch": batch, "variant": label,
                                        "device": where, **figures})
                except Exception as exc:  # noqa: BLE001
                    rec.add("timings", {"stage": f"pose {stage}", "batch": batch, "variant": label, "device": where,
                                        "error": _first_line(exc)})

    if device != "cpu":  # on the CPU the "eager" rows time the same engine
        timings("CPU reference", reference, "cpu")
    for label, how in variants(device, quick, litert=True):
        started = time.perf_counter()
        try:
            estimator = PoseEstimator(backend=how["backend"], device=device, max_people=10,
                                      fp16=how.get("fp16", False))
            actual = estimator.detector.backend
            if actual != how["backend"]:
                raise RuntimeError(f"asked for {how['backend']}, the estimator fell back to {actual}")
            if how.get("graphs"):
                estimator.detector = GraphEngine(estimator.detector)
                estimator.landmarker = GraphEngine(estimator.landmarker)
            keypoints_px, world_mm, boxes_px = 0.0, 0.0, 0.0
            for image, (rois, _), expected, detections in zip(frames, per_frame, ref_landmarks, ref_detections):
                found = estimator.landmarks(image, [geo.Roi(*r) for r in rois])
                for got, want in zip(found, expected):
                    if (got is None) != (want is None):
                        keypoints_px = world_mm = float("inf")
                        continue
                    if got is None:
                        continue
                    keypoints_px = max(keypoints_px, max_diff(got.keypoints[:, :2], want.keypoints[:, :2]))
                    world_mm = max(world_mm, max_diff(got.world_landmarks, want.world_landmarks, 1000.0))
                mine = estimator.detect_once(image)
                if len(mine) != len(detections):
                    boxes_px = float("inf")
                else:
                    for a, b in zip(mine, detections):
                        boxes_px = max(boxes_px, max_diff(a.box, b.box), max_diff(a.keypoints, b.keypoints))
            setup_s = time.perf_counter() - started
            note = f"first use {setup_s:.1f} s"
            rec.add("correctness", correctness_row("pose", label, "keypoints x, y", keypoints_px, PIXEL_LIMIT, "px",
                                                   note))
            rec.add("correctness", correctness_row("pose", label, "world landmarks", world_mm, MM_LIMIT, "mm"))
            rec.add("correctness", correctness_row("pose", label, "detector boxes and points", boxes_px, PIXEL_LIMIT,
                                                   "px"))
            timings(label, estimator, device)
        except Exception as exc:  # noqa: BLE001 - one variant's failure is a finding
            rec.add("correctness", {"engine": "pose", "variant": label, "error": _first_line(exc)})
        estimator = None
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def _lifter_inputs(quick: bool):
    """Real inputs for the lifter and the fit: the CPU reference's people on sample frames."""
    import numpy as np

    frames, people = reference_observations(frame_count(quick))
    inputs = []
    for image, found in zip(frames, people):
        if not found:
            continue
        inputs.append({"keypoints": np.stack([p["keypoints"] for p in found]),
                       "boxes": np.stack([p["bbox"] for p in found]),
                       "world": np.stack([p["world"] for p in found]),
                       "intrinsics": intrinsics_for(image)})
    if not inputs:
        raise RuntimeError("the CPU reference found nobody in the sample frames")
    return inputs


def frame_count(quick: bool) -> int:
    """Sample frames the correctness checks run on."""
    return 1 if quick else 8


def _repeat_people(item: dict, count: int) -> dict:
    """``count`` copies of a frame's first person, each moved 40 px to the right of the last."""
    import numpy as np

    keypoints = np.repeat(item["keypoints"][:1], count, 0).copy()
    boxes = np.repeat(item["boxes"][:1], count, 0).copy()
    shift = 40.0 * np.arange(count, dtype=np.float32)
    keypoints[:, :, 0] += shift[:, None]
    boxes[:, [0, 2]] += shift[:, None]
    return {"keypoints": keypoints, "boxes": boxes, "world": np.repeat(item["world"][:1], count, 0),
            "intrinsics": item["intrinsics"]}


def part_lift(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """The lifter: joints (mm, posed by the CPU body model) of each engine on the device
    against CPU eager, on the reference's keypoints; timings for 1 and 10 people."""
    import torch

    from engines.body import load_body_model
    from engines.lift import Lifter

    inputs = _lifter_inputs(quick)
    model = load_body_model("open")

    def joints(result):
        with torch.no_grad():
            return model(result.global_orient.float().cpu(), result.body_pose.float().cpu(),
                         result.betas.float().cpu(), result.transl.float().cpu()).joints.numpy()

    reference = Lifter.load(device="cpu", backend="eager")
    expected = [joints(reference(i["keypoints"], i["boxes"], i["intrinsics"], i["world"])) for i in inputs]

    def timings(label: str, lifter, where: str) -> None:
        for people in (1, 10):
            item = _repeat_people(inputs[0], people)
            try:
                figures = time_call(lambda: lifter(item["keypoints"], item["boxes"], item["intrinsics"], item["world"]),
                                    where, repeats)
                rec.add("timings", {"stage": "lifter (mirror-averaged: batch 2P)", "batch": people, "variant": label,
                                    "device": where, **figures})
            except Exception as exc:  # noqa: BLE001
                rec.add("timings", {"stage": "lifter (mirror-averaged: batch 2P)", "batch": people, "variant": label,
                                    "device": where, "error": _first_line(exc)})

    if device != "cpu":  # on the CPU the "eager" rows time the same engine
        timings("CPU reference", reference, "cpu")
    for label, how in variants(device, quick):
        started = time.perf_counter()
        try:
            lifter = Lifter.load(device=device, backend=how["backend"], fp16=how.get("fp16", False))
            if lifter.engine.backend != how["backend"]:
                raise RuntimeError(f"asked for {how['backend']}, the lifter fell back to {lifter.engine.backend}")
            if how.get("graphs"):
                lifter.engine = GraphEngine(lifter.engine)
            worst = 0.0
            for item, want in zip(inputs, expected):
                got = joints(lifter(item["keypoints"], item["boxes"], item["intrinsics"], item["world"]))
                worst = max(worst, max_diff(got, want, 1000.0))
            rec.add("correctness", correctness_row("lifter", label, "joints", worst, MM_LIMIT, "mm",
                                                   f"first use {time.perf_counter() - started:.1f} s"))
            timings(label, lifter, device)
        except Exception as exc:  # noqa: BLE001
            rec.add("correctness", {"engine": "lifter", "variant": label, "error": _first_line(exc)})


def _body_inputs(batch: int, device, dtype=None, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    orient = torch.tensor([[math.pi, 0.0, 0.0]]).repeat(batch, 1) + 0.2 * torch.randn(batch, 3, generator=generator)
    pose = 0.3 * torch.randn(batch, 23, 3, generator=generator)
    betas = torch.randn(batch, 10, generator=generator)
    transl = torch.tensor([[0.0, 0.3, 3.0]]).repeat(batch, 1)
    return [t.to(device, dtype or torch.float32) for t in (orient, pose, betas, transl)]


def part_body(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """The body layer (open model): joints and vertices (mm) on the device against the CPU,
    at batch 64; timings at batch 1 and 64, same betas call after call (a tracked person: the
    model's shape cache hits)."""
    import torch

    from engines.body import load_body_model

    reference = load_body_model("open")
    with torch.inference_mode():
        want = reference(*_body_inputs(64, "cpu"))
    cuda = device.startswith("cuda")
    options = [("eager", {})]
    if cuda:
        # The labels of the networks' columns; how each is made differs (a note in the report).
        options += [("fp16", {"fp16": True}), ("torch.compile", {"compile": "default"}),
                    ("CUDA graphs", {"compile": "reduce-overhead"})]
        rec.add("notes", "body layer: CUDA graphs = torch.compile(mode='reduce-overhead') (the model's input "
                         "checks and shape cache synchronise, which a plain capture forbids); fp16 = float16 "
                         "buffers and inputs, float32 kinematic chain")
    elif not quick:
        options.append(("torch.compile", {"compile": "default"}))

    def timings(label, model, where, dtype=None):
        for batch in (1, 64):
            args = _body_inputs(batch, where, dtype)
            try:
                def run():
                    with torch.inference_mode():
                        return model(*args)

                figures = time_call(run, where, repeats)
                rec.add("body", {"batch": batch, "variant": label, "device": where, **figures})
                rec.add("timings", {"stage": "body layer", "batch": batch, "variant": label, "device": where,
                                    **figures})
            except Exception as exc:  # noqa: BLE001
                rec.add("body", {"batch": batch, "variant": label, "device": where, "error": _first_line(exc)})

    if device != "cpu":  # on the CPU the "eager" rows time the same engine
        timings("CPU reference", reference, "cpu")
    for label, how in options:
        started = time.perf_counter()
        try:
            dtype = torch.float16 if how.get("fp16") else torch.float32
            model = load_body_model("open", device=device, dtype=dtype)
            if how.get("compile"):
                model = torch.compile(model, mode=how["compile"])
            with torch.inference_mode():
                got = model(*_body_inputs(64, device, dtype))
            note = f"first use {time.perf_counter() - started:.1f} s"
            rec.add("correctness", correctness_row("body layer", label, "joints (batch 64)",
                                                   max_diff(got.joints.float().cpu(), want.joints, 1000.0), MM_LIMIT,
                                                   "mm", note))
            rec.add("correctness", correctness_row("body layer", label, "vertices (batch 64)",
                                                   max_diff(got.vertices.float().cpu(), want.vertices, 1000.0),
                                                   MM_LIMIT, "mm"))
            timings(label, model, device, dtype)
        except Exception as exc:  # noqa: BLE001
            rec.add("correctness", {"engine": "body layer", "variant": label, "error": _first_line(exc)})


def _fitter(model, prior_device=None):
    from engines.body.sparse import LandmarkPoser
    from engines.fit import ANCHORED_WEIGHTS, BodyFitter, GaussianPosePrior
    from engines.pose_prior import PosePrior

    prior = GaussianPosePrior(PosePrior.load())
    if prior_device is not None:
        prior.means, prior.whiten, prior.constants = (t.to(prior_device) for t in
                                                      (prior.means, prior.whiten, prior.constants))
    return BodyFitter(LandmarkPoser(model).float(), ANCHORED_WEIGHTS, pose_prior=prior, iterations=6, tolerance=0.003)


def part_fit(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """The fit (6 Levenberg-Marquardt iterations, the pipeline's weights and tolerance), warm-
    started frame after frame on the reference's people, anchored on the CPU lifter: joints
    (mm, posed by the CPU body model) on the device against the CPU; timings for 1 and 10
    people. Eager only (its iterations stop on data: nothing to compile or capture)."""
    import torch

    from engines.body import load_body_model
    from engines.lift import Lifter

    inputs = _lifter_inputs(quick)
    cpu_model = load_body_model("open")
    lifter = Lifter.load(device="cpu", backend="eager")
    for item in inputs:
        lifted = lifter(item["keypoints"], item["boxes"], item["intrinsics"], item["world"])
        item["anchor"] = (lifted.global_orient.float(), lifted.body_pose.float())

    def run_sequence(fitter, where, items):
        out, previous = [], None
        for item in items:
            to = lambda x: torch.as_tensor(x).to(where, torch.float32)  # noqa: E731
            anchor = tuple(to(a) for a in item["anchor"])
            betas = to(torch.zeros(len(item["keypoints"]), 10))
            result = fitter.fit(to(item["keypoints"]), to(item["intrinsics"]), betas,
                                world_landmarks=to(item["world"]), anchor=anchor, previous=previous)
            previous = (result.global_orient, result.body_pose, result.transl)
            with torch.no_grad():
                out.append(cpu_model(result.global_orient.float().cpu(), result.body_pose.float().cpu(), None,
                                     result.transl.float().cpu()).joints.numpy())
        return out, previous

    def timings(label, fitter, where):
        for people in (1, 10):
            items = [dict(_repeat_people(i, people), anchor=tuple(a[:1].repeat(people, *[1] * (a.ndim - 1))
                                                                  for a in i["anchor"])) for i in inputs[:2]]
            try:
                _, previous = run_sequence(fitter, where, items[:1])
                item = items[-1]
                to = lambda x: torch.as_tensor(x).to(where, torch.float32)  # noqa: E731
                args = (to(item["keypoints"]), to(item["intrinsics"]), to(torch.zeros(people, 10)))
                kwargs = {"world_landmarks": to(item["world"]), "anchor": tuple(to(a) for a in item["anchor"]),
                          "previous": previous}
                figures = time_call(lambda: fitter.fit(*args, **kwargs), where, max(3, repeats // 2), warmup=1)
                rec.add("timings", {"stage": "fit per frame (warm-started)", "batch": people, "variant": label,
                                    "device": where, **figures})
            except Exception as exc:  # noqa: BLE001
                rec.add("timings", {"stage": "fit per frame (warm-started)", "batch": people, "variant": label,
                                    "device": where, "error": _first_line(exc)})

    reference = _fitter(cpu_model)
    expected, _ = run_sequence(reference, "cpu", inputs)
    if device != "cpu":  # on the CPU the "eager" rows time the same engine
        timings("CPU reference", reference, "cpu")
    model = load_body_model("open", device=device)
    attempts = [("eager", _fitter(model))]
    for label, fitter in attempts:
        try:
            got, _ = run_sequence(fitter, device, inputs)
            worst = max(max_diff(g, w, 1000.0) for g, w in zip(got, expected))
            rec.add("correctness", correctness_row("fit", label, f"joints ({len(inputs)} frames, warm-started)", worst,
                                                   MM_LIMIT, "mm"))
            timings(label, fitter, device)
        except Exception as exc:  # noqa: BLE001
            rec.add("correctness", {"engine": "fit", "variant": label, "error": _first_line(exc)})
            if label == "eager" and device != "cpu":
                attempts.append(("eager, pose prior moved to the device by the check",
                                 _fitter(model, prior_device=device)))


def part_tensorrt(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """Whether Torch-TensorRT imports (its engines, where it does, are variants of the other parts)."""
    import torch

    ok, what = tensorrt_status()
    rec.set("tensorrt", {"importable": ok, "version" if ok else "reason": what,
                         "cuda": torch.cuda.is_available()})


class FramesSource:
    """Frames in memory as a pipeline source: ``count`` frames looping over ``images``,
    numbered at ``fps``; ``live`` plays them in real time (a camera at ``fps``)."""

    def __init__(self, images: list, count: int, fps: float = 30.0, live: bool = False):
        from stream.sources import SourceStats

        self.images, self.count, self.fps, self.live = images, count, fps, live
        self.height, self.width = images[0].shape[:2]
        self.frame_count = count
        self.name = "gpu-check frames"
        self.stats = SourceStats()
        self._stop = False

    def frames(self):
        from stream.frames import Frame

        start = time.perf_counter()
        for index in range(self.count):
            if self._stop:
                return
            if self.live:
                delay = start + index / self.fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self.stats.frames += 1
            yield Frame(index, index / self.fps, time.monotonic_ns(), self.images[index % len(self.images)])

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        self.stop()

    def describe(self) -> dict:
        return {"name": self.name, "width": self.width, "height": self.height, "fps": self.fps}


def _run_pipeline(images: list, count: int, device: str, max_people: int, live: bool,
                  seed_rois: list | None = None) -> tuple[dict, str]:
    """The product's engine stages (stream.compose.engine_stages) on frames in memory. Tried
    with everything on ``device`` first; if that fails, again with the body model and the
    lifter on the CPU (the pose networks on ``device``). Returns (summary, placement).

    seed_rois: regions (cx, cy, size, rotation) the pose estimator starts out tracking (the
    detector, made for one person, does not find ten small ones; tracked regions need no detector)."""
    import numpy as np
    import torch

    from stream.compose import Engines, engine_stages, engine_threads, load_body_model, load_lifter
    from stream.config import Config
    from stream.frames import Camera
    from stream.pipeline import LIVE, OFFLINE, Pipeline

    config = Config(device=device, max_people=max_people, backend=PIPELINE_BACKEND)
    torch.set_num_threads(engine_threads(config.threads))
    placements = [("all engines on " + device, config)]
    if device != "cpu":
        placements.append((f"pose on {device}; lifter, fit and body on cpu (the check's workaround)",
                           config.replace(device="cpu")))
    errors = []
    for placement, engines_config in placements:
        try:
            body = load_body_model(engines_config)
            engines = Engines(body, load_lifter(engines_config, body))
            stages = engine_stages(config, engines)
            if seed_rois:
                _seed_pose_stage(stages[0], seed_rois)
            people = []
            pipeline = Pipeline(FramesSource(images, count, live=live), stages,
                                policy=LIVE if live else OFFLINE, camera=Camera(),
                                on_result=lambda packet: people.append(len(packet.people)))
            pipeline.run()
            summary = pipeline.stats.summary()
            summary["people_per_frame"] = float(np.mean(people)) if people else 0.0
            summary["errors_before"] = errors
            return summary, placement
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{placement}: {_first_line(exc)}")
    raise RuntimeError("; ".join(errors))


def _seed_pose_stage(stage, rois: list) -> None:
    """Make the pose stage's estimator start out tracking ``rois`` once it has opened."""
    from engines.pose import geometry as geo
    from engines.pose.estimator import _Track

    opened = stage.open

    def open_and_seed(context):
        opened(context)
        stage.estimator.tracked = [_Track(geo.Roi(*roi)) for roi in rois]

    stage.open = open_and_seed


def part_offline(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """The whole pipeline offline: 1 person (the sample clip) and 10 people (its frames, half
    size, tiled 5 x 2; the pose stage starts out tracking the ten copies of the person)."""
    frames, people = reference_observations(frame_count(quick))
    roi = people[0][0]["roi"] if people and people[0] else None
    clip, _ = sample_frames(4 if quick else 65)
    cases = [("1 person (sample clip)", clip, 1, len(clip) if quick else 2 * len(clip), None)]
    if roi is None:
        rec.add("offline", {"case": "10 people", "error": "the CPU reference found nobody in the first frame"})
    else:
        height, width = clip[0].shape[0] // 2, clip[0].shape[1] // 2
        seeds = [(roi[0] / 2 + column * width, roi[1] / 2 + row * height, roi[2] / 2, roi[3])
                 for row in range(2) for column in range(5)]
        tiles = tiled(clip[: 2 if quick else 20])
        cases.append(("10 people (frames tiled 5 x 2)", tiles, 10, 2 if quick else 40, seeds))
    for label, images, max_people, count, seeds in cases:
        try:
            summary, placement = _run_pipeline(images, count, device, max_people, live=False, seed_rois=seeds)
            rec.add("offline", {"case": label, "frames": count, "size": f"{images[0].shape[1]}x{images[0].shape[0]}",
                                "placement": placement, "fps": summary["throughput_fps"],
                                "people_per_frame": summary["people_per_frame"],
                                "stages_p50_ms": {k: v["p50_ms"] for k, v in summary["stages"].items()},
                                "errors_before": summary["errors_before"]})
        except Exception as exc:  # noqa: BLE001
            rec.add("offline", {"case": label, "error": _first_line(exc)})


def part_live(rec: Recorder, device: str, quick: bool, repeats: int) -> None:
    """Live at 30 fps: the sample clip looped to 300 frames (quick: 30), played in real time."""
    frames, _ = sample_frames(65)
    count = 30 if quick else 300
    try:
        summary, placement = _run_pipeline(frames, count, device, 4, live=True)
        rec.set("live", {"frames_in": summary["frames_in"], "frames_out": summary["frames_out"],
                         "dropped_at_source": summary["dropped_at_source"], "placement": placement,
                         "e2e_p50_ms": summary["e2e_p50_ms"], "e2e_p95_ms": summary["e2e_p95_ms"],
                         "e2e_max_ms": summary["e2e_max_ms"], "max_degrade_level": summary["max_degrade_level"],
                         "p95_within_two_frame_intervals": bool(summary["e2e_p95_ms"] <= 2000 / 30),
                         "errors_before": summary["errors_before"]})
    except Exception as exc:  # noqa: BLE001
        rec.set("live", {"error": _first_line(exc)})


PART_FUNCTIONS = {"pose": part_pose, "lift": part_lift, "body": part_body, "fit": part_fit,
                  "tensorrt": part_tensorrt, "offline": part_offline, "live": part_live}


# ---------------------------------------------------------------------------------------------
# The parent: runs the parts with time limits, writes the report after each


def machine_description(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def run_parts(names: list[str], args, limit_s: float, folder: Path) -> dict[str, dict]:
    """Parts one after another in one child process with a time limit; per part its recorded
    results, status and seconds. A part whose results file has no status was cut off."""
    command = [sys.executable, "-m", "meshstream_tools.gpu_check", "--part", ",".join(names), "--work-dir",
               str(folder), "--device", args.device, "--repeats", str(args.repeats), "--pipeline-backend",
               args.pipeline_backend] + (["--quick"] if args.quick else [])
    log_file = folder / f"{names[0]}.log"
    with open(log_file, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=limit_s)
            ending = None if code == 0 else f"the process failed (exit code {code})"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            ending = f"stopped at the time limit ({limit_s:.0f} s); figures up to then kept"
    if ending and ending.startswith("the process failed"):
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        ending += ": " + " / ".join(tail)[-400:]
    results = {}
    for name in names:
        try:
            data = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            data = {"status": "not reached: " + (ending or "no results written")}
        if "status" not in data:
            data["status"] = ending or "ended without a status"
        results[name] = data
    return results


def run_child(names: list[str], device: str, quick: bool, repeats: int) -> None:
    """The child's side: each part in turn, its results in WORK_DIR/<part>.json; a part's
    exception is its status, and the next part runs."""
    import torch

    if device == "cpu":
        # The engines' own choice on a CPU (engines.backends.intra_op_threads): one thread per
        # engine; on a busy machine more threads mostly wait for each other.
        torch.set_num_threads(1)
    for name in names:
        torch.manual_seed(0)
        recorder = Recorder(WORK_DIR / f"{name}.json")
        started = time.perf_counter()
        try:
            PART_FUNCTIONS[name](recorder, device, quick, repeats)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - reported; the next part runs
            status = f"failed: {_first_line(exc)}"
        recorder.data["seconds"] = time.perf_counter() - started
        recorder.set("status", status)


def merge(parts: dict) -> dict:
    merged: dict = {"correctness": [], "timings": [], "notes": [], "body": [], "offline": []}
    for data in parts.values():
        for key, value in data.items():
            if key in ("status", "seconds"):
                continue
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged


def _ms(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_report(result: dict) -> str:
    m = result["machine"]
    merged = result["merged"]
    lines = ["# meshstream GPU check", "",
             f"{m['date_utc']} UTC; device {m['device']}" + (f" ({m['gpu']}, CUDA {m['cuda']})" if "gpu" in m else "")
             + f"; torch {m['torch']}; Python {m['python']}; {m['cpu_count']} CPUs; "
             f"{'quick' if result['quick'] else 'full'} run, {result['seconds']:.0f} s in all "
             f"(limit {result['budget_s']:.0f} s).", ""]
    lines += [f"- {note}" for note in merged.get("notes", [])]
    # 1.
    lines += ["", f"## 1. Correctness on {m['device']} against the CPU reference", "",
              f"CPU reference: eager torch, float32. Limits: {PIXEL_LIMIT:g} px, {MM_LIMIT:g} mm.", "",
              "| engine | variant | what | max difference | limit | within | note |", "|---|---|---|---|---|---|---|"]
    for row in merged["correctness"]:
        if "error" in row:
            lines.append(f"| {row['engine']} | {row['variant']} | failed: {row['error']} | | | no | |")
        else:
            value = row["max_diff"]
            shown = "inf (outputs differ in count)" if value == float("inf") else f"{value:.4g} {row['unit']}"
            lines.append(f"| {row['engine']} | {row['variant']} | {row['metric']} | {shown} | {row['limit']:g} "
                         f"{row['unit']} | {'yes' if row['pass'] else 'NO'} | {row.get('note', '')} |")
    # 2.
    lines += ["", "## 2. Per-stage timings", "",
              f"Median ms of {result['repeats']} calls after warm-up, synchronised with the device, inputs handed "
              "over as the pipeline hands them (host arrays). Batch: images for BlazePose, people otherwise."
              + (" CUDA graphs: each network's eager module captured with torch.cuda.CUDAGraph, one graph per "
                 "input shape; fp16: module and inputs in half precision. n/a: does not apply."
                 if m["device"].startswith("cuda") else ""), ""]
    labels: list[str] = []
    for row in merged["timings"]:
        if row["variant"] not in labels:
            labels.append(row["variant"])
    lines += ["| stage | batch | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    keys: list[tuple] = []
    for row in merged["timings"]:
        if (row["stage"], row["batch"]) not in keys:
            keys.append((row["stage"], row["batch"]))
    for stage, batch in keys:
        cells = []
        for label in labels:
            found = [r for r in merged["timings"] if (r["stage"], r["batch"], r["variant"]) == (stage, batch, label)]
            if not found:
                cells.append("n/a")
            elif "error" in found[0]:
                cells.append(f"failed: {found[0]['error'][:80]}")
            else:
                cells.append(_ms(found[0]["median_ms"]))
        lines.append(f"| {stage} | {batch} | " + " | ".join(cells) + " |")
    # 3.
    trt = merged.get("tensorrt", {})
    lines += ["", "## 3. Torch-TensorRT", ""]
    if trt.get("importable"):
        lines.append(f"Torch-TensorRT {trt['version']} imports; its engines (fp16) are the \"TensorRT fp16\" rows "
                     "above.")
    else:
        lines.append(f"Torch-TensorRT: {trt.get('reason', 'not checked (the part did not run)')}.")
    # 4.
    lines += ["", "## 4. Offline fps (the whole pipeline: pose, track, lift, smooth, body)", "",
              f"Pose and lifter back end: {result.get('pipeline_backend', 'eager')}. Ten people: the clip's frames "
              "at half size tiled 5 x 2, the pose stage starting out tracking the ten copies (BlazePose's detector "
              "does not find people that small).", "",
              "| case | frame size | frames | fps | people per frame | engines | stage p50 ms |",
              "|---|---|---|---|---|---|---|"]
    for row in merged.get("offline", []):
        if "error" in row:
            lines.append(f"| {row['case']} | | | failed: {row['error']} | | | |")
            continue
        stages = ", ".join(f"{k} {v:.1f}" for k, v in row["stages_p50_ms"].items())
        lines.append(f"| {row['case']} | {row['size']} | {row['frames']} | {row['fps']:.1f} | "
                     f"{row['people_per_frame']:.1f} | {row['placement']} | {stages} |")
        for error in row.get("errors_before", []):
            lines.append(f"|  | | | | | first tried: {error} | |")
    # 5.
    live = merged.get("live", {})
    lines += ["", "## 5. Live at 30 fps", ""]
    if not live:
        lines.append("not measured (the part did not run)")
    elif "error" in live:
        lines.append(f"failed: {live['error']}")
    else:
        lines.append(f"End-to-end p95 {live['e2e_p95_ms']:.1f} ms (p50 {live['e2e_p50_ms']:.1f}, max "
                     f"{live['e2e_max_ms']:.1f}); within two frame intervals (66.7 ms): "
                     f"{'yes' if live['p95_within_two_frame_intervals'] else 'no'}; {live['frames_out']} of "
                     f"{live['frames_in']} frames out, {live['dropped_at_source']} dropped at the source, degrade "
                     f"level max {live['max_degrade_level']}; engines: {live['placement']}.")
        for error in live.get("errors_before", []):
            lines.append(f"First tried: {error}.")
    # 6.
    lines += ["", "## 6. Body layer at batch 1 and 64", "",
              "Open model (13,718 vertices), same betas call after call; median ms.", "",
              "| variant | device | batch 1 | batch 64 |", "|---|---|---|---|"]
    seen: list[tuple] = []
    for row in merged.get("body", []):
        if (row["variant"], row["device"]) not in seen:
            seen.append((row["variant"], row["device"]))
    for variant, where in seen:
        cells = []
        for batch in (1, 64):
            found = [r for r in merged["body"] if (r["variant"], r["device"], r["batch"]) == (variant, where, batch)]
            cells.append("-" if not found else (f"failed: {found[0]['error'][:80]}" if "error" in found[0]
                                                else _ms(found[0]["median_ms"])))
        lines.append(f"| {variant} | {where} | {cells[0]} | {cells[1]} |")
    # Status.
    lines += ["", "## Parts", "", "| part | status | seconds |", "|---|---|---|"]
    for name, data in result["parts"].items():
        lines.append(f"| {name} | {data.get('status', 'not run')} | {data.get('seconds', 0):.0f} |")
    return "\n".join(lines) + "\n"


def write_report(result: dict, out: Path) -> None:
    result["merged"] = merge(result["parts"])
    for path, text in ((out, format_report(result)),
                       (out.with_suffix(".json"), json.dumps(result, default=_jsonable, indent=1))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    global WARMUP_CALLS, WORK_DIR, PIPELINE_BACKEND
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--out", default="gpu_check.md", help="the report (Markdown); the JSON goes beside it")
    parser.add_argument("--quick", action="store_true",
                        help="one frame, few calls, no torch.compile on the CPU, every part in one child process")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 30; quick 3)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"time for the whole run, s (default {FULL_BUDGET_S:.0f}; quick {QUICK_BUDGET_S:.0f})")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts (default all: {','.join(PARTS)})")
    parser.add_argument("--pipeline-backend", default=None, choices=("eager", "compile", "tensorrt", "auto"),
                        help="pose and lifter back end of the offline and live pipeline runs (default: eager on "
                             "CUDA, so that no compilation counts in the fps; auto on the CPU)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 30)
    args.pipeline_backend = args.pipeline_backend or ("auto" if args.device == "cpu" else "eager")
    PIPELINE_BACKEND = args.pipeline_backend
    if args.quick:
        WARMUP_CALLS = 1
    if args.part:
        WORK_DIR = Path(args.work_dir)
        run_child(args.part.split(","), args.device, args.quick, args.repeats)
        return 0
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {','.join(PARTS)}")
    out = Path(args.out)
    if not out.parent.is_dir():
        parser.error(f"folder {out.parent} does not exist")
    if out.suffix.lower() != ".md":
        parser.error(f"--out must name a Markdown file (.md), got {out}; the JSON is written beside it")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but CUDA is not available here (torch {torch.__version__}); "
              "run with --device cpu, or on a machine with CUDA", file=sys.stderr)
        return 2
    budget = args.budget_s or (QUICK_BUDGET_S if args.quick else FULL_BUDGET_S)
    result = {"machine": machine_description(args.device), "quick": args.quick, "repeats": args.repeats,
              "pipeline_backend": args.pipeline_backend, "budget_s": budget, "seconds": 0.0, "parts": {}}
    # A full run gives each part a process and a time limit of its own; a quick run (the CPU
    # test) runs them all in one process, which saves a torch start-up per part.
    groups = [wanted] if args.quick else [[name] for name in wanted]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meshstream-gpu-check-") as folder:
        for group in groups:
            left = budget - (time.perf_counter() - started)
            limit = min(sum(PARTS[name][1 if args.quick else 0] for name in group), left)
            if limit < 5:
                result["parts"].update({name: {"status": "skipped: the run's time budget is spent"} for name in group})
            else:
                print(f"gpu_check: {', '.join(group)} (up to {limit:.0f} s)", file=sys.stderr, flush=True)
                result["parts"].update(run_parts(group, args, limit, Path(folder)))
                for name in group:
                    print(f"gpu_check: {name}: {result['parts'][name]['status']} "
                          f"({result['parts'][name].get('seconds', 0):.0f} s)", file=sys.stderr, flush=True)
            result["seconds"] = time.perf_counter() - started
            write_report(result, out)
    print(out.read_text())
    print(f"gpu_check: report {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
