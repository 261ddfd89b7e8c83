"""How well the fitted bodies sit on a real video: landmark distance and silhouette IoU.

Issue 5 asks, on the real clip pose_squats.mp4, for the mean distance between the fitted body's
landmarks and the detected keypoints (target at most 5 px at 720x1280) and for the IoU of the
rendered body with the person mask. This tool measures both from a results file of
``meshstream process`` (run it first, or let the tool run it with ``--run``), and draws a strip
of frames with the mesh over the video to look at.

Steps:
1. Results: the saved parameters are skinned with the saved body model; the joints must equal
   the saved joints (a check that the file is self-consistent).
2. Landmarks: the body's 33 BlazePose landmarks projected with the saved intrinsics against the
   saved keypoints, visibility-weighted mean per frame (pixels).
3. Masks: BlazePose's person segmentation (the landmark network's mask output, warped back to
   the image), recomputed here on the same frames with the same region tracking as the pipeline.
4. IoU: the body rendered as a silhouette (engines.render) against the mask thresholded at 0.5,
   per frame, for the person matched to the frame's result row (one person in the sample clip).
5. Picture: ``--picture PNG`` writes a strip of a few frames with the mesh drawn over them.

    python tools/measure_real_clip.py --run --picture docs/images/squats_fit.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from meshstream_tools import REPOSITORY as ROOT

DEFAULT_CLIP = ROOT / "stream" / "assets" / "sample.mp4"


def run_process(clip: Path, out: Path, extra: list[str]) -> None:
    """``meshstream process`` as a subprocess (the real command), results with vertices."""
    command = [sys.executable, "-m", "stream", "process", str(clip), "-o", str(out), "--no-progress",
               "--vertices", *extra]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"meshstream process failed:\n{done.stderr[-3000:]}")


def body_meshes(results: dict, meta: dict):
    """Vertices (N,V,3), landmarks (N,33,3) and joints (N,24,3) for every results row, and faces."""
    from engines.body import load_body_model

    model = load_body_model(meta["body_model"].replace("meshstream-open-1", "open"))
    as_t = lambda k: torch.from_numpy(np.asarray(results[k], np.float32))  # noqa: E731
    with torch.no_grad():
        out = model(as_t("global_orient"), as_t("body_pose"), as_t("betas"), as_t("transl"))
    return out.vertices.numpy(), out.landmarks.numpy(), out.joints.numpy(), np.asarray(model.faces)


def landmark_distance_px(landmarks: np.ndarray, keypoints: np.ndarray, intrinsics: dict) -> np.ndarray:
    """Per row: visibility-weighted mean distance (px) of projected landmarks (N,33,3) to keypoints (N,33,3)."""
    fx, fy, cx, cy = (intrinsics[k] for k in ("fx", "fy", "cx", "cy"))
    uv = landmarks[..., :2] / landmarks[..., 2:] * [fx, fy] + [cx, cy]
    visibility = keypoints[..., 2]
    distance = np.linalg.norm(uv - keypoints[..., :2], axis=-1)
    return (distance * visibility).sum(1) / np.maximum(visibility.sum(1), 1e-6)


def silhouette_iou(rendered: np.ndarray, mask: np.ndarray) -> float:
    """IoU of two (H,W) bool masks; NaN when both are empty."""
    union = np.logical_or(rendered, mask).sum()
    return float(np.logical_and(rendered, mask).sum() / union) if union else float("nan")


def measure(clip: Path, results_path: Path, picture: Path | None = None, picture_frames: int = 4) -> dict:
    """Steps 1-5 of the module docstring; returns the figures as a JSON-able dict."""
    from engines.pose import PoseEstimator
    from engines.render import Camera, Mesh, overlay, render, track_color
    from stream.sources import VideoFileSource

    with np.load(results_path) as data:
        results = {k: data[k] for k in data.files}
    meta = json.loads(str(results["meta"]))
    intrinsics = meta["intrinsics"]
    vertices, landmarks, joints, faces = body_meshes(results, meta)
    # 1. The file is self-consistent.
    joint_error = float(np.abs(joints - results["joints"]).max()) if len(joints) else 0.0
    # 2. Landmarks against keypoints.
    per_row_px = landmark_distance_px(landmarks, results["keypoints2d"], intrinsics)
    # 3-4. Masks and IoU, frame by frame.
    estimator = PoseEstimator(with_mask=True, max_people=1)
    rows_of = {}
    for row, index in enumerate(results["frame_index"].tolist()):
        rows_of.setdefault(int(index), []).append(row)
    ious: dict[int, float] = {}
    images: dict[int, np.ndarray] = {}
    camera = None
    for frame in VideoFileSource(clip).frames():
        people = estimator(frame.image, frame.pts_s)
        rows = rows_of.get(frame.index, [])
        if not rows:
            continue
        if camera is None:
            camera = Camera(intrinsics["fx"], intrinsics["fy"], intrinsics["cx"], intrinsics["cy"],
                            frame.width, frame.height)
        meshes = [Mesh(vertices[r], faces, vertex_colors=np.tile(track_color(int(results["track_id"][r])),
                                                                 (len(vertices[r]), 1))) for r in rows]
        drawn = render(camera, meshes)
        mask = np.zeros(frame.image.shape[:2], bool)
        for person in people:
            if person.mask is not None:
                mask |= person.mask >= 0.5
        ious[frame.index] = silhouette_iou(drawn.mask, mask)
        images[frame.index] = overlay(frame.image, drawn, alpha=0.55)
        if frame.index > int(results["frame_index"].max()):
            break
    iou_values = np.array([v for v in ious.values() if np.isfinite(v)])
    figures = {
        "clip": str(clip), "results": str(results_path), "rows": int(len(per_row_px)),
        "frames_with_body": int(len(rows_of)),
        "joints_vs_saved_max_m": joint_error,
        "landmarks_px_mean": float(per_row_px.mean()) if len(per_row_px) else float("nan"),
        "landmarks_px_worst_frame": float(per_row_px.max()) if len(per_row_px) else float("nan"),
        "iou_mean": float(iou_values.mean()) if len(iou_values) else float("nan"),
        "iou_min": float(iou_values.min()) if len(iou_values) else float("nan"),
        "iou_max": float(iou_values.max()) if len(iou_values) else float("nan"),
    }
    # 5. A strip of frames to look at.
    if picture is not None and images:
        import cv2

        chosen = sorted(images)[:: max(1, len(images) // picture_frames)][:picture_frames]
        height = 480
        tiles = []
        for index in chosen:
            image = images[index]
            scale = height / image.shape[0]
            tile = cv2.resize(image, (int(round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
            cv2.putText(tile, f"frame {index}  IoU {ious[index]:.2f}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 2, cv2.LINE_AA)
            tiles.append(tile)
        picture.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(picture), cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR))
        figures["picture"] = str(picture)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="video (default: the bundled sample clip)")
    parser.add_argument("--results", type=Path, default=None,
                        help="results .npz of `meshstream process` on the clip (with --run: where to write it)")
    parser.add_argument("--run", action="store_true", help="run `meshstream process` on the clip first")
    parser.add_argument("--process-args", default="--smoothing none",
                        help="extra arguments for `meshstream process` with --run (default: %(default)s)")
    parser.add_argument("--picture", type=Path, default=None, help="write a strip of frames with the mesh (PNG)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or Path(tmp) / "results.npz"
        if args.run:
            run_process(args.clip, results, args.process_args.split())
        elif not results.is_file():
            parser.error(f"results file {results} not found: give --results of a `meshstream process` run, or --run")
        figures = measure(args.clip, results, args.picture)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
