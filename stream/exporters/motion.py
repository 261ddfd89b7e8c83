"""Per-person motion for the animation exporters, gathered from packets or from a results file.

A :class:`TrackMotion` is one tracked person over the frames where they were seen: their body
values in meshstream's camera frame (OpenCV: x right, y down, z forward; metres) and one shape.
The exporters turn it into a y-up animation on that person's own skeleton
(:func:`rest_skeleton`): in the world frame of the world stage (stream.world: y up, floor at
y = 0, the camera above the origin) when every frame of the person has it, else the camera
frame turned half a turn about x (:data:`Y_UP_FROM_CAMERA`, the camera at the origin).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from stream.frames import Packet
from stream.writers import WriterError

log = logging.getLogger("meshstream.exporters")

# Camera frame (x right, y down, z forward) -> the exported y-up world (x right, y up, z toward
# the camera): a half turn about x. It is its own inverse.
Y_UP_FROM_CAMERA = np.diag([1.0, -1.0, -1.0])

BODY_VALUES = ("global_orient", "body_pose", "betas", "transl")


class ExportError(WriterError):
    """An animation file could not be made; the message says why and what to do."""


@dataclass
class TrackMotion:
    """One person's motion over the frames where they were seen (F frames, increasing).

    frame_index (F,) int64: video frame numbers; global_orient (F, 3) and body_pose (F, 23, 3):
    axis-angle radians, camera frame; betas (10,): the track's shape (median over its frames);
    pelvis (F, 3) metres, camera frame: the root joint's position; joints (F, 24, 3) metres,
    camera frame, as published (NaN where unknown); world_orient (F, 3) axis-angle and
    world_root (F, 3) metres: the root's orientation and position in the world frame
    (stream.world), or None when some frame lacks them.
    """

    track_id: int
    frame_index: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    pelvis: np.ndarray
    joints: np.ndarray
    world_orient: np.ndarray | None = None
    world_root: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frame_index)

    def local_rotations(self) -> Rotation:
        """Each seen frame's 24 local joint rotations, the root's turned into the y-up world.

        -> Rotation of shape (F*24,), frame-major (reshape matrices to (F, 24, 3, 3)).
        """
        if self.world_orient is not None:
            axis_angles = np.concatenate([self.world_orient[:, None], self.body_pose], axis=1).reshape(-1, 3)
            return Rotation.from_rotvec(axis_angles.astype(np.float64))
        axis_angles = np.concatenate([self.global_orient[:, None], self.body_pose], axis=1).reshape(-1, 3)
        matrices = Rotation.from_rotvec(axis_angles.astype(np.float64)).as_matrix().reshape(-1, 24, 3, 3)
        matrices[:, 0] = Y_UP_FROM_CAMERA @ matrices[:, 0]
        return Rotation.from_matrix(matrices.reshape(-1, 3, 3))

    def root_positions(self) -> np.ndarray:
        """(F, 3) float64 metres: the pelvis in the y-up world."""
        if self.world_root is not None:
            return self.world_root.astype(np.float64)
        return self.pelvis.astype(np.float64) @ Y_UP_FROM_CAMERA.T

    def dense(self, first_frame: int, last_frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Every frame from first_frame to last_frame (inclusive), gaps filled.

        Frames between two seen frames are interpolated (rotations by slerp, the root's position
        linearly); frames before the first or after the last seen frame hold that pose.
        -> (local rotation matrices (N, 24, 3, 3), root positions (N, 3) metres, y-up world).
        """
        frames = np.arange(first_frame, last_frame + 1)
        seen = self.frame_index.astype(np.float64)
        at = np.clip(frames, seen[0], seen[-1]).astype(np.float64)
        rotations = self.local_rotations()
        if len(seen) == 1:
            matrices = np.repeat(rotations.as_matrix().reshape(1, 24, 3, 3), len(frames), axis=0)
        else:
            per_joint = rotations.as_quat().reshape(-1, 24, 4)
            matrices = np.empty((len(frames), 24, 3, 3))
            for joint in range(24):
                slerp = Slerp(seen, Rotation.from_quat(per_joint[:, joint]))
                matrices[:, joint] = slerp(at).as_matrix()
        positions = self.root_positions()
        root = np.stack([np.interp(at, seen, positions[:, axis]) for axis in range(3)], axis=1)
        return matrices, root


