"""VMC sender (stream/vmc.py) against a real OSC receiver: python-osc's server in its own process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stream.frames import Frame, Packet, Person
from stream.vmc import SMPL_TO_HUMAN_BONE, VmcError, VmcSender, parse_destination

ROOT = Path(__file__).resolve().parents[1]
RECEIVER = ROOT / "tests" / "vmc_osc_receiver.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

ALL_BONES = {"Hips", "Spine", "Chest", "UpperChest", "Neck", "Head",
             "LeftUpperLeg", "LeftLowerLeg", "LeftFoot", "LeftToes",
             "RightUpperLeg", "RightLowerLeg", "RightFoot", "RightToes",
             "LeftShoulder", "LeftUpperArm", "LeftLowerArm", "LeftHand",
             "RightShoulder", "RightUpperArm", "RightLowerArm", "RightHand"}
UPRIGHT_FACING_CAMERA = np.array([math.pi, 0.0, 0.0], np.float32)  # SMPL y up -> camera y down, facing the camera


@pytest.fixture(scope="module")
def body_model():
    from engines.body import load_body_model

    return load_body_model("open")


def person(track_id: int = 1, orient=UPRIGHT_FACING_CAMERA, pose=None, transl=(0.1, -0.2, 2.5)) -> Person:
    return Person(track_id=track_id, score=1.0, global_orient=np.asarray(orient, np.float32),
                  body_pose=np.zeros((23, 3), np.float32) if pose is None else np.asarray(pose, np.float32),
                  betas=np.zeros(10, np.float32), transl=np.asarray(transl, np.float32))


def packet(index: int, people: list[Person]) -> Packet:
    return Packet(frame=Frame(index=index, pts_s=index / 30, t_capture_ns=0, image=np.zeros((1, 1, 3), np.uint8)),
                  people=people)


def receive(packets: list[Packet], body_model, ports: int = 1, **sender_options) -> list[dict]:
    """Start the receiver process, send the packets with a VmcSender, return its JSON lines."""
    frames = len(packets) * ports
    receiver = subprocess.Popen([sys.executable, str(RECEIVER), "--ports", str(ports), "--frames", str(frames),
                                 "--timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        first = receiver.stdout.readline()
        assert first.startswith("listening "), first + receiver.stderr.read()
        port = int(first.split()[1])
        sender = VmcSender(f"127.0.0.1:{port}", max_people=ports, body_model=body_model, **sender_options)
        for item in packets:
            sender.add(item)
        sender.close()
        out, err = receiver.communicate(timeout=40)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for line in lines:
        line["port"] -= port
    return lines


def bones_of(messages: list[list]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {m[1]: (np.array(m[2:5]), np.array(m[5:9])) for m in messages if m[0] == "/VMC/Ext/Bone/Pos"}


def same_rotation(q1, q2, atol=1e-5) -> bool:
    return abs(abs(float(np.dot(q1, q2))) - 1.0) < atol  # q and -q are one rotation


def test_rest_pose_arrives_as_identity_rotations_on_every_humanbodybones_bone(body_model):
    [line] = receive([packet(0, [person()])], body_model)
    messages = line["messages"]
    addresses = [m[0] for m in messages]
    assert addresses[0] == "/VMC/Ext/Root/Pos" and addresses[-2:] == ["/VMC/Ext/T", "/VMC/Ext/OK"]
    assert messages[0][1:] == ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert messages[-1][1:] == [1, 3, 0, 1]  # loaded, calibrated, normal mode, tracking
    bones = bones_of(messages)
    assert set(bones) == ALL_BONES and addresses.count("/VMC/Ext/Bone/Pos") == len(ALL_BONES)
    for name, (_, rotation) in bones.items():
        assert same_rotation(rotation, [0, 0, 0, 1]), (name, rotation)
    # Rest offsets in Unity's axes: the avatar's left is -x, up is +y; the pelvis is mirrored
    # through the camera (at the avatar root, looking along -Z).
    rest = body_model.rest_joints(torch.zeros(1, 10))[0].double().numpy()
    assert bones["LeftUpperLeg"][0][0] < -0.05 and bones["RightUpperLeg"][0][0] > 0.05
    assert bones["Spine"][0][1] > 0.05 and bones["LeftLowerLeg"][0][1] < -0.2
    np.testing.assert_allclose(bones["LeftLowerArm"][0], np.diag([-1, 1, 1]) @ (rest[18] - rest[16]), atol=1e-6)
    np.testing.assert_allclose(bones["Hips"][0], -(rest[0] + [0.1, -0.2, 2.5]), atol=1e-6)


def test_left_elbow_bent_forward_arrives_as_a_quarter_turn_about_unity_up(body_model):
    pose = np.zeros((23, 3), np.float32)
    pose[17] = [0.0, -math.pi / 2, 0.0]  # joint 18 (left_elbow): the forearm from the body's left (+x) to its front (+z)
    [line] = receive([packet(0, [person(pose=pose)])], body_model)
    bones = bones_of(line["messages"])
    # In Unity the left forearm rests along -X and must end along +Z (forward): +90 degrees about +Y.
    expected = np.array([0.0, math.sin(math.pi / 4), 0.0, math.cos(math.pi / 4)])
    assert same_rotation(bones["LeftLowerArm"][1], expected), bones["LeftLowerArm"][1]
    x, y, z, w = bones["LeftLowerArm"][1]
    forearm = np.array([-1.0, 0.0, 0.0])
    turned = forearm + 2 * w * np.cross([x, y, z], forearm) + 2 * np.cross([x, y, z], np.cross([x, y, z], forearm))
    np.testing.assert_allclose(turned, [0, 0, 1], atol=1e-6)
    for name, (_, rotation) in bones.items():
        if name != "LeftLowerArm":
            assert same_rotation(rotation, [0, 0, 0, 1]), name


def test_a_person_facing_away_from_the_camera_turns_the_hips_half_a_turn_about_up(body_model):
    away = np.array([0.0, 0.0, math.pi], np.float32)  # y down like upright, but facing +z: away from the camera
    [line] = receive([packet(0, [person(orient=away)])], body_model)
    assert same_rotation(bones_of(line["messages"])["Hips"][1], [0, 1, 0, 0])


def test_posed_bones_chained_in_unity_reproduce_the_body_models_joints(body_model):
    rng = np.random.default_rng(3)
    orient = (UPRIGHT_FACING_CAMERA + rng.normal(0, 0.3, 3)).astype(np.float32)
    pose = rng.normal(0, 0.4, (23, 3)).astype(np.float32)
    betas = rng.normal(0, 1, 10).astype(np.float32)
    someone = person(orient=orient, pose=pose, transl=(0.3, 0.1, 3.0))
    someone.betas = betas
    [line] = receive([packet(0, [someone])], body_model)
    bones = bones_of(line["messages"])
    out = body_model(torch.from_numpy(orient[None]), torch.from_numpy(pose[None]), torch.from_numpy(betas[None]),
                     torch.tensor([[0.3, 0.1, 3.0]]))
    joints_unity = -out.joints[0].double().numpy()  # camera -> Unity scene (docs/CONSUMERS.md)
    from scipy.spatial.transform import Rotation

    from engines.skeleton import SMPL_PARENTS

    world_position, world_rotation = {}, {}
    for joint, name in SMPL_TO_HUMAN_BONE.items():  # Unity's Transform chain: parent * local
        position, rotation = bones[name]
        if joint == 0:
            world_position[joint], world_rotation[joint] = position, Rotation.from_quat(rotation)
        else:
            parent = SMPL_PARENTS[joint]
            world_position[joint] = world_position[parent] + world_rotation[parent].apply(position)
            world_rotation[joint] = world_rotation[parent] * Rotation.from_quat(rotation)
    for joint, position in world_position.items():
        np.testing.assert_allclose(position, joints_unity[joint], atol=2e-5, err_msg=SMPL_TO_HUMAN_BONE[joint])


def test_without_upper_chest_its_rotation_is_folded_into_chest(body_model):
    pose = np.zeros((23, 3), np.float32)
    pose[5] = [0.2, 0.0, 0.0]  # spine2 (joint 6)
    pose[8] = [0.3, 0.0, 0.0]  # spine3 (joint 9)
    [line] = receive([packet(0, [person(pose=pose)])], body_model, upper_chest=False)
    bones = bones_of(line["messages"])
    assert "UpperChest" not in bones and set(bones) == ALL_BONES - {"UpperChest"}
    half = 0.25  # 0.5 rad about x, mirrored: x stays
    assert same_rotation(bones["Chest"][1], [math.sin(half), 0, 0, math.cos(half)])


def test_people_go_to_consecutive_ports_and_a_destination_passes_to_the_next_new_track(body_model):
    frames = [
        packet(0, [person(track_id=5, transl=(0.5, 0, 3)), person(track_id=3, transl=(-0.5, 0, 3))]),
        packet(1, [person(track_id=5, transl=(0.5, 0, 3))]),  # 3 has gone: port + 0 sends "not tracking"
        packet(2, [person(track_id=5, transl=(0.5, 0, 3)), person(track_id=7, transl=(0.0, 0, 2))]),
    ]
    lines = receive(frames, body_model, ports=2)
    by_port = {0: [], 1: []}
    for line in lines:
        by_port[line["port"]].append(line["messages"])
    assert len(by_port[0]) == len(by_port[1]) == 3

    def hips_x(messages):
        return bones_of(messages)["Hips"][0][0]

    # Track 3 (lowest id) takes port + 0, track 5 port + 1; x is mirrored (the camera looks along -Z).
    assert hips_x(by_port[0][0]) == pytest.approx(0.5, abs=0.05) and hips_x(by_port[1][0]) == pytest.approx(-0.5, abs=0.05)
    assert [m[0] for m in by_port[0][1]] == ["/VMC/Ext/T", "/VMC/Ext/OK"] and by_port[0][1][-1][1:] == [1, 3, 0, 0]
    assert hips_x(by_port[1][1]) == pytest.approx(-0.5, abs=0.05)
    assert hips_x(by_port[0][2]) == pytest.approx(0.0, abs=0.05)  # track 7 took the free port
    assert hips_x(by_port[1][2]) == pytest.approx(-0.5, abs=0.05)  # track 5 kept its port
    times = [next(m[1] for m in frame if m[0] == "/VMC/Ext/T") for frame in by_port[1]]
    assert times == pytest.approx([0.0, 1 / 30, 2 / 30], abs=1e-6)


def test_bad_destinations_get_one_line_errors_that_say_what_to_give():
    assert parse_destination("10.0.0.2:40000") == ("10.0.0.2", 40000)
    assert parse_destination("studio-pc") == ("studio-pc", 39539)
    assert parse_destination(":39600") == ("127.0.0.1", 39600)
    for bad in ("127.0.0.1:port", "127.0.0.1:70000", "127.0.0.1:0"):
        with pytest.raises(VmcError, match="port must be a number from 1 to 65535"):
            parse_destination(bad)
    with pytest.raises(VmcError, match="cannot resolve host"):
        VmcSender("no-such-host.invalid:39539")
    with pytest.raises(VmcError, match="the last port would be 65536"):
        VmcSender("127.0.0.1:65535", max_people=2)


def test_sending_with_no_receiver_listening_neither_fails_nor_blocks(body_model):
    sender = VmcSender("127.0.0.1:9", body_model=body_model)  # the discard port: nobody listens
    for index in range(5):
        sender.add(packet(index, [person()]))
    sender.close()
    assert sender.frames == 5


def test_the_replay_command_names_a_missing_results_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stream.vmc", str(tmp_path / "none.npz")],
                            check=False, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: results file") and "meshstream process" in result.stderr


def test_a_results_file_from_process_replays_to_the_receiver_frame_by_frame(tmp_path):
    results = tmp_path / "sample.npz"
    process = subprocess.run([sys.executable, "-m", "stream", "process", str(ROOT / "stream" / "assets" / "sample.mp4"),
                              "-o", str(results), "--max-frames", "6", "--no-progress"],
                             check=False, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert process.returncode == 0, process.stderr
    written = np.load(results)
    receiver = subprocess.Popen([sys.executable, str(RECEIVER), "--frames", "6", "--timeout", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        port = int(receiver.stdout.readline().split()[1])
        replay = subprocess.run([sys.executable, "-m", "stream.vmc", str(results), "--to", f"127.0.0.1:{port}",
                                 "--speed", "4"], check=False, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
        assert replay.returncode == 0 and "sent 6 frames" in replay.stdout, replay.stderr
        out, err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0, err
    lines = [json.loads(line)["messages"] for line in out.splitlines() if line.startswith("{")]
    for messages, pts, joints in zip(lines, written["pts_s"], written["joints"]):
        assert next(m[1] for m in messages if m[0] == "/VMC/Ext/T") == pytest.approx(pts, abs=1e-6)
        np.testing.assert_allclose(bones_of(messages)["Hips"][0], -joints[0], atol=1e-6)
    assert len(lines) == len(written["pts_s"]) == 6


def test_replayed_results_keep_the_frames_where_nobody_was_seen(tmp_path, body_model):
    from stream.replay import read_result_packets
    from stream.writers import NpzWriter

    path = tmp_path / "gap.npz"
    writer = NpzWriter(path, meta={"fps": 30.0})
    for item in (packet(0, [person(track_id=4)]), packet(1, []), packet(2, [person(track_id=4, transl=(0, 0, 3))])):
        writer.add(item)
    writer.close()
    packets = read_result_packets(path)
    assert [p.frame.index for p in packets] == [0, 1, 2]
    assert [len(p.people) for p in packets] == [1, 0, 1]
    assert packets[1].frame.pts_s == pytest.approx(1 / 30)
    assert packets[2].people[0].track_id == 4
    np.testing.assert_allclose(packets[2].people[0].transl, [0, 0, 3])
    np.testing.assert_allclose(packets[0].people[0].global_orient, UPRIGHT_FACING_CAMERA)
