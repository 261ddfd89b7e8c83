"""The standing accuracy benchmark: rendered clips with exact ground truth, the whole pipeline
(`meshstream process`) in several configurations, scored by `meshstream eval`.

One command makes docs/accuracy.md's table:

    python tools/run_benchmark.py --out out/benchmark --markdown out/benchmark/table.md

Steps:
1. Data: the standing set of tools/make_synthetic.py (seed 0, 6 clips of 60 frames, held-out
   motions) in OUT/data, made once and reused when it is already there.
2. Runs: every configuration (the stage ablations of issue 5: lifter alone, lifter +
   refinement, + smoothing, and the fit without the lifter; then the fit trusting the lifter's
   3D pose more, ``--fit-anchor 1000``) runs `meshstream process` as a real
   subprocess on every clip, with the clip's true horizontal field of view (a calibrated camera;
   from the ground truth's intrinsics) and vertices stored, into OUT/runs/<configuration>/.
3. Scores: `meshstream eval OUT/runs/<configuration> OUT/data --json` per configuration.
4. Table: one row per configuration (overall figures, pooled over clips), printed and written as
   markdown with ``--markdown``; every figure is also in OUT/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from meshstream_tools import REPOSITORY as ROOT

# name -> extra `meshstream process` arguments. Order: the rows of the table.
CONFIGURATIONS: dict[str, list[str]] = {
    "lifter alone": ["--no-refine", "--smoothing", "none"],
    "lifter + refinement": ["--smoothing", "none"],
    "lifter + refinement + smoothing (default)": [],
    "refinement without the lifter": ["--lifter", "off", "--smoothing", "none"],
    "lifter + refinement, --fit-anchor 1000": ["--fit-anchor", "1000", "--smoothing", "none"],
    "lifter + refinement + smoothing, --fit-anchor 1000": ["--fit-anchor", "1000"],
}

COLUMNS = [("detection %", "detection_rate", "pct"), ("FP", "false_positives", "{:d}"),
           ("ID sw.", "id_switches", "{:d}"), ("MPJPE", "mpjpe_mm", "{:.1f}"),
           ("PA-MPJPE", "pa_mpjpe_mm", "{:.1f}"), ("PVE", "pve_mm", "{:.1f}"),
           ("accel", "accel_error_mm", "{:.1f}"), ("2D px", "keypoint_error_px", "{:.1f}")]


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def make_data(data: Path, seed: int, clips: int, frames: int) -> list[Path]:
    """Step 1: the clips (made unless already there). Returns the clip videos."""
    videos = sorted(data.glob("clip_*.mp4"))
    if len(videos) >= clips and all(v.with_suffix(".npz").is_file() for v in videos):
        return videos[:clips]
    print(f"rendering {clips} clips of {frames} frames into {data} ...", flush=True)
    _run([sys.executable, "tools/make_synthetic.py", "--out", str(data), "--seed", str(seed), "--clips", str(clips),
          "--frames", str(frames), "--contact-sheet"], "tools/make_synthetic.py")
    return sorted(data.glob("clip_*.mp4"))[:clips]


def true_fov_deg(ground_truth: Path) -> float:
    """Horizontal field of view (degrees) of a clip's camera, from its ground-truth intrinsics."""
    import numpy as np

    with np.load(ground_truth) as gt:
        intrinsics = np.asarray(gt["intrinsics"], np.float64).reshape(-1, 3, 3)[0]
        width = json.loads(str(gt["meta"]))["width"]
    return math.degrees(2.0 * math.atan(width / 2.0 / intrinsics[0, 0]))


def run_configuration(name: str, extra: list[str], videos: list[Path], runs: Path, data: Path) -> dict:
    """Steps 2-3 for one configuration: process every clip, then eval. Returns eval's JSON."""
    folder = runs / re.sub(r"[^A-Za-z0-9]+", "_", name.replace("+", "plus")).strip("_")
    folder.mkdir(parents=True, exist_ok=True)
    for video in videos:
        fov = true_fov_deg(video.with_suffix(".npz"))
        _run([sys.executable, "-m", "stream", "-q", "process", str(video), "-o", str(folder / f"{video.stem}.npz"),
              "--vertices", "--no-progress", "--fov", f"{fov:.4f}", *extra], f"process {video.name} ({name})")
    # eval scores every ground-truth file in the folder: give it only this set's clips.
    wanted = {v.stem for v in videos}
    if {p.stem for p in data.glob("clip_*.npz")} != wanted:
        raise SystemExit(f"{data} holds other clips than the {len(videos)} chosen; use a fresh --out")
    return json.loads(_run([sys.executable, "-m", "stream", "eval", str(folder), str(data), "--json"], f"eval ({name})"))


def markdown_table(results: dict[str, dict]) -> str:
    """Step 4: one row per configuration."""
    def cell(value, fmt):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        return f"{100 * value:.1f}" if fmt == "pct" else fmt.format(value)

    lines = ["| configuration | " + " | ".join(c[0] for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, result in results.items():
        overall = result["overall"]
        lines.append(f"| {name} | " + " | ".join(cell(overall.get(key), fmt) for _, key, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "benchmark", help="work folder (default out/benchmark)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--only", action="append", choices=list(CONFIGURATIONS), default=None,
                        help="run only this configuration (repeatable)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = args.out / "data"
    videos = make_data(data, args.seed, args.clips, args.frames)
    if not videos:
        raise SystemExit(f"no clips in {data}")
    made_s = time.perf_counter() - start
    results = {}
    for name, extra in CONFIGURATIONS.items():
        if args.only and name not in args.only:
            continue
        began = time.perf_counter()
        results[name] = run_configuration(name, extra, videos, args.out / "runs", data)
        results[name]["seconds"] = round(time.perf_counter() - began, 1)
        overall = results[name]["overall"]
        print(f"{name}: MPJPE {overall.get('mpjpe_mm', float('nan')):.1f} mm, "
              f"detection {100 * overall.get('detection_rate', float('nan')):.1f} % "
              f"({results[name]['seconds']:.0f} s)", flush=True)
    table = markdown_table(results)
    total_s = time.perf_counter() - start
    frames = sum(int(r["frames"]) for r in next(iter(results.values()))["clips"].values()) if results else 0
    footer = (f"\n{len(videos)} clips, {frames} frames; data made in {made_s:.0f} s; total {total_s / 60:.1f} min "
              f"on this machine.")
    print(table + footer)
    (args.out / "benchmark.json").write_text(json.dumps({"configurations": results, "total_s": total_s,
                                                          "data_s": made_s}, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n" + footer.strip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
