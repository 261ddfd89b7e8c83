"""Wire protocol, publisher and Subscriber over real ZeroMQ sockets (in one process)."""

import json
import time

import numpy as np
import pytest
import zmq

from stream import protocol
from stream.client import Subscriber, SubscriberError
from stream.protocol import ProtocolError, decode, encode
from stream.publisher import PublishError, Publisher, create_curve_keys
from tests.stream_helpers import free_port

FRAME_HEADER = {"kind": "frame", "seq": 0, "frame_index": 3, "pts_s": 0.1, "t_capture_ns": 5, "t_publish_ns": 6,
                "people": [{"id": 1, "score": 0.9, "bbox": [1, 2, 3, 4]}]}


def _person_arrays(dtype=np.float32):
    return [("keypoints", np.arange(99, dtype=np.float32).reshape(1, 33, 3)),
            ("vertices", np.ones((1, 10, 3), dtype))]


def test_encode_then_decode_round_trips_arrays_without_copying():
    parts = encode(protocol.FRAME_TOPIC, FRAME_HEADER, _person_arrays(np.float16))
    header = json.loads(bytes(parts[1]))
    assert header["v"] == protocol.PROTOCOL_VERSION
    assert header["arrays"] == [{"name": "keypoints", "dtype": "float32", "shape": [1, 33, 3]},
                                {"name": "vertices", "dtype": "float16", "shape": [1, 10, 3]}]
    wire = [bytes(p) for p in parts]
    msg = decode(wire)
    assert msg.topic == "meshstream.frame" and msg.kind == "frame"
    assert np.array_equal(msg["keypoints"], np.arange(99, dtype=np.float32).reshape(1, 33, 3))
    assert msg["vertices"].dtype == np.float16
    assert np.shares_memory(msg["keypoints"], np.frombuffer(wire[2], np.uint8))  # a view, not a copy
    assert not msg["keypoints"].flags.writeable


def test_big_endian_and_strided_arrays_go_out_little_endian_and_contiguous():
    a = np.arange(12, dtype=">f4").reshape(3, 4)[:, ::2]
    parts = encode("t", {"kind": "meta", "seq": 0}, [("a", a)])
    assert bytes(parts[2]) == np.ascontiguousarray(a, dtype="<f4").tobytes()
    assert np.array_equal(decode([bytes(p) for p in parts])["a"], a)


@pytest.mark.parametrize("parts, message", [
    ([b"meshstream.frame"], "1 part"),
    ([b"meshstream.frame", b"{oops"], "not UTF-8 JSON"),
    ([b"meshstream.frame", b"[1, 2]"], "expected a JSON object"),
    ([b"meshstream.frame", b'{"v": 99, "kind": "frame"}'], "protocol version 99"),
    ([b"meshstream.frame", b'{"v": 1, "kind": "video"}'], "unknown message kind"),
    ([b"meshstream.frame", b'{"v": 1, "kind": "frame", "seq": 0}'], "frame header lacks"),
])
def test_malformed_messages_raise_clear_errors(parts, message):
    with pytest.raises(ProtocolError, match=message):
        decode(parts)


def test_buffer_mismatches_raise_clear_errors():
    good = [bytes(p) for p in encode(protocol.FRAME_TOPIC, FRAME_HEADER, _person_arrays())]
    with pytest.raises(ProtocolError, match="2 arrays but 1 buffers"):
        decode(good[:3])
    with pytest.raises(ProtocolError, match="buffer has 395 bytes"):
        decode([good[0], good[1], good[2][:-1], good[3]])
    header = json.loads(good[1])
    header["people"].append({"id": 2, "score": 0.5, "bbox": [0, 0, 1, 1]})
    with pytest.raises(ProtocolError, match="expected \\['P', 33, 3\\] with P = 2 people"):
        decode([good[0], json.dumps(header).encode(), *good[2:]])
    header = json.loads(good[1])
    header["arrays"][0]["dtype"] = "complex64"
    with pytest.raises(ProtocolError, match="complex64"):
        decode([good[0], json.dumps(header).encode(), *good[2:]])


def test_nan_in_header_is_refused_at_encode():
    with pytest.raises(ProtocolError, match="strict JSON"):
        encode("t", {"kind": "meta", "seq": 0, "x": float("nan")})


@pytest.fixture
def address():
    return f"tcp://127.0.0.1:{free_port()}"


