"""Shared by the export tests: a real results file, and reading GLB/BVH back independently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "stream" / "assets" / "sample.mp4"
CAMERA_FROM_Y_UP = np.diag([1.0, -1.0, -1.0])  # a half turn about x, its own inverse


def process_sample(out: Path, max_frames: int = 20, *options: str) -> Path:
    """Run the real pipeline on the bundled clip (with extra command-line options): -> a results .npz.

    Without the world stage (--no-world), so that exports place bodies by the camera frame, which
    these tests check against the results' joints; tests/test_world.py checks world placement."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "stream", "process", str(SAMPLE), "-o", str(out),
                    "--max-frames", str(max_frames), "--no-progress", "--no-world", *options],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return out


def load_results(path: Path) -> tuple[dict, dict]:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays, json.loads(str(arrays["meta"]))


def glb_array(gltf, index: int) -> np.ndarray:
    """An accessor's data from a GLB loaded with pygltflib: (count, components) numpy."""
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}[accessor.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[accessor.type]
    start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
    blob = gltf.binary_blob()
    return np.frombuffer(blob, dtype, count=accessor.count * width, offset=start).reshape(accessor.count, width)


def glb_joint_worlds(gltf, skin_index: int, animation_index: int, key: int) -> np.ndarray:
    """World matrices (J, 4, 4) of a skin's joints at one animation key, from the node tree:
    each node's rest TRS, overridden by the animation's value at that key."""
    skin = gltf.skins[skin_index]
    animation = gltf.animations[animation_index]
    local = {}
    for node_index, node in enumerate(gltf.nodes):
        translation = np.array(node.translation or [0.0, 0.0, 0.0])
        rotation = np.array(node.rotation or [0.0, 0.0, 0.0, 1.0])
        local[node_index] = [translation, rotation]
    for channel in animation.channels:
        values = glb_array(gltf, animation.samplers[channel.sampler].output)[key].astype(np.float64)
        slot = {"translation": 0, "rotation": 1}[channel.target.path]
        local[channel.target.node][slot] = values
    parent_of = {child: index for index, node in enumerate(gltf.nodes) for child in (node.children or [])}

    def world(node_index: int) -> np.ndarray:
        matrix = np.eye(4)
        translation, rotation = local[node_index]
        matrix[:3, :3] = Rotation.from_quat(rotation).as_matrix()
        matrix[:3, 3] = translation
        parent = parent_of.get(node_index)
        return matrix if parent is None else world(parent) @ matrix

    return np.stack([world(node) for node in skin.joints])


def with_second_person(arrays: dict, first_frame: int = 10, track_id: int = 4, shift_x: float = -1.0) -> dict:
    """The results' rows plus a second person: the first person's motion from first_frame on,
    a metre to the side (shift_x, metres), under another track id. -> arrays without meta."""
    later = arrays["frame_index"] >= first_frame
    second = {name: value[later].copy() for name, value in arrays.items() if name != "meta"}
    second["track_id"][:] = track_id
    second["transl"][:, 0] += shift_x
    second["joints"][:, :, 0] += shift_x
    return {name: np.concatenate([arrays[name], second[name]]) for name in second}


def write_results(path: Path, arrays: dict, meta: dict) -> Path:
    """A results .npz in stream.writers.NpzWriter's layout."""
    np.savez(path, **{name: value for name, value in arrays.items() if name != "meta"},
             meta=np.array(json.dumps(meta)))
    return path
