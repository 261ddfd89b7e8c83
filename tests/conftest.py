"""Shared test set-up: paths, markers and the GPU skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# Seven CMU motion capture clips (three shortened), laid out like the full collection:
# tests/data/mocap/README.md. Tests read them with root=MOCAP and need nothing outside the repository.
MOCAP = DATA / "mocap"
# The environment for a tool run in a subprocess to read those clips (meshstream_tools.mocap.mocap_root).
MOCAP_ENV = {**os.environ, "MESHSTREAM_MOCAP": str(MOCAP)}
HELD_OUT_MOTIONS = MOCAP / "held_out_motions.txt"   # for tools/make_synthetic.py --motions
TRAINING_MOTIONS = MOCAP / "training_motions.txt"   # for tools/make_lifter_renders.py --motions


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing entirely
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
