"""How often BlazePose finds the people of a synthetic set (tools/make_synthetic.py output).

    python tools/measure_detection.py DIR [--json OUT.json] [--backend auto] [--max-people 4]

For every ground-truth person that is *fully visible* in a frame (definition below), two
questions, each answered per frame:

(a) detector: does BlazePose's person detector as the pose engine runs it
    (engines.pose.PoseEstimator.detect on the frame: passes repeated with the people already found
    hidden, until nobody new is found) return a detection for this person? Detections are assigned to the true people (all people in the
    frame, fully visible or not) by the Hungarian algorithm on the image distance between the
    detection's hip-centre keypoint and the true hip centre (mean of landmarks 23 and 24); a
    pair farther apart than HIP_GATE times the person's height in pixels is no match.
(b) pipeline: does the pose stage as `meshstream process` runs it (engines.pose.PoseEstimator
    with the pipeline's settings: the detector when nobody is tracked, every 10 frames or when
    someone is lost, otherwise the landmark network's region tracked from the previous frame)
    return landmarks for this person? Observations are assigned by the mean image distance of
    their 33 keypoints to the true ones (over the true keypoints inside the frame; the smaller of
    that and the left/right-mirrored distance, so a person seen with left and right swapped
    still counts as found); a pair farther apart than POSE_GATE times the height is no match.
(a alone) detector, person alone: the detector on a copy of the frame in which only the
    person's own columns are kept (its keypoints' horizontal extent widened by a quarter of its
    height on each side; the rest filled with the frame's mean colour). BlazePose's detector is
    made for one person: with several people in view it gives lower scores to all of them, so
    this column separates how recognisable a rendered person is from how many share the frame.
(a one pass) the detector's first pass alone (PoseEstimator.detect_once), without the repeated
    passes: what BlazePose's detector finds on the frame as it is.

Definitions (also in docs/accuracy.md, "Detection on the renders"):

- Fully visible: all 33 true keypoints project inside the frame, and at least
  MIN_UNOCCLUDED (80 %) of them are not covered by another person (the keypoint's pixel is not
  in another person's visible mask). Self-occlusion (the far arm in a side view, the face seen
  from behind) does not count: a person seen from behind is fully visible.
- Height (px): the vertical extent of the person's projected mesh (all vertices).
- People in view: the people of the frame with at least one visible pixel (mask).
- Facing: the angle between the torso's forward direction (normal of the shoulder and hip
  line, from the 3D landmarks) and the direction from the torso to the camera. front: < 45
  degrees, side: 45 to 135, back: > 135.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from engines.geometry import match_within_gate
from engines.skeleton import BLAZEPOSE_MIRROR

MIN_UNOCCLUDED = 0.8
HIP_GATE = 0.25
POSE_GATE = 0.2
FRONT_MAX_DEG = 45.0
BACK_MIN_DEG = 135.0
HEIGHT_BINS = (0, 160, 240, 320, 10_000)  # px; 160 px is a third of a 480-px frame
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 11, 12, 23, 24


# ----------------------------------------------------------------------------------------------
# Definitions on the ground truth


def fully_visible(keypoints2d: np.ndarray, masks: np.ndarray, frame_index: np.ndarray, width: int, height: int,
                  min_unoccluded: float = MIN_UNOCCLUDED) -> np.ndarray:
    """Which ground-truth rows are fully visible people.

    keypoints2d (N, 33, 3) pixels (+ visibility); masks (N, H, W) bool, each row's visible pixels;
    frame_index (N,) int. Returns (N,) bool: all 33 keypoints inside [0, width) x [0, height) and
    at least ``min_unoccluded`` of them on pixels that no other person of the same frame owns.
    """
    xy = keypoints2d[..., :2]
    inside = ((xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)).all(axis=1)
    result = np.zeros(len(xy), bool)
    for row in np.nonzero(inside)[0]:
        others = np.nonzero((frame_index == frame_index[row]) & (np.arange(len(xy)) != row))[0]
        col = np.clip(xy[row, :, 0].astype(int), 0, width - 1)
        line = np.clip(xy[row, :, 1].astype(int), 0, height - 1)
        covered = np.zeros(len(col), bool)
        for other in others:
            covered |= masks[other, line, col]
        result[row] = (1.0 - covered.mean()) >= min_unoccluded
    return result


def facing_angle(landmarks: np.ndarray) -> np.ndarray:
    """Angle (degrees) between each body's forward direction and the direction to the camera.

    landmarks (N, 33, 3) camera frame (x right, y down, z forward), metres -> (N,) in [0, 180]:
    0 faces the camera, 180 turns its back to it.
    """
    across = (landmarks[:, LEFT_SHOULDER] - landmarks[:, RIGHT_SHOULDER]
              + landmarks[:, LEFT_HIP] - landmarks[:, RIGHT_HIP])
    up = (landmarks[:, LEFT_SHOULDER] + landmarks[:, RIGHT_SHOULDER]
          - landmarks[:, LEFT_HIP] - landmarks[:, RIGHT_HIP])
    forward = np.cross(across, up)  # a body facing the camera: left = +x, up = -y -> forward = -z
    torso = landmarks[:, [LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP]].mean(axis=1)
    to_camera = -torso
    cosine = (forward * to_camera).sum(axis=1) / np.maximum(
        np.linalg.norm(forward, axis=1) * np.linalg.norm(to_camera, axis=1), 1e-9)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def facing_class(angle_deg: np.ndarray) -> np.ndarray:
    """'front' below FRONT_MAX_DEG, 'back' above BACK_MIN_DEG, else 'side'. (N,) str."""
    return np.where(angle_deg < FRONT_MAX_DEG, "front", np.where(angle_deg > BACK_MIN_DEG, "back", "side"))


def height_px(vertices: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Vertical extent (px) of each projected mesh: vertices (N, V, 3) camera frame -> (N,)."""
    v = intrinsics[1, 1] * vertices[..., 1] / np.maximum(vertices[..., 2], 1e-6) + intrinsics[1, 2]
    return (v.max(axis=1) - v.min(axis=1)).astype(np.float64)