def _publish_frames(pub, count, arrays=None):
    for i in range(count):
        fields = {"frame_index": i, "pts_s": i / 30, "t_capture_ns": time.monotonic_ns(),
                  "people": [{"id": 0, "score": 1.0, "bbox": [0, 0, 1, 1]}]}
        pub.publish(fields, arrays if arrays is not None else _person_arrays())


def test_subscriber_gets_topology_on_joining_and_frames_in_order(address):
    with Publisher(address, meta_interval_s=60) as pub:
        pub.set_meta({"body_model": "test-model", "joint_names": ["root"], "parents": [-1]},
                     [("faces", np.array([[0, 1, 2]], np.int32))])
        with Subscriber(address) as early:
            assert early.wait_for_meta(5).header["body_model"] == "test-model"
            assert pub.wait_for_subscriber(5)
            _publish_frames(pub, 20)
            frames = list(early.frames(timeout_s=1.0))
            assert [m.header["seq"] for m in frames] == list(range(20))
            assert frames[5]["keypoints"].shape == (1, 33, 3)
            # A late joiner gets the topology at once, without waiting for the periodic resend.
            with Subscriber(address) as late:
                meta = late.wait_for_meta(2)
                assert np.array_equal(meta["faces"], [[0, 1, 2]])
                late.meta = None
                late.request_meta()
                assert late.wait_for_meta(2).header["body_model"] == "test-model"


def test_subscriber_survives_malformed_messages(address):
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.bind(address)
    try:
        with Subscriber(address) as sub:
            time.sleep(0.3)
            raw.send_multipart([b"meshstream.frame", b"garbage"])
            raw.send_multipart([bytes(p) for p in encode(protocol.FRAME_TOPIC, {**FRAME_HEADER, "seq": 1},
                                                         _person_arrays())])
            with pytest.raises(ProtocolError):
                sub.recv(2)
            good = sub.recv(2)
            assert good is not None and good.header["frame_index"] == 3
            assert sub.stats["malformed"] == 1 and sub.stats["frames"] == 1
    finally:
        raw.close(0)
        ctx.term()


def test_slow_subscriber_loses_messages_counted_and_publisher_never_blocks(address):
    big = [("keypoints", np.zeros((1, 33, 3), np.float32)), ("vertices", np.zeros((1, 100_000, 3), np.float32))]
    with Publisher(address, sndhwm=2) as pub:
        with Subscriber(address, rcvhwm=2) as slow:
            assert pub.wait_for_subscriber(5)
            _publish_frames(pub, 200, big)  # 240 MB offered to a subscriber that reads nothing yet
            time.sleep(0.5)
            received = list(slow.frames(timeout_s=0.5))
            # One more frame once the queues are empty: every loss before it, the burst's tail
            # included, now shows as a gap in seq.
            _publish_frames(pub, 1)
            tail = slow.recv(5.0)
            while tail is not None and tail.kind != "frame":
                tail = slow.recv(5.0)
    # publish() returned 201 times although nobody read: it never blocks (a hang fails by timeout).
    assert 0 < len(received) < 200
    assert tail is not None and tail.header["seq"] == 200
    seen = received + [tail]
    lost = seen[0].header["seq"] + slow.stats["missed"]  # before the first, and the gaps after it
    assert lost > 0 and lost + len(seen) == 201
    assert pub.sent + pub.dropped == 201


def test_curve_subscriber_with_keys_receives_and_one_without_gets_nothing(address, tmp_path):
    keys = create_curve_keys(tmp_path / "keys")
    create_curve_keys(tmp_path / "other")  # a different, unauthorised client pair
    with Publisher(address, curve_keys_dir=keys / "server", meta_interval_s=0.2) as pub:
        pub.set_meta({"body_model": "secret"})
        with Subscriber(address, curve_keys_dir=keys / "client") as allowed, \
             Subscriber(address) as plain, Subscriber(address, curve_keys_dir=tmp_path / "other" / "client") as stranger:
            assert allowed.wait_for_meta(5).header["body_model"] == "secret"
            _publish_frames(pub, 5)
            assert len(list(allowed.frames(timeout_s=1.0))) == 5
            assert plain.recv(0.5) is None and stranger.recv(0.5) is None


def test_publisher_errors_are_clear(address):
    with Publisher(address):
        with pytest.raises(PublishError, match="already in use"):
            Publisher(address).start()
    with pytest.raises(PublishError, match="not a valid ZeroMQ address"):
        Publisher("tcp://127.0.0.1").start()
    with pytest.raises(SubscriberError, match="cannot connect"):
        Subscriber("nonsense")
