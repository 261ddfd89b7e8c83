"""The skinning benchmark runs both models side by side on the same parameters (no timing asserted)."""

from __future__ import annotations

import pytest

pytest.importorskip("smplx")


def test_benchmark_compares_with_smplx_on_identical_parameters():
    from meshstream_tools.body_bench import benchmark, format_table

    results = benchmark(batch_sizes=(1, 3), repeats=2)
    for batch in (1, 3):
        row = results["batches"][batch]
        assert row["max_abs_diff_vertices"] < 1e-5 and row["max_abs_diff_joints"] < 1e-5
        assert row["smplx_ms"] > 0 and row["ours_new_shape_ms"] > 0 and row["ours_tracked_shape_ms"] > 0
    assert "| 3 |" in format_table(results)
