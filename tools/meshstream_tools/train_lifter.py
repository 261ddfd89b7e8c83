"""Train the lifter (engines/lift) on synthetic people made on the fly from a body model.

One command, seeded:

    python tools/train_lifter.py                       # the open body model, shipped weights
    python tools/train_lifter.py --body /path/to/SMPL_NEUTRAL.pkl --out my_lifter.pt

Steps:

1. Poses: every CMU clip in the mocap folder (meshstream_tools.mocap), retargeted onto the body model's
   own T-pose skeleton, resampled to 30 fps (cached); the clips of meshstream_tools.mocap.HELD_OUT_CLIPS
   are kept for validation only (their list is written to tools/meshstream_tools/holdout.txt).
2. A bank of silhouettes rendered with engines.render (cached), for the shape network.
3. Training: batches from meshstream_tools.synthetic (mirrored, turned, perturbed poses; random
   shapes and cameras; detector-like keypoints, world landmarks and masks), AdamW with a
   warm-up and cosine decay, losses (metres unless said):
     vertices  mean distance of a fixed subset of vertices, pelvis-aligned;
     joints    mean distance of the 24 joints, pelvis-aligned, and of the 33 landmarks;
     2D        mean distance of the projected landmarks to the exact ones, in box units
               (the box's half side = 1), through the predicted translation;
     params    squared distance of rotation matrices, of betas; log-depth error.
4. Validation on held-out clips every ``--eval-every`` steps and at the end: MPJPE, PA-MPJPE,
   PVE in mm; the weights (float16) and these numbers are saved to ``--out``.

``--only-shape`` fine-tunes the shape network alone (with ``--init``), e.g. on the detector's
real person masks of rendered people (``--finetune-renders`` of sets made with ``--masks``,
``--render-mask-share``); the pose network's weights, and so its answers, do not change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engines.cache import cache_dir
from engines.geometry import project_points
from engines.lift.camera import pixels_to_box
from meshstream_tools.lift_metrics import mpjpe, pa_mpjpe, pve
from engines.lift.network import LiftNetwork
from meshstream_tools import REPOSITORY as ROOT
from meshstream_tools.rendered import concatenate
from meshstream_tools.synthetic import HOLDOUT_FILE, SyntheticPeople, render_mask_bank, vertex_subset_model

LOSS_WEIGHTS = {"vertices": 1.0, "joints": 1.0, "landmarks": 0.5, "reprojection": 0.5,
                "rotations": 0.1, "betas": 0.01, "depth": 0.1}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", default="open", help='"open" or a path to an SMPL/SMPL+H/SMPL-X model file or folder')
    parser.add_argument("--gender", default="neutral", help="the model file to pick in a folder")
    parser.add_argument("--mocap", default=None, help="the mocap folder (INDEX.csv, cmu/); default meshstream_tools.mocap.mocap_root()")
    parser.add_argument("--out", default=str(ROOT / "engines" / "lift" / "assets" / "lifter.pt"))
    parser.add_argument("--steps", type=int, default=3000, help="optimiser steps at most")
    parser.add_argument("--minutes", type=float, default=35.0,
                        help="training time at most: the learning-rate schedule runs on the larger of the "
                             "step and time fractions, so the run ends decayed either way (0: steps only, "
                             "which makes a run repeat exactly)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--mask-fraction", type=float, default=0.25, help="share of each batch with a silhouette")
    parser.add_argument("--mask-bank", type=int, default=2000, help="silhouettes rendered for training")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--validation-size", type=int, default=512)
    parser.add_argument("--vertex-stride", type=int, default=16,
                        help="training poses every n-th vertex (and the landmarks' vertices) only")
    parser.add_argument("--init", default=None, help="start from these weights (a lifter.pt) instead of random "
                        "ones; the architecture is theirs (--width, --blocks are ignored)")
    parser.add_argument("--finetune-renders", default=None, metavar="SAMPLES",
                        help="also train on real BlazePose outputs of rendered people (a samples.npz or its "
                             "folder, from tools/make_lifter_renders.py); implies --init of the shipped "
                             "weights unless --init is given")
    parser.add_argument("--render-fraction", type=float, default=0.5,
                        help="share of each batch drawn from --finetune-renders")
    parser.add_argument("--render-world-presence", type=float, default=0.7,
                        help="chance that a rendered sample keeps BlazePose's world landmarks")
    parser.add_argument("--real-world-error-share", type=float, default=0.0,
                        help="share of the synthetic world landmarks that carry a real BlazePose error (drawn "
                             "from the training rows of --finetune-renders) instead of the default noise")
    parser.add_argument("--world-presence", type=float, default=0.7,
                        help="chance that a synthetic person has world landmarks")
    parser.add_argument("--render-mask-share", type=float, default=None,
                        help="share of the rendered rows of each batch drawn from samples with BlazePose's person "
                             "mask (sets made with make_lifter_renders.py --masks); default: uniform")
    parser.add_argument("--only-shape", action="store_true",
                        help="train only the shape network (mask encoder and betas head); the pose network and "
                             "its answers stay exactly as in --init")
    parser.add_argument("--render-validation-every", type=int, default=10,
                        help="every n-th rendered clip (clip n-1, 2n-1, ...) is kept for validation, never "
                             "trained on (0: none)")
    return parser.parse_args(argv)


# -- 1. poses -----------------------------------------------------------------------------------
def pose_bank(model, split: str, mocap_folder: str | None, fps: float = 30.0) -> torch.Tensor:
    """(N,24,3) model-frame SMPL poses of every clip of a split, retargeted onto the model's skeleton."""
    from meshstream_tools import mocap

    rest = model.rest_joints(torch.zeros(1, 10, dtype=model.dtype))[0].double().numpy()
    clips = mocap.list_clips(split, mocap_folder)
    # The loader's cleaning is part of the key: changing it makes the bank again.
    cleaning = {"lowpass_hz": mocap.MOCAP_LOWPASS_HZ, "incomplete_leading_frames": "dropped"}
    key = hashlib.sha256(json.dumps([model.model_id, split, fps, [c.trial for c in clips],
                                     np.round(rest, 5).tolist(), cleaning]).encode()).hexdigest()[:16]
    path = cache_dir() / "lifter" / f"poses_{split}_{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    poses = []
    for info in clips:
        motion, _ = mocap.load_clip(info, rest_joints=rest, fps=fps, root=mocap_folder)
        poses.append(np.concatenate([motion.global_orient[:, None], motion.body_pose], 1))
    bank = np.ascontiguousarray(np.concatenate(poses), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, bank)
    return torch.from_numpy(bank)


