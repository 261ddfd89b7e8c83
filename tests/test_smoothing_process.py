"""`meshstream process` (a real subprocess) with two-sided smoothing: every frame and person
gets one row, in order, the overlay video has every frame, and the smoothed bodies still sit on
the person."""

import json

import numpy as np
import torch

from tests.stream_helpers import ROOT, meshstream, write_clip

SQUATS = ROOT / "stream" / "assets" / "sample.mp4"  # pose_squats.mp4, vendored


def test_process_with_fixed_lag_smoothing_writes_one_row_per_frame_and_person(tmp_path):
    import av

    from engines.body import load_body_model
    from stream.sources import VideoFileSource

    images = []
    for frame in VideoFileSource(SQUATS, max_side=360).frames():
        images.append(frame.image)
        if len(images) == 10:
            break
    clip = write_clip(tmp_path / "squats10.mp4", images, fps=5)
    out, video = tmp_path / "out.npz", tmp_path / "out.mp4"
    # Lag 3: frames are released while the run goes on, and the last three by the flush.
    result = meshstream("process", str(clip), "-o", str(out), "--render", str(video), "--no-progress",
                        "--smoothing", "rts", "--smoothing-lag", "3", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as npz:
        data = {k: npz[k] for k in npz.files}
    assert data["frame_index"].tolist() == list(range(10))  # one woman: one row per frame, in order
    assert len(set(data["track_id"].tolist())) == 1
    for key in ("global_orient", "body_pose", "betas", "transl", "joints"):
        assert np.isfinite(data[key]).all(), key
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    # The smoothed bodies: joints match the parameters written, landmarks near the keypoints.
    meta = json.loads(str(data["meta"]))
    model = load_body_model("open")
    as_t = lambda k: torch.from_numpy(data[k]).float()  # noqa: E731
    with torch.no_grad():
        body = model(as_t("global_orient"), as_t("body_pose"), as_t("betas"), as_t("transl"))
    assert np.allclose(body.joints.numpy(), data["joints"], atol=1e-4)
    k = meta["intrinsics"]
    landmarks = body.landmarks.numpy()
    uv = landmarks[..., :2] / landmarks[..., 2:] * [k["fx"], k["fy"]] + [k["cx"], k["cy"]]
    visibility = data["keypoints2d"][..., 2]
    distance = np.linalg.norm(uv - data["keypoints2d"][..., :2], axis=-1)
    per_frame = (distance * visibility).sum(1) / visibility.sum(1)
    assert per_frame.mean() < 0.03 * 360  # within a few percent of the frame (5 fps: a fast squat)
