"""tools/make_lifter_renders.py and the lifter's fine-tune on its samples (tools/meshstream_tools/rendered.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from meshstream_tools import make_lifter_renders
from tests.conftest import MOCAP_ENV, ROOT, TRAINING_MOTIONS

pytest.importorskip("anny", reason="the renders need the anny package (pip install anny==0.6.2)")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("renders")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "make_lifter_renders.py"), "--out", str(out),
                           "--seed", "1", "--clips", "1", "--frames", "4", "--masks", "--motions", str(TRAINING_MOTIONS)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=MOCAP_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / "video").exists(), "the rendered videos are deleted unless --keep-videos"
    return out


def test_matching_pairs_detections_with_the_nearest_true_people_and_drops_strangers():
    rng = np.random.default_rng(0)
    truth = np.concatenate([rng.uniform(0, 100, (3, 33, 2)) + np.array([[[0, 0]], [[300, 0]], [[600, 0]]]),
                            np.ones((3, 33, 1))], -1)
    found = truth[[2, 0]].copy()
    found[..., :2] += rng.normal(0, 2.0, found[..., :2].shape)
    stranger = truth[1].copy()
    stranger[:, 0] += 1000.0
    pairs = make_lifter_renders.match_people(np.concatenate([found, stranger[None]]), truth)
    assert sorted((d, t) for d, t, _ in pairs) == [(0, 2), (1, 0)]
    assert all(distance < 5.0 for _, _, distance in pairs)


def test_a_motion_list_with_held_out_clips_is_refused(tmp_path):
    from meshstream_tools.mocap import HELD_OUT_CLIPS

    listing = tmp_path / "motions.txt"
    listing.write_text(f"07_01\n{HELD_OUT_CLIPS[0]}  # held out\n")
    with pytest.raises(SystemExit, match="held-out"):
        make_lifter_renders.check_training_motions(listing)
    shipped = make_lifter_renders.check_training_motions(make_lifter_renders.DEFAULT_MOTIONS)
    assert shipped and not set(shipped) & set(HELD_OUT_CLIPS)


def test_samples_hold_detections_near_the_truth_and_bodies_that_reproduce_it(samples):
    from engines.body import load_body_model
    from meshstream_tools.rendered import RenderedPeople

    data = np.load(samples / "samples.npz")
    count = len(data["keypoints"])
    assert count >= 3, "the one-person clip is detected in most of its 4 frames"
    assert data["keypoints"].shape == (count, 33, 3) and data["world"].shape == (count, 33, 3)
    assert data["body_pose"].shape == (count, 23, 3) and data["intrinsics"].shape == (count, 3, 3)
    assert all(data[key].dtype == np.float32 for key in ("keypoints", "world", "boxes", "transl"))
    assert float(data["keypoint_error_px"].max()) < 25.0
    # The saved true bodies reproduce the saved true landmarks; those project near the detections.
    model = load_body_model("open")
    batch = RenderedPeople(model, samples, torch.Generator().manual_seed(0), world_presence=1.0).sample(
        0, torch.arange(count))
    assert torch.allclose(batch.landmarks, torch.from_numpy(data["landmarks"]), atol=1e-4)
    uv = batch.landmarks[..., :2] / batch.landmarks[..., 2:] * batch.intrinsics[:, None, [0, 1], [0, 1]] \
        + batch.intrinsics[:, None, [0, 1], [2, 2]]
    torso = [11, 12, 23, 24]
    assert float((uv[:, torso] - batch.keypoints[:, torso, :2]).norm(dim=-1).mean()) < 15.0
    assert bool((batch.world_present == 1.0).all())


def test_finetune_on_rendered_samples_starts_from_the_given_weights_and_saves_a_lifter(samples, tmp_path):
    out = tmp_path / "lifter.pt"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train_lifter.py"), "--finetune-renders",
                           str(samples), "--render-validation-every", "0", "--steps", "2", "--minutes", "0",
                           "--batch", "8", "--lr", "1e-5", "--mask-bank", "0", "--validation-size", "16",
                           "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=MOCAP_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting from" in done.stdout and "rendered samples:" in done.stdout
    from engines.lift import Lifter

    tuned = Lifter.load(out)
    shipped = Lifter.load()
    difference = max(float((a - b).abs().max()) for a, b in zip(tuned.network.state_dict().values(),
                                                                   shipped.network.state_dict().values()))
    assert 0.0 < difference < 0.01, "two small steps move the shipped weights a little"
    assert "--finetune-renders" in tuned.metadata["command"]


def test_synthetic_world_landmarks_can_carry_real_detector_errors():
    from engines.body import load_body_model
    from meshstream_tools.synthetic import SyntheticPeople

    model = load_body_model("open")
    poses = torch.zeros(4, 24, 3)
    errors = torch.randn(5, 33, 3, generator=torch.Generator().manual_seed(1)) * 0.1
    people = SyntheticPeople(model, poses, torch.Generator().manual_seed(0), world_errors=errors,
                             world_error_share=1.0, world_presence=1.0)
    batch = people.sample(6)
    centred = batch.landmarks - 0.5 * (batch.landmarks[:, 23:24] + batch.landmarks[:, 24:25])
    offsets = batch.world - centred                                           # (6,33,3)
    distances = (offsets[:, None] - errors[None]).abs().amax((-1, -2))       # (6,5)
    assert bool((distances.amin(1) < 1e-5).all()), "each person's world landmarks carry one of the real errors"
    assert bool((batch.world_present == 1.0).all())
    never = SyntheticPeople(model, poses, torch.Generator().manual_seed(0), world_presence=0.0).sample(4)
    assert bool((never.world_present == 0).all()) and float(never.world.abs().max()) == 0.0


def test_merged_sample_sets_keep_every_clip_apart(tmp_path):
    import json

    from meshstream_tools.rendered import REQUIRED_KEYS, load_samples, merge_samples

    rng = np.random.default_rng(0)
    shapes = {"keypoints": (33, 3), "world": (33, 3), "boxes": (4,), "intrinsics": (3, 3), "image_size": (2,),
              "global_orient": (3,), "body_pose": (23, 3), "betas": (10,), "transl": (3,)}
    assert set(shapes) == set(REQUIRED_KEYS)
    for name, clips, rows in (("a", 2, 5), ("b", 3, 4)):
        arrays = {key: rng.normal(size=(rows, *shape)).astype(np.float32) for key, shape in shapes.items()}
        arrays["clip"] = rng.integers(0, clips, rows).astype(np.int32)
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "samples.npz", meta=np.array(json.dumps({"clips": clips})), **arrays)
    assert merge_samples([tmp_path / "a", tmp_path / "b"], tmp_path / "ab") == 9
    merged = load_samples(tmp_path / "ab")
    first, second = load_samples(tmp_path / "a"), load_samples(tmp_path / "b")
    assert np.array_equal(merged["clip"], np.concatenate([first["clip"], second["clip"] + 2]))
    assert np.array_equal(merged["keypoints"], np.concatenate([first["keypoints"], second["keypoints"]]))
    assert json.loads(str(np.load(tmp_path / "ab" / "samples.npz")["meta"]))["clips"] == 5
    # A set merged by an older version (no clip count in its meta) can be merged again: its
    # clips are counted from its largest clip id.
    with np.load(tmp_path / "ab" / "samples.npz") as data:
        arrays = {key: data[key] for key in data.files if key != "meta"}
    (tmp_path / "old").mkdir()
    np.savez(tmp_path / "old" / "samples.npz", meta=np.array(json.dumps({"merged": []})), **arrays)
    assert merge_samples([tmp_path / "old", tmp_path / "a"], tmp_path / "again") == 14
    again = load_samples(tmp_path / "again")
    assert np.array_equal(again["clip"][9:], first["clip"] + int(merged["clip"].max()) + 1)


def test_samples_carry_the_detectors_person_masks_through_merging_and_sampling(samples, tmp_path):
    from engines.body import load_body_model
    from meshstream_tools.rendered import RenderedPeople, merge_samples

    data = dict(np.load(samples / "samples.npz"))
    count = len(data["keypoints"])
    assert data["masks"].shape == (count, 64, 64) and data["masks"].dtype == np.uint8
    # A person crop: the mask covers a good part of the box, and more in the middle than at the edges.
    covered = (data["masks"] > 127).mean((1, 2))
    assert (covered > 0.1).all() and (covered < 0.9).all(), covered
    # Joined with a set made without masks: every row has a mask slot, the real ones are marked.
    without = tmp_path / "without"
    without.mkdir()
    np.savez_compressed(without / "samples.npz", **{k: v for k, v in data.items() if k != "masks"})
    joined = tmp_path / "joined"
    assert merge_samples([samples, without], joined) == 2 * count
    merged = np.load(joined / "samples.npz")
    assert merged["masks"].shape == (2 * count, 64, 64)
    np.testing.assert_array_equal(merged["mask_present"], np.r_[np.ones(count), np.zeros(count)])
    assert not merged["masks"][count:].any()
    model = load_body_model("open")
    people = RenderedPeople(model, joined, torch.Generator().manual_seed(0))
    batch = people.sample(0, torch.arange(2 * count))
    assert torch.equal(batch.mask_present, torch.from_numpy(merged["mask_present"]))
    assert torch.allclose(batch.masks[:count], torch.from_numpy(data["masks"]).float() / 255.0)
    only_masked = RenderedPeople(model, joined, torch.Generator().manual_seed(0), mask_share=1.0).sample(32)
    assert bool((only_masked.mask_present == 1.0).all())


def test_shape_only_finetune_moves_the_shape_network_and_leaves_the_pose_network(samples, tmp_path):
    out = tmp_path / "shape.pt"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train_lifter.py"), "--finetune-renders",
                           str(samples), "--only-shape", "--render-mask-share", "1.0", "--render-validation-every", "0",
                           "--steps", "2", "--minutes", "0", "--batch", "8", "--lr", "1e-4", "--mask-bank", "0",
                           "--validation-size", "16", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=MOCAP_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = torch.load(out, weights_only=True)["state_dict"]
    shipped = torch.load(ROOT / "engines" / "lift" / "assets" / "lifter.pt", weights_only=True)["state_dict"]
    changed = {name.split(".")[0] for name in shipped if not torch.equal(shipped[name], tuned[name])}
    assert changed and changed <= {"mask_encoder", "mask_fc", "shape_mlp"}, changed
