"""BVH and GLB exports, checked against a real run of the pipeline on the bundled clip.

Each file is read back by code that shares nothing with the writer (the project's BVH reader in
meshstream_tools.mocap, pygltflib and trimesh for the GLB, the Khronos validator where installed), and
its joints are compared with the results file's (within 1 cm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pygltflib
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from meshstream_tools import mocap
from engines.body import load_body_model
from engines.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from stream.exporters import BvhWriter, ExportError, GlbWriter, export_bvh, export_glb
from stream.exporters.bvh import write_bvh
from stream.exporters.motion import TrackMotion, forward_kinematics, rest_skeleton
from stream.frames import Frame, Packet, Person
from tests.export_helpers import (
    CAMERA_FROM_Y_UP,
    ROOT,
    glb_array,
    glb_joint_worlds,
    load_results,
    process_sample,
    with_second_person,
    write_results,
)

CM = 0.01
VALIDATOR = ROOT / ".tools" / "node_modules" / "gltf-validator"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return process_sample(tmp_path_factory.mktemp("export") / "sample.npz")


@pytest.fixture(scope="module")
def shaped_results(tmp_path_factory):
    """A run that estimates the person's shape (it changes over the first frames)."""
    return process_sample(tmp_path_factory.mktemp("export") / "shaped.npz", 20, "--lifter-shape")


@pytest.fixture(scope="module")
def body_model():
    return load_body_model("open")


def bvh_joints_in_camera(path, units_per_metre=100.0) -> tuple[mocap.BvhClip, np.ndarray]:
    """The BVH's joints by forward kinematics, SMPL order, camera frame metres: (F, 24, 3)."""
    clip = mocap.read_bvh(path)
    _, positions = mocap.bvh_forward_kinematics(clip)
    order = [clip.skeleton.names.index(name) for name in SMPL_JOINT_NAMES]
    return clip, positions.numpy()[:, order] / units_per_metre @ CAMERA_FROM_Y_UP.T


def rest_joints(body_model, betas) -> np.ndarray:
    with torch.no_grad():
        return body_model.rest_joints(torch.as_tensor(betas[None], dtype=torch.float32))[0].double().numpy()


def packets_from_results(arrays: dict) -> list[Packet]:
    """The results file's rows as the packets a live run would hand a sink."""
    packets = []
    for index in range(int(arrays["frame_index"].max()) + 1):
        people = [Person(track_id=int(arrays["track_id"][row]), score=1.0,
                         global_orient=arrays["global_orient"][row], body_pose=arrays["body_pose"][row],
                         betas=arrays["betas"][row], transl=arrays["transl"][row], joints=arrays["joints"][row])
                  for row in np.flatnonzero(arrays["frame_index"] == index)]
        packets.append(Packet(Frame(index, index / 5.0, 0, np.zeros((4, 4, 3), np.uint8)), people))
    return packets


# -- BVH ----------------------------------------------------------------------------------------

def test_bvh_frames_time_and_joints_match_the_results(results, tmp_path):
    arrays, meta = load_results(results)
    (path,) = export_bvh(results, tmp_path / "sample.bvh")
    clip, joints = bvh_joints_in_camera(path)
    assert clip.num_frames == arrays["frame_index"].max() + 1 == 20
    assert clip.frame_time_s == pytest.approx(1.0 / meta["fps"])
    assert sorted(clip.skeleton.names) == sorted(SMPL_JOINT_NAMES)
    assert clip.skeleton.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
    assert all(c == ("Zrotation", "Xrotation", "Yrotation") for c in clip.skeleton.channels[1:])
    error = np.linalg.norm(joints[arrays["frame_index"]] - arrays["joints"], axis=-1)
    assert error.max() < CM, f"BVH joints off the results by up to {error.max() * 100:.2f} cm"


def test_bvh_bones_are_the_persons_own_rest_skeleton(shaped_results, tmp_path, body_model):
    """The bones are the rest pose of the person's median shape; where the run's shape estimate
    moved (the first frames), the joints still stay within 1 cm of the results."""
    arrays, _ = load_results(shaped_results)
    (path,) = export_bvh(shaped_results, tmp_path / "shaped.bvh")
    skeleton = mocap.read_bvh(path).skeleton
    rest = rest_joints(body_model, np.median(arrays["betas"], axis=0))
    average = rest_joints(body_model, np.zeros(10, np.float32))
    assert np.abs(rest - average).max() > 0.005, "the run should have estimated a shape other than the average"
    for joint, parent in enumerate(SMPL_PARENTS):
        if parent >= 0:
            offset = skeleton.offsets[skeleton.names.index(SMPL_JOINT_NAMES[joint])] / 100.0
            np.testing.assert_allclose(offset, rest[joint] - rest[parent], atol=1e-5)
    _, joints = bvh_joints_in_camera(path)
    assert np.linalg.norm(joints[arrays["frame_index"]] - arrays["joints"], axis=-1).max() < CM


