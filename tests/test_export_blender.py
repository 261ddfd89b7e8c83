"""The BVH and GLB exports opened in Blender itself (the bpy package), checked against the results.

bpy needs numpy < 2 and Python 3.11, so it lives in its own virtual environment
(``make test-blender`` makes .venv-blender and runs these tests). The tests find a Python with
bpy in $MESHSTREAM_BLENDER_PYTHON, then .venv-blender; without one they are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engines.body import load_body_model
from engines.skeleton import SMPL_JOINT_NAMES
from stream.exporters import export_bvh, export_glb
from tests.export_helpers import ROOT, load_results, process_sample, with_second_person, write_results

pytestmark = pytest.mark.blender

CM = 0.01
CHOSEN_JOINT, CHOSEN_FRAME = "left_wrist", 13


def blender_python() -> str | None:
    candidates = [os.environ.get("MESHSTREAM_BLENDER_PYTHON"), str(ROOT / ".venv-blender" / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run([candidate, "-c", "import bpy"], capture_output=True, timeout=120)
            if probe.returncode == 0:
                return candidate
    return None


def run_blender(python: str, out: Path, fps: float, bvh: Path | None = None, glb: Path | None = None) -> dict:
    command = [python, str(ROOT / "tests" / "blender_import_check.py"), "--fps", str(fps), "--out", str(out)]
    if bvh:
        command += ["--bvh", str(bvh), "--bvh-scale", "0.01"]
    if glb:
        command += ["--glb", str(glb)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def blender_report(tmp_path_factory):
    """Blender's view of the BVH and GLB of a real 20-frame run, of one person and of two."""
    python = blender_python()
    if python is None:
        pytest.skip("no Python with bpy (make test-blender installs one in .venv-blender)")
    folder = tmp_path_factory.mktemp("blender")
    results = process_sample(folder / "sample.npz")
    arrays, meta = load_results(results)
    (bvh,) = export_bvh(results, folder / "sample.bvh")
    glb = export_glb(results, folder / "sample.glb")
    report = run_blender(python, folder / "one.json", meta["fps"], bvh, glb)
    two = write_results(folder / "two.npz", with_second_person(arrays, first_frame=10, track_id=4), meta)
    report["two"] = run_blender(python, folder / "two.json", meta["fps"], glb=export_glb(two, folder / "two.glb"))["glb"]
    return report, results, two


def camera_from_blender(position) -> np.ndarray:
    """Blender's world (z up) -> meshstream's camera frame: Blender imports y-up files as
    (x, -z, y), and the y-up world is the camera frame turned half a turn about x."""
    x, y, z = position
    return np.array([x, -z, y])


def check_armature(armature: dict, arrays: dict, first_video_frame: int) -> None:
    """Every joint at every frame, and the chosen joint at the chosen frame, within 1 cm of the
    results; first_video_frame: the video frame at the animation's first Blender frame."""
    frames = arrays["frame_index"] - first_video_frame
    assert len(armature["bones"]) == 24
    assert sorted(armature["bones"]) == sorted(SMPL_JOINT_NAMES)
    errors = []
    for row, index in enumerate(frames):
        at = armature["positions"][str(armature["first_frame"] + int(index))]
        for joint, name in enumerate(SMPL_JOINT_NAMES):
            errors.append(np.linalg.norm(camera_from_blender(at[name]) - arrays["joints"][row, joint]))
    assert max(errors) < CM, f"Blender's joints are off the results by up to {max(errors) * 100:.2f} cm"
    row = int(np.flatnonzero(arrays["frame_index"] == CHOSEN_FRAME)[0])
    chosen = armature["positions"][str(armature["first_frame"] + CHOSEN_FRAME - first_video_frame)][CHOSEN_JOINT]
    expected = arrays["joints"][row, SMPL_JOINT_NAMES.index(CHOSEN_JOINT)]
    assert np.linalg.norm(camera_from_blender(chosen) - expected) < CM


def test_blender_imports_the_bvh_with_its_frames_bones_and_joints(blender_report):
    report, results, _ = blender_report
    arrays, _ = load_results(results)
    armature = report["bvh"]
    assert armature["last_frame"] - armature["first_frame"] + 1 == arrays["frame_index"].max() + 1 == 20
    check_armature(armature, arrays, first_video_frame=0)


def test_blender_imports_the_glb_with_its_skinned_body_and_animation(blender_report):
    report, results, _ = blender_report
    arrays, _ = load_results(results)
    (armature,) = report["glb"]["armatures"]
    assert armature["last_frame"] - armature["first_frame"] + 1 == len(arrays["frame_index"]) == 20
    check_armature(armature, arrays, first_video_frame=int(arrays["frame_index"][0]))
    body = report["glb"]["meshes"]["person_1_body"]
    assert body["vertices"] == load_body_model("open").num_vertices and body["vertex_groups"] == 24


def test_blender_animates_every_person_of_a_glb_once_their_actions_are_assigned(blender_report):
    """Blender's importer makes only the first animation active; the second person's action,
    named as their armature, is assigned as docs/CONSUMERS.md says, and then plays right."""
    report, _, two = blender_report
    arrays, _ = load_results(two)
    armatures = {armature["object"]: armature for armature in report["two"]["armatures"]}
    assert sorted(armatures) == ["person_1", "person_4"]
    assert report["two"]["assigned_actions"] == ["person_4"]
    for track_id in (1, 4):
        rows = {name: value[arrays["track_id"] == track_id] for name, value in arrays.items() if name != "meta"}
        armature = armatures[f"person_{track_id}"]
        assert armature["last_frame"] - armature["first_frame"] + 1 == len(rows["frame_index"])
        check_armature(armature, rows, first_video_frame=int(rows["frame_index"][0]))
