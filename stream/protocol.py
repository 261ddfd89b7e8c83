"""The meshstream wire protocol (version 1): encoding and decoding of ZeroMQ messages.

docs/PROTOCOL.md is the normative text; this module implements it. Every message is
multipart: ``[topic, header, *buffers]``

- topic: UTF-8, ``meshstream.frame`` (or ``meshstream.frame.<source>``) or ``meshstream.meta``;
- header: one UTF-8 JSON object with ``v`` (protocol version), ``kind`` ("frame", "meta" or
  "end"), ``seq``, and ``arrays``: one ``{"name", "dtype", "shape"}`` per following buffer, in order;
- buffers: raw C-order little-endian array bytes, exactly ``prod(shape) * itemsize`` each.

:func:`encode` serializes a whole message before anything is sent; :func:`decode` validates
and returns numpy views on the received buffers (no copy).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

PROTOCOL_VERSION = 1
FRAME_TOPIC = "meshstream.frame"
META_TOPIC = "meshstream.meta"

# Wire dtype names -> little-endian numpy dtypes. Nothing else is allowed on the wire.
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "float64": np.dtype("<f8"),
    "int32": np.dtype("<i4"), "int64": np.dtype("<i8"), "int16": np.dtype("<i2"),
    "uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"),
}
_NAME_OF = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: name for name, dt in DTYPES.items()}

FRAME_FIELDS = ("v", "kind", "seq", "frame_index", "pts_s", "t_capture_ns", "t_publish_ns", "people", "arrays")
META_FIELDS = ("v", "kind", "seq", "arrays")
END_FIELDS = ("v", "kind", "seq", "arrays")  # seq of an end message: frame messages published in all
REQUIRED_FIELDS = {"frame": FRAME_FIELDS, "meta": META_FIELDS, "end": END_FIELDS}
END_REASONS = ("finished", "interrupted", "error", "closed")

# Receivers' limits on what they parse (a header is small: the topology's is a few KB).
MAX_HEADER_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_ARRAY_DIMS = 32



@dataclass(frozen=True)
class PersonArray:
    """One per-person array of a frame message: its trailing shape (None: any length; the rows
    are the people), the :class:`stream.frames.Person` attribute it comes from, and its name in
    the results file (stream.writers.NpzWriter)."""

    shape: tuple[int | None, ...]
    attribute: str
    results_name: str


# The per-person arrays of a frame message, in the order they are sent. The publisher, the
# client's validation, the results file and the documentation test all read this table.
PERSON_ARRAYS: dict[str, PersonArray] = {
    "keypoints": PersonArray((33, 3), "keypoints", "keypoints2d"),
    "global_orient": PersonArray((3,), "global_orient", "global_orient"),
    "body_pose": PersonArray((23, 3), "body_pose", "body_pose"),
    "betas": PersonArray((None,), "betas", "betas"),
    "transl": PersonArray((3,), "transl", "transl"),
    "joints": PersonArray((24, 3), "joints", "joints"),
    "vertices": PersonArray((None, 3), "vertices", "vertices"),
    # Revision 1.2: the world frame of a static camera (stream.world, docs/world.md).
    "world_transl": PersonArray((3,), "world_transl", "world_transl"),
    "world_orient": PersonArray((3,), "world_orient", "world_orient"),
    "foot_contact": PersonArray((2,), "foot_contact", "foot_contact"),
}


class ProtocolError(ValueError):
    """A message does not follow the protocol; the text says which part and why."""


@dataclass
class Message:
    """A decoded message. ``arrays`` are read-only numpy views on the received buffers."""

    topic: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    frames: Sequence[Any] = ()  # keeps the received buffers alive while arrays are in use

    @property
    def kind(self) -> str:
        return self.header["kind"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def wire_dtype_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    key = dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype
    try:
        return _NAME_OF[key]
    except KeyError:
        raise ProtocolError(f"dtype {dtype} cannot be sent; use one of {sorted(DTYPES)}") from None


def _wire_array(array: np.ndarray) -> np.ndarray:
    """C-contiguous little-endian version of ``array`` (no copy when it already is)."""
    array = np.asarray(array)
    name = wire_dtype_name(array.dtype)
    return np.ascontiguousarray(array, dtype=DTYPES[name])


def encode(topic: str, header: dict[str, Any], arrays: Sequence[tuple[str, np.ndarray]] = ()) -> list:
    """Serialize one message: ``[topic bytes, header bytes, *buffers]``.

    header: JSON-able fields; ``v`` is set if absent and ``arrays`` is filled from ``arrays``,
    a sequence of (name, array). Buffers are returned as memoryviews of little-endian,
    C-contiguous arrays (zero-copy when the input already is).
    """
    wire = [(name, _wire_array(a)) for name, a in arrays]
    header = dict(header)
    header.setdefault("v", PROTOCOL_VERSION)
    header["arrays"] = [{"name": name, "dtype": wire_dtype_name(a.dtype), "shape": list(a.shape)} for name, a in wire]
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise ProtocolError(f"header cannot be written as strict JSON (NaN or infinity?): {exc}") from exc
    return [topic.encode("utf-8"), header_bytes, *(memoryview(a.reshape(-1).view(np.uint8)) for _, a in wire)]


def _buffer(frame) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame
        return frame.buffer
    return memoryview(frame)


# Types of the known header fields, checked when present. A receiver never trusts the sender:
# wrong types are ProtocolErrors, not TypeErrors later in user code.
def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


_CHECKS = {
    "int": (_is_int, "an integer"),
    "count": (lambda x: _is_int(x) and x >= 0, "a non-negative integer"),
    "number": (_is_number, "a number"),
    "number?": (lambda x: x is None or _is_number(x), "a number or null"),
    "count?": (lambda x: x is None or (_is_int(x) and x >= 0), "a non-negative integer or null"),
    "str": (lambda x: isinstance(x, str), "a string"),
    "str?": (lambda x: x is None or isinstance(x, str), "a string or null"),
    "bool": (lambda x: isinstance(x, bool), "true or false"),
    "bool?": (lambda x: x is None or isinstance(x, bool), "true, false or null"),
    "str[]": (_is_str_list, "a list of strings"),
    "int[]": (lambda x: isinstance(x, list) and all(_is_int(v) for v in x), "a list of integers"),
    "object": (lambda x: isinstance(x, dict), "an object"),
    "list": (lambda x: isinstance(x, list), "a list"),
    "number[4]": (lambda x: isinstance(x, list) and len(x) == 4 and all(_is_number(v) for v in x),
                  "a list of 4 numbers"),
    "number[3x4]": (lambda x: isinstance(x, list) and len(x) == 3 and all(
        isinstance(r, list) and len(r) == 4 and all(_is_number(v) for v in r) for r in x), "3 lists of 4 numbers"),
}

FIELD_TYPES: dict[str, dict[str, str]] = {
    "frame": {"seq": "count", "frame_index": "count", "pts_s": "number?", "t_capture_ns": "int",
              "t_publish_ns": "int", "width": "count", "height": "count", "people": "list", "world": "object"},
    "meta": {"seq": "count", "keypoint_names": "str[]", "joint_names": "str[]", "parents": "int[]",
             "body_model": "str?", "num_vertices": "count", "has_body": "bool", "intrinsics": "object",
             "source": "object", "stages": "str[]", "meta_interval_s": "number"},
    "end": {"seq": "count", "reason": "str"},
}
NESTED_TYPES: dict[str, dict[str, str]] = {
    "intrinsics": {"fx": "number", "fy": "number", "cx": "number", "cy": "number", "width": "count?",
                   "height": "count?"},
    "source": {"name": "str?", "fps": "number?", "width": "count?", "height": "count?", "live": "bool?"},
    "person": {"id": "int", "score": "number", "bbox": "list"},
    "world": {"floor": "number[4]", "camera_to_world": "number[3x4]", "camera_height_m": "number",
              "camera_pitch_deg": "number", "camera_roll_deg": "number", "samples": "count"},
}


def _check_fields(obj: dict, types: dict[str, str], where: str) -> None:
    for name, kind in types.items():
        if name in obj:
            test, wanted = _CHECKS[kind]
            if not test(obj[name]):
                raise ProtocolError(f"{where}{name} is {_short(obj[name])}; expected {wanted}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative, so any depth is safe to measure)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class _NotFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to infinity
        raise _NotFinite(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str):
    raise _NotFinite(f"{name} is not allowed (strict JSON)")


def parse_header(data: bytes | memoryview, topic: str = "") -> dict[str, Any]:
    """The header part as a dict: strict UTF-8 JSON (no NaN/Infinity, numbers in range), at most
    MAX_HEADER_BYTES and MAX_JSON_DEPTH deep. Raises ProtocolError."""
    if len(data) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {topic!r} has {len(data)} bytes; the limit is {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(data).decode("utf-8"), parse_constant=_refuse_constant,
                            parse_float=_finite_float)
    except _NotFinite as exc:
        raise ProtocolError(f"header of {topic!r}: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"header of {topic!r} is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"header of {topic!r} is nested too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header of {topic!r} is {type(header).__name__}, expected a JSON object")
    if _depth(header) > MAX_JSON_DEPTH:
        raise ProtocolError(f"header of {topic!r} is nested more than {MAX_JSON_DEPTH} deep")
    return header


def _array_spec(i: int, spec: Any) -> tuple[str, np.dtype, list[int]]:
    if not isinstance(spec, dict) or not {"name", "dtype", "shape"} <= spec.keys():
        raise ProtocolError(f"arrays[{i}] must be an object with name, dtype and shape; got {_short(spec)}")
    name, dtype_name, shape = spec["name"], spec["dtype"], spec["shape"]
    if not isinstance(name, str):
        raise ProtocolError(f"arrays[{i}].name is {_short(name)}; expected a string")
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise ProtocolError(f"array {name!r} has dtype {_short(dtype_name)}; allowed: {sorted(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_ARRAY_DIMS
            or not all(_is_int(n) and 0 <= n < 2**62 for n in shape)):
        raise ProtocolError(f"array {name!r} has shape {_short(shape)}; expected a list of at most "
                            f"{MAX_ARRAY_DIMS} non-negative ints")
    return name, DTYPES[dtype_name], shape


def decode(frames: Sequence[Any], check_people: bool = True) -> Message:
    """Validate and decode one received multipart message (bytes or zmq.Frame parts).

    Arrays are numpy views on the received memory (no copy). Raises ProtocolError saying
    what is wrong, and nothing else, whatever the bytes; the caller can go on receiving.
    """
    # 1. Framing: topic and header.
    if len(frames) < 2:
        raise ProtocolError(f"message has {len(frames)} part(s); expected [topic, header, *buffers]")
    try:
        topic = bytes(_buffer(frames[0])).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"topic is not UTF-8: {exc}") from None
    header = parse_header(_buffer(frames[1]), topic)
    # 2. Version, kind, required fields and their types.
    version = header.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {_short(version)} in {topic!r}; this client reads version "
                            f"{PROTOCOL_VERSION} (upgrade the older side)")
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in REQUIRED_FIELDS:
        raise ProtocolError(f"unknown message kind {_short(kind)} in {topic!r} (expected one of "
                            f"{', '.join(REQUIRED_FIELDS)})")
    missing = [k for k in REQUIRED_FIELDS[kind] if k not in header]
    if missing:
        raise ProtocolError(f"{kind} header lacks {missing}")
    _check_fields(header, FIELD_TYPES[kind], f"{kind} header field ")
    for name, types in NESTED_TYPES.items():
        if name in header and name in FIELD_TYPES[kind]:
            _check_fields(header[name], types, f"{kind} header field {name}.")
    specs = header["arrays"]
    buffers = frames[2:]
    if not isinstance(specs, list) or len(specs) != len(buffers):
        raise ProtocolError(f"header lists {len(specs) if isinstance(specs, list) else _short(specs)} arrays "
                            f"but {len(buffers)} buffers follow")
    # 3. Buffers: dtype, shape and size, then zero-copy views.
    arrays: dict[str, np.ndarray] = {}
    for i, (spec, frame) in enumerate(zip(specs, buffers)):
        name, dtype, shape = _array_spec(i, spec)
        if name in arrays:
            raise ProtocolError(f"array name {name!r} appears twice")
        buf = _buffer(frame)
        expected = math.prod(shape) * dtype.itemsize
        if buf.nbytes != expected:
            raise ProtocolError(f"array {name!r}: buffer has {buf.nbytes} bytes, shape {shape} {spec['dtype']} "
                                f"needs {expected}")
        try:
            arrays[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
        except (ValueError, OverflowError) as exc:  # e.g. an empty array with a huge dimension
            raise ProtocolError(f"array {name!r} of shape {_short(shape)} cannot be made: {exc}") from None
    # 4. Frame-specific checks: people and per-person arrays agree.
    if kind == "frame" and check_people:
        people = header["people"]
        for j, person in enumerate(people):
            if not isinstance(person, dict) or not {"id", "score", "bbox"} <= person.keys():
                raise ProtocolError(f"people[{j}] must have id, score and bbox; got {_short(person)}")
            _check_fields(person, NESTED_TYPES["person"], f"people[{j}].")
            bbox = person["bbox"]
            if not (len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise ProtocolError(f"people[{j}].bbox must be [x0, y0, x1, y1] (numbers); got {_short(bbox)}")
        for name, spec in PERSON_ARRAYS.items():
            if name not in arrays:
                continue
            trailing = spec.shape
            shape = arrays[name].shape
            ok = len(shape) == 1 + len(trailing) and shape[0] == len(people) and all(
                t is None or t == n for t, n in zip(trailing, shape[1:]))
            if not ok:
                want = ["P"] + ["*" if t is None else t for t in trailing]
                raise ProtocolError(f"array {name!r} has shape {list(shape)}; expected {want} with "
                                    f"P = {len(people)} people")
    return Message(topic, header, arrays, frames)


# ---------------------------------------------------------------------------------------------
# Building messages from what the pipeline computed.


def frame_message(packet, vertices: bool = True, vertices_dtype: str = "float32",
                  keypoints: bool = True) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """Header fields and (name, array) buffers of one frame message, from a
    :class:`stream.frames.Packet`.

    Per-person arrays (:data:`PERSON_ARRAYS`) are stacked: row i belongs to header["people"][i].
    An array is sent only when every person in the frame has it (so shapes stay rectangular);
    ``keypoints`` (33, 3) is sent, also for no people, when ``keypoints`` is True.
    vertices: send vertices; vertices_dtype: "float32" or "float16".
    """
    frame, people = packet.frame, packet.people
    fields = {
        "frame_index": frame.index,
        "pts_s": frame.pts_s,
        "t_capture_ns": frame.t_capture_ns,
        "width": frame.width,
        "height": frame.height,
        "people": [{"id": int(p.track_id), "score": round(float(p.score), 5),
                    "bbox": [round(float(v), 2) for v in (p.bbox if p.bbox is not None else (0, 0, 0, 0))]}
                   for p in people],
    }
    floor = getattr(packet, "floor", None)
    if floor is not None:
        fields["world"] = floor.as_dict()
    arrays: list[tuple[str, np.ndarray]] = []
    for name, spec in PERSON_ARRAYS.items():
        if name == "keypoints" and not keypoints or name == "vertices" and not vertices:
            continue
        values = [getattr(p, spec.attribute) for p in people]
        if any(v is None for v in values):
            continue
        if not people:
            if name == "keypoints":
                arrays.append((name, np.zeros((0, *spec.shape), np.float32)))
            continue
        dtype = np.float16 if name == "vertices" and vertices_dtype == "float16" else np.float32
        trailing = tuple(-1 if n is None else n for n in spec.shape)
        arrays.append((name, np.stack([np.asarray(v, dtype).reshape(trailing) for v in values])))
    return fields, arrays


def meta_message(body_model, intrinsics, source: dict | None = None, has_body: bool = False,
                 stages: Sequence[str] = ()) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """Header fields and arrays of the meta (topology) message.

    body_model: an engines.body model (faces, parents, joint names, model id) or None.
    intrinsics: a :class:`stream.frames.Intrinsics`. has_body: frames carry bodies.
    """
    from engines.skeleton import BLAZEPOSE_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS

    fields = {
        "keypoint_names": list(BLAZEPOSE_NAMES),
        "joint_names": list(getattr(body_model, "joint_names", SMPL_JOINT_NAMES)),
        "parents": [int(v) for v in (getattr(body_model, "parents", None) if body_model is not None else SMPL_PARENTS)],
        "body_model": getattr(body_model, "model_id", None),
        "num_vertices": int(getattr(body_model, "num_vertices", 0)) if body_model is not None else 0,
        "has_body": bool(has_body and body_model is not None),
        "intrinsics": intrinsics.as_dict(),
        "source": source or {},
        "stages": list(stages),
    }
    arrays = []
    if body_model is not None:
        arrays.append(("faces", np.ascontiguousarray(np.asarray(body_model.faces), dtype=np.int32)))
    return fields, arrays
