"""tools/make_synthetic.py: a tiny clip is rendered, decodable, and its ground truth is exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HELD_OUT_MOTIONS, MOCAP_ENV, ROOT

TOOL = ROOT / "tools" / "make_synthetic.py"

pytest.importorskip("anny", reason="the synthetic benchmark needs the anny package (pip install anny==0.6.2)")


def make(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(TOOL), "--out", str(out), "--seed", "3", "--clips", "1", "--frames", "5",
               "--size", "320x240", "--supersample", "1", "--threads", "1", "--motions", str(HELD_OUT_MOTIONS), *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=MOCAP_ENV)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    done = make(out, "--contact-sheet")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_clip_video_decodes_to_the_requested_frames(clip):
    import av

    with av.open(str(clip / "clip_000.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5
    assert frames[0].shape == (240, 320, 3)
    assert (clip / "contact_sheet.png").is_file()


def test_ground_truth_has_the_results_keys_and_consistent_shapes(clip):
    gt = np.load(clip / "clip_000.npz")
    meta = json.loads(str(gt["meta"]))
    n = len(gt["frame_index"])
    people = len(meta["people"])
    assert n == 5 * people
    shapes = {"global_orient": (n, 3), "body_pose": (n, 23, 3), "betas": (n, 10), "transl": (n, 3),
              "joints": (n, 24, 3), "keypoints2d": (n, 33, 3), "landmarks": (n, 33, 3), "masks": (n, 240, 320),
              "intrinsics": (3, 3), "pts_s": (n,), "track_id": (n,)}
    for key, shape in shapes.items():
        assert gt[key].shape == shape, key
    assert gt["vertices"].shape[0] == n and gt["vertices"].shape[2] == 3
    assert meta["width"] == 320 and meta["height"] == 240 and meta["fps"] == 30.0
    np.testing.assert_allclose(np.array(meta["intrinsics"]), gt["intrinsics"])


def test_reprojected_landmarks_land_on_the_rendered_body(clip):
    gt = np.load(clip / "clip_000.npz")
    K = gt["intrinsics"].astype(np.float64)
    projected = gt["landmarks"] @ K.T
    projected = projected[..., :2] / projected[..., 2:]
    np.testing.assert_allclose(projected, gt["keypoints2d"][..., :2], atol=1e-3)
    visible = gt["keypoints2d"][..., 2] > 0.5
    assert visible.sum() > 30
    hits = []
    for row, point in zip(*np.nonzero(visible)):
        x, y = gt["keypoints2d"][row, point, :2].astype(int)
        window = gt["masks"][row, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        hits.append(window.any())
    assert np.mean(hits) > 0.9
    # Every person with visible keypoints has a mask of a plausible size.
    seen = visible.sum(axis=1) >= 6
    assert (gt["masks"][seen].sum(axis=(1, 2)) > 100).all()


def test_saved_parameters_reproduce_the_saved_vertices(clip):
    import torch

    from engines.body import load_body_model

    gt = np.load(clip / "clip_000.npz")
    model = load_body_model("open")
    with torch.no_grad():
        out = model(*(torch.from_numpy(gt[k]) for k in ("global_orient", "body_pose", "betas", "transl")))
    np.testing.assert_allclose(out.vertices.numpy(), gt["vertices"], atol=1e-5)
    np.testing.assert_allclose(out.joints.numpy(), gt["joints"], atol=1e-5)
    np.testing.assert_allclose(out.landmarks.numpy(), gt["landmarks"], atol=1e-5)


def test_motion_list_with_training_clips_is_refused(tmp_path):
    motions = tmp_path / "motions.txt"
    motions.write_text("07_01  # a training clip\n")
    done = make(tmp_path / "out", "--motions", str(motions))
    assert done.returncode != 0
    assert "held-out" in done.stderr and "07_01" in done.stderr
