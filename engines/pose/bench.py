"""Per-frame detector and landmark timings for each back end, against LiteRT in the same run.

    from engines.pose.bench import benchmark
    result = benchmark(backends=("litert", "eager"), repeats=20)

Inputs are real: pose.jpg letterboxed for the detector and its landmark crop (from a LiteRT
detection) for the landmark network, so every back end sees the same tensors.
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engines.backends import BackendUnavailableError, create_engine
from engines.pose import geometry as geo
from engines.pose.networks import DETECTOR, LANDMARKS, network_spec

log = logging.getLogger("meshstream.pose.bench")

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "tests" / "data" / "blazepose" / "pose.jpg"


def _inputs(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    tensor, _ = geo.letterbox(image)
    height, width = image.shape[:2]
    # A centred upright region covering the image: a realistic crop without running a detector.
    roi = geo.Roi(width / 2, height / 2, float(max(width, height)), 0.0)
    return torch.from_numpy(tensor[None]), torch.from_numpy(geo.crop_roi(image, roi)[None])


def _time(engine, x: torch.Tensor, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        engine(x)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine(x)
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples), "min_ms": min(samples)}


def benchmark(backends=("litert", "eager", "compile"), device: str = "cpu", repeats: int = 20, warmup: int = 3,
              image: np.ndarray | None = None, people: int = 1, fp16: bool = False) -> dict:
    """Time the detector (batch 1) and the landmark network (batch ``people``) per back end.

    Returns ``{"device", "threads", "machine", "results": {backend: {"detector": {...ms},
    "landmarks": {...ms}, "frame_ms", "vs_litert"} or {"error": str}}}``; ``frame_ms`` is one
    detector plus one landmark call, ``vs_litert`` the LiteRT frame time divided by this one
    (above 1: faster than LiteRT).
    """
    if image is None:
        import cv2

        image = cv2.cvtColor(cv2.imread(str(DEFAULT_IMAGE)), cv2.COLOR_BGR2RGB)
    det_input, lm_input = _inputs(image)
    lm_input = lm_input.repeat(people, 1, 1, 1)
    specs = {DETECTOR: network_spec(DETECTOR), LANDMARKS: network_spec(LANDMARKS)}
    results: dict[str, dict] = {}
    order = list(backends)
    if "litert" in order and device == "cpu":
        order.remove("litert")
        order.insert(0, "litert")
    for backend in order:
        try:
            entry = {}
            for name, x in ((DETECTOR, det_input), (LANDMARKS, lm_input)):
                started = time.perf_counter()
                engine = create_engine(specs[name], backend, device, fp16=fp16, max_batch=max(people, 1), strict=True)
                engine(x)  # first call: compiles where the back end compiles lazily
                entry[f"{'detector' if name == DETECTOR else 'landmarks'}_setup_s"] = time.perf_counter() - started
                key = "detector" if name == DETECTOR else "landmarks"
                entry[key] = _time(engine, x, repeats, warmup)
            entry["frame_ms"] = entry["detector"]["median_ms"] + entry["landmarks"]["median_ms"]
            results[backend] = entry
        except (BackendUnavailableError, RuntimeError) as exc:
            log.warning("benchmark: %s unavailable: %s", backend, exc)
            results[backend] = {"error": str(exc).splitlines()[0]}
    if "litert" in results and "frame_ms" in results["litert"]:
        for entry in results.values():
            if "frame_ms" in entry:
                entry["vs_litert"] = results["litert"]["frame_ms"] / entry["frame_ms"]
    return {"device": device, "threads": torch.get_num_threads(), "people": people,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
            "results": results}


def format_table(result: dict) -> str:
    """The benchmark as a Markdown table."""
    lines = [f"device {result['device']}, {result['threads']} threads, {result['people']} person(s), "
             f"torch {result['torch']}",
             "| back end | detector ms | landmarks ms | frame ms | LiteRT time / this |",
             "| --- | --- | --- | --- | --- |"]
    for name, entry in result["results"].items():
        if "error" in entry:
            lines.append(f"| {name} | unavailable: {entry['error']} | | | |")
            continue
        lines.append(f"| {name} | {entry['detector']['median_ms']:.1f} | {entry['landmarks']['median_ms']:.1f} | "
                     f"{entry['frame_ms']:.1f} | {entry.get('vs_litert', float('nan')):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="litert,eager,compile")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(format_table(benchmark(args.backends.split(","), args.device, args.repeats, people=args.people)))
