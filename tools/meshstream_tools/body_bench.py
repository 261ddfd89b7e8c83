"""Benchmark: meshstream's skinning path against ``smplx.SMPL`` on the same SMPL-format file.

    python -m meshstream_tools.body_bench [--repeats 50]

Both models load one generated SMPL-format file (random but well formed, 6890 vertices, pose
correctives included; see :mod:`meshstream_tools.random_files`), get the same float32 parameters,
and run side by side in one process under ``torch.no_grad``. Reported per batch size: median
forward time of smplx, of meshstream with a fresh shape every call ("new shape") and with the
same betas as the previous call ("tracked shape", the streaming case the shape cache serves),
the speed-ups, and the largest absolute difference of vertices and joints. smplx is imported
only here (it is non-commercial code, in the ``smpl`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _interleaved_medians_ms(calls, repeats: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Median wall time and median CPU time (this process, all threads) of each call, in ms.

    The calls take turns, so that load from other processes on a shared machine falls on all
    of them alike; the CPU time is the steadier figure there (it leaves out time the process
    spent descheduled)."""
    for _ in range(warmup):
        for call in calls:
            call()
    wall = [[] for _ in calls]
    cpu = [[] for _ in calls]
    for _ in range(repeats):
        for index, call in enumerate(calls):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            call()
            wall[index].append(time.perf_counter() - start_wall)
            cpu[index].append(time.process_time() - start_cpu)
    return ([1000.0 * statistics.median(w) for w in wall], [1000.0 * statistics.median(c) for c in cpu])


def benchmark(batch_sizes=(1, 64), repeats: int = 50, seed: int = 0) -> dict:
    """Forward times (ms, median of ``repeats``) and max abs differences (m) per batch size.

    Returns {"threads": int, "torch": str, "batches": {B: {"smplx_ms", "ours_new_shape_ms",
    "ours_tracked_shape_ms", "speedup_new_shape", "speedup_tracked_shape", the same three times
    as CPU time ("*_cpu_ms"), "max_abs_diff_vertices", "max_abs_diff_joints"}}}.
    """
    import smplx

    from engines.body import load_body_model
    from meshstream_tools.random_files import smpl_arrays, write_plain_pickle

    with tempfile.TemporaryDirectory() as folder:
        path = write_plain_pickle(smpl_arrays(seed=seed), Path(folder) / "SMPL_NEUTRAL.pkl")
        reference = smplx.SMPL(model_path=str(path), dtype=torch.float32)
        ours = load_body_model(path, dtype=torch.float32)
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "batches": {}}
    generator = torch.Generator().manual_seed(seed)
    for batch in batch_sizes:
        global_orient = torch.randn(batch, 3, generator=generator)
        body_pose = 0.5 * torch.randn(batch, 23, 3, generator=generator)
        betas = torch.randn(batch, 10, generator=generator)
        transl = torch.randn(batch, 3, generator=generator)
        flat_pose = body_pose.reshape(batch, -1)

        def run_reference():
            return reference(global_orient=global_orient, body_pose=flat_pose, betas=betas, transl=transl)

        def run_new_shape():
            ours.clear_cache()
            return ours(global_orient, body_pose, betas, transl)

        def run_tracked_shape():
            return ours(global_orient, body_pose, betas, transl)

        with torch.no_grad():
            theirs, mine = run_reference(), run_new_shape()
            (smplx_ms, new_ms, tracked_ms), (smplx_cpu, new_cpu, tracked_cpu) = _interleaved_medians_ms(
                [run_reference, run_new_shape, run_tracked_shape], repeats)
        results["batches"][batch] = {
            "smplx_ms": round(smplx_ms, 3),
            "ours_new_shape_ms": round(new_ms, 3),
            "ours_tracked_shape_ms": round(tracked_ms, 3),
            "speedup_new_shape": round(smplx_ms / new_ms, 2),
            "speedup_tracked_shape": round(smplx_ms / tracked_ms, 2),
            "smplx_cpu_ms": round(smplx_cpu, 3),
            "ours_new_shape_cpu_ms": round(new_cpu, 3),
            "ours_tracked_shape_cpu_ms": round(tracked_cpu, 3),
            "max_abs_diff_vertices": float((mine.vertices - theirs.vertices).abs().max()),
            "max_abs_diff_joints": float((mine.joints - theirs.joints[:, :24]).abs().max()),
        }
    return results


def format_table(results: dict) -> str:
    lines = [f"torch {results['torch']}, {results['threads']} CPU thread(s), float32; median wall ms (CPU ms)",
             "| batch | smplx.SMPL | meshstream, new shape | meshstream, tracked shape | speed-up new / tracked (CPU) | max abs diff verts / joints (m) |",
             "|---|---|---|---|---|---|"]
    for batch, row in results["batches"].items():
        cpu_new = row["smplx_cpu_ms"] / row["ours_new_shape_cpu_ms"]
        cpu_tracked = row["smplx_cpu_ms"] / row["ours_tracked_shape_cpu_ms"]
        lines.append(f"| {batch} | {row['smplx_ms']:.2f} ({row['smplx_cpu_ms']:.2f}) | {row['ours_new_shape_ms']:.2f} "
                     f"({row['ours_new_shape_cpu_ms']:.2f}) | {row['ours_tracked_shape_ms']:.2f} ({row['ours_tracked_shape_cpu_ms']:.2f}) | "
                     f"{row['speedup_new_shape']:.1f}x / {row['speedup_tracked_shape']:.1f}x ({cpu_new:.1f}x / {cpu_tracked:.1f}x) | "
                     f"{row['max_abs_diff_vertices']:.1e} / {row['max_abs_diff_joints']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="skinning speed: meshstream vs smplx.SMPL")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = benchmark(tuple(args.batch_sizes), args.repeats)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
