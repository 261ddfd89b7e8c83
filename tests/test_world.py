"""The world frame of a static camera (stream.world, the world stage): floor, camera pose, root
motion, foot contacts and foot locking, on scenes whose floor, camera and contacts are known."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream import protocol
from stream.frames import Frame, Packet, Person
from stream.pipeline import LIVE, OFFLINE, PipelineContext
from stream.stages.world import WorldStage
from stream.world import FOOT_JOINTS, Floor, FloorEstimator, WorldTracker, fit_floor

ROOT = Path(__file__).resolve().parents[1]
FPS = 30.0


def camera(height_m: float, pitch_deg: float, roll_deg: float = 0.0):
    """World (y up) -> camera (x right, y down, z forward) of a camera at (0, height, 0) looking
    along -z, pitched down by pitch_deg and rolled by roll_deg: (R (3, 3), position (3,))."""
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    level = np.diag([1.0, -1.0, -1.0])  # looking along -z, no tilt
    pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return roll @ pitch @ level, np.array([0.0, height_m, 0.0])


def to_camera(points_world, rotation, position):
    return (np.asarray(points_world) - position) @ rotation.T


def walker(frames: int, start=(-1.5, -4.0), heading=(1.0, 0.0), step_m: float = 0.6, steps_per_s: float = 1.8):
    """A person walking on the floor (world frame): joints (F, 24, 3), only the pelvis, ankles,
    feet and neck meaningful, and the true contacts (F, 2). Each foot stands still, then swings
    two steps forward in a lifted arc, alternately (left first); both are down between swings."""
    heading = np.array([heading[0], 0.0, heading[1]]) / np.hypot(*heading)
    side = np.cross(heading, np.array([0.0, 1.0, 0.0]))  # to the walker's right
    start = np.array([start[0], 0.0, start[1]])
    period = 2.0 / steps_per_s  # one stride: the left foot swings, then the right
    feet = np.zeros((frames, 2, 3))
    contact = np.ones((frames, 2), bool)
    for f in range(frames):
        for foot in range(2):
            u = (f / FPS - 0.5 * period * foot) / period
            cycles, phase = (math.floor(u), u - math.floor(u)) if u >= 0 else (0, 1.0)
            s = min(phase / 0.35, 1.0)  # swing progress over the first 35 % of the stride
            along = foot * step_m + 2 * step_m * (cycles + s)
            lift = 0.12 * math.sin(math.pi * s)
            contact[f, foot] = s >= 1.0
            feet[f, foot] = start + along * heading + (0.1 if foot else -0.1) * side + [0.0, lift, 0.0]
    joints = np.zeros((frames, 24, 3))
    for foot, (ankle, toe) in enumerate(FOOT_JOINTS):
        joints[:, toe] = feet[:, foot] + [0, 0.027, 0] + 0.1 * heading
        joints[:, ankle] = feet[:, foot] + [0, 0.077, 0]
    joints[:, 0] = feet.mean(axis=1) + [0, 0.95, 0]
    joints[:, 12] = joints[:, 0] + [0, 0.5, 0]
    return joints, contact


def skating_mm(feet_world: np.ndarray, contact: np.ndarray) -> float:
    """Mean horizontal slide (mm per frame) of feet (F, 2, 3) between frames where a foot is down in both."""
    slides = [np.hypot(*(feet_world[f + 1, s] - feet_world[f, s])[[0, 2]]) * 1000
              for f in range(len(feet_world) - 1) for s in range(2) if contact[f, s] and contact[f + 1, s]]
    return float(np.mean(slides))


def test_a_tilted_floor_gives_back_the_camera_height_pitch_and_roll():
    rng = np.random.default_rng(1)
    rotation, position = camera(1.6, 20.0, 4.0)
    soles = np.stack([rng.uniform(-2, 2, 400), rng.normal(0, 0.01, 400), rng.uniform(-7, -3, 400)], axis=1)
    soles[:40, 1] += rng.uniform(0.1, 0.4, 40)  # feet off the floor: outliers
    wrong_prior = to_camera([0, 1, 0], rotation, 0) + [0.1, 0.0, 0.15]  # up, about 10 degrees off
    floor = fit_floor(to_camera(soles, rotation, position), wrong_prior)
    assert floor.camera_height_m == pytest.approx(1.6, abs=0.02)
    assert floor.camera_pitch_deg == pytest.approx(20.0, abs=0.5)
    assert floor.camera_roll_deg == pytest.approx(4.0, abs=0.5)
    # The world frame puts the soles back on y = 0 and the camera at (0, h, 0).
    world = floor.to_world(to_camera(soles[40:], rotation, position))
    assert np.abs(world[:, 1]).mean() < 0.015
    assert floor.to_world(np.zeros(3)) == pytest.approx([0.0, 1.6, 0.0], abs=0.02)


def test_points_on_a_line_keep_the_prior_across_it_instead_of_tipping_over():
    rotation, position = camera(1.2, 10.0)
    line = np.stack([np.linspace(-2, 2, 200), np.zeros(200), np.full(200, -4.0)], axis=1)  # a walk across
    up = to_camera([0, 1, 0], rotation, 0)
    floor = fit_floor(to_camera(line, rotation, position), up)
    assert floor.camera_pitch_deg == pytest.approx(10.0, abs=0.2)
    assert floor.camera_height_m == pytest.approx(1.2, abs=0.01)


def test_the_estimator_finds_the_floor_from_people_walking_before_a_pitched_camera():
    rotation, position = camera(1.8, 15.0)
    rng = np.random.default_rng(2)
    walks = [walker(150, start=(-2.0, -4.5), heading=(1.0, 0.1)), walker(150, start=(1.5, -6.0), heading=(-0.6, 1.0))]
    estimator = FloorEstimator()
    for f in range(150):
        people = [(k, to_camera(j[f], rotation, position) + rng.normal(0, 0.005, (24, 3)), None)
                  for k, (j, _) in enumerate(walks)]
        estimator.observe(f / FPS, people)
    floor = estimator.refit()
    assert floor.camera_height_m == pytest.approx(1.8, abs=0.03)
    assert floor.camera_pitch_deg == pytest.approx(15.0, abs=1.0)
    assert abs(floor.camera_roll_deg) < 1.0


def _walk_through_tracker(lock: bool, noise_m: float, frames: int = 150):
    rotation, position = camera(1.5, 12.0)
    joints, contact = walker(frames)
    floor = Floor(to_camera([0, 1, 0], rotation, 0), 1.5)
    rng = np.random.default_rng(3)
    tracker = WorldTracker(lock_feet=lock)
    flags, feet = [], []
    for f in range(frames):
        noisy = to_camera(joints[f], rotation, position) + rng.normal(0, noise_m, (24, 3)) * [1, 1, 3]  # depth worst
        world = tracker.update(floor, f / FPS, 1, noisy, np.zeros(3))
        flags.append(world.contact)
        feet.append(floor.to_world(noisy)[[10, 11]] + world.correction)
    return np.array(flags), contact, np.array(feet), joints


def test_contact_flags_follow_the_steps_of_a_walk():
    flags, truth, _, _ = _walk_through_tracker(lock=False, noise_m=0.003)
    agree = (flags == truth)[2:].mean()
    assert agree > 0.85, agree
    assert flags[:, 0].any() and (~flags[:, 0]).any() and flags[:, 1].any() and (~flags[:, 1]).any()


def test_locked_feet_slide_less_than_unlocked_and_stay_near_the_estimate():
    _, truth, free, joints = _walk_through_tracker(lock=False, noise_m=0.006)
    _, _, locked, _ = _walk_through_tracker(lock=True, noise_m=0.006)
    free_slide, locked_slide = skating_mm(free, truth), skating_mm(locked, truth)
    assert locked_slide < 0.5 * free_slide, (free_slide, locked_slide)
    assert np.abs(locked - free).max() <= 0.10 + 1e-6  # the correction is bounded


def _packets(walks, rotation, position, frames: int):
    out = []
    for f in range(frames):
        people = [Person(track_id=k, joints=to_camera(j[f], rotation, position).astype(np.float32),
                         global_orient=np.zeros(3, np.float32)) for k, (j, _) in enumerate(walks)]
        out.append(Packet(Frame(f, f / FPS, 0, np.zeros((48, 64, 3), np.uint8)), people))
    return out


@pytest.mark.parametrize("policy", [LIVE, OFFLINE])
def test_the_stage_adds_world_fields_in_order_live_and_offline(policy):
    rotation, position = camera(1.4, 8.0)
    walks = [walker(120), walker(120, start=(1.0, -5.0), heading=(-1.0, 0.3))]
    stage = WorldStage(None)
    stage.open(PipelineContext(policy=policy))
    out = []
    for packet in _packets(walks, rotation, position, 120):
        released = stage.process_batch([packet])
        assert policy == OFFLINE or released == [packet]  # live: nothing is held
        out.extend(released)
    out.extend(stage.flush())
    assert [p.frame.index for p in out] == list(range(120))
    with_world = [p for p in out if p.floor is not None]
    assert len(with_world) == 120 if policy == OFFLINE else len(with_world) > 90
    last = out[-1]
    assert last.floor.camera_height_m == pytest.approx(1.4, abs=0.05)
    for person, (j, contact) in zip(last.people, walks):
        assert person.world_transl == pytest.approx(j[-1, 0], abs=0.08)  # the pelvis, world frame
        assert person.foot_contact.dtype == np.float32 and set(person.foot_contact.tolist()) <= {0.0, 1.0}


def test_frame_messages_carry_the_world_header_and_arrays_and_decode():
    rotation, position = camera(1.4, 8.0)
    floor = Floor(to_camera([0, 1, 0], rotation, 0), 1.4, 50)
    person = Person(track_id=3, score=0.9, bbox=np.zeros(4), joints=np.zeros((24, 3), np.float32),
                    world_transl=np.array([0.1, 0.9, -3.0], np.float32), world_orient=np.zeros(3, np.float32),
                    foot_contact=np.array([1.0, 0.0], np.float32))
    packet = Packet(Frame(5, 0.2, 0, np.zeros((4, 4, 3), np.uint8)), [person], floor=floor)
    header, arrays = protocol.frame_message(packet)
    header = {**header, "kind": "frame", "seq": 0, "t_publish_ns": 0}
    message = protocol.decode(protocol.encode(protocol.FRAME_TOPIC, header, arrays))
    assert message["world_transl"].tolist() == [[pytest.approx(0.1), pytest.approx(0.9), pytest.approx(-3.0)]]
    assert message["foot_contact"].tolist() == [[1.0, 0.0]]
    world = message.header["world"]
    assert world["camera_height_m"] == pytest.approx(1.4) and world["camera_pitch_deg"] == pytest.approx(8.0, abs=1e-3)
    matrix = np.array(world["camera_to_world"])
    assert matrix[:, :3] @ np.zeros(3) + matrix[:, 3] == pytest.approx([0, 1.4, 0])
    # A malformed world object or a wrongly shaped array is refused with a reason.
    bad = {**header, "world": {**world, "floor": [0, 1, 0]}}
    with pytest.raises(protocol.ProtocolError, match="world.floor"):
        protocol.decode(protocol.encode(protocol.FRAME_TOPIC, bad, arrays))
    wrong = [(n, a[:, :1] if n == "foot_contact" else a) for n, a in arrays]
    with pytest.raises(protocol.ProtocolError, match="foot_contact"):
        protocol.decode(protocol.encode(protocol.FRAME_TOPIC, header, wrong))


def test_exports_place_a_person_with_world_motion_on_the_floor():
    from stream.exporters.motion import MotionCollector
    from engines.body import load_body_model

    model = load_body_model("open")
    collector = MotionCollector()
    for f in range(3):
        collector.add_row(f, 1, np.zeros(3), np.zeros((23, 3)), np.zeros(10), np.array([0.0, 0.0, 3.0]),
                          world_orient=np.zeros(3), world_root=np.array([0.2 * f, 0.93, -3.0]))
    track = collector.tracks(model)[0]
    assert track.root_positions() == pytest.approx(np.array([[0.0, 0.93, -3.0], [0.2, 0.93, -3.0], [0.4, 0.93, -3.0]]))
    assert track.local_rotations().as_matrix()[0] == pytest.approx(np.eye(3))


def test_process_on_the_sample_clip_writes_world_fields_to_the_results(tmp_path):
    out = tmp_path / "world.npz"
    result = subprocess.run([sys.executable, "-m", "stream", "process", str(ROOT / "stream" / "assets" / "sample.mp4"),
                             "-o", str(out), "--max-frames", "45", "--lock-feet", "--bvh", str(tmp_path / "w.bvh")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    data = np.load(out)
    meta = json.loads(str(data["meta"]))
    assert "world" in meta["stages"]
    assert 0.3 < meta["world"]["camera_height_m"] < 3.0 and -45 < meta["world"]["camera_pitch_deg"] < 60
    assert data["world_transl"].shape == (len(data["frame_index"]), 3)
    assert np.isfinite(data["world_transl"]).all() and np.isfinite(data["world_orient"]).all()
    assert set(np.unique(data["foot_contact"]).tolist()) <= {0.0, 1.0}
    assert 0.3 < np.median(data["world_transl"][:, 1]) < 1.3  # the pelvis of someone on the floor
    # The BVH's root moves as the results' world root (centimetres), frame by frame.
    motion = (tmp_path / "w.bvh").read_text().split("MOTION", 1)[1].strip().splitlines()[2:]
    main = np.bincount(data["track_id"]).argmax()
    rows = np.flatnonzero(data["track_id"] == main)
    roots = np.array([[float(v) for v in motion[f].split()[:3]] for f in data["frame_index"][rows]])
    np.testing.assert_allclose(roots, data["world_transl"][rows] * 100, atol=0.01)


def test_lock_feet_without_the_world_frame_is_refused_in_one_line():
    from stream.config import Config, ConfigError

    with pytest.raises(ConfigError, match="--lock-feet needs the world frame"):
        Config(lock_feet=True, world=False)
    assert Config().world and not Config().lock_feet


def test_the_world_frame_is_the_synthetic_renders_world_when_the_floor_is_exact():
    """A camera placed as tools/make_synthetic.py places it (at (0, h, 0), aimed at a point
    straight ahead along -z, no roll): the floor's camera-to-world transform is the renderer's
    own world (the world frame has no yaw of its own: its z is the camera's back direction)."""
    from meshstream_tools.make_synthetic import look_at

    position, target = np.array([0.0, 1.3, 0.0]), np.array([0.0, 0.9, -4.0])
    world_to_camera = look_at(position, target)
    floor = Floor(world_to_camera @ np.array([0.0, 1.0, 0.0]), 1.3)
    rotation, translation = floor.camera_to_world()
    np.testing.assert_allclose(rotation, world_to_camera.T, atol=1e-12)
    np.testing.assert_allclose(translation, position, atol=1e-12)
    assert floor.camera_pitch_deg == pytest.approx(math.degrees(math.atan2(0.4, 4.0)))