def height_bin(height: np.ndarray) -> np.ndarray:
    labels = [f"{lo}-{hi} px" if hi < 10_000 else f">= {lo} px" for lo, hi in zip(HEIGHT_BINS[:-1], HEIGHT_BINS[1:])]
    index = np.clip(np.digitize(height, HEIGHT_BINS[1:-1]), 0, len(labels) - 1)
    return np.array(labels)[index]


# ----------------------------------------------------------------------------------------------
# Matching


def _assign(cost: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """Hungarian assignment of rows (true people) to columns, gate (rows,) per true person;
    (rows,) bool: matched within the gate."""
    found = np.zeros(cost.shape[0], bool)
    for row, _ in match_within_gate(cost, np.asarray(gate)[:, None]):
        found[row] = True
    return found


def match_detections(true_hips: np.ndarray, heights: np.ndarray, detected_hips: np.ndarray,
                     gate: float = HIP_GATE) -> np.ndarray:
    """true_hips (P, 2) px, heights (P,) px, detected_hips (D, 2) px -> (P,) bool: found."""
    cost = np.linalg.norm(true_hips[:, None] - detected_hips[None], axis=-1) if len(detected_hips) else \
        np.zeros((len(true_hips), 0))
    return _assign(cost, gate * heights)


def match_poses(true_keypoints: np.ndarray, heights: np.ndarray, predicted: np.ndarray, width: int, height: int,
                gate: float = POSE_GATE) -> np.ndarray:
    """true_keypoints (P, 33, 2+) px, heights (P,), predicted (D, 33, 2+) px -> (P,) bool: found."""
    if len(predicted) == 0:
        return np.zeros(len(true_keypoints), bool)
    xy = true_keypoints[..., :2]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
    pred = predicted[..., :2]
    mirrored = pred[:, list(BLAZEPOSE_MIRROR)]
    cost = np.full((len(xy), len(pred)), np.inf)
    for p in range(len(xy)):
        if not inside[p].any():
            continue
        for d in range(len(pred)):
            straight = np.linalg.norm(pred[d] - xy[p], axis=1)[inside[p]].mean()
            swapped = np.linalg.norm(mirrored[d] - xy[p], axis=1)[inside[p]].mean()
            cost[p, d] = min(straight, swapped)
    return _assign(cost, gate * heights)


# ----------------------------------------------------------------------------------------------
# Running BlazePose over a set


def read_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def measure_clip(npz_path: Path, estimator) -> dict:
    """Per ground-truth row of one clip: fully visible, facing, height, found by (a) and (b)."""
    gt = np.load(npz_path)
    meta = json.loads(str(gt["meta"]))
    width, height = int(meta["width"]), int(meta["height"])
    frames = read_frames(npz_path.with_suffix(".mp4"))
    frame_index = gt["frame_index"]
    keypoints = gt["keypoints2d"]
    heights = height_px(gt["vertices"], gt["intrinsics"].astype(np.float64))
    hips = keypoints[:, [LEFT_HIP, RIGHT_HIP], :2].mean(axis=1)
    visible_rows = fully_visible(keypoints, gt["masks"], frame_index, width, height)
    in_view = np.array([int(gt["masks"][frame_index == f].any(axis=(1, 2)).sum()) for f in frame_index])
    detector_found = np.zeros(len(frame_index), bool)
    alone_found = np.zeros(len(frame_index), bool)
    one_pass_found = np.zeros(len(frame_index), bool)
    pipeline_found = np.zeros(len(frame_index), bool)
    estimator.reset()
    fps = float(meta.get("fps", 30.0))
    for f, image in enumerate(frames):
        rows = np.nonzero(frame_index == f)[0]
        detections = estimator.detect(image)
        detected_hips = np.array([d.keypoints[0] for d in detections], np.float64).reshape(-1, 2)
        detector_found[rows] = match_detections(hips[rows], heights[rows], detected_hips)
        first = np.array([d.keypoints[0] for d in estimator.detect_once(image)], np.float64).reshape(-1, 2)
        one_pass_found[rows] = match_detections(hips[rows], heights[rows], first)
        for row in rows[visible_rows[rows]]:
            alone = person_alone(image, keypoints[row], heights[row])
            found = np.array([d.keypoints[0] for d in estimator.detect_once(alone)], np.float64).reshape(-1, 2)
            alone_found[row] = match_detections(hips[[row]], heights[[row]], found)[0]
        people = estimator(image, timestamp_s=f / fps)
        predicted = np.array([p.keypoints for p in people], np.float64).reshape(-1, 33, 3)
        pipeline_found[rows] = match_poses(keypoints[rows], heights[rows], predicted, width, height)
    return {
        "clip": npz_path.stem,
        "fully_visible": visible_rows,
        "in_view": in_view,
        "facing": facing_class(facing_angle(gt["landmarks"].astype(np.float64))),
        "height": heights,
        "detector": detector_found,
        "alone": alone_found,
        "one_pass": one_pass_found,
        "pipeline": pipeline_found,
    }


def person_alone(image: np.ndarray, keypoints: np.ndarray, height: float) -> np.ndarray:
    """The frame with only this person's columns kept (keypoint x-extent +- height / 4), the rest
    filled with the frame's mean colour. image (H, W, 3) uint8, keypoints (33, 2+) px."""
    margin = 0.25 * height
    x0 = int(max(0, np.floor(keypoints[:, 0].min() - margin)))
    x1 = int(min(image.shape[1], np.ceil(keypoints[:, 0].max() + margin)))
    alone = np.empty_like(image)
    alone[:] = image.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    alone[:, x0:x1] = image[:, x0:x1]
    return alone


def summarize(clips: list[dict]) -> dict:
    """Detection rates over the fully visible people: overall, by facing, by height, per clip."""
    keep = np.concatenate([c["fully_visible"] for c in clips])
    columns = {key: np.concatenate([c[key] for c in clips])[keep]
               for key in ("facing", "detector", "one_pass", "alone", "pipeline", "in_view")}
    columns["height_bin"] = height_bin(np.concatenate([c["height"] for c in clips])[keep])
    columns["clip"] = np.concatenate([np.full(len(c["height"]), c["clip"]) for c in clips])[keep]

    def rates(selected: np.ndarray) -> dict:
        n = int(selected.sum())
        return {"people": n,
                "detector": float(columns["detector"][selected].mean()) if n else None,
                "one_pass": float(columns["one_pass"][selected].mean()) if n else None,
                "alone": float(columns["alone"][selected].mean()) if n else None,
                "pipeline": float(columns["pipeline"][selected].mean()) if n else None}

    total_rows = int(sum(len(c["height"]) for c in clips))
    summary = {"rows": total_rows, "fully_visible": int(keep.sum()), "overall": rates(np.ones(int(keep.sum()), bool))}
    for key in ("facing", "height_bin", "in_view", "clip"):
        values = columns[key]
        if key == "facing":
            order = ("front", "side", "back")
        elif key == "height_bin":
            order = height_bin(np.array(HEIGHT_BINS[:-1], np.float64))
        else:
            order = sorted(set(values.tolist()))
        if key == "in_view":
            summary[key] = {f"{v} in view": rates(values == v) for v in order}
            continue
        summary[key] = {value: rates(values == value) for value in order if (values == value).any()}
    return summary


def format_summary(summary: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"{summary['fully_visible']} fully visible person-frames of {summary['rows']}",
             f"{'':18s} {'people':>7s} {'detector %':>11s} {'one pass %':>11s} {'alone %':>8s} {'pipeline %':>11s}"]

    def row(label, r):
        lines.append(f"{label:18s} {r['people']:7d} {pct(r['detector']):>11s} {pct(r['one_pass']):>11s} "
                     f"{pct(r['alone']):>8s} {pct(r['pipeline']):>11s}")

    row("overall", summary["overall"])
    for key, title in (("facing", "facing"), ("height_bin", "height"), ("in_view", "people in view"),
                       ("clip", "clip")):
        lines.append(f"by {title}:")
        for label, r in summary[key].items():
            row(f"  {label}", r)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder written by tools/make_synthetic.py (clip_NNN.mp4 + .npz)")
    parser.add_argument("--json", help="also write the summary to this JSON file")
    parser.add_argument("--backend", default="auto", help="pose engine back end (default auto)")
    parser.add_argument("--max-people", type=int, default=4, help="as `meshstream process` (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    import torch

    from engines.pose import PoseEstimator

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    clips = sorted(p for p in folder.glob("clip_*.npz") if p.with_suffix(".mp4").is_file())
    if not clips:
        raise SystemExit(f"no clip_*.npz with its .mp4 in {folder}; "
                         f"make one with tools/make_synthetic.py --out {folder}")
    started = time.perf_counter()
    estimator = PoseEstimator(backend=args.backend, max_people=args.max_people, with_mask=False)
    results = [measure_clip(path, estimator) for path in clips]
    summary = summarize(results)
    print(format_summary(summary))
    print(f"({len(clips)} clips, {time.perf_counter() - started:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
