"""tools/run_benchmark.py: the standing benchmark's one command runs the real pipeline on rendered
clips and writes a table whose figures come from `meshstream eval`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import HELD_OUT_MOTIONS, MOCAP_ENV, ROOT

pytest.importorskip("anny", reason="the synthetic benchmark needs the anny package (pip install anny==0.6.2)")


def test_benchmark_command_scores_a_rendered_clip_and_writes_the_table(tmp_path):
    data = tmp_path / "data"
    made = subprocess.run([sys.executable, "tools/make_synthetic.py", "--out", str(data), "--seed", "1", "--clips", "1",
                           "--frames", "6", "--size", "480x360", "--supersample", "1", "--max-people", "1",
                           "--motions", str(HELD_OUT_MOTIONS)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=MOCAP_ENV)
    assert made.returncode == 0, made.stderr[-2000:]
    table = tmp_path / "table.md"
    done = subprocess.run([sys.executable, "tools/run_benchmark.py", "--out", str(tmp_path), "--clips", "1",
                           "--only", "lifter alone", "--markdown", str(table)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "benchmark.json").read_text())["configurations"]["lifter alone"]
    overall = result["overall"]
    assert overall["gt_instances"] >= 1
    assert result["clips"]["clip_000"]["frames"] == 6
    # The table's row is eval's figures, rounded.
    row = [line for line in table.read_text().splitlines() if line.startswith("| lifter alone |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert overall["matched"] >= 1 and math.isfinite(overall["mpjpe_mm"])  # the person was found and scored
    assert cells[4] == f"{overall['mpjpe_mm']:.1f}"
    assert cells[1] == f"{100 * overall['detection_rate']:.1f}"
    # Results were written for the clip by the real `process`, with vertices (PVE needs them).
    with np.load(next((tmp_path / "runs").glob("*/clip_000.npz"))) as results:
        assert "vertices" in results.files