def test_bvh_in_metres_on_request(results, tmp_path):
    arrays, _ = load_results(results)
    (path,) = export_bvh(results, tmp_path / "m.bvh", units="m")
    _, joints = bvh_joints_in_camera(path, units_per_metre=1.0)
    assert np.linalg.norm(joints[arrays["frame_index"]] - arrays["joints"], axis=-1).max() < CM


def test_several_people_get_one_bvh_each_and_gaps_are_filled(results, tmp_path, body_model):
    """Person 1 missing from frames 5-9; person 2 (another shape, a metre to the side) only in
    frames 12-19. Person 1 is the longest: out.bvh; person 2: out.2.bvh. Both cover frames 0-19."""
    arrays, meta = load_results(results)
    keep = ~np.isin(arrays["frame_index"], range(5, 10))
    person1 = {k: v[keep] for k, v in arrays.items() if k != "meta"}
    late = arrays["frame_index"] >= 12
    person2 = {k: v[late].copy() for k, v in arrays.items() if k != "meta"}
    person2["track_id"][:] = 2
    person2["betas"][:, 0] += 1.5
    person2["transl"][:, 0] += 1.0
    with torch.no_grad():
        person2["joints"] = body_model(*(torch.as_tensor(person2[k]) for k in ("global_orient", "body_pose", "betas", "transl"))).joints.numpy()
    merged = {k: np.concatenate([person1[k], person2[k]]) for k in person1}
    source = tmp_path / "two.npz"
    write_results(source, merged, meta)

    paths = export_bvh(source, tmp_path / "out.bvh")
    assert [p.name for p in paths] == ["out.bvh", "out.2.bvh"]
    clip1, joints1 = bvh_joints_in_camera(paths[0])
    clip2, joints2 = bvh_joints_in_camera(paths[1])
    assert clip1.num_frames == clip2.num_frames == 20
    seen1 = person1["frame_index"]
    assert np.linalg.norm(joints1[seen1] - person1["joints"], axis=-1).max() < CM
    assert np.linalg.norm(joints2[12:] - person2["joints"], axis=-1).max() < CM
    # Gap: the root moves linearly from frame 4 to frame 10.
    np.testing.assert_allclose(joints1[7, 0], 0.5 * (joints1[4, 0] + joints1[10, 0]), atol=1e-4)
    # Before person 2 is first seen, their first pose is held.
    np.testing.assert_allclose(joints2[:12], np.repeat(joints2[12:13], 12, axis=0), atol=1e-5)
    # Person 2's bones come from their own (larger) shape.
    assert not np.allclose(clip1.skeleton.offsets, clip2.skeleton.offsets, atol=1e-3)


def test_bvh_is_exact_at_gimbal_lock_and_keeps_turning_angles_continuous(tmp_path, body_model):
    """Rotations of 90 degrees about the middle (X) axis, and a body spinning through two whole
    turns, come back from the file within 1 mm at every joint; the spin's angles run on past
    180 degrees instead of jumping back a turn."""
    frames = 120
    orient = Rotation.from_euler("y", np.linspace(0, 720, frames)[:, None], degrees=True).as_rotvec()
    pose = Rotation.random(frames * 23, random_state=2).as_rotvec().reshape(frames, 23, 3) * 0.5
    pose[:20, 3] = [np.pi / 2, 0, 0]  # left knee: exactly at the lock
    pose[20:40, 3] = [-np.pi / 2, 0, 0]
    pose[40:60, 3] = Rotation.from_euler("ZXY", [[30, 90, 40]] * 20, degrees=True).as_rotvec()
    pose[60:80, 3] = Rotation.from_euler("ZXY", [[30, 89.9999, 40]] * 20, degrees=True).as_rotvec()
    betas = np.zeros(10)
    rest = rest_skeleton(body_model, betas)
    pelvis = rest[0] + np.linspace([0, 0, 2], [1, 0, 3], frames)
    track = TrackMotion(1, np.arange(frames), orient, pose, betas, pelvis, np.full((frames, 24, 3), np.nan))
    path = write_bvh(tmp_path / "lock.bvh", track, body_model, 30.0, 0, frames - 1)
    clip, joints = bvh_joints_in_camera(path)
    rotations, root = track.dense(0, frames - 1)
    expected = forward_kinematics(rest, body_model.parents, rotations, root) @ CAMERA_FROM_Y_UP.T
    assert np.linalg.norm(joints - expected, axis=-1).max() < 0.001
    spin = clip.motion[:, 3:6]  # the root's rotation channels: two whole turns, 6 degrees a frame
    assert np.abs(np.diff(spin, axis=0)).max() < 10
    assert np.ptp(spin, axis=0).max() > 700


