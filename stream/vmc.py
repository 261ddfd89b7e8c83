"""VMC protocol sender: each person's body as a humanoid avatar pose, OSC over UDP.

The VMC protocol (https://protocol.vmc.info) is how VSeeFace, Warudo, VNyan, VMagicMirror,
Unity (EVMC4U) and Unreal (VRM4U) receive avatar motion. Per frame and per destination,
:class:`VmcSender` sends one OSC bundle holding, in this order:

    /VMC/Ext/Root/Pos  "root" px py pz qx qy qz qw      the avatar root: origin, identity
    /VMC/Ext/Bone/Pos  NAME  px py pz qx qy qz qw       one per mapped bone (HumanBodyBones names)
    /VMC/Ext/T         time                              the frame's time, seconds
    /VMC/Ext/OK        loaded calibration mode tracking  1 3 0 1 with a person, 1 3 0 0 without

Bone rotations are local (relative to the parent bone), in Unity's left-handed axes, and
relative to the T-pose: the identity for every bone is the body model's rest pose, as for a
normalized VRM avatar. ``Hips`` carries the whole body's rotation and the pelvis position in
metres, with the real camera at the avatar root looking along -Z (a person facing the camera
faces +Z, as an avatar does at rest). Other bones carry their rest offset from the parent
(the tracked person's proportions; receivers that apply bone positions use it). The mapping
and the axis conversion are in docs/CONSUMERS.md.

Several people: ``max_people`` destinations, ports ``port``, ``port + 1``, ... Each new
track takes the lowest free destination and keeps it while it is seen; a destination whose
track has gone is given to the next new track.

From the command line, forward a live `meshstream run` (its ZeroMQ frames) or replay a
results file (in real time by its timestamps) to a receiver::

    python -m stream.vmc tcp://127.0.0.1:5556 --to 127.0.0.1:39539
    python -m stream.vmc out/sample.npz --to 127.0.0.1:39539
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections.abc import Iterable

import numpy as np
from scipy.spatial.transform import Rotation

from engines.skeleton import NUM_BETAS, SMPL_JOINT_NAMES, SMPL_PARENTS
from stream.frames import Packet, Person

log = logging.getLogger("meshstream.vmc")

DEFAULT_VMC_PORT = 39539

# SMPL joint index -> Unity HumanBodyBones name. SMPL's hierarchy is Unity's humanoid one
# (with UpperChest); left_hand/right_hand (22, 23) rotate the fingers as one block, which
# has no single humanoid bone, and are not sent.
SMPL_TO_HUMAN_BONE: dict[int, str] = {
    0: "Hips", 1: "LeftUpperLeg", 2: "RightUpperLeg", 3: "Spine",
    4: "LeftLowerLeg", 5: "RightLowerLeg", 6: "Chest", 7: "LeftFoot", 8: "RightFoot",
    9: "UpperChest", 10: "LeftToes", 11: "RightToes", 12: "Neck",
    13: "LeftShoulder", 14: "RightShoulder", 15: "Head",
    16: "LeftUpperArm", 17: "RightUpperArm", 18: "LeftLowerArm", 19: "RightLowerArm",
    20: "LeftHand", 21: "RightHand",
}
_SPINE2, _SPINE3 = SMPL_JOINT_NAMES.index("spine2"), SMPL_JOINT_NAMES.index("spine3")

# Axis conversions (3x3, applied to column vectors). SMPL's body frame: y up, facing +z, the
# body's left at +x (right-handed). A Unity avatar at rest: y up, facing +z, its left at -x
# (left-handed). The camera frame (OpenCV): x right, y down, z forward (right-handed).
BODY_TO_UNITY = np.diag([-1.0, 1.0, 1.0])
# Camera -> Unity scene with the camera at the origin looking along -Z: a y flip (right- to
# left-handed) then 180 degrees about y. A person facing the camera then faces +Z.
CAMERA_TO_UNITY = np.diag([-1.0, -1.0, -1.0])

# /VMC/Ext/OK arguments: loaded, calibration state (3 = calibrated), calibration mode (0 = normal).
_LOADED, _CALIBRATED, _NORMAL_MODE = 1, 3, 0


class VmcError(ValueError):
    """A VMC destination or input that cannot be used; the message says what to change."""


def parse_destination(text: str, default_port: int = DEFAULT_VMC_PORT) -> tuple[str, int]:
    """"host:port", "host" or ":port" -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port_text = str(text).strip().rpartition(":")
    if not sep:
        host, port_text = port_text, ""
    host = host.strip("[]") or "127.0.0.1"
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise VmcError(f"VMC destination {text!r}: the port must be a number from 1 to 65535 "
                       f"(e.g. 127.0.0.1:{DEFAULT_VMC_PORT})")
    return host, port


