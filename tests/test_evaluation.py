"""`meshstream eval`: metrics on cases with known answers, matching and tracking counts, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import torch

from engines.rotations import axis_angle_to_matrix
from stream.evaluation import (Sequence, Settings, acceleration_error, evaluate, evaluate_clip, load_sequence,
                               mpjpe, pa_mpjpe, procrustes_align)

ROOT = Path(__file__).resolve().parents[1]
RNG_SEED = 7


def rotation_matrix(axis_angle) -> np.ndarray:
    return axis_angle_to_matrix(torch.tensor(axis_angle, dtype=torch.float64)).numpy()


def make_clip(frames=12, people=2, vertices=50, seed=RNG_SEED) -> dict:
    """A ground-truth clip: people side by side, joints moving smoothly, keypoints well apart."""
    rng = np.random.default_rng(seed)
    rest = rng.normal(0, 0.3, size=(people, 24, 3))
    rest[:, 0] = 0.0
    mesh = rng.normal(0, 0.3, size=(people, vertices, 3))
    rows = {k: [] for k in ("frame_index", "track_id", "joints", "keypoints2d", "vertices")}
    for f in range(frames):
        for p in range(people):
            pelvis = np.array([1.5 * p - 0.75, 0.0, 4.0 + 0.01 * f])
            wobble = 0.02 * np.sin(0.3 * f + p)
            rows["frame_index"].append(f)
            rows["track_id"].append(p)
            rows["joints"].append(rest[p] * (1 + wobble) + pelvis)
            rows["vertices"].append(mesh[p] * (1 + wobble) + pelvis)
            kp = np.zeros((33, 3))
            kp[:, 0] = 100 + 300 * p + rng.uniform(0, 120, 33)
            kp[:, 1] = rng.uniform(100, 400, 33)
            kp[:, 2] = 1.0
            rows["keypoints2d"].append(kp)
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["pts_s"] = out["frame_index"] / 30.0
    return out


def seq(arrays: dict, name="clip") -> Sequence:
    return Sequence(name, arrays["frame_index"], arrays["track_id"], arrays["joints"], arrays["keypoints2d"],
                    arrays.get("vertices"))


def copy(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def summary(pred, gt, **kw):
    return evaluate_clip(seq(pred), seq(gt), Settings(**kw)).summary()


def test_identical_inputs_score_zero_error_and_full_detection():
    gt = make_clip()
    s = summary(copy(gt), gt)
    for metric in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_error_mm", "keypoint_error_px"):
        assert s[metric] == pytest.approx(0.0, abs=1e-6), metric
    assert s["detection_rate"] == 1.0 and s["false_positives"] == 0 and s["id_switches"] == 0
    assert s["mota"] == 1.0 and s["matched"] == 24


def test_known_global_rotation_gives_known_mpjpe_and_zero_pa_mpjpe():
    gt = make_clip()
    pred = copy(gt)
    angle = np.pi / 2
    rotation = rotation_matrix([0.0, angle, 0.0])
    relative = gt["joints"] - gt["joints"][:, :1]
    pred["joints"] = relative @ rotation.T + gt["joints"][:, :1]
    # Rotating by angle about y moves a point by 2 sin(angle / 2) times its distance to the axis.
    expected = (2 * np.sin(angle / 2) * np.hypot(relative[..., 0], relative[..., 2])).mean() * 1000
    s = summary(pred, gt)
    assert s["mpjpe_mm"] == pytest.approx(expected, rel=1e-5)
    assert s["mpjpe_mm"] > 100
    assert s["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)


def test_known_offset_of_all_joints_but_the_pelvis():
    gt = make_clip()
    pred = copy(gt)
    pred["joints"][:, 1:] += np.array([0.03, 0.0, 0.04])  # 50 mm on 23 of 24 joints
    pred["joints"] += np.array([0.5, -0.2, 1.0])  # a global translation changes nothing
    s = summary(pred, gt)
    assert s["mpjpe_mm"] == pytest.approx(50.0 * 23 / 24, rel=1e-6)
    assert 0 < s["pa_mpjpe_mm"] < s["mpjpe_mm"]


def test_known_scale_gives_known_mpjpe_and_zero_pa_mpjpe():
    gt = make_clip()
    pred = copy(gt)
    relative = gt["joints"] - gt["joints"][:, :1]
    pred["joints"] = 1.1 * relative + gt["joints"][:, :1]
    expected = 0.1 * np.linalg.norm(relative, axis=-1).mean() * 1000
    s = summary(pred, gt)
    assert s["mpjpe_mm"] == pytest.approx(expected, rel=1e-6)
    assert s["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)


def test_procrustes_recovers_a_similarity_transform_but_not_a_reflection():
    rng = np.random.default_rng(1)
    target = rng.normal(size=(3, 24, 3))
    rotation = rotation_matrix([0.3, -1.1, 0.5])
    source = 0.7 * target @ rotation.T + np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(procrustes_align(source, target), target, atol=1e-9)
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    assert pa_mpjpe(mirrored, target).min() > 0.1


def test_pve_uses_pelvis_aligned_vertices():
    gt = make_clip()
    pred = copy(gt)
    pred["vertices"] += np.array([0.0, 0.02, 0.0])  # 20 mm on every vertex, pelvis unchanged
    s = summary(pred, gt)
    assert s["pve_mm"] == pytest.approx(20.0, rel=1e-6)
    assert s["mpjpe_mm"] == pytest.approx(0.0, abs=1e-9)
    pred["vertices"] = pred["vertices"][:, :10]  # another topology: no PVE
    assert summary(pred, gt)["pve_mm"] is None


def test_constant_velocity_track_has_zero_acceleration_error_and_a_quadratic_known_error():
    gt = make_clip(frames=10, people=1)
    pred = copy(gt)
    t = gt["frame_index"][:, None, None].astype(float)
    pred["joints"][:, 1:] += 0.004 * t * np.array([1.0, 0.0, 0.0])  # constant velocity, relative to the pelvis
    s = summary(pred, gt)
    assert s["mpjpe_mm"] > 1.0
    assert s["accel_error_mm"] == pytest.approx(0.0, abs=1e-6)
    pred = copy(gt)
    pred["joints"][:, 5:6] += 0.5 * 0.006 * t ** 2 * np.array([0.0, 1.0, 0.0])  # 6 mm/frame^2 on one joint
    s = summary(pred, gt)
    assert s["accel_error_mm"] == pytest.approx(6.0 / 24, rel=1e-6)
    np.testing.assert_allclose(acceleration_error(pred["joints"], gt["joints"]) * 1000, 6.0 / 24, rtol=1e-6)


def test_id_switch_is_counted_when_a_person_changes_predicted_track():
    gt = make_clip(frames=10)
    pred = copy(gt)
    pred["track_id"] = np.where((pred["track_id"] == 0) & (pred["frame_index"] >= 5), 9, pred["track_id"])
    s = summary(pred, gt)
    assert s["id_switches"] == 1
    assert s["detection_rate"] == 1.0
    assert s["mota"] == pytest.approx(1 - 1 / 20)


def test_missed_person_lowers_detection_rate_and_extra_person_is_a_false_positive():
    gt = make_clip(frames=10)
    pred = copy(gt)
    drop = (pred["track_id"] == 1) & (pred["frame_index"] < 4)  # 4 of 20 instances missed
    pred = {k: v[~drop] for k, v in pred.items()}
    s = summary(pred, gt)
    assert s["detection_rate"] == pytest.approx(16 / 20)
    assert s["false_positives"] == 0
    # A prediction far from everyone in frame 0 is a false positive, not a match.
    extra = {k: v[:1].copy() for k, v in pred.items()}
    extra["keypoints2d"][..., 0] += 2000
    extra["track_id"][:] = 42
    pred2 = {k: np.concatenate([pred[k], extra[k]]) for k in pred}
    s2 = summary(pred2, gt)
    assert s2["false_positives"] == 1 and s2["detection_rate"] == pytest.approx(16 / 20)


def test_matching_follows_keypoints_not_row_order():
    gt = make_clip(frames=4)
    pred = copy(gt)
    order = np.arange(len(pred["frame_index"]))[::-1]
    pred = {k: v[order] for k, v in pred.items()}
    pred["keypoints2d"][..., :2] += np.array([3.0, 4.0])  # 5 px everywhere
    s = summary(pred, gt)
    assert s["mpjpe_mm"] == pytest.approx(0.0, abs=1e-9)
    assert s["keypoint_error_px"] == pytest.approx(5.0)


def test_people_with_too_few_visible_keypoints_are_neither_missed_nor_false_positives():
    gt = make_clip(frames=3)
    pred = copy(gt)
    gt["keypoints2d"][gt["track_id"] == 1, 3:, 2] = 0.0  # only 3 visible keypoints
    s = summary(pred, gt, min_visible=6)
    assert s["gt_instances"] == 3 and s["detection_rate"] == 1.0 and s["false_positives"] == 0


def test_overall_pools_clips_instance_weighted():
    a, b = make_clip(frames=4, people=1), make_clip(frames=12, people=1, seed=3)
    pa, pb = copy(a), copy(b)
    pb["joints"][:, 1:] += np.array([0.0, 0.0, 0.024])  # 24 mm on 23 joints -> 23 mm
    results = evaluate([(seq(pa, "a"), seq(a, "a")), (seq(pb, "b"), seq(b, "b"))])
    assert results["clips"]["a"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-9)
    assert results["clips"]["b"]["mpjpe_mm"] == pytest.approx(23.0)
    assert results["overall"]["mpjpe_mm"] == pytest.approx(23.0 * 12 / 16)


def save(path, arrays, vertices=True):
    meta = json.dumps({"fps": 30.0, "width": 640, "height": 480, "version": "test"})
    n = len(arrays["frame_index"])
    out = {"frame_index": arrays["frame_index"], "pts_s": arrays["pts_s"], "track_id": arrays["track_id"],
           "global_orient": np.zeros((n, 3), np.float32), "body_pose": np.zeros((n, 23, 3), np.float32),
           "betas": np.zeros((n, 10), np.float32), "transl": arrays["joints"][:, 0].astype(np.float32),
           "joints": arrays["joints"].astype(np.float32), "keypoints2d": arrays["keypoints2d"].astype(np.float32),
           "meta": np.array(meta)}
    if vertices:
        out["vertices"] = arrays["vertices"].astype(np.float32)
    np.savez(path, **out)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "stream", "eval", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_json_and_a_table_for_files_and_folders(tmp_path):
    gt = make_clip()
    pred = copy(gt)
    pred["joints"][:, 1:] += np.array([0.0, 0.012, 0.0])
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    save(tmp_path / "gt" / "walk.npz", gt)
    save(tmp_path / "pred" / "walk.npz", pred, vertices=False)
    done = run_cli(tmp_path / "pred" / "walk.npz", tmp_path / "gt" / "walk.npz", "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["overall"]["mpjpe_mm"] == pytest.approx(12.0 * 23 / 24, rel=1e-4)
    assert results["overall"]["pve_mm"] is None
    assert results["clips"]["walk"]["detection_rate"] == 1.0
    table = run_cli(tmp_path / "pred", tmp_path / "gt")
    assert table.returncode == 0, table.stderr
    assert "PA-MPJPE" in table.stdout and "walk" in table.stdout and "11.5" in table.stdout


def test_cli_reports_a_missing_array_as_a_user_error(tmp_path):
    np.savez(tmp_path / "bad.npz", frame_index=np.zeros(3, int))
    gt = make_clip()
    save(tmp_path / "gt.npz", gt)
    done = run_cli(tmp_path / "bad.npz", tmp_path / "gt.npz")
    assert done.returncode == 2
    assert "missing arrays" in done.stderr and "track_id" in done.stderr


def test_load_sequence_reads_meta(tmp_path):
    save(tmp_path / "x.npz", make_clip(frames=2))
    loaded = load_sequence(tmp_path / "x.npz")
    assert loaded.meta["width"] == 640 and loaded.vertices.shape == (4, 50, 3)
    assert loaded.name == "x"


def test_mpjpe_is_per_instance():
    a = np.zeros((2, 24, 3))
    b = a.copy()
    b[1, 1:] = [0.0, 0.0, 0.024]
    np.testing.assert_allclose(mpjpe(b, a), [0.0, 0.023])
