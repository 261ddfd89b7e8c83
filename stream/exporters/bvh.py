"""BVH export: each person's motion on their own skeleton (written with the bvhio package).

One BVH file holds one skeleton, so each person gets a file: ``OUT.bvh`` for the person seen in
the most frames, ``OUT.<track id>.bvh`` for each other person (see :func:`bvh_paths`).

The file, for a run at ``fps`` frames per second:

- skeleton: SMPL's 24 joints (names from engines.skeleton), bone offsets from the person's own
  rest pose (their median shape); the root ``pelvis`` has OFFSET 0 and six channels
  ``Xposition Yposition Zposition Zrotation Xrotation Yrotation``, every other joint three
  ``Zrotation Xrotation Yrotation`` (intrinsic: R = Rz Rx Ry); leaf joints (head, hands, feet)
  end in an End Site half their bone's length further along it;
- axes: y up, the rest pose facing +z (the person's left at +x), the camera at the origin
  looking along -z: meshstream's camera frame turned half a turn about x;
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

from stream.exporters.motion import (ExportError, MotionCollector, TrackMotion, check_output_path, read_results,
                                     require, resolve_body_model, rest_skeleton)
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


def write_bvh(path: str | os.PathLike, track: TrackMotion, body_model, fps: float, first_frame: int,
              last_frame: int, units: str = "cm") -> Path:
    """Write one person's BVH (atomically: a temporary file, then a rename). -> the path."""
    with warnings.catch_warnings():  # PyGLM announces a rename of its module; bvhio uses the old name
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        bvhio = require("bvhio", "BVH")
        import glm
        from SpatialTransform import Pose

    if units not in UNITS_PER_METRE:
        raise ExportError(f"BVH units must be one of {', '.join(UNITS_PER_METRE)}, not {units!r}")
    if not fps or fps <= 0:
        raise ExportError(f"the frame rate must be positive to write a BVH frame time; got {fps!r}")
    path = Path(path)
    scale = UNITS_PER_METRE[units]
    parents = [int(p) for p in body_model.parents]
    names = list(body_model.joint_names)
    rest = rest_skeleton(body_model, track.betas) * scale
    rotations, root = track.dense(first_frame, last_frame)
    quats = Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_quat().reshape(len(rotations), 24, 4)  # x y z w
    root = root * scale

    joints = []
    for index, name in enumerate(names):
        parent = parents[index]
        joint = bvhio.BvhJoint(name, glm.vec3(0.0) if parent < 0 else glm.vec3(*(rest[index] - rest[parent])))
        joint.Channels = list(ROOT_CHANNELS if parent < 0 else ROTATION_CHANNELS)
        joint.Keyframes = [Pose(glm.vec3(*root[f]) if parent < 0 else glm.vec3(0.0),
                                glm.quat(q[3], q[0], q[1], q[2]))
                           for f, q in enumerate(quats[:, index])]
        joints.append(joint)
        if parent >= 0:
            joints[parent].Children.append(joint)
    for index, joint in enumerate(joints):
        if not joint.Children and parents[index] >= 0:
            joint.EndSite = glm.vec3(*(0.5 * (rest[index] - rest[parents[index]])))
    container = bvhio.BvhContainer(joints[parents.index(-1)], len(quats), 1.0 / fps)
    temporary = path.with_name(path.name + ".partial")
    try:
        bvhio.writeBvh(str(temporary), container, DECIMALS)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ExportError(f"cannot write {path}: {exc}") from exc
    log.info("wrote %s: person %d, %d frames at %.3g fps", path, track.track_id, len(quats), fps)
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            require("bvhio", "BVH")
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