def unity_local_rotations(body_pose: np.ndarray) -> np.ndarray:
    """SMPL local rotations -> Unity local rotations of the same joints.

    body_pose (23, 3) axis-angle radians (joints 1..23, each relative to its parent) ->
    (23, 4) float64 quaternions x, y, z, w in Unity's axes: R_unity = B R B with B the x flip.
    """
    quat = Rotation.from_rotvec(np.asarray(body_pose, np.float64).reshape(-1, 3)).as_quat()
    return quat * np.array([1.0, -1.0, -1.0, 1.0])  # the matrix identity B R B, on quaternions


def unity_hips_rotation(global_orient: np.ndarray) -> np.ndarray:
    """The body's rotation in the Unity scene: (3,) camera-frame axis-angle -> (4,) x, y, z, w.

    The avatar's axes map to the scene by CAMERA_TO_UNITY @ R @ BODY_TO_UNITY.
    """
    matrix = CAMERA_TO_UNITY @ Rotation.from_rotvec(np.asarray(global_orient, np.float64)).as_matrix() @ BODY_TO_UNITY
    return Rotation.from_matrix(matrix).as_quat()


def unity_position(point_camera: np.ndarray) -> np.ndarray:
    """(3,) metres in the camera frame -> (3,) metres in the Unity scene (camera at the origin)."""
    return CAMERA_TO_UNITY @ np.asarray(point_camera, np.float64)