def test_bvh_sink_fed_packets_writes_what_the_results_export_writes(results, tmp_path, body_model):
    arrays, meta = load_results(results)
    sink = BvhWriter(tmp_path / "live.bvh", body_model, fps=meta["fps"])
    for packet in packets_from_results(arrays):
        sink.add(packet)
    sink.close()
    (offline,) = export_bvh(results, tmp_path / "offline.bvh")
    assert sink.written == [tmp_path / "live.bvh"]
    assert (tmp_path / "live.bvh").read_text() == offline.read_text()
    assert not list(tmp_path.glob("*.partial"))


# -- GLB ----------------------------------------------------------------------------------------

def test_glb_loads_with_consistent_accessors_skin_and_animation(results, tmp_path, body_model):
    arrays, meta = load_results(results)
    path = export_glb(results, tmp_path / "sample.glb")
    gltf = pygltflib.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    assert len(blob) == gltf.buffers[0].byteLength
    sizes = {pygltflib.FLOAT: 4, pygltflib.UNSIGNED_INT: 4, pygltflib.UNSIGNED_SHORT: 2, pygltflib.UNSIGNED_BYTE: 1}
    widths = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}
    for accessor in gltf.accessors:
        view = gltf.bufferViews[accessor.bufferView]
        assert view.byteOffset + view.byteLength <= len(blob)
        assert accessor.count * widths[accessor.type] * sizes[accessor.componentType] <= view.byteLength
    (skin,) = gltf.skins
    assert len(skin.joints) == 24
    assert [gltf.nodes[i].name for i in skin.joints] == list(SMPL_JOINT_NAMES)
    (mesh,) = gltf.meshes
    attributes = mesh.primitives[0].attributes
    assert gltf.accessors[attributes.POSITION].count == body_model.num_vertices
    weights = np.concatenate([glb_array(gltf, attributes.WEIGHTS_0), glb_array(gltf, attributes.WEIGHTS_1)], axis=1)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    (animation,) = gltf.animations
    times = glb_array(gltf, animation.samplers[0].input)[:, 0]
    np.testing.assert_allclose(times, arrays["frame_index"] / meta["fps"], atol=1e-6)
    assert len(animation.channels) == 25  # 24 rotations and the pelvis translation
    assert gltf.scenes[gltf.scene].extras == {"fps": meta["fps"]}

    scene = trimesh.load(str(path))
    (body,) = scene.geometry.values()
    assert body.vertices.shape == (body_model.num_vertices, 3)
    assert body.faces.shape == body_model.faces.shape


def test_glb_joint_positions_from_its_node_tree_match_the_results(results, tmp_path):
    arrays, _ = load_results(results)
    gltf = pygltflib.GLTF2().load(str(export_glb(results, tmp_path / "sample.glb")))
    for key in range(len(arrays["frame_index"])):
        worlds = glb_joint_worlds(gltf, 0, 0, key)
        joints = worlds[:, :3, 3] @ CAMERA_FROM_Y_UP.T
        error = np.linalg.norm(joints - arrays["joints"][key], axis=-1).max()
        assert error < CM, f"key {key}: GLB joints off the results by {error * 100:.2f} cm"


