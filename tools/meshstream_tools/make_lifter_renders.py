"""Real BlazePose outputs on rendered people of TRAINING motions, with their true bodies: data to
fine-tune the lifter on the detector's real behaviour (tools/train_lifter.py --finetune-renders).

    python tools/make_lifter_renders.py [--out DIR] [--seed 1] [--clips 60] [--frames 30]

Steps:

1. Render clips with tools/make_synthetic.py from a list of training motions
   (tools/lifter_render_motions.txt; a motion of meshstream_tools.mocap.HELD_OUT_CLIPS is refused, so the
   rendered benchmark stays held out), into DIR/video.
2. Run engines.pose.PoseEstimator over each decoded video as the pipeline does (region tracking,
   world landmarks; with ``--masks`` also the person masks), one thread.
3. Match the people found in each frame to the rendered people (Hungarian assignment on the mean
   2D distance of the visible true keypoints; a pair further apart than a fifth of the person's
   size is no match).
4. Save DIR/samples.npz, one row per matched person-frame (float32 unless said):

       keypoints (N,33,3) BlazePose x, y pixels + visibility; world (N,33,3) BlazePose world
       landmarks, metres; boxes (N,4) the estimator's box x0, y0, x1, y1; intrinsics (N,3,3);
       image_size (N,2) width, height; global_orient (N,3), body_pose (N,23,3), betas (N,10),
       transl (N,3): the true body, camera frame; landmarks (N,33,3) the true 3D landmarks;
       keypoint_error_px (N,) mean 2D distance to the truth; clip (N,) int32; frame (N,) int32;
       with --masks, masks (N,64,64) uint8: BlazePose's person mask cropped to the box (0-255).

The default DIR is in the meshstream cache (engines.cache.cache_dir()/lifter/renders_seed<S>):
derived data, never committed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from meshstream_tools import REPOSITORY as ROOT

DEFAULT_MOTIONS = ROOT / "tools" / "lifter_render_motions.txt"
MATCH_FRACTION = 0.2  # a detection further than this fraction of the person's 2D size is no match


def default_out(seed: int) -> Path:
    from engines.cache import cache_dir

    return cache_dir() / "lifter" / f"renders_seed{seed}"


def check_training_motions(path: Path) -> list[str]:
    """The trials listed in ``path``; SystemExit if one of them is held out of the lifter's training."""
    from meshstream_tools.mocap import HELD_OUT_CLIPS

    trials = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
    trials = [t for t in trials if t]
    held_out = [t for t in trials if t in HELD_OUT_CLIPS]
    if held_out:
        raise SystemExit(f"{path} lists held-out motions ({', '.join(held_out)}); the lifter must never train on "
                         f"meshstream_tools.mocap.HELD_OUT_CLIPS: remove them from the list")
    if not trials:
        raise SystemExit(f"{path} lists no motions; give one CMU trial (e.g. 07_01) per line")
    return trials


def match_people(found_keypoints: np.ndarray, true_keypoints: np.ndarray) -> list[tuple[int, int, float]]:
    """Pairs (found index, true index, mean distance px) of detections and true people of one frame.

    found_keypoints (D,33,3) pixels; true_keypoints (T,33,3) pixels + visibility 1/0. Hungarian
    assignment on the mean distance over the true person's visible keypoints; pairs further apart
    than MATCH_FRACTION of the true person's 2D extent are dropped, as are people with fewer than
    6 visible keypoints.
    """
    from engines.geometry import match_within_gate

    if len(found_keypoints) == 0 or len(true_keypoints) == 0:
        return []
    cost = np.full((len(found_keypoints), len(true_keypoints)), np.inf)
    limit = np.zeros(len(true_keypoints))
    for t, truth in enumerate(true_keypoints):
        visible = truth[:, 2] > 0.5
        if visible.sum() < 6:
            continue
        extent = (truth[visible, :2].max(0) - truth[visible, :2].min(0)).max()
        limit[t] = MATCH_FRACTION * extent
        for d, found in enumerate(found_keypoints):
            cost[d, t] = np.linalg.norm(found[visible, :2] - truth[visible, :2], axis=-1).mean()
    return [(d, t, float(cost[d, t])) for d, t in match_within_gate(cost, limit[None])]


