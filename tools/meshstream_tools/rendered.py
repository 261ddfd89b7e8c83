"""Training batches from real BlazePose outputs on rendered people (tools/make_lifter_renders.py).

The synthetic batches of :mod:`meshstream_tools.synthetic` imitate the detector; these carry the
detector's real keypoints, boxes and world landmarks (and, from sets made with ``--masks``, its
person masks), with the true bodies they were rendered from, so a fine-tune can close the gap
between the two. ``RenderedPeople(model, path).sample(n)``
returns a :class:`meshstream_tools.synthetic.SyntheticBatch` like ``SyntheticPeople.sample``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engines.lift.network import MASK_SIZE
from engines.rotations import axis_angle_to_matrix
from meshstream_tools.synthetic import SyntheticBatch

REQUIRED_KEYS = ("keypoints", "world", "boxes", "intrinsics", "image_size", "global_orient", "body_pose",
                 "betas", "transl")


def load_samples(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a samples.npz (or of the samples.npz inside a folder); ValueError if incomplete."""
    path = Path(path)
    if path.is_dir():
        path = path / "samples.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no rendered samples at {path}; make them with `python tools/make_lifter_renders.py`")
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files if key != "meta"}
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{path} lacks {missing}; remake it with tools/make_lifter_renders.py")
    return arrays


def merge_samples(folders: list[str | Path], out: str | Path) -> int:
    """Join the samples.npz of several runs of tools/make_lifter_renders.py (e.g. two seeds made
    side by side, one per core) into ``out``/samples.npz, in the order given. Clip ids of each
    later set are offset by the clips of the sets before it, so every clip keeps its own id and
    the "every 10th clip is validation" rule still holds. When some sets have person masks and
    others not, the joined set has masks for all rows (zeros where there were none) and
    ``mask_present`` (N,) float32 saying which are real. Returns the number of rows."""
    arrays: dict[str, list[np.ndarray]] = {}
    metas = []
    offset = 0
    paths = [Path(folder) / "samples.npz" if Path(folder).is_dir() else Path(folder) for folder in folders]
    any_masks = False
    for path in paths:
        with np.load(path) as data:
            any_masks |= "masks" in data.files
    for path in paths:
        load_samples(path)  # checks that it is complete
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            rows = len(data["keypoints"])
            for key in data.files:
                if key not in ("meta", "masks", "mask_present"):
                    values = data[key] + offset if key == "clip" else data[key]
                    arrays.setdefault(key, []).append(values)
            if any_masks:
                has = "masks" in data.files
                arrays.setdefault("masks", []).append(data["masks"] if has else np.zeros((rows, MASK_SIZE, MASK_SIZE), np.uint8))
                present = data["mask_present"] if "mask_present" in data.files else np.full(rows, float(has), np.float32)
                arrays.setdefault("mask_present", []).append(present.astype(np.float32))
            # Sets merged by an older version recorded no clip count: their largest id + 1.
            clips = int(meta["clips"]) if "clips" in meta else int(data["clip"].max()) + 1
        metas.append(meta)
        offset += clips
    if not metas:
        raise ValueError("no samples to merge")
    merged = {key: np.ascontiguousarray(np.concatenate(values)) for key, values in arrays.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"clips": offset, "merged": metas, "generator": "tools/make_lifter_renders.py --merge"}
    np.savez_compressed(out / "samples.npz", meta=np.array(json.dumps(meta)), **merged)
    return len(merged["keypoints"])


class RenderedPeople:
    """Draws batches of rendered person-frames.

    Args:
        model: the engines.body model the renders were posed with (or its vertex subset).
        samples: a path (see :func:`load_samples`) or the loaded arrays.
        generator: the torch.Generator of every random choice.
        world_presence: chance that a sample keeps its world landmarks (else they are absent, as
            when the landmark network gives none), so the lifter learns both cases.
        rows: the sample rows to draw from (default all), e.g. to hold some clips out.
        mask_share: None (default): rows drawn uniformly. A fraction: that share of each batch is
            drawn from the rows with a person mask (when there are any), e.g. to fine-tune the
            shape network on the detector's real masks.
    """

    def __init__(self, model, samples, generator: torch.Generator, world_presence: float = 0.7,
                 rows: np.ndarray | None = None, mask_share: float | None = None) -> None:
        arrays = load_samples(samples) if not isinstance(samples, dict) else samples
        if rows is not None:
            arrays = {key: value[rows] for key, value in arrays.items()}
        if len(arrays["keypoints"]) == 0:
            raise ValueError("no rendered samples to draw from")
        self.model = model
        self.data = {key: torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32))
                     for key in REQUIRED_KEYS}
        self.generator = generator
        self.world_presence = world_presence
        count = len(arrays["keypoints"])
        if "masks" in arrays:
            self.masks = torch.from_numpy(np.ascontiguousarray(arrays["masks"], dtype=np.uint8))
            present = arrays.get("mask_present", np.ones(count, np.float32))
            self.mask_present = torch.from_numpy(np.ascontiguousarray(present, dtype=np.float32))
        else:
            self.masks, self.mask_present = None, torch.zeros(count)
        self.masked_rows = torch.nonzero(self.mask_present > 0).flatten()
        self.mask_share = mask_share

    def __len__(self) -> int:
        return int(self.data["keypoints"].shape[0])

    @torch.no_grad()
    def sample(self, count: int, index: Tensor | None = None) -> SyntheticBatch:
        """A batch of ``count`` rows drawn with replacement (or the rows ``index``).

        The keypoints are the detector's (non-finite values zeroed, visibility 0); the world
        landmarks are kept with chance ``world_presence``; the person masks (in [0, 1]) where the
        samples have them, else absent.
        """
        if index is None:
            index = torch.randint(0, len(self), (count,), generator=self.generator)
            if self.mask_share is not None and len(self.masked_rows):
                masked = int(round(count * self.mask_share))
                pick = torch.randint(0, len(self.masked_rows), (masked,), generator=self.generator)
                index[:masked] = self.masked_rows[pick]
        count = int(index.shape[0])
        d = {key: value[index] for key, value in self.data.items()}
        keypoints = d["keypoints"].clone()
        bad = ~torch.isfinite(keypoints).all(-1)
        keypoints[bad] = 0.0
        world = torch.nan_to_num(d["world"], nan=0.0)
        present = (torch.rand(count, generator=self.generator) < self.world_presence).float()
        present = present * torch.isfinite(d["world"]).all(-1).all(-1).float()
        body = self.model(d["global_orient"], d["body_pose"], d["betas"], d["transl"])
        mask_present = self.mask_present[index]
        if self.masks is None:
            masks = torch.zeros(count, MASK_SIZE, MASK_SIZE)
        else:
            masks = self.masks[index].float() / 255.0 * mask_present[:, None, None]
        rotations = axis_angle_to_matrix(torch.cat([d["global_orient"][:, None], d["body_pose"]], 1))
        return SyntheticBatch(d["global_orient"], d["body_pose"], d["betas"], d["transl"], rotations,
                              body.vertices, body.joints, body.landmarks, d["intrinsics"], d["image_size"],
                              d["boxes"], keypoints, world * present[:, None, None], present, masks, mask_present)


def concatenate(first: SyntheticBatch, second: SyntheticBatch) -> SyntheticBatch:
    """One batch of the rows of both (same fields, same body model)."""
    return SyntheticBatch(*[torch.cat([a, b]) for a, b in zip(first.__dict__.values(), second.__dict__.values())])