def write_holdout(path: Path = HOLDOUT_FILE) -> list[str]:
    from meshstream_tools import mocap

    clips = list(mocap.HELD_OUT_CLIPS)
    text = ("# CMU trials never used to train the lifter (meshstream_tools.mocap.HELD_OUT_CLIPS); the evaluation\n"
            "# (tools/eval_lifter.py) draws its sequences from these.\n" + "\n".join(clips) + "\n")
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return clips


# -- 2. silhouettes -------------------------------------------------------------------------------
def mask_bank(model, poses: torch.Tensor, count: int, seed: int, name: str) -> dict:
    """Rendered silhouettes for ``count`` synthetic people (cached by model, poses, seed, count)."""
    key = hashlib.sha256(json.dumps([model.model_id, int(poses.shape[0]), float(poses.sum()), seed, count,
                                     name, 2]).encode()).hexdigest()[:16]
    path = cache_dir() / "lifter" / f"masks_{name}_{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    people = SyntheticPeople(model, poses, torch.Generator().manual_seed(seed))
    start = time.time()
    bank = render_mask_bank(model, people, count)
    print(f"rendered {count} silhouettes ({name}) in {time.time() - start:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bank, path)
    return bank


# -- 3. losses ------------------------------------------------------------------------------------
def losses(model, batch, outputs) -> dict[str, torch.Tensor]:
    """The training losses (see the module docstring) of one batch, each a scalar.

    model: the body model that made ``batch`` (a vertex subset of the full one: every vertex counts).
    """
    orient, body_pose, betas, transl, rotations, _camera = outputs
    body = model(orient, body_pose, betas, None)
    root_pred = body.joints[:, :1]
    root_true = batch.joints[:, :1]
    joints = (body.joints - root_pred - (batch.joints - root_true)).norm(dim=-1).mean()
    vertices = ((body.vertices - root_pred) - (batch.vertices - root_true)).norm(dim=-1).mean()
    landmarks = ((body.landmarks - root_pred) - (batch.landmarks - root_true)).norm(dim=-1).mean()
    predicted_uv = pixels_to_box(project_points(body.landmarks + transl[:, None], batch.intrinsics), batch.boxes)
    true_uv = pixels_to_box(project_points(batch.landmarks, batch.intrinsics), batch.boxes)
    reprojection = (predicted_uv - true_uv).norm(dim=-1).clamp(max=2.0).mean()
    return {
        "vertices": vertices,
        "joints": joints,
        "landmarks": landmarks,
        "reprojection": reprojection,
        "rotations": ((rotations - batch.rotations) ** 2).sum((-1, -2)).mean(),
        "betas": ((betas - batch.betas) ** 2).mean(),
        "depth": (torch.log(transl[:, 2].clamp(min=0.1)) - torch.log(batch.transl[:, 2])).abs().mean(),
    }


def run_network(network, batch):
    return network(batch.keypoints, batch.boxes, batch.intrinsics, batch.world, batch.world_present,
                   batch.masks, batch.mask_present)


# -- 4. validation --------------------------------------------------------------------------------
@torch.no_grad()
def validate(network, model, batches) -> dict[str, float]:
    """MPJPE, PA-MPJPE, PVE (mm) and translation error (mm) over fixed validation batches."""
    network.eval()
    totals: dict[str, list] = {"mpjpe_mm": [], "pa_mpjpe_mm": [], "pve_mm": [], "transl_mm": []}
    for batch in batches:
        orient, body_pose, betas, transl, _, _ = run_network(network, batch)
        body = model(orient, body_pose, betas, transl)
        totals["mpjpe_mm"].append(mpjpe(body.joints, batch.joints))
        totals["pa_mpjpe_mm"].append(pa_mpjpe(body.joints, batch.joints))
        totals["pve_mm"].append(pve(body.vertices, batch.vertices, body.joints[:, 0], batch.joints[:, 0]))
        totals["transl_mm"].append((transl - batch.transl).norm(dim=-1))
    network.train()
    return {key: round(float(torch.cat(value).mean()) * 1000.0, 1) for key, value in totals.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from engines.body import load_body_model

    started = time.time()
    model = load_body_model(args.body, gender=args.gender)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    # 1. Poses, split by whole clips.
    holdout = write_holdout() if args.body == "open" or not HOLDOUT_FILE.is_file() else None
    train_poses = pose_bank(model, "train", args.mocap)
    validation_poses = pose_bank(model, "validation", args.mocap)
    print(f"poses: {train_poses.shape[0]} training, {validation_poses.shape[0]} held out "
          f"({holdout or 'tools/meshstream_tools/holdout.txt'})", flush=True)
    # 2. Silhouettes.
    train_masks = mask_bank(model, train_poses, args.mask_bank, args.seed + 101, "train") if args.mask_bank else None
    validation_masks = mask_bank(model, validation_poses, args.validation_size // 4, args.seed + 202, "validation")
    # 3. Training.
    generator = torch.Generator().manual_seed(args.seed)
    training_model, _ = vertex_subset_model(model, args.vertex_stride)
    people = SyntheticPeople(training_model, train_poses, generator, train_masks, world_presence=args.world_presence)
    validation_people = SyntheticPeople(model, validation_poses, torch.Generator().manual_seed(args.seed + 1),
                                        validation_masks)
    validation_batches = [validation_people.sample(min(256, args.validation_size - i), with_masks=64)
                          for i in range(0, args.validation_size, 256)]
    if args.finetune_renders and args.init is None:
        args.init = str(ROOT / "engines" / "lift" / "assets" / "lifter.pt")
    if args.init:
        checkpoint = torch.load(args.init, map_location="cpu", weights_only=True)
        network = LiftNetwork(**checkpoint["config"])
        network.load_state_dict({name: value.float() for name, value in checkpoint["state_dict"].items()})
        print(f"starting from {args.init}", flush=True)
    else:
        network = LiftNetwork(width=args.width, blocks=args.blocks)
    rendered, rendered_validation, render_count = None, [], 0
    if args.finetune_renders:
        from meshstream_tools.rendered import RenderedPeople, load_samples

        samples = load_samples(args.finetune_renders)
        every = args.render_validation_every
        held = (samples["clip"] % every == every - 1) if every > 0 else np.zeros(len(samples["clip"]), bool)
        rendered = RenderedPeople(training_model, samples, torch.Generator().manual_seed(args.seed + 3),
                                  args.render_world_presence, rows=np.nonzero(~held)[0], mask_share=args.render_mask_share)
        if held.any():
            validation_rendered = RenderedPeople(model, samples, torch.Generator().manual_seed(args.seed + 4),
                                                 args.render_world_presence, rows=np.nonzero(held)[0])
            held_count = len(validation_rendered)
            rendered_validation = [validation_rendered.sample(0, torch.arange(i, min(i + 256, held_count)))
                                   for i in range(0, held_count, 256)]
        render_count = int(round(args.batch * args.render_fraction))
        if args.real_world_error_share > 0:
            train_rows = ~held & np.isfinite(samples["world"]).all((1, 2))
            landmarks = samples["landmarks"][train_rows]
            centred = landmarks - 0.5 * (landmarks[:, 23] + landmarks[:, 24])[:, None]
            people.world_errors = torch.from_numpy(samples["world"][train_rows] - centred)
            people.world_error_share = args.real_world_error_share
            print(f"real world-landmark errors: {int(train_rows.sum())}, in {args.real_world_error_share:.0%} "
                  f"of the synthetic world landmarks", flush=True)
        print(f"rendered samples: {len(rendered)} training, {int(held.sum())} validation "
              f"(every {every}th clip); {render_count} of each batch", flush=True)
    trainable = list(network.parameters())
    if args.only_shape:
        if not args.init:
            raise SystemExit("--only-shape fine-tunes the shape network of existing weights: give --init")
        shape_modules = (network.mask_encoder, network.mask_fc, network.shape_mlp)
        trainable = [p for module in shape_modules for p in module.parameters()]
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        for parameter in trainable:
            parameter.requires_grad_(True)
        print(f"training the shape network only: {sum(p.numel() for p in trainable) / 1e6:.2f} M parameters", flush=True)

    def train_mode() -> None:
        network.train()
        if args.only_shape:  # the frozen pose network answers as it will at inference (no dropout)
            network.pose_blocks.eval()

    optimiser = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-4)
    warmup = min(100, args.steps // 10)

    time_limit = args.minutes * 60.0

    def progress(step: int) -> float:
        """Fraction of the run done: of the steps, or of the time limit when that is nearer."""
        by_steps = step / args.steps
        if time_limit <= 0:
            return by_steps
        return max(by_steps, (time.time() - train_start) / time_limit)

    def learning_rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress(step))))
    with_masks = int(round(args.batch * args.mask_fraction)) if train_masks is not None else 0
    print(f"network: {sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters; "
          f"set-up {time.time() - started:.0f} s", flush=True)
    train_start = time.time()
    train_mode()
    running: dict[str, float] = {}
    history = []
    steps_done = 0
    for step in range(args.steps):
        if step >= warmup and progress(step) >= 1.0:
            break
        for group in optimiser.param_groups:
            group["lr"] = args.lr * learning_rate(step)
        batch = people.sample(args.batch - render_count, with_masks=with_masks)
        if render_count:
            batch = concatenate(batch, rendered.sample(render_count))
        outputs = run_network(network, batch)
        terms = losses(training_model, batch, outputs)
        total = sum(LOSS_WEIGHTS[name] * value for name, value in terms.items())
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)
        optimiser.step()
        steps_done = step + 1
        for name, value in terms.items():
            value = float(value.detach())
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        if (step + 1) % 100 == 0:
            elapsed = time.time() - train_start
            print(f"step {step + 1}/{args.steps} {elapsed:.0f} s lr {optimiser.param_groups[0]['lr']:.2e}  " +
                  " ".join(f"{k} {v:.4f}" for k, v in running.items()), flush=True)
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            scores = validate(network, model, validation_batches)
            if rendered_validation:
                scores["rendered"] = validate(network, model, rendered_validation)
            history.append({"step": step + 1, **scores})
            print(f"validation at step {step + 1}: {scores}", flush=True)
            train_mode()
    train_seconds = time.time() - train_start
    scores = validate(network, model, validation_batches)
    if rendered_validation:
        scores["rendered"] = validate(network, model, rendered_validation)
    history.append({"step": steps_done, **scores})
    print(f"held-out clips, detector-like noise: {scores}", flush=True)
    print(f"training time {train_seconds / 60:.1f} min on {args.threads} threads, {steps_done} steps of "
          f"{args.batch} ({train_seconds / max(1, steps_done):.2f} s/step)", flush=True)
    # 4. Save (float16 weights).
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: value.detach().half() if value.is_floating_point() else value
             for name, value in network.state_dict().items()}
    metadata = {"body_model": model.model_id, "steps": steps_done, "batch": args.batch, "seed": args.seed,
                "threads": args.threads, "training_seconds": round(train_seconds), "validation": scores,
                "history": history, "holdout": list(holdout) if holdout else None,
                "command": "python tools/train_lifter.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    torch.save({"config": network.config, "state_dict": state, "metadata": metadata}, out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
