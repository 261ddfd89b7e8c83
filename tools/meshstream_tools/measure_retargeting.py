"""Measure the retargeting on every CMU clip: the numbers in docs/retargeting.md.

    python tools/measure_retargeting.py

1. Onto each clip's own T-pose skeleton: mean and max distance between the SMPL skeleton's
   joints (forward kinematics of the retargeted parameters) and the mocap's mapped points
   scaled to metres.
2. Onto the open body model's rest skeleton (if engines.body has it): the largest angle
   between a limb bone (thigh, shin, upper arm, forearm, hand) and the mocap's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engines.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from meshstream_tools import mocap

LIMB_ENDS = [SMPL_JOINT_NAMES.index(n) for n in (
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)]


def main() -> int:
    torch.set_num_threads(1)
    try:
        from engines.body import load_body_model

        open_rest = load_body_model("open").rest_joints(torch.zeros(1, 10))[0].detach().numpy().astype(np.float64)
    except (ImportError, FileNotFoundError):
        open_rest = None
    start = time.time()
    clip_means, worst, worst_angle, frames = [], 0.0, 0.0, 0
    parents = [SMPL_PARENTS[c] for c in LIMB_ENDS]
    for info in mocap.list_clips("all"):
        clip = mocap.read_bvh(info.path)
        _, positions = mocap.bvh_forward_kinematics(clip)
        points = mocap.mapped_points(clip.skeleton, positions)[1:]
        rest = mocap.mocap_rest_joints(clip)
        motion = mocap.retarget(clip, rest)
        frames += motion.num_frames
        joints = mocap.skeleton_forward_kinematics(rest.astype(np.float64), motion.global_orient, motion.body_pose, motion.transl)
        error_mm = (joints - points * motion.scale).norm(dim=-1) * 1000.0
        clip_means.append(float(error_mm.mean()))
        worst = max(worst, float(error_mm.max()))
        if open_rest is not None:
            motion = mocap.retarget(clip, open_rest)
            joints = mocap.skeleton_forward_kinematics(open_rest, motion.global_orient, motion.body_pose, motion.transl)
            ours = torch.nn.functional.normalize(joints[:, LIMB_ENDS] - joints[:, parents], dim=-1)
            theirs = torch.nn.functional.normalize(points[:, LIMB_ENDS] - points[:, parents], dim=-1)
            worst_angle = max(worst_angle, float(torch.rad2deg(torch.acos((ours * theirs).sum(-1).clamp(-1, 1))).max()))
    print(f"{len(clip_means)} clips, {frames} frames, {time.time() - start:.0f} s")
    print(f"own skeleton: mean joint error {np.mean(clip_means):.1f} mm (worst clip {np.max(clip_means):.1f} mm), max {worst:.1f} mm")
    if open_rest is not None:
        print(f"open body model: largest limb bone angle error {worst_angle:.2g} degrees")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
