"""Results files (.npz from `meshstream process`) and published frames back into packets, to
drive any sink (anything with ``add(packet)``) offline or from another process.

    from stream.replay import read_result_packets, packet_from_message
    for packet in read_result_packets("out/sample.npz"):
        sink.add(packet)
    with Subscriber("tcp://127.0.0.1:5556") as sub:      # a live `meshstream run`
        for message in sub.frames():
            sink.add(packet_from_message(message))

Each packet from a file has a frame with the file's index and pts_s and a 1x1 black image (results hold
no pictures), and one Person per row with the body values the file has (arrays the run did
not compute, which the file holds as NaN, stay None). Frames without anyone in them, which
add no row, come back as packets with no people, so that timing is kept.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from stream.frames import Frame, Packet, Person

_PERSON_FIELDS = ("global_orient", "body_pose", "betas", "transl", "joints", "vertices", "world_transl",
                  "world_orient", "foot_contact")
_REQUIRED = ("frame_index", "pts_s", "track_id")


class ResultsFileError(ValueError):
    """A results file that cannot be read; the message says which and why."""


def read_result_packets(path: str | os.PathLike) -> list[Packet]:
    """All frames of a results file as packets, in frame order (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"results file {path} not found (write one with `meshstream process VIDEO -o {path}`)")
    if not zipfile.is_zipfile(path):
        raise ResultsFileError(f"{path} is not a results file (.npz files are zip archives; write one with "
                               "`meshstream process VIDEO -o OUT.npz`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ResultsFileError(f"{path} is not a results file (.npz): {error}") from None
    missing = [key for key in _REQUIRED if key not in arrays]
    if missing:
        raise ResultsFileError(f"{path} lacks {', '.join(missing)}: not a meshstream results file")
    try:
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except json.JSONDecodeError:
        meta = {}
    fps = float(meta.get("fps") or 0.0)
    not_computed = set(meta.get("not_computed") or ())
    floor = floor_from_dict(meta.get("world"))

    frame_index = arrays["frame_index"].astype(np.int64)
    rows_by_frame: dict[int, list[int]] = {}
    for row, index in enumerate(frame_index):
        rows_by_frame.setdefault(int(index), []).append(row)
    pts_by_frame = {int(index): float(pts) for index, pts in zip(frame_index, arrays["pts_s"])}
    count = max(int(meta.get("frames") or 0), int(frame_index.max()) + 1 if frame_index.size else 0)

    blank = np.zeros((1, 1, 3), np.uint8)
    packets = []
    for index in range(count):
        pts = pts_by_frame.get(index)
        if pts is None or not np.isfinite(pts):
            pts = index / fps if fps > 0 else None
        people = [_person(arrays, row, not_computed) for row in rows_by_frame.get(index, ())]
        packets.append(Packet(frame=Frame(index=index, pts_s=pts, t_capture_ns=0, image=blank), people=people,
                              floor=floor))
    return packets


def _person(arrays: dict[str, np.ndarray], row: int, not_computed: set[str]) -> Person:
    person = Person(track_id=int(arrays["track_id"][row]))
    if "score" in arrays:
        person.score = float(arrays["score"][row])
    if "bbox" in arrays:
        person.bbox = arrays["bbox"][row].astype(np.float32)
    if "keypoints2d" in arrays:
        person.keypoints = arrays["keypoints2d"][row].astype(np.float32)
    for name in _PERSON_FIELDS:
        if name in arrays and name not in not_computed:
            value = arrays[name][row].astype(np.float32)
            setattr(person, name, value if np.isfinite(value).all() else None)
    return person


def packet_from_message(message) -> Packet:
    """A frame message of the wire protocol (stream.client.Subscriber) -> Packet.

    The frame has the message's frame_index, pts_s, t_capture_ns and a 1x1 black image; each
    person gets the id, score and bbox of the header and the rows of the per-person arrays the
    message has (docs/PROTOCOL.md section 4), copied out of the receive buffers.
    """
    header = message.header
    blank = np.zeros((1, 1, 3), np.uint8)
    frame = Frame(index=int(header["frame_index"]), pts_s=header.get("pts_s"),
                  t_capture_ns=int(header.get("t_capture_ns") or 0), image=blank)
    people = []
    for row, entry in enumerate(header.get("people", ())):
        person = Person(track_id=int(entry["id"]), score=float(entry.get("score", 0.0)),
                        bbox=np.asarray(entry.get("bbox", (0, 0, 0, 0)), np.float32))
        if "keypoints" in message.arrays:
            person.keypoints = np.array(message.arrays["keypoints"][row], np.float32)
        for name in _PERSON_FIELDS:
            if name in message.arrays:
                setattr(person, name, np.array(message.arrays[name][row], np.float32))
        people.append(person)
    return Packet(frame=frame, people=people, floor=floor_from_dict(header.get("world")))


def floor_from_dict(world: dict | None):
    """The frame header's (or results meta's) ``world`` object -> stream.world.Floor, or None."""
    if not isinstance(world, dict) or not isinstance(world.get("floor"), list) or len(world["floor"]) != 4:
        return None
    from stream.world import Floor

    *normal, offset = (float(v) for v in world["floor"])
    return Floor(np.asarray(normal), offset, int(world.get("samples") or 0))
