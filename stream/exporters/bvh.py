"""BVH export: each person's motion on their own skeleton.

Written here (a short text format) rather than with a BVH package: bvhio, the maintained one,
turns rotations into Euler angles without handling gimbal lock (a 90 degree turn about the
middle axis came out wrong by up to 17 cm at the joints) and prints small numbers in
scientific notation; scipy's conversion is exact there.

One BVH file holds one skeleton, so each person gets a file: ``OUT.bvh`` for the person seen in
the most frames, ``OUT.<track id>.bvh`` for each other person (see :func:`bvh_paths`).

The file, for a run at ``fps`` frames per second:

- skeleton: SMPL's 24 joints (names from engines.skeleton), bone offsets from the person's own
  rest pose (their median shape); the root ``pelvis`` has OFFSET 0 and six channels
  ``Xposition Yposition Zposition Zrotation Xrotation Yrotation``, every other joint three
  ``Zrotation Xrotation Yrotation`` (intrinsic: R = Rz Rx Ry); leaf joints (head, hands, feet)
  end in an End Site half their bone's length further along it;
- axes: y up, the rest pose facing +z (the person's left at +x); a person with world-frame
  root motion in every frame (the world stage, docs/world.md) is placed in that world: floor
  at y = 0, the camera at (0, h, 0) looking along -z, tilted by its pitch; otherwise the camera
  is at the origin looking along -z: meshstream's camera frame turned half a turn about x;
- units: centimetres (``units="cm"``, the usual BVH unit) or metres (``units="m"``);
- frames: frame k is the video's frame k, from frame 0 to the last frame with anyone in it;
  ``Frame Time`` is 1/fps. Frames between two sightings of a person are interpolated (slerp,
  and linear for the root's position); before the first and after the last sighting the
  nearest seen pose is held.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from stream.exporters.motion import (
    ExportError,
    MotionCollector,
    TrackMotion,
    check_output_path,
    read_results,
    resolve_body_model,
    rest_skeleton,
)
from stream.frames import Packet

log = logging.getLogger("meshstream.exporters.bvh")

UNITS_PER_METRE = {"cm": 100.0, "m": 1.0}
ROTATION_CHANNELS = ["Zrotation", "Xrotation", "Yrotation"]
ROOT_CHANNELS = ["Xposition", "Yposition", "Zposition", *ROTATION_CHANNELS]
DECIMALS = 6


def bvh_paths(path: str | os.PathLike, tracks: list[TrackMotion]) -> list[Path]:
    """Where each person's BVH goes: the first (longest) track at ``path``, the others at
    ``path`` with ``.<track id>`` before the suffix (``out.bvh``, ``out.7.bvh``)."""
    path = Path(path)
    return [path if i == 0 else path.with_name(f"{path.stem}.{track.track_id}{path.suffix}")
            for i, track in enumerate(tracks)]


def hierarchy_order(parents: list[int]) -> list[int]:
    """Joints depth first from the root, children in index order: the order BVH lists them."""
    order, stack = [], [parents.index(-1)]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(reversed([child for child, parent in enumerate(parents) if parent == joint]))
    return order


def bvh_hierarchy(names: list[str], parents: list[int], rest: np.ndarray) -> str:
    """The HIERARCHY section: rest (24, 3) joint positions in file units."""
    lines = ["HIERARCHY"]

    def number(values) -> str:
        return " ".join(f"{v:.{DECIMALS}f}" for v in values)

    def joint_block(joint: int, depth: int) -> None:
        pad = "\t" * depth
        parent = parents[joint]
        lines.append(f"{pad}{'ROOT' if parent < 0 else 'JOINT'} {names[joint]}")
        lines.append(f"{pad}{{")
        offset = np.zeros(3) if parent < 0 else rest[joint] - rest[parent]
        channels = ROOT_CHANNELS if parent < 0 else ROTATION_CHANNELS
        lines.append(f"{pad}\tOFFSET {number(offset)}")
        lines.append(f"{pad}\tCHANNELS {len(channels)} {' '.join(channels)}")
        children = [child for child, p in enumerate(parents) if p == joint]
        for child in children:
            joint_block(child, depth + 1)
        if not children:
            lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{", f"{pad}\t\tOFFSET {number(0.5 * offset)}", f"{pad}\t}}"])
        lines.append(f"{pad}}}")

    joint_block(parents.index(-1), 0)
    return "\n".join(lines) + "\n"


def bvh_motion(rotations: np.ndarray, root: np.ndarray, order: list[int]) -> np.ndarray:
    """The MOTION values: local rotations (N, 24, 3, 3), root positions (N, 3) in file units,
    joints in file order -> (N, 3 + 3 * 24) float64, rotation channels in degrees.

    Angles are intrinsic Z, X, Y (R = Rz Rx Ry); each channel is unwrapped over time (whole
    turns added where it would jump by more than half a turn), the same rotations with no spin
    between frames for tools that interpolate.
    """
    frames = len(rotations)
    with warnings.catch_warnings():  # at gimbal lock scipy sets Y to 0; the rotation stays exact
        warnings.simplefilter("ignore", UserWarning)
        angles = Rotation.from_matrix(rotations[:, order].reshape(-1, 3, 3)).as_euler("ZXY", degrees=True)
    angles = np.unwrap(angles.reshape(frames, -1), period=360.0, axis=0)
    return np.concatenate([root, angles], axis=1)


def write_bvh(path: str | os.PathLike, track: TrackMotion, body_model, fps: float, first_frame: int,
              last_frame: int, units: str = "cm") -> Path:
    """Write one person's BVH (atomically: a temporary file, then a rename). -> the path."""
    if units not in UNITS_PER_METRE:
        raise ExportError(f"BVH units must be one of {', '.join(UNITS_PER_METRE)}, not {units!r}")
    if not fps or fps <= 0:
        raise ExportError(f"the frame rate must be positive to write a BVH frame time; got {fps!r}")
    path = Path(path)
    scale = UNITS_PER_METRE[units]
    parents = [int(p) for p in body_model.parents]
    order = hierarchy_order(parents)
    rest = rest_skeleton(body_model, track.betas) * scale
    rotations, root = track.dense(first_frame, last_frame)
    motion = bvh_motion(rotations, root * scale, order)
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "w", encoding="ascii") as f:
            f.write(bvh_hierarchy(list(body_model.joint_names), parents, rest))
            f.write(f"MOTION\nFrames: {len(motion)}\nFrame Time: {1.0 / fps:.8f}\n")
            np.savetxt(f, motion, fmt=f"%.{DECIMALS}f", delimiter=" ")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ExportError(f"cannot write {path}: {exc}") from exc
    log.info("wrote %s: person %d, %d frames at %.3g fps", path, track.track_id, len(motion), fps)
    return path