def rest_skeleton(body_model, betas: np.ndarray) -> np.ndarray:
    """The rest-pose (T-pose) joints of a shape: betas (10,) -> (24, 3) float64 metres, in the
    body model's canonical frame (y up, facing +z), which is the exported y-up world's.
    A batch of shapes (B, 10) gives (B, 24, 3)."""
    import torch

    betas = np.asarray(betas, np.float64)
    with torch.no_grad():
        shape = torch.as_tensor(betas.reshape(-1, 10), dtype=body_model.dtype, device=body_model.device)
        joints = body_model.rest_joints(shape).double().cpu().numpy()
    return joints[0] if betas.ndim == 1 else joints


def rest_vertices(body_model, betas: np.ndarray) -> np.ndarray:
    """The rest-pose mesh of a shape: betas (10,) -> (V, 3) float64 metres, canonical frame."""
    import torch

    with torch.no_grad():
        shape = torch.as_tensor(np.asarray(betas, np.float64)[None], dtype=body_model.dtype, device=body_model.device)
        return body_model.rest_vertices(shape)[0].double().cpu().numpy()


def forward_kinematics(rest_joints: np.ndarray, parents, local_rotations: np.ndarray, root_positions: np.ndarray) -> np.ndarray:
    """World joint positions from a skeleton and its animation.

    rest_joints (24, 3); local_rotations (N, 24, 3, 3) (the root's in the world);
    root_positions (N, 3) -> (N, 24, 3), same units and world as root_positions.
    """
    parents = np.asarray(parents)
    count = len(parents)
    world_rotations = np.empty_like(local_rotations)
    world_positions = np.empty((len(local_rotations), count, 3))
    for joint in range(count):
        parent = parents[joint]
        if parent < 0:
            world_rotations[:, joint] = local_rotations[:, joint]
            world_positions[:, joint] = root_positions
        else:
            bone = rest_joints[joint] - rest_joints[parent]
            world_rotations[:, joint] = world_rotations[:, parent] @ local_rotations[:, joint]
            world_positions[:, joint] = world_positions[:, parent] + world_rotations[:, parent] @ bone
    return world_positions


class MotionCollector:
    """Gathers each tracked person's body values from packets, frame by frame.

    People without body values (no body stage, or a failed fit) are skipped. People without a
    track id (-1: no tracking stage) count as one person; where several share a frame, the
    first is kept (a warning says so).
    """

    def __init__(self):
        self._rows: dict[int, dict[int, tuple]] = {}
        self.first_frame: int | None = None
        self.last_frame: int | None = None
        self._warned_untracked = False

    def add(self, packet: Packet) -> None:
        index = int(packet.frame.index)
        for person in packet.people:
            values = [getattr(person, name) for name in BODY_VALUES]
            if any(v is None for v in values) or not all(np.isfinite(np.asarray(v, np.float64)).all() for v in values):
                continue
            self.add_row(index, int(person.track_id), *values, person.joints,
                         getattr(person, "world_orient", None), getattr(person, "world_transl", None))

    def add_row(self, frame_index: int, track_id: int, global_orient, body_pose, betas, transl, joints=None,
                world_orient=None, world_root=None) -> None:
        rows = self._rows.setdefault(track_id, {})
        if frame_index in rows:
            if track_id < 0 and not self._warned_untracked:
                log.warning("several untracked people in frame %d: the animation keeps the first "
                            "(run with tracking to export each person)", frame_index)
                self._warned_untracked = True
            return
        # float32, as the pipeline makes them: an hour at 30 fps is about 70 MB a person.
        joints = np.full((24, 3), np.nan, np.float32) if joints is None else np.asarray(joints, np.float32).reshape(24, 3)
        world = np.full(6, np.nan, np.float32)  # world orientation and root, NaN where unknown
        if world_orient is not None and world_root is not None:
            world = np.concatenate([np.asarray(world_orient, np.float32).reshape(3),
                                    np.asarray(world_root, np.float32).reshape(3)])
        rows[frame_index] = (np.asarray(global_orient, np.float32).reshape(3),
                             np.asarray(body_pose, np.float32).reshape(23, 3),
                             np.asarray(betas, np.float32).reshape(10),
                             np.asarray(transl, np.float32).reshape(3), joints, world)
        self.first_frame = frame_index if self.first_frame is None else min(self.first_frame, frame_index)
        self.last_frame = frame_index if self.last_frame is None else max(self.last_frame, frame_index)

    def tracks(self, body_model) -> list[TrackMotion]:
        """Every person seen, the longest first (ties: lower track id first)."""
        out = []
        for track_id, rows in self._rows.items():
            frames = sorted(rows)
            global_orient, body_pose, betas, transl, joints, world = (np.stack(a).astype(np.float64)
                                                                      for a in zip(*(rows[f] for f in frames)))
            has_world = bool(np.isfinite(world).all())
            shape = np.median(betas, axis=0)
            # The root joint is the pelvis: rest position of the frame's shape plus transl.
            unique, inverse = np.unique(betas, axis=0, return_inverse=True)
            rest_pelvis = rest_skeleton(body_model, unique)[:, 0]
            pelvis = rest_pelvis[np.asarray(inverse).reshape(-1)] + transl
            out.append(TrackMotion(track_id, np.asarray(frames, np.int64), global_orient, body_pose,
                                   shape, pelvis, joints, world[:, :3] if has_world else None,
                                   world[:, 3:] if has_world else None))
        out.sort(key=lambda t: (-t.num_frames, t.track_id))
        return out


