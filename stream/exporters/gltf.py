"""GLB export (binary glTF 2.0, written with pygltflib): every person's skinned body and motion.

The file holds, for each person (the longest track first):

- a node ``person_<track id>`` holding the skeleton (24 joint nodes named as in
  engines.skeleton, the root ``pelvis``; rest translations are the bones of the person's own
  rest pose, median shape; rest rotations identity, so the rest pose is the T-pose), and beside
  it the mesh node ``person_<track id>_body`` (the body model's mesh in that rest pose, with normals,
  skinned to the 24 joints by the model's own weights: up to 8 per vertex, JOINTS_0/1 and
  WEIGHTS_0/1; inverse bind matrices from the rest joints);
- an animation ``person_<track id>``: one key per frame where the person was seen, at time
  frame_index / fps seconds (the video's clock: a person first seen at frame 30 of a 30 fps
  video starts at 1 s); rotations of all 24 joints and the pelvis translation (root motion),
  LINEAR (players slerp rotations). Between sightings the player interpolates; before the
  first and after the last key it holds the end pose.

The scene's extras record the video's frame rate (``{"fps": 30.0}``). Axes and units are
glTF's: metres, y up; a person with world-frame root motion in every frame (the world stage,
docs/world.md) is placed in that world (floor at y = 0, the camera at (0, h, 0) looking along
-z, tilted by its pitch); otherwise the world is meshstream's camera frame turned half a turn
about x, so the camera sits at the origin looking along -z. Vertex positions come from
the body model without pose correctives (skinning weights only), which is exact for the open
model (it has none).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from stream import __version__
from stream.exporters.motion import (
    ExportError,
    MotionCollector,
    TrackMotion,
    check_output_path,
    read_results,
    require,
    resolve_body_model,
    rest_skeleton,
    rest_vertices,
)
from stream.frames import Packet

log = logging.getLogger("meshstream.exporters.gltf")

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
INFLUENCES_PER_SET = 4


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit normals: vertices (V, 3), faces (F, 3) -> (V, 3) float32."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 0, normals / np.maximum(length, 1e-30), np.array([0.0, 1.0, 0.0]))
    return normals.astype(np.float32)


def skin_influences(weights: np.ndarray, sets: int) -> tuple[np.ndarray, np.ndarray]:
    """The strongest ``4 * sets`` joints per vertex: weights (V, J) -> joints (V, 4*sets) uint8
    and weights (V, 4*sets) float32 summing to 1 (unused slots: joint 0, weight 0)."""
    count = INFLUENCES_PER_SET * sets
    order = np.argsort(-weights, axis=1, kind="stable")[:, :count]
    chosen = np.take_along_axis(weights, order, axis=1).astype(np.float64)
    chosen[chosen < 1e-7] = 0.0
    chosen /= chosen.sum(axis=1, keepdims=True)
    chosen = chosen.astype(np.float32)
    # Put float32 rounding on the largest weight so each row sums to 1 as closely as it can.
    chosen[:, 0] += np.float32(1.0) - chosen.sum(axis=1, dtype=np.float32)
    joints = np.where(chosen > 0, order, 0).astype(np.uint8)
    return joints, chosen


class _Builder:
    """Accumulates the binary buffer and the glTF objects that describe it."""

    def __init__(self, gltf_module):
        self.g = gltf_module
        self.blob = bytearray()
        self.gltf = gltf_module.GLTF2(asset=gltf_module.Asset(version="2.0", generator=f"meshstream {__version__}"))

    def accessor(self, array: np.ndarray, kind: str, target: int | None = None, normalized: bool = False,
                 bounds: bool = False) -> int:
        g = self.g
        component = {np.dtype(np.float32): g.FLOAT, np.dtype(np.uint32): g.UNSIGNED_INT,
                     np.dtype(np.uint16): g.UNSIGNED_SHORT, np.dtype(np.uint8): g.UNSIGNED_BYTE}[array.dtype]
        data = np.ascontiguousarray(array).tobytes()
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        view = g.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data), target=target)
        self.blob.extend(data)
        self.gltf.bufferViews.append(view)
        rows = array.reshape(len(array), -1)
        accessor = g.Accessor(bufferView=len(self.gltf.bufferViews) - 1, componentType=component,
                              count=len(array), type=kind, normalized=normalized or None)
        if bounds:
            accessor.min = rows.min(axis=0).astype(float).tolist()
            accessor.max = rows.max(axis=0).astype(float).tolist()
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def node(self, **fields) -> int:
        self.gltf.nodes.append(self.g.Node(**fields))
        return len(self.gltf.nodes) - 1

    def finish(self) -> None:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        self.gltf.buffers.append(self.g.Buffer(byteLength=len(self.blob)))
        self.gltf.set_binary_blob(bytes(self.blob))


def _add_person(builder: _Builder, track: TrackMotion, body_model, fps: float) -> list[int]:
    """Add one person's skeleton, skinned mesh and animation. -> their scene root nodes (the
    skeleton's parent node and the mesh node: a skinned mesh's node is best a root)."""
    g = builder.g
    gltf = builder.gltf
    parents = [int(p) for p in body_model.parents]
    names = list(body_model.joint_names)
    rest = rest_skeleton(body_model, track.betas)
    label = f"person_{track.track_id}"

    # Skeleton: one node per joint, in the model's joint order, children linked after.
    first = len(gltf.nodes)
    for joint, parent in enumerate(parents):
        bone = rest[joint] if parent < 0 else rest[joint] - rest[parent]
        builder.node(name=names[joint], translation=bone.astype(float).tolist())
    for joint, parent in enumerate(parents):
        if parent >= 0:
            gltf.nodes[first + parent].children.append(first + joint)
    joint_nodes = [first + joint for joint in range(len(parents))]
    root_joint = first + parents.index(-1)

    # Mesh: the rest-pose body, skinned.
    vertices = rest_vertices(body_model, track.betas).astype(np.float32)
    faces = np.asarray(body_model.faces)
    index_type = np.uint16 if len(vertices) < 65535 else np.uint32
    weights = body_model.lbs_weights.detach().double().cpu().numpy()
    sets = 1 if (weights > 1e-7).sum(axis=1).max() <= INFLUENCES_PER_SET else 2
    influence_joints, influence_weights = skin_influences(weights, sets)
    attributes = g.Attributes(
        POSITION=builder.accessor(vertices, g.VEC3, ARRAY_BUFFER, bounds=True),
        NORMAL=builder.accessor(vertex_normals(vertices.astype(np.float64), faces), g.VEC3, ARRAY_BUFFER),
        JOINTS_0=builder.accessor(influence_joints[:, :4], g.VEC4, ARRAY_BUFFER),
        WEIGHTS_0=builder.accessor(influence_weights[:, :4], g.VEC4, ARRAY_BUFFER),
    )
    if sets == 2:
        attributes.JOINTS_1 = builder.accessor(influence_joints[:, 4:], g.VEC4, ARRAY_BUFFER)
        attributes.WEIGHTS_1 = builder.accessor(influence_weights[:, 4:], g.VEC4, ARRAY_BUFFER)
    indices = builder.accessor(faces.reshape(-1).astype(index_type), g.SCALAR, ELEMENT_ARRAY_BUFFER)
    gltf.meshes.append(g.Mesh(name=f"{label}_body", primitives=[g.Primitive(attributes=attributes, indices=indices)]))
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (len(parents), 1, 1))
    inverse_bind[:, :3, 3] = -rest
    # glTF matrices are column-major: store each transposed.
    ibm = builder.accessor(np.ascontiguousarray(inverse_bind.transpose(0, 2, 1)), g.MAT4)
    gltf.skins.append(g.Skin(name=label, joints=joint_nodes, skeleton=root_joint, inverseBindMatrices=ibm))
    mesh_node = builder.node(name=f"{label}_body", mesh=len(gltf.meshes) - 1, skin=len(gltf.skins) - 1)
    person = builder.node(name=label, children=[root_joint],
                          extras={"track_id": int(track.track_id), "frames": track.num_frames})

    # Animation: keys where the person was seen.
    times = (track.frame_index.astype(np.float64) / fps).astype(np.float32)
    time_accessor = builder.accessor(times, g.SCALAR, bounds=True)
    quats = track.local_rotations().as_quat().reshape(track.num_frames, len(parents), 4)  # x y z w
    # Consecutive keys on the same hemisphere, so interpolation takes the short way.
    for key in range(1, len(quats)):
        flip = (quats[key] * quats[key - 1]).sum(axis=1) < 0
        quats[key, flip] *= -1
    samplers, channels = [], []

    def animate(node: int, path: str, values: np.ndarray, kind: str) -> None:
        samplers.append(g.AnimationSampler(input=time_accessor, output=builder.accessor(values.astype(np.float32), kind),
                                           interpolation=g.ANIM_LINEAR))
        channels.append(g.AnimationChannel(sampler=len(samplers) - 1, target=g.AnimationChannelTarget(node=node, path=path)))

    animate(root_joint, g.TRANSLATION, track.root_positions(), g.VEC3)
    for joint in range(len(parents)):
        animate(first + joint, g.ROTATION, quats[:, joint], g.VEC4)
    gltf.animations.append(g.Animation(name=label, samplers=samplers, channels=channels))
    return [person, mesh_node]


def write_glb(path: str | os.PathLike, tracks: list[TrackMotion], body_model, fps: float) -> Path:
    """Write every person into one GLB (atomically: a temporary file, then a rename). -> path."""
    g = require("pygltflib", "GLB")
    path = Path(path)
    if not tracks:
        raise ExportError(f"nobody with a body was seen, so there is no animation to write to {path}")
    if not fps or fps <= 0:
        raise ExportError(f"the frame rate must be positive to time the animation; got {fps!r}")
    builder = _Builder(g)
    roots = [node for track in tracks for node in _add_person(builder, track, body_model, float(fps))]
    builder.gltf.scenes.append(g.Scene(name="meshstream", nodes=roots, extras={"fps": float(fps)}))
    builder.gltf.scene = 0
    builder.finish()
    temporary = path.with_name(path.name + ".partial")
    try:
        builder.gltf.save_binary(str(temporary))
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ExportError(f"cannot write {path}: {exc}") from exc
    log.info("wrote %s: %d people, %s fps", path, len(tracks), fps)
    return path


class GlbWriter:
    """Sink: collects each person's motion from packets; ``close()`` writes the GLB.

    path: ``OUT.glb``; body_model: the run's (engines.body.BodyModel), for each person's mesh
    and skeleton; fps: the video's frame rate. ``written`` lists the file after close.
    """

    def __init__(self, path: str | os.PathLike, body_model, fps: float):
        require("pygltflib", "GLB")
        self.path = check_output_path(path, ".glb")
        if not fps or fps <= 0:
            raise ExportError(f"GLB export needs the video's frame rate; got {fps!r}")
        self.body_model, self.fps = body_model, float(fps)
        self.collector = MotionCollector()
        self.written: list[Path] = []

    def add(self, packet: Packet) -> None:
        self.collector.add(packet)

    def close(self) -> None:
        self.written = [write_glb(self.path, self.collector.tracks(self.body_model), self.body_model, self.fps)]


def export_glb(results: str | os.PathLike, path: str | os.PathLike, body_model=None) -> Path:
    """A GLB from a finished results .npz (see :class:`GlbWriter`). body_model: the one the
    results were made with (default: the open model, checked against the file). -> the path."""
    path = check_output_path(path, ".glb")
    motion = read_results(results)
    body_model = resolve_body_model(body_model, motion.meta, results)
    return write_glb(path, motion.collector.tracks(body_model), body_model, motion.fps)