def write_bvh_files(path: str | os.PathLike, tracks: list[TrackMotion], body_model, fps: float,
                    last_frame: int, units: str = "cm") -> list[Path]:
    """One BVH per person (see :func:`bvh_paths`), frames 0..last_frame. -> the paths written."""
    if not tracks:
        raise ExportError(f"nobody with a body was seen, so there is no animation to write to {path}")
    return [write_bvh(p, track, body_model, fps, 0, last_frame, units)
            for p, track in zip(bvh_paths(path, tracks), tracks)]


class BvhWriter:
    """Sink: collects each person's motion from packets; ``close()`` writes their BVH files.

    path: ``OUT.bvh`` (other people go to ``OUT.<track id>.bvh``); body_model: the run's
    (engines.body.BodyModel), for each person's skeleton; fps: the video's frame rate;
    units: "cm" (default) or "m". ``written`` lists the files after close.
    """

    def __init__(self, path: str | os.PathLike, body_model, fps: float, units: str = "cm"):
        self.path = check_output_path(path, ".bvh")
        if units not in UNITS_PER_METRE:
            raise ExportError(f"BVH units must be one of {', '.join(UNITS_PER_METRE)}, not {units!r}")
        if not fps or fps <= 0:
            raise ExportError(f"BVH export needs the video's frame rate; got {fps!r}")
        self.body_model, self.fps, self.units = body_model, float(fps), units
        self.collector = MotionCollector()
        self.written: list[Path] = []

    def add(self, packet: Packet) -> None:
        self.collector.add(packet)

    def close(self) -> None:
        tracks = self.collector.tracks(self.body_model)
        last = self.collector.last_frame if self.collector.last_frame is not None else -1
        self.written = write_bvh_files(self.path, tracks, self.body_model, self.fps, last, self.units)


def export_bvh(results: str | os.PathLike, path: str | os.PathLike, body_model=None, units: str = "cm") -> list[Path]:
    """BVH files from a finished results .npz (see :class:`BvhWriter`). body_model: the one the
    results were made with (default: the open model, checked against the file). -> paths."""
    path = check_output_path(path, ".bvh")
    motion = read_results(results)
    body_model = resolve_body_model(body_model, motion.meta, results)
    collector = motion.collector
    return write_bvh_files(path, collector.tracks(body_model), body_model, motion.fps,
                           collector.last_frame if collector.last_frame is not None else -1, units)