def person_bones(person: Person, rest_joints: np.ndarray, upper_chest: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One person's avatar pose: {HumanBodyBones name: (local position (3,), local rotation (4,) xyzw)}.

    rest_joints: (24, 3) metres, the person's joints in the rest pose (body frame), for the
    pelvis position and the bones' rest offsets. upper_chest=False folds spine3's rotation
    into Chest and leaves UpperChest out, for avatars without that bone.
    """
    local = unity_local_rotations(person.body_pose)  # (23, 4): joint j is row j - 1
    if person.joints is not None and np.isfinite(person.joints[0]).all():
        pelvis = np.asarray(person.joints[0], np.float64)
    else:  # the root joint is the rotation centre: posed pelvis = rest pelvis + transl
        pelvis = np.asarray(rest_joints[0], np.float64) + np.asarray(person.transl, np.float64)
    bones = {"Hips": (unity_position(pelvis), unity_hips_rotation(person.global_orient))}
    for joint, name in SMPL_TO_HUMAN_BONE.items():
        if joint == 0:
            continue
        parent = SMPL_PARENTS[joint]
        rotation = local[joint - 1]
        if not upper_chest:
            if joint == _SPINE3:
                continue
            if joint == _SPINE2:
                rotation = (Rotation.from_quat(rotation) * Rotation.from_quat(local[_SPINE3 - 1])).as_quat()
            if parent == _SPINE3:
                parent = _SPINE2
        offset = BODY_TO_UNITY @ (np.asarray(rest_joints[joint], np.float64) - rest_joints[parent])
        bones[name] = (offset, rotation)
    return bones


def _has_body(person: Person) -> bool:
    values = (person.global_orient, person.body_pose, person.transl)
    return all(v is not None and np.isfinite(v).all() for v in values)


class VmcSender:
    """Sends each frame's people as VMC bundles (see the module docstring).

    destination: "host:port" (or "host", port 39539). max_people: how many people to send,
    the k-th to port + k. body_model: an engines.body BodyModel for the rest joints (the
    open model is loaded when None). upper_chest: send UpperChest (False folds it into Chest).
    Sending never raises for an absent receiver (UDP); a failed send is logged once.
    """

    def __init__(self, destination: str = f"127.0.0.1:{DEFAULT_VMC_PORT}", max_people: int = 1,
                 body_model=None, upper_chest: bool = True):
        try:
            from pythonosc.udp_client import UDPClient
        except ImportError:
            raise VmcError("the VMC sender needs python-osc: pip install 'meshstream[vmc]' "
                           "(or pip install python-osc)") from None
        host, port = parse_destination(destination)
        if max_people < 1 or port + max_people - 1 > 65535:
            raise VmcError(f"max_people={max_people} from port {port}: give at least 1 person, and no more "
                           f"than the ports up to 65535 allow (the last port would be {port + max_people - 1})")
        try:
            self.clients = [UDPClient(host, port + k) for k in range(max_people)]
        except (socket.gaierror, OSError) as error:
            raise VmcError(f"VMC destination {destination!r}: cannot resolve host {host!r} ({error}); "
                           "give an IP address or a known host name") from None
        self.host, self.port, self.max_people = host, port, max_people
        self.upper_chest = upper_chest
        self._body_model = body_model
        self._rest_cache: dict[bytes, np.ndarray] = {}
        self._slots: list[int | None] = [None] * max_people  # track id held by each destination
        self._start_ns: int | None = None
        self._send_failed = False
        self.frames = 0
        self.bundles = 0

    # -- the sink contract -----------------------------------------------------------------
    def add(self, packet: Packet) -> None:
        """Send one frame: a bundle to each destination (bones where its person is seen)."""
        self.frames += 1
        people = {}
        for person in packet.people:
            if _has_body(person) and person.track_id not in people:
                people[person.track_id] = person
        self._assign_slots(people)
        time_s = self._frame_time(packet)
        for slot, client in enumerate(self.clients):
            person = people.get(self._slots[slot])
            bones = None if person is None else person_bones(person, self._rest_joints(person), self.upper_chest)
            self._send(slot, build_bundle(bones, time_s))

    def close(self) -> None:
        """Close the sockets (nothing is buffered)."""
        for client in self.clients:
            client.close()

    # -- helpers --------------------------------------------------------------------------
    def _assign_slots(self, people: dict[int, Person]) -> None:
        seen = set(people)
        self._slots = [track if track in seen else None for track in self._slots]
        for track in sorted(seen - set(self._slots)):
            if None not in self._slots:
                break
            self._slots[self._slots.index(None)] = track

    def _frame_time(self, packet: Packet) -> float:
        if packet.frame.pts_s is not None:
            return float(packet.frame.pts_s)
        if self._start_ns is None:
            self._start_ns = packet.frame.t_capture_ns
        return (packet.frame.t_capture_ns - self._start_ns) / 1e9

    def _rest_joints(self, person: Person) -> np.ndarray:
        betas = np.zeros(NUM_BETAS, np.float32) if person.betas is None else np.asarray(person.betas, np.float32)
        key = betas.tobytes()
        rest = self._rest_cache.get(key)
        if rest is None:
            import torch

            if self._body_model is None:
                from engines.body import load_body_model

                self._body_model = load_body_model("open")
            model = self._body_model
            with torch.no_grad():
                rest = model.rest_joints(torch.from_numpy(betas[None]).to(model.device, model.dtype))[0]
            rest = rest.double().cpu().numpy()
            if len(self._rest_cache) > 64:
                self._rest_cache.clear()
            self._rest_cache[key] = rest
        return rest

    def _send(self, slot: int, bundle) -> None:
        try:
            self.clients[slot].send(bundle)
            self.bundles += 1
        except OSError as error:
            if not self._send_failed:
                log.warning("VMC: cannot send to %s:%d (%s); frames are dropped until it works",
                            self.host, self.port + slot, error)
                self._send_failed = True


def build_bundle(bones: dict[str, tuple[np.ndarray, np.ndarray]] | None, time_s: float):
    """One frame's OSC bundle for one avatar; bones None means nobody is tracked."""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    def message(address: str, *args) -> object:
        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        return builder.build()

    bundle = OscBundleBuilder(IMMEDIATELY)
    tracking = 0 if bones is None else 1
    if bones is not None:
        bundle.add_content(message("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        for name, (position, rotation) in bones.items():
            bundle.add_content(message("/VMC/Ext/Bone/Pos", name, *map(float, position), *map(float, rotation)))
    bundle.add_content(message("/VMC/Ext/T", float(time_s)))
    bundle.add_content(message("/VMC/Ext/OK", _LOADED, _CALIBRATED, _NORMAL_MODE, tracking))
    return bundle.build()


def replay(packets: Iterable[Packet], sink, speed: float = 1.0) -> int:
    """Feed packets to a sink, paced by their pts_s (speed 2 = twice as fast; 0 = no waiting).

    Returns the number of packets sent. The sink is not closed.
    """
    start = time.monotonic()
    first_pts = None
    count = 0
    for packet in packets:
        pts = packet.frame.pts_s
        if speed > 0 and pts is not None:
            first_pts = pts if first_pts is None else first_pts
            delay = (pts - first_pts) / speed - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
        sink.add(packet)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream.vmc",
        description="Send meshstream's bodies to a VMC receiver (VSeeFace, Warudo, Unity, Unreal...): "
                    "from a live `meshstream run` (its ZeroMQ address) or a results file (.npz).")
    parser.add_argument("source", help="a publisher address (tcp://HOST:PORT, as given to `meshstream run "
                                       "--publish`) or a results file (.npz from `meshstream process`)")
    parser.add_argument("--to", default=f"127.0.0.1:{DEFAULT_VMC_PORT}", metavar="HOST:PORT",
                        help=f"the receiver (default 127.0.0.1:{DEFAULT_VMC_PORT})")
    parser.add_argument("--max-people", type=int, default=1, help="people to send, the k-th to PORT+k (default 1)")
    parser.add_argument("--no-upper-chest", action="store_true", help="fold UpperChest into Chest")
    parser.add_argument("--speed", type=float, default=1.0, help="results file: playback speed; 0 = no waiting")
    parser.add_argument("--loop", action="store_true", help="results file: start again at the end (Ctrl-C stops)")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                        help="publisher: stop after S seconds without a frame (default: never)")
    parser.add_argument("--curve-keys", default=None, metavar="DIR", help="publisher: CURVE key folder")
    args = parser.parse_args(argv)
    from stream.client import Subscriber, SubscriberError
    from stream.replay import ResultsFileError, packet_from_message, read_result_packets

    live = "://" in args.source
    try:
        sender = VmcSender(args.to, max_people=args.max_people, upper_chest=not args.no_upper_chest)
        if live:
            source = Subscriber(args.source, curve_keys_dir=args.curve_keys)
        else:
            packets = read_result_packets(args.source)
    except (ResultsFileError, VmcError, SubscriberError) as error:
        if "sender" in locals():
            sender.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if live:
            print(f"forwarding {args.source} to {sender.host}:{sender.port}", flush=True)
            with source:
                replay((packet_from_message(m) for m in source.frames(timeout_s=args.idle_timeout)), sender, speed=0)
            print(f"sent {sender.frames} frames", flush=True)
        else:
            while True:
                count = replay(packets, sender, speed=args.speed)
                print(f"sent {count} frames to {sender.host}:{sender.port}", flush=True)
                if not args.loop:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        sender.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
