"""Measure the world frame (stream.world, the world stage) on renders with known floor, camera and contacts.

    python tools/measure_world.py --pred PRED_DIR RENDER_DIR/clip_000.npz ... [--json OUT.json]

Each ground-truth clip ``RENDER_DIR/clip_NNN.npz`` of tools/make_synthetic.py (which records the
camera's pose in the world: y up, floor at y = 0) is paired with the results file
``PRED_DIR/<RENDER_DIR name>_clip_NNN.npz`` of ``meshstream process clip_NNN.mp4 --vertices``.
The world stage is run again on those results (real stage, replayed packets) four ways:
offline or live (causal), without or with foot locking; and once on the true bodies (how well
the floor comes out of perfect feet).

Per clip and way:
- camera: height error (m), pitch and roll error (degrees) of the last floor estimate; live also
  the mean over frames of the height and pitch errors once a floor is known;
- skating: the horizontal slide (mm per frame) of a foot joint (SMPL 10/11) between two
  consecutive frames where the true foot is on the floor (its lowest vertex within
  TRUE_CONTACT_M of the floor), in the estimate's world frame; the truth's own slide on the same
  frames; and the slide over the frames the estimate itself flags as contact;
- contacts: precision and recall of the estimate's flags against the true contacts;
- world joints: over windows of 100 consecutive frames (stride 50) of one person: the mean joint
  error in the world frame as is (W-abs), after moving the window so that the first frame's
  pelvis coincides (W-MPJPE), and after the best rigid motion of the whole window (WA-MPJPE).
Predictions are matched to true people per frame by their 2D keypoints (stream.evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from stream.evaluation import match_people
from stream.frames import Frame, Intrinsics, Packet, Person
from stream.pipeline import LIVE, OFFLINE, PipelineContext
from stream.replay import read_result_packets
from stream.stages.world import WorldStage
from stream.world import FOOT_JOINTS, foot_vertex_indices

TRUE_CONTACT_M = 0.04
WINDOW, STRIDE = 100, 50
WAYS = {"offline": (OFFLINE, False), "offline+lock": (OFFLINE, True), "live": (LIVE, False), "live+lock": (LIVE, True)}
FOOT = [side[1] for side in FOOT_JOINTS]  # foot joints 10, 11


class Truth:
    """A rendered clip's ground truth: per (frame, person) world joints, contacts, keypoints."""

    def __init__(self, path: Path, feet):
        data = np.load(path)
        meta = json.loads(str(data["meta"]))
        camera = meta["camera"]
        self.rotation = np.asarray(camera["world_to_camera"], np.float64)  # world -> camera
        self.position = np.asarray(camera["position_m"], np.float64)
        up = self.rotation @ np.array([0.0, 1.0, 0.0])  # world up in camera coordinates
        self.height = float(self.position[1])
        self.pitch = math.degrees(math.asin(-up[2]))
        self.roll = math.degrees(math.atan2(up[0], -up[1]))
        self.fps = float(meta["fps"])
        self.width_px, self.height_px = int(meta["width"]), int(meta["height"])
        self.frame_index = data["frame_index"].astype(int)
        self.person = data["track_id"].astype(int)
        self.keypoints = data["keypoints2d"]
        self.joints_cam = data["joints"].astype(np.float64)
        self.vertices = data["vertices"]
        self.global_orient = data["global_orient"]
        self.joints = self.to_world(self.joints_cam)
        soles = np.stack([self.to_world(self.vertices[:, idx])[..., 1].min(axis=1) for idx in feet], axis=1)
        self.contact = soles < TRUE_CONTACT_M  # (N, 2)
        self.rows = {(f, p): r for r, (f, p) in enumerate(zip(self.frame_index, self.person))}

    def to_world(self, points):
        return np.asarray(points, np.float64) @ self.rotation + self.position

    def packets(self, feet) -> list[Packet]:
        """The true bodies as packets (for the estimator on perfect feet)."""
        out = []
        for f in np.unique(self.frame_index):
            people = [Person(track_id=int(self.person[r]), joints=self.joints_cam[r].astype(np.float32),
                             keypoints=self.keypoints[r],
                             vertices=self.vertices[r], global_orient=self.global_orient[r])
                      for r in np.flatnonzero(self.frame_index == f)]
            out.append(Packet(Frame(int(f), f / self.fps, 0, np.zeros((self.height_px, self.width_px, 3), np.uint8)), people))
        return out


def replay(path: Path) -> list[Packet]:
    """A results file's packets, with the intrinsics of its run (the image size the keypoints are on)."""
    meta = json.loads(str(np.load(path)["meta"]))
    k = meta["intrinsics"]
    intrinsics = Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], int(meta["width"]), int(meta["height"]))
    packets = read_result_packets(path)
    for packet in packets:
        packet.intrinsics = intrinsics
    return packets


