"""The per-person timing benchmark of the keypoints-to-bodies chain (engines/lift/bench.py)."""

import json
import math
import subprocess
import sys

import torch

from engines.backends import intra_op_threads
from engines.lift import bench
from tests.conftest import ROOT


def test_benchmark_reports_every_cost_per_person():
    result = bench.benchmark(people=(1, 2), frames=3, iterations=2, smoothing=("one-euro",))
    assert set(result["people"]) == {1, 2}
    for row in result["people"].values():
        for key in ("lifter_ms", "fit_frame_ms", "fit_cold_ms", "skinning_ms", "total_ms"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["smoothing_ms"]["one-euro"] > 0
        assert row["fit_cold_ms"] > row["fit_iteration_ms"]
    table = bench.format_result(result)
    assert "\n| 1 | " in table and "\n| 2 | " in table and "fit per iteration" in table


def test_command_line_prints_json_and_rejects_bad_people():
    run = subprocess.run([sys.executable, "-m", "engines.lift.bench", "--people", "1", "--frames", "2",
                          "--iterations", "2", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "1" in json.loads(run.stdout)["people"]
    bad = subprocess.run([sys.executable, "-m", "engines.lift.bench", "--people", "one"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--people" in bad.stderr


def test_intra_op_threads_sets_and_restores_the_count():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before
