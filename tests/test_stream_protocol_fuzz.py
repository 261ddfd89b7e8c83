"""Fuzzing the protocol decoder with generated messages: whatever the bytes, decode() either
returns a message whose known fields have their documented types, or raises ProtocolError,
and never allocates much more than it was given.

Examples: MESHSTREAM_FUZZ_EXAMPLES per test (default 1000 structured and 2000 random-byte
messages, about 15 s; e.g. 100000 for a long run).
"""

import json
import math
import os
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream import protocol
from stream.commands.listen import _describe_frame, _describe_meta
from stream.protocol import ProtocolError, decode

EXAMPLES = int(os.environ.get("MESHSTREAM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Any JSON value (NaN and infinities included: json.dumps writes them, strict JSON does not).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)

GOOD_FRAME = {"v": 1, "kind": "frame", "seq": 3, "frame_index": 3, "pts_s": 0.1, "t_capture_ns": 5,
              "t_publish_ns": 6, "width": 64, "height": 48, "people": [{"id": 1, "score": 0.9, "bbox": [1, 2, 3, 4]}]}
GOOD_META = {"v": 1, "kind": "meta", "seq": 0, "keypoint_names": ["a"], "joint_names": ["j"], "parents": [-1],
             "body_model": "m", "num_vertices": 3, "has_body": True, "stages": ["pose"], "meta_interval_s": 2.0,
             "intrinsics": {"fx": 1.0, "fy": 1.0, "cx": 0.5, "cy": 0.5, "width": 2, "height": 2},
             "source": {"name": "x", "fps": 30.0, "width": 2, "height": 2, "live": False}}
GOOD_END = {"v": 1, "kind": "end", "seq": 7, "reason": "finished"}


@st.composite
def headers(draw):
    """A valid header of each kind with some fields replaced by arbitrary JSON, removed or added."""
    header = dict(draw(st.sampled_from([GOOD_FRAME, GOOD_META, GOOD_END])))
    for key in draw(st.lists(st.sampled_from(sorted(header)), max_size=3)):
        if draw(st.booleans()):
            header[key] = draw(json_values)
        else:
            header.pop(key, None)
    if draw(st.booleans()):
        header[draw(st.sampled_from(["people", "intrinsics", "source", "reason", "x"]))] = draw(json_values)
    people = header.get("people")
    if draw(st.booleans()) and isinstance(people, list) and people and isinstance(people[0], dict):
        person = dict(header["people"][0])
        person[draw(st.sampled_from(["id", "score", "bbox"]))] = draw(json_values)
        header["people"] = [person]
    return header


dims = st.integers(0, 4) | st.integers(-3, 2**64) | json_values


@st.composite
def array_parts(draw, people: int):
    """Array specs (mostly well-formed, some not) and buffers (mostly the right size)."""
    specs, buffers = [], []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(sorted(protocol.PERSON_ARRAYS) + ["faces", "extra"]) | json_values)
        dtype = draw(st.sampled_from(sorted(protocol.DTYPES)) | json_values)
        shape = draw(st.lists(st.integers(0, 4), max_size=3).map(lambda s: [people, *s]) | st.lists(dims, max_size=40)
                     | json_values)
        spec = {"name": name, "dtype": dtype, "shape": shape}
        if draw(st.integers(0, 9)) == 0:
            spec = draw(json_values)
        valid = (isinstance(shape, list) and all(isinstance(n, int) for n in shape)
                 and isinstance(dtype, str) and dtype in protocol.DTYPES)
        size = math.prod(shape) * protocol.DTYPES[dtype].itemsize if valid else -1
        if not 0 <= size <= 4096 or draw(st.integers(0, 4)) == 0:
            size = draw(st.integers(0, 64))
        specs.append(spec)
        buffers.append(draw(st.binary(min_size=size, max_size=size)))
    if draw(st.integers(0, 9)) == 0:
        buffers.append(draw(st.binary(max_size=16)))
    return specs, buffers


@st.composite
def messages(draw):
    header = draw(headers())
    people = header.get("people")
    specs, buffers = draw(array_parts(len(people) if isinstance(people, list) else 1))
    header["arrays"] = specs if draw(st.integers(0, 9)) else draw(json_values)
    text = json.dumps(header)  # NaN/Infinity come out as in Python's lenient JSON
    raw = text.encode()
    mutation = draw(st.integers(0, 9))
    if mutation == 0:  # truncate or corrupt the header bytes
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=4))
    elif mutation == 1:  # bury it deep
        depth = draw(st.integers(1, 5_000))
        raw = b'{"v":1,"kind":"frame","x":' + b"[" * depth + b"]" * depth + b"}"
    topic = draw(st.sampled_from([b"meshstream.frame", b"meshstream.meta", b"\xff\xfe"]) | st.binary(max_size=8))
    return [topic, raw, *buffers]