@dataclass
class ResultsMotion:
    """What a results file holds for the exporters: the people, the video's frame rate, the
    frame span (first and last frame with anyone in it) and the run's facts (meta)."""

    collector: MotionCollector
    fps: float
    meta: dict


def read_results(path: str | os.PathLike) -> ResultsMotion:
    """Load a results .npz (stream.writers.NpzWriter's layout) for export."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"results file {path} does not exist (make one with `meshstream process VIDEO -o {path.name}`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a readable results .npz ({exc})") from exc
    missing = [name for name in ("frame_index", "track_id", *BODY_VALUES, "meta") if name not in arrays]
    if missing:
        raise ExportError(f"{path} lacks {', '.join(missing)}: it is not a meshstream results file")
    meta = json.loads(str(arrays["meta"]))
    not_computed = [name for name in BODY_VALUES if name in meta.get("not_computed", [])]
    if not_computed:
        raise ExportError(f"{path} has no body values ({', '.join(not_computed)} not computed): "
                          "re-run `meshstream process` with the body stage to export animation")
    fps = meta.get("fps")
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise ExportError(f"{path} does not record the video's frame rate (meta fps={fps!r}); "
                          "it is needed for the animation's frame time")
    collector = MotionCollector()
    joints = arrays.get("joints")
    world_orient, world_root = arrays.get("world_orient"), arrays.get("world_transl")
    for row in range(len(arrays["frame_index"])):
        values = [arrays[name][row] for name in BODY_VALUES]
        if not all(np.isfinite(v).all() for v in values):
            continue
        world = (None, None) if world_orient is None or world_root is None else (world_orient[row], world_root[row])
        collector.add_row(int(arrays["frame_index"][row]), int(arrays["track_id"][row]), *values,
                          None if joints is None else joints[row], *world)
    return ResultsMotion(collector, float(fps), meta)


def resolve_body_model(body_model, meta: dict, results):
    """The body model to export with: the given one, or the open model when the results name
    it; a mismatch between the file's model and the given one is an error."""
    from engines.body import load_body_model

    recorded = meta.get("body_model")
    if body_model is None:
        body_model = load_body_model("open")
    if recorded and recorded != body_model.model_id:
        raise ExportError(f"{results} was made with body model {recorded!r} but {body_model.model_id!r} was given; "
                          "export with the same body model (--body-model PATH)")
    return body_model


def check_output_path(path: str | os.PathLike, suffix: str) -> Path:
    """The output path, checked: right suffix, an existing writable folder."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ExportError(f"output file {path} must end in {suffix}")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise ExportError(f"folder {folder} does not exist (create it or choose another output path)")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"cannot write in {folder} (no permission)")
    return path


def require(module: str, what: str):
    """Import an optional dependency of the exporters, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"{what} export needs the package {module!r}: pip install 'meshstream[export]'") from exc