def test_glb_skinned_mesh_matches_the_body_model(results, tmp_path, body_model):
    """Skinning the GLB's mesh with its own weights and inverse bind matrices gives the body
    model's posed vertices (the open model has no pose correctives)."""
    arrays, _ = load_results(results)
    gltf = pygltflib.GLTF2().load(str(export_glb(results, tmp_path / "sample.glb")))
    attributes = gltf.meshes[0].primitives[0].attributes
    rest = glb_array(gltf, attributes.POSITION).astype(np.float64)
    joints = np.concatenate([glb_array(gltf, attributes.JOINTS_0), glb_array(gltf, attributes.JOINTS_1)], axis=1)
    weights = np.concatenate([glb_array(gltf, attributes.WEIGHTS_0), glb_array(gltf, attributes.WEIGHTS_1)], axis=1)
    inverse_bind = glb_array(gltf, gltf.skins[0].inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    key = 13
    skinning = glb_joint_worlds(gltf, 0, 0, key) @ inverse_bind  # (24, 4, 4)
    homogeneous = np.concatenate([rest, np.ones((len(rest), 1))], axis=1)
    per_influence = np.einsum("vkab,vb->vka", skinning[joints], homogeneous)[..., :3]
    posed = (weights[..., None] * per_influence).sum(axis=1) @ CAMERA_FROM_Y_UP.T
    with torch.no_grad():
        expected = body_model(*(torch.as_tensor(arrays[k][key:key + 1]) for k in
                                ("global_orient", "body_pose", "betas", "transl"))).vertices[0].double().numpy()
    assert np.linalg.norm(posed - expected, axis=1).max() < CM


@pytest.mark.skipif(shutil.which("node") is None or not VALIDATOR.is_dir(),
                    reason="the Khronos glTF validator is not installed (make gltf-validator)")
def test_glb_passes_the_khronos_validator(results, tmp_path):
    path = export_glb(results, tmp_path / "sample.glb")
    script = ("const v=require(process.argv[1]);const b=require('fs').readFileSync(process.argv[2]);"
              "v.validateBytes(new Uint8Array(b)).then(r=>console.log(JSON.stringify(r.issues)))"
              ".catch(e=>{console.error(String(e));process.exit(2)})")
    done = subprocess.run(["node", "-e", script, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    issues = json.loads(done.stdout)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"][:5]


def test_glb_sink_holds_every_person_with_their_own_animation(results, tmp_path, body_model):
    arrays, meta = load_results(results)
    both = with_second_person(arrays, first_frame=10, track_id=4, shift_x=-1.0)
    second = {name: value[both["track_id"] == 4] for name, value in both.items()}
    sink = GlbWriter(tmp_path / "two.glb", body_model, fps=meta["fps"])
    for packet in packets_from_results(both):
        sink.add(packet)
    sink.close()
    gltf = pygltflib.GLTF2().load(str(tmp_path / "two.glb"))
    assert [a.name for a in gltf.animations] == ["person_1", "person_4"]
    assert len(gltf.skins) == 2
    times = glb_array(gltf, gltf.animations[1].samplers[0].input)[:, 0]
    np.testing.assert_allclose(times, np.arange(10, 20) / meta["fps"], atol=1e-6)
    worlds = glb_joint_worlds(gltf, 1, 1, 3)
    np.testing.assert_allclose(worlds[:, :3, 3] @ CAMERA_FROM_Y_UP.T, second["joints"][3], atol=CM)


# -- errors and the command line ----------------------------------------------------------------

def test_results_without_body_values_are_refused_with_a_reason(results, tmp_path):
    arrays, meta = load_results(results)
    meta = {**meta, "not_computed": ["global_orient", "body_pose", "betas", "transl", "joints"]}
    source = tmp_path / "keypoints_only.npz"
    write_results(source, {k: v for k, v in arrays.items() if k != "meta"}, meta)
    with pytest.raises(ExportError, match="no body values"):
        export_bvh(source, tmp_path / "x.bvh")
    with pytest.raises(ExportError, match="must end in .glb"):
        export_glb(results, tmp_path / "x.gltf")
    with pytest.raises(ExportError, match="does not exist"):
        export_glb(results, tmp_path / "missing" / "x.glb")
    assert not list(tmp_path.glob("x.*"))


def test_sink_with_nobody_seen_says_so(tmp_path, body_model):
    sink = BvhWriter(tmp_path / "empty.bvh", body_model, fps=30.0)
    sink.add(Packet(Frame(0, 0.0, 0, np.zeros((4, 4, 3), np.uint8)), []))
    with pytest.raises(ExportError, match="nobody"):
        sink.close()
    assert not (tmp_path / "empty.bvh").exists()


def test_untracked_people_count_as_one_and_the_first_in_a_frame_is_kept(results, tmp_path, body_model, caplog):
    arrays, meta = load_results(results)
    untracked = {**arrays, "track_id": np.full_like(arrays["track_id"], -1)}
    crowded = with_second_person(untracked, first_frame=15, track_id=-1, shift_x=1.0)
    sink = BvhWriter(tmp_path / "untracked.bvh", body_model, fps=meta["fps"])
    for packet in packets_from_results(crowded):
        sink.add(packet)
    with caplog.at_level("WARNING", logger="meshstream.exporters"):
        sink.close()
    assert "several untracked people" in caplog.text
    assert sink.written == [tmp_path / "untracked.bvh"]
    _, joints = bvh_joints_in_camera(sink.written[0])
    assert np.linalg.norm(joints[arrays["frame_index"]] - arrays["joints"], axis=-1).max() < CM


def test_module_command_writes_both_files(results, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "stream.exporters", str(results), "--bvh", str(tmp_path / "a.bvh"),
                           "--glb", str(tmp_path / "a.glb")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.bvh").stat().st_size > 0 and (tmp_path / "a.glb").stat().st_size > 0
    bad = subprocess.run([sys.executable, "-m", "stream.exporters", str(tmp_path / "none.npz"), "--glb",
                          str(tmp_path / "b.glb")], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