def _check_accepted(message: protocol.Message) -> None:
    """What an accepted message guarantees: types as documented, usable by the listen command."""
    header = message.header
    assert header["v"] == 1 and type(header["v"]) is int
    assert isinstance(header["seq"], int) and not isinstance(header["seq"], bool) and header["seq"] >= 0
    for spec, (name, array) in zip(header["arrays"], message.arrays.items()):
        assert spec["name"] == name and array.dtype == protocol.DTYPES[spec["dtype"]]
    if message.kind == "frame":
        assert all(isinstance(p["bbox"], list) and len(p["bbox"]) == 4 for p in header["people"])
        _describe_frame(message, 10**9, as_json=False)
        _describe_frame(message, 10**9, as_json=True)
    elif message.kind == "meta":
        _describe_meta(message)


def _decode_with_bounded_memory(parts: list) -> None:
    given_bytes = sum(len(p) for p in parts)
    tracemalloc.start()
    try:
        try:
            message = decode(parts)
        except ProtocolError:
            message = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Views, not copies: the header's parse tree is the only real allocation.
    assert peak < 64 * given_bytes + (1 << 20), (peak, given_bytes)
    if message is not None:
        _check_accepted(message)


def _frame(**changes) -> bytes:
    return json.dumps({**GOOD_FRAME, **changes}).encode()


@FUZZ
@given(messages())
@example([b"meshstream.frame", _frame(arrays=[{"name": ["k"], "dtype": "uint8", "shape": [0]}]), b""])
@example([b"meshstream.frame", _frame(arrays=[{"name": "k", "dtype": ["u1"], "shape": [0]}]), b""])
@example([b"meshstream.frame", _frame(seq="3", arrays=[])])
@example([b"meshstream.frame", _frame(pts_s=float("nan"), arrays=[])])
@example([b"meshstream.frame", b'{"v":1,"kind":"frame","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
@example([b"meshstream.meta", json.dumps({**GOOD_META, "arrays": [{"name": "f", "dtype": "uint8",
                                                                   "shape": [0, 2**62 - 1]}]}).encode(), b""])
def test_generated_messages_decode_or_raise_protocol_error_only(parts):
    _decode_with_bounded_memory(parts)


@settings(FUZZ, max_examples=EXAMPLES or 2000)
@given(st.lists(st.binary(max_size=256), max_size=6))
def test_random_bytes_decode_or_raise_protocol_error_only(parts):
    _decode_with_bounded_memory(parts)


def test_valid_messages_of_each_kind_are_accepted():
    """The generators start from messages that decode, so the fuzzing explores near-valid input."""
    for header, arrays in ((GOOD_FRAME, [("keypoints", np.zeros((1, 33, 3), np.float32))]), (GOOD_META, []),
                           (GOOD_END, [])):
        message = decode([bytes(p) for p in protocol.encode("meshstream.frame", header, arrays)])
        _check_accepted(message)
