"""Scoring results files against ground truth: matching people, then body and tracking metrics.

A results file (``meshstream process`` output, or a synthetic clip's ground truth) is an .npz
with one row per (frame, person)::

    frame_index (N,) int; pts_s (N,); track_id (N,) int
    global_orient (N, 3); body_pose (N, 23, 3); betas (N, 10); transl (N, 3)
    joints (N, 24, 3) metres, camera frame; keypoints2d (N, 33, 3) x, y pixels and visibility
    meta: JSON string (fps, width, height, intrinsics, body model, version)
    vertices (N, V, 3) metres (optional for predictions; present in ground truth)

Per frame, predictions are matched to ground-truth people with the Hungarian algorithm on the
mean 2D keypoint distance, gated (a pair further apart than ``gate`` times the ground-truth
person's keypoint box diagonal is no match). On matched pairs: MPJPE (pelvis-aligned), PA-MPJPE
(similarity Procrustes), PVE (pelvis-aligned, when both sides have vertices of one topology),
acceleration error and 2D keypoint error; over the clip: detection rate, false positives, id
switches and MOTA. docs/accuracy.md ("Metrics") gives the definitions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.geometry import match_within_gate
from engines.metrics import PELVIS  # SMPL joint 0
REQUIRED_KEYS = ("frame_index", "track_id", "joints", "keypoints2d")
METRIC_NAMES = ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_error_mm", "keypoint_error_px")


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class Sequence:
    """One clip's rows. joints (N, 24, 3) metres; keypoints2d (N, 33, 3); vertices (N, V, 3) or None."""

    name: str
    frame_index: np.ndarray
    track_id: np.ndarray
    joints: np.ndarray
    keypoints2d: np.ndarray
    vertices: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def load_sequence(path: str | Path, name: str | None = None) -> Sequence:
    """Read a results or ground-truth .npz; raises ValueError naming what is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; give a .npz written by `meshstream process` or tools/make_synthetic.py")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zip or format errors
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in data.files]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; a results file needs {list(REQUIRED_KEYS)}")
    frame_index = np.asarray(data["frame_index"]).astype(np.int64).reshape(-1)
    n = frame_index.shape[0]
    track_id = np.asarray(data["track_id"]).astype(np.int64).reshape(-1)
    joints = np.asarray(data["joints"], dtype=np.float64)
    keypoints2d = np.asarray(data["keypoints2d"], dtype=np.float64)
    if track_id.shape[0] != n or joints.shape[:1] != (n,) or keypoints2d.shape[:1] != (n,):
        raise ValueError(f"{path}: frame_index, track_id, joints and keypoints2d must all have {n} rows")
    if joints.ndim != 3 or joints.shape[2] != 3 or joints.shape[1] <= PELVIS:
        raise ValueError(f"{path}: joints must be (N, 24, 3), got {joints.shape}")
    if keypoints2d.ndim != 3 or keypoints2d.shape[2] != 3:
        raise ValueError(f"{path}: keypoints2d must be (N, 33, 3) (x, y, visibility), got {keypoints2d.shape}")
    vertices = None
    if "vertices" in data.files:
        vertices = np.asarray(data["vertices"], dtype=np.float64)
        if vertices.ndim != 3 or vertices.shape[0] != n or vertices.shape[2] != 3:
            raise ValueError(f"{path}: vertices must be (N, V, 3), got {vertices.shape}")
    meta = {}
    if "meta" in data.files:
        try:
            meta = json.loads(str(data["meta"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: meta is not a JSON string ({exc})") from exc
    return Sequence(name or path.stem, frame_index, track_id, joints, keypoints2d, vertices, meta)


# ----------------------------------------------------------------------------------------------
# Per-instance metrics: one definition, in engines/metrics.py

from engines.metrics import (  # noqa: E402  (re-exported: part of this module's API)
    acceleration_error,
    mpjpe,
    pa_mpjpe,
    pelvis_aligned,
    procrustes_align,
    pve,
)


def keypoint_error(pred_keypoints: np.ndarray, gt_keypoints: np.ndarray, min_visibility: float = 0.5) -> np.ndarray:
    """Mean 2D distance (pixels) over keypoints visible in the ground truth: (N, K, 3) x2 -> (N,), NaN if none."""
    visible = gt_keypoints[..., 2] > min_visibility
    dist = np.linalg.norm(pred_keypoints[..., :2] - gt_keypoints[..., :2], axis=-1)
    count = visible.sum(axis=-1)
    total = np.where(visible, dist, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ----------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class Settings:
    """gate: a match must be closer than gate x the ground-truth keypoint box diagonal (mean px);
    min_visible: ground-truth people with fewer visible keypoints are ignored (neither missed
    nor a false positive when matched); min_visibility: keypoint visibility threshold."""

    gate: float = 0.5
    min_visible: int = 6
    min_visibility: float = 0.5


def match_people(pred_keypoints: np.ndarray, gt_keypoints: np.ndarray, settings: Settings = Settings()):
    """Match predictions (P, K, 3) to ground-truth people (G, K, 3) in one frame.

    Cost: mean 2D distance over the keypoints visible in the ground truth (all keypoints when
    none is). Returns a list of (pred_row, gt_row) pairs, each within the gate.
    """
    if len(pred_keypoints) == 0 or len(gt_keypoints) == 0:
        return []
    visible = gt_keypoints[:, :, 2] > settings.min_visibility  # (G, K)
    visible = np.where(visible.any(axis=1, keepdims=True), visible, True)
    dist = np.linalg.norm(pred_keypoints[:, None, :, :2] - gt_keypoints[None, :, :, :2], axis=-1)  # (P, G, K)
    dist = np.where(np.isfinite(dist), dist, 1e9)
    cost = (dist * visible[None]).sum(axis=-1) / visible.sum(axis=-1)[None]
    gate = np.empty(len(gt_keypoints))
    for g in range(len(gt_keypoints)):
        pts = gt_keypoints[g, visible[g], :2]
        extent = pts.max(axis=0) - pts.min(axis=0)
        gate[g] = settings.gate * max(float(np.hypot(*extent)), 10.0)
    return match_within_gate(cost, gate[None])


# ----------------------------------------------------------------------------------------------
# One clip


@dataclass
class ClipReport:
    """Totals for one clip (sums and counts, so clips can be pooled)."""

    name: str
    frames: int = 0
    gt_instances: int = 0  # evaluable ground-truth people (enough visible keypoints)
    matched: int = 0
    false_positives: int = 0
    id_switches: int = 0
    sums: dict = field(default_factory=lambda: {k: 0.0 for k in METRIC_NAMES})
    counts: dict = field(default_factory=lambda: {k: 0 for k in METRIC_NAMES})

    def add(self, metric: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        self.sums[metric] += float(values.sum())
        self.counts[metric] += int(values.size)

    def merge(self, other: "ClipReport") -> None:
        for name in ("frames", "gt_instances", "matched", "false_positives", "id_switches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k in METRIC_NAMES:
            self.sums[k] += other.sums[k]
            self.counts[k] += other.counts[k]

    def summary(self) -> dict:
        """Means of the metrics (None when nothing was measured) and the tracking figures."""
        out = {"frames": self.frames, "gt_instances": self.gt_instances, "matched": self.matched,
               "detection_rate": self.matched / self.gt_instances if self.gt_instances else None,
               "false_positives": self.false_positives, "id_switches": self.id_switches,
               "mota": (1.0 - ((self.gt_instances - self.matched) + self.false_positives + self.id_switches)
                        / self.gt_instances) if self.gt_instances else None}
        for k in METRIC_NAMES:
            out[k] = self.sums[k] / self.counts[k] if self.counts[k] else None
        out["pairs_measured"] = {k: self.counts[k] for k in METRIC_NAMES}
        return out


def evaluate_clip(pred: Sequence, gt: Sequence, settings: Settings = Settings()) -> ClipReport:
    """Match, then score one clip. 3D metrics are reported in millimetres."""
    report = ClipReport(gt.name)
    frames = np.union1d(np.unique(gt.frame_index), np.unique(pred.frame_index))
    report.frames = int(np.unique(gt.frame_index).size)
    pairs_pred, pairs_gt = [], []
    last_pred_track: dict[int, int] = {}
    pred_rows_of = _rows_by_frame(pred.frame_index)
    gt_rows_of = _rows_by_frame(gt.frame_index)
    n_visible = (gt.keypoints2d[:, :, 2] > settings.min_visibility).sum(axis=1)
    evaluable = n_visible >= settings.min_visible
    # 1. Per frame: Hungarian matching; unmatched evaluable ground truth are misses, unmatched
    #    predictions false positives; a predictions matched to a non-evaluable person is ignored.
    for frame in frames:
        p_rows = pred_rows_of.get(int(frame), np.zeros(0, np.int64))
        g_rows = gt_rows_of.get(int(frame), np.zeros(0, np.int64))
        matches = match_people(pred.keypoints2d[p_rows], gt.keypoints2d[g_rows], settings)
        report.gt_instances += int(evaluable[g_rows].sum())
        report.false_positives += len(p_rows) - len(matches)
        for p, g in matches:
            pr, gr = int(p_rows[p]), int(g_rows[g])
            if not evaluable[gr]:
                continue
            report.matched += 1
            pairs_pred.append(pr)
            pairs_gt.append(gr)
            # 2. Identity switches (CLEAR MOT): the ground-truth person is now matched to a
            #    different predicted track than the last time it was matched.
            person = int(gt.track_id[gr])
            track = int(pred.track_id[pr])
            if person in last_pred_track and last_pred_track[person] != track:
                report.id_switches += 1
            last_pred_track[person] = track
    if not pairs_pred:
        return report
    pp, gg = np.asarray(pairs_pred), np.asarray(pairs_gt)
    # 3. Pose and shape metrics on matched pairs (metres -> millimetres).
    report.add("mpjpe_mm", 1000.0 * mpjpe(pred.joints[pp], gt.joints[gg]))
    report.add("pa_mpjpe_mm", 1000.0 * pa_mpjpe(pred.joints[pp], gt.joints[gg]))
    report.add("keypoint_error_px", keypoint_error(pred.keypoints2d[pp], gt.keypoints2d[gg], settings.min_visibility))
    if pred.vertices is not None and gt.vertices is not None and pred.vertices.shape[1] == gt.vertices.shape[1]:
        report.add("pve_mm", 1000.0 * pve(pred.vertices[pp], gt.vertices[gg], pred.joints[pp], gt.joints[gg]))
    # 4. Acceleration error over runs of consecutive frames where one ground-truth person stays
    #    matched to one predicted track.
    key = np.stack([gt.track_id[gg], pred.track_id[pp], gt.frame_index[gg]], axis=1)
    order = np.lexsort((key[:, 2], key[:, 1], key[:, 0]))
    key, pp, gg = key[order], pp[order], gg[order]
    breaks = np.nonzero((np.diff(key[:, 0]) != 0) | (np.diff(key[:, 1]) != 0) | (np.diff(key[:, 2]) != 1))[0] + 1
    for run in np.split(np.arange(len(pp)), breaks):
        if run.size >= 3:
            report.add("accel_error_mm", 1000.0 * acceleration_error(pred.joints[pp[run]], gt.joints[gg[run]]))
    return report


def _rows_by_frame(frame_index: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(frame_index, kind="stable")
    frames, starts = np.unique(frame_index[order], return_index=True)
    return {int(f): rows for f, rows in zip(frames, np.split(order, starts[1:]))}


# ----------------------------------------------------------------------------------------------
# Several clips, table


def evaluate(pairs, settings: Settings = Settings()) -> dict:
    """Score (pred: Sequence, gt: Sequence) pairs: {"clips": {name: summary}, "overall": summary,
    "settings": {...}}. Overall pools every matched pair (instance-weighted means)."""
    overall = ClipReport("overall")
    clips = {}
    for pred, gt in pairs:
        report = evaluate_clip(pred, gt, settings)
        clips[report.name] = report.summary()
        overall.merge(report)
    return {"clips": clips, "overall": overall.summary(),
            "settings": {"gate": settings.gate, "min_visible": settings.min_visible,
                         "min_visibility": settings.min_visibility}}


def format_table(results: dict) -> str:
    """A fixed-width text table: one line per clip and one for all clips."""
    columns = [("frames", "frames", "{:d}"), ("gt", "gt_instances", "{:d}"), ("det %", "detection_rate", "pct"),
               ("FP", "false_positives", "{:d}"), ("IDSW", "id_switches", "{:d}"), ("MOTA", "mota", "pct"),
               ("MPJPE", "mpjpe_mm", "{:.1f}"),
               ("PA-MPJPE", "pa_mpjpe_mm", "{:.1f}"), ("PVE", "pve_mm", "{:.1f}"),
               ("accel", "accel_error_mm", "{:.2f}"), ("2D px", "keypoint_error_px", "{:.2f}")]

    def cell(value, fmt):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * value:.1f}" if fmt == "pct" else fmt.format(value)

    rows = [[name] + [cell(s[key], fmt) for _, key, fmt in columns] for name, s in results["clips"].items()]
    rows.append(["all"] + [cell(results["overall"][key], fmt) for _, key, fmt in columns])
    header = ["clip"] + [c[0] for c in columns]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        if r[0] == "all":
            lines.append("-" * len(lines[0]))
        lines.append("  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(r)))
    lines.append("MPJPE, PA-MPJPE, PVE in mm; accel in mm/frame^2; 2D in pixels; det % of ground-truth people matched; MOTA in %.")
    return "\n".join(lines)
