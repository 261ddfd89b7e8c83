"""The GPU check's CPU half (tools/meshstream_tools/gpu_check.py, `--device cpu --quick`): every
part runs on real frames of the sample clip and the report has each section with figures, so
that the script is ready whenever a machine with CUDA is lent (docs/benchmarks.md, "GPU check")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"


def run_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tools")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run([sys.executable, "-m", "meshstream_tools.gpu_check", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def section(report: str, heading: str) -> str:
    start = report.index(heading)
    end = report.find("\n## ", start + 1)
    return report[start:end if end > 0 else len(report)]


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell}")]


@pytest.mark.slow
def test_cpu_half_writes_every_section_with_figures(tmp_path):
    out = tmp_path / "report.md"
    done = run_check("--device", "cpu", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = out.read_text()
    # 1. Correctness: each engine checked, and on the CPU the eager engines are the reference itself.
    correctness = section(report, "## 1. Correctness on cpu")
    for engine in ("pose", "lifter", "body layer", "fit"):
        rows = [r for r in table_rows(correctness, engine) if r[1] == "eager"]
        assert rows, f"no eager row for {engine}:\n{correctness}"
        for row in rows:
            assert re.fullmatch(rf"{NUMBER} (px|mm)", row[3]), row
            assert row[5] == "yes", row
    # 2. Timings: a median for every stage.
    timings = section(report, "## 2. Per-stage timings")
    for stage in ("pose detector", "pose landmarks", "lifter", "body layer", "fit per frame"):
        rows = table_rows(timings, stage)
        assert rows and re.fullmatch(NUMBER, rows[0][2]), f"{stage}:\n{timings}"
    # 3. TensorRT: said either way.
    assert re.search(r"Torch-TensorRT(: not installed| \S+ imports)", section(report, "## 3. Torch-TensorRT"))
    # 4. Offline fps, one person and ten (the pose stage really tracks ten people).
    offline = section(report, "## 4. Offline fps")
    one, ten = table_rows(offline, "1 person")[0], table_rows(offline, "10 people")[0]
    assert re.fullmatch(NUMBER, one[3]) and float(one[3]) > 0 and float(one[4]) == 1.0, one
    assert re.fullmatch(NUMBER, ten[3]) and float(ten[3]) > 0 and float(ten[4]) == 10.0, ten
    # 5. Live p95; 6. the body layer at batch 1 and 64.
    assert re.search(rf"End-to-end p95 {NUMBER} ms", section(report, "## 5. Live at 30 fps"))
    body = table_rows(section(report, "## 6. Body layer"), "eager")
    assert body and all(re.fullmatch(NUMBER, cell) for cell in body[0][2:4]), body
    # Every part finished, and the JSON beside the report holds the same figures.
    parts = ("tensorrt", "pose", "lift", "fit", "body", "offline", "live")
    statuses = {row[0]: row[1] for row in table_rows(section(report, "## Parts"), "") if row[0] in parts}
    assert statuses == dict.fromkeys(parts, "ok"), section(report, "## Parts")
    data = json.loads(out.with_suffix(".json").read_text())
    assert {p: v["status"] for p, v in data["parts"].items()} == dict.fromkeys(parts, "ok")
    assert data["merged"]["live"]["e2e_p95_ms"] > 0


def test_a_part_stopped_at_the_time_limit_still_leaves_a_report(tmp_path):
    out = tmp_path / "report.md"
    # Not --quick: the full offline part (130 frames of one person, 40 of ten) outlasts 6 s on any CPU.
    done = run_check("--device", "cpu", "--parts", "offline", "--budget-s", "6", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    parts = section(out.read_text(), "## Parts")
    assert re.search(r"\| offline \| (stopped at the time limit|not reached)", parts), parts
    status = json.loads(out.with_suffix(".json").read_text())["parts"]["offline"]["status"]
    assert status.startswith(("stopped", "not reached")), status


def test_cuda_requested_without_cuda_is_a_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_check("--device", "cuda", "--out", str(tmp_path / "report.md"), timeout=120)
    assert done.returncode == 2
    assert "CUDA is not available" in done.stderr and not (tmp_path / "report.md").exists()