def run_world(packets: list[Packet], body_model, policy: str, lock: bool) -> list[Packet]:
    stage = WorldStage(body_model, lock_feet=lock)
    stage.open(PipelineContext(policy=policy))
    out = []
    for packet in packets:
        for person in packet.people:
            person.world_transl = person.world_orient = person.foot_contact = None
        packet.floor = None
        out.extend(stage.process_batch([packet]))
    out.extend(stage.flush())
    return out


def world_joints(packet: Packet, person: Person) -> np.ndarray | None:
    """The person's joints in the estimate's world frame, with the root as published (locking included)."""
    if packet.floor is None or person.world_transl is None or person.joints is None:
        return None
    joints = packet.floor.to_world(person.joints)
    return joints + (np.asarray(person.world_transl, np.float64) - joints[0])


def rigid_align(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """pred (N, 3) moved by the rotation and translation that best fit it to true (Kabsch)."""
    mp, mt = pred.mean(0), true.mean(0)
    u, _, vt = np.linalg.svd((pred - mp).T @ (true - mt))
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return (pred - mp) @ rotation + mt


def score(truth: Truth, packets: list[Packet], camera_only: bool = False) -> dict:
    floors = [(p.frame.index, p.floor) for p in packets if p.floor is not None]
    out = {}
    if floors:
        last = floors[-1][1]
        out.update(height_err_m=abs(last.camera_height_m - truth.height), pitch_err_deg=abs(last.camera_pitch_deg - truth.pitch),
                   roll_err_deg=abs(last.camera_roll_deg - truth.roll),
                   height_err_mean_m=float(np.mean([abs(f.camera_height_m - truth.height) for _, f in floors])),
                   pitch_err_mean_deg=float(np.mean([abs(f.camera_pitch_deg - truth.pitch) for _, f in floors])),
                   first_floor_frame=int(floors[0][0]))
    if camera_only:
        return out
    # Match predictions to true people, frame by frame: (frame, true person) -> (track, world joints, contact).
    matched = {}
    for packet in packets:
        f = packet.frame.index
        true_rows = np.flatnonzero(truth.frame_index == f)
        people = [p for p in packet.people if p.keypoints is not None]
        if not people or not len(true_rows):
            continue
        pairs = match_people(np.stack([p.keypoints for p in people]), truth.keypoints[true_rows])
        for i, j in pairs:
            joints = world_joints(packet, people[i])
            if joints is not None:
                matched[(f, int(truth.person[true_rows[j]]))] = (people[i].track_id, joints, np.asarray(people[i].foot_contact) > 0.5)
    slides, true_slides, own_slides = [], [], []
    tp = fp = fn = 0
    for (f, person), (track, joints, contact) in matched.items():
        row = truth.rows[(f, person)]
        true_contact = truth.contact[row]
        tp += int((contact & true_contact).sum())
        fp += int((contact & ~true_contact).sum())
        fn += int((~contact & true_contact).sum())
        following = matched.get((f + 1, person))
        next_row = truth.rows.get((f + 1, person))
        if following is None or following[0] != track or next_row is None:
            continue
        for side, joint in enumerate(FOOT):
            slide = float(np.hypot(*(following[1][joint] - joints[joint])[[0, 2]])) * 1000
            if true_contact[side] and truth.contact[next_row][side]:
                slides.append(slide)
                true_slides.append(float(np.hypot(*(truth.joints[next_row][joint] - truth.joints[row][joint])[[0, 2]])) * 1000)
            if contact[side] and following[2][side]:
                own_slides.append(slide)
    out.update(skate_mm=_mean(slides), true_skate_mm=_mean(true_slides), own_contact_skate_mm=_mean(own_slides),
               skate_pairs=len(slides), contact_precision=tp / max(tp + fp, 1), contact_recall=tp / max(tp + fn, 1))
    # World joint error over windows of consecutive frames of one person matched to one track.
    absolute, first_aligned, rigid = [], [], []
    for person in np.unique(truth.person):
        frames = sorted(f for (f, p) in matched if p == person)
        run: list[int] = []
        for f in frames + [None]:
            if f is not None and run and f == run[-1] + 1 and matched[(f, person)][0] == matched[(run[-1], person)][0]:
                run.append(f)
                continue
            for start in range(0, len(run) - WINDOW + 1, STRIDE):
                window = run[start:start + WINDOW]
                pred = np.stack([matched[(g, person)][1] for g in window])
                true = np.stack([truth.joints[truth.rows[(g, person)]] for g in window])
                absolute.append(np.linalg.norm(pred - true, axis=-1).mean())
                shifted = pred + (true[0, 0] - pred[0, 0])
                first_aligned.append(np.linalg.norm(shifted - true, axis=-1).mean())
                aligned = rigid_align(pred.reshape(-1, 3), true.reshape(-1, 3)).reshape(pred.shape)
                rigid.append(np.linalg.norm(aligned - true, axis=-1).mean())
            run = [f] if f is not None else []
    out.update(windows=len(absolute), w_abs_mm=_mean(absolute, 1000), w_mpjpe_mm=_mean(first_aligned, 1000),
               wa_mpjpe_mm=_mean(rigid, 1000))
    return out


def _mean(values, scale: float = 1.0):
    return float(np.mean(values) * scale) if len(values) else None


def summarize(per_seed: dict[str, dict[str, list[dict]]]) -> dict:
    """Per way and metric: the mean over each seed's clips, then mean and spread (std) over seeds."""
    summary = {}
    ways = sorted({w for seeds in per_seed.values() for w in seeds})
    for way in ways:
        metrics = sorted({k for seeds in per_seed.values() for clip in seeds.get(way, []) for k in clip})
        summary[way] = {}
        for metric in metrics:
            seed_means = []
            for seeds in per_seed.values():
                values = [c[metric] for c in seeds.get(way, []) if c.get(metric) is not None]
                if values:
                    seed_means.append(float(np.mean(values)))
            if seed_means:
                summary[way][metric] = {"mean": float(np.mean(seed_means)), "std": float(np.std(seed_means)),
                                        "seeds": seed_means}
    return summary


TABLE_COLUMNS = [("height_err_m", "camera height error (m)", 1.0, 3), ("pitch_err_deg", "pitch error (deg)", 1.0, 2),
                 ("roll_err_deg", "roll error (deg)", 1.0, 2), ("skate_mm", "skating (mm/frame)", 1.0, 1),
                 ("true_skate_mm", "truth's own skating", 1.0, 1), ("own_contact_skate_mm", "skating, own contacts", 1.0, 1),
                 ("contact_precision", "contact precision", 1.0, 2), ("contact_recall", "contact recall", 1.0, 2),
                 ("w_abs_mm", "W-abs (mm)", 1.0, 0), ("w_mpjpe_mm", "W-MPJPE100 (mm)", 1.0, 0),
                 ("wa_mpjpe_mm", "WA-MPJPE100 (mm)", 1.0, 0)]


def markdown_table(summary: dict) -> str:
    """The summary as a markdown table: one row per way, mean +- std over seeds."""
    ways = [w for w in ("perfect-bodies", "offline", "offline+lock", "live", "live+lock") if w in summary]
    lines = ["| way | " + " | ".join(title for _, title, _, _ in TABLE_COLUMNS) + " |",
             "| --- |" + " --- |" * len(TABLE_COLUMNS)]
    for way in ways:
        cells = []
        for key, _, scale, digits in TABLE_COLUMNS:
            value = summary[way].get(key)
            cells.append("" if value is None else f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}")
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("truth", nargs="+", help="ground-truth clips (RENDER_DIR/clip_NNN.npz)")
    parser.add_argument("--pred", required=True, help="folder of results files named <RENDER_DIR name>_clip_NNN.npz")
    parser.add_argument("--json", help="write the per-clip numbers and the summary here")
    args = parser.parse_args(argv)
    from engines.body import load_body_model

    body_model = load_body_model("open")
    feet = foot_vertex_indices(body_model.lbs_weights.cpu().numpy())
    per_seed: dict[str, dict[str, list[dict]]] = {}
    clips = {}
    for path in map(Path, args.truth):
        pred_path = Path(args.pred) / f"{path.parent.name}_{path.stem}.npz"
        if not pred_path.is_file():
            print(f"skip {path}: no {pred_path}", file=sys.stderr)
            continue
        truth = Truth(path, feet)
        seed = per_seed.setdefault(path.parent.name, {})
        clip = {"truth": {"height_m": truth.height, "pitch_deg": truth.pitch, "roll_deg": truth.roll}}
        clip["perfect-bodies"] = score(truth, run_world(truth.packets(feet), body_model, OFFLINE, False), camera_only=True)
        seed.setdefault("perfect-bodies", []).append(clip["perfect-bodies"])
        for way, (policy, lock) in WAYS.items():
            packets = run_world(replay(pred_path), body_model, policy, lock)
            clip[way] = score(truth, packets)
            seed.setdefault(way, []).append(clip[way])
        clips[f"{path.parent.name}/{path.stem}"] = clip
        print(f"{path.parent.name}/{path.stem}: h {truth.height:.2f} m pitch {truth.pitch:.1f} | " + " | ".join(
            f"{way}: dh {clip[way].get('height_err_m', float('nan')):.3f} dp {clip[way].get('pitch_err_deg', float('nan')):.2f}"
            f" skate {clip[way].get('skate_mm') or float('nan'):.1f} (true {clip[way].get('true_skate_mm') or float('nan'):.1f})"
            f" WA {clip[way].get('wa_mpjpe_mm') or float('nan'):.0f}" for way in WAYS), flush=True)
    summary = summarize(per_seed)
    print(markdown_table(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": clips, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