def detect_clip(estimator, video: Path, truth: dict, clip_index: int) -> dict[str, list]:
    """Run the estimator over one clip's video and keep the matched person-frames (with the
    estimator's person masks, when it makes them, cropped to the person's box as the pipeline
    crops them for the lifter: engines.lift.crop_masks, stored as uint8 0-255)."""
    from engines.lift import crop_masks
    from engines.lift.network import MASK_SIZE
    from stream.sources import VideoFileSource

    estimator.reset()
    meta = json.loads(str(truth["meta"]))
    intrinsics = np.asarray(truth["intrinsics"], np.float32).reshape(3, 3)
    size = np.array([meta["width"], meta["height"]], np.float32)
    rows: dict[str, list] = {k: [] for k in ("keypoints", "world", "boxes", "intrinsics", "image_size",
                                              "global_orient", "body_pose", "betas", "transl", "landmarks",
                                              "keypoint_error_px", "clip", "frame")}
    if estimator.with_mask:
        rows["masks"] = []
    for frame_number, frame in enumerate(VideoFileSource(video).frames()):
        people = estimator(frame.image, frame.pts_s)
        here = np.nonzero(truth["frame_index"] == frame_number)[0]
        if not people or len(here) == 0:
            continue
        found = np.stack([p.keypoints for p in people])
        for d, t, distance in match_people(found, truth["keypoints2d"][here]):
            row = here[t]
            person = people[d]
            rows["keypoints"].append(person.keypoints)
            rows["world"].append(person.world_landmarks)
            rows["boxes"].append(person.bbox)
            rows["intrinsics"].append(intrinsics)
            rows["image_size"].append(size)
            for key in ("global_orient", "body_pose", "betas", "transl", "landmarks"):
                rows[key].append(truth[key][row])
            rows["keypoint_error_px"].append(distance)
            if estimator.with_mask:
                crop = (crop_masks(person.mask, person.bbox[None])[0].numpy() if person.mask is not None
                        else np.zeros((MASK_SIZE, MASK_SIZE), np.float32))
                rows["masks"].append(np.round(255 * crop).astype(np.uint8))
            rows["clip"].append(clip_index)
            rows["frame"].append(frame_number)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder (default: the meshstream cache, "
                                                      "lifter/renders_seed<S>)")
    parser.add_argument("--seed", type=int, default=1, help="render seed (the benchmark uses 0: keep them apart)")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--frames", type=int, default=30, help="frames per clip")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--motions", default=str(DEFAULT_MOTIONS), help="training motions, one CMU trial per line")
    parser.add_argument("--keep-videos", action="store_true", help="keep DIR/video (default: delete after detection)")
    parser.add_argument("--masks", action="store_true",
                        help="also keep BlazePose's person mask of each sample, cropped to its box (masks, (N,64,64) "
                             "uint8), for fine-tuning the shape network on real masks")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="render nothing: join these sample folders (in order) into --out")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.merge:
        from meshstream_tools.rendered import merge_samples

        if not args.out:
            raise SystemExit("--merge needs --out (the folder of the joined samples.npz)")
        print(f"{merge_samples(args.merge, args.out)} rows in {Path(args.out) / 'samples.npz'}")
        return 0
    torch.set_num_threads(1)
    check_training_motions(Path(args.motions))
    out = Path(args.out) if args.out else default_out(args.seed)
    video_dir = out / "video"
    video_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # 1. Render.
    from meshstream_tools import make_synthetic

    make_synthetic.main(["--out", str(video_dir), "--seed", str(args.seed), "--clips", str(args.clips),
                         "--frames", str(args.frames), "--size", args.size, "--motions", str(args.motions),
                         "--allow-training-motions", "--threads", "1"])
    rendered = time.time()
    # 2.-3. Detect and match.
    from engines.pose import PoseEstimator

    estimator = PoseEstimator(with_mask=args.masks, max_people=4)
    rows: dict[str, list] = {}
    people_frames = 0
    for clip_index in range(args.clips):
        name = f"clip_{clip_index:03d}"
        truth = dict(np.load(video_dir / f"{name}.npz"))
        people_frames += int(((truth["keypoints2d"][..., 2] > 0.5).sum(-1) >= 6).sum())
        for key, values in detect_clip(estimator, video_dir / f"{name}.mp4", truth, clip_index).items():
            rows.setdefault(key, []).extend(values)
    # 4. Save.
    arrays = {key: np.ascontiguousarray(np.stack(values)) for key, values in rows.items() if values}
    if not arrays:
        raise SystemExit("no person was detected and matched in the rendered clips; check the renders")
    for key in ("clip", "frame"):
        arrays[key] = arrays[key].astype(np.int32)
    for key, value in arrays.items():
        if value.dtype == np.float64:
            arrays[key] = value.astype(np.float32)
    meta = {"seed": args.seed, "clips": args.clips, "frames": args.frames, "size": args.size, "masks": args.masks,
            "motions": check_training_motions(Path(args.motions)), "generator": "tools/make_lifter_renders.py"}
    np.savez_compressed(out / "samples.npz", meta=np.array(json.dumps(meta)), **arrays)
    if not args.keep_videos:
        for path in video_dir.glob("clip_*"):
            path.unlink()
        video_dir.rmdir()
    matched = len(arrays["keypoints"])
    print(f"{matched} matched person-frames of {people_frames} with >= 6 visible keypoints "
          f"({args.clips} clips); mean keypoint error {arrays['keypoint_error_px'].mean():.1f} px; "
          f"rendering {rendered - started:.0f} s, detection {time.time() - rendered:.0f} s; {out / 'samples.npz'}",
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
