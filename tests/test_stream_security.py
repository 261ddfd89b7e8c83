"""Reliability and security of the transport, over real sockets and real subprocesses: CURVE key
errors, key file modes, malformed headers, the end-of-stream message, a peer that floods
topology requests, and a peer that sends a huge message."""

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream import protocol
from stream.client import Subscriber, SubscriberError
from stream.keys import create_curve_keys
from stream.publisher import Publisher, PublishError
from tests.stream_helpers import ROOT, free_port, make_clip, meshstream, meshstream_popen

SQUATS = ROOT / "stream" / "assets" / "sample.mp4"


def _address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# 1. CURVE keys ------------------------------------------------------------------------------------
def _bad_key_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (folder given to the publisher, text its error must contain)."""
    keys = create_curve_keys(tmp_path / "keys")
    cases = {"missing": (tmp_path / "nokeys", "does not exist")}
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases["a file"] = (a_file, "is not a folder")
    no_auth = tmp_path / "no_auth"
    no_auth.mkdir()
    (no_auth / "server.key_secret").write_bytes((keys / "server" / "server.key_secret").read_bytes())
    os.chmod(no_auth / "server.key_secret", 0o600)
    cases["no authorized_clients"] = (no_auth, "authorized_clients")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "authorized_clients").mkdir()
    (garbage / "authorized_clients" / "client.key").write_bytes((keys / "client" / "client.key").read_bytes())
    (garbage / "server.key_secret").write_bytes(os.urandom(300))
    os.chmod(garbage / "server.key_secret", 0o600)
    cases["garbage secret"] = (garbage, "is not a CURVE server secret key file")
    readable = tmp_path / "readable"
    create_curve_keys(readable)
    os.chmod(readable / "server" / "server.key_secret", 0o644)
    cases["world-readable secret"] = (readable / "server",
                                      f"run `chmod 600 {readable / 'server' / 'server.key_secret'}`")
    return cases


def test_run_with_bad_curve_keys_exits_at_once_with_one_line_naming_the_file(tmp_path):
    cases = _bad_key_folders(tmp_path)
    runs = {name: meshstream_popen("run", str(SQUATS), "--pose", "off", "--max-frames", "1", "--publish", _address(),
                                   "--curve-keys", str(folder)) for name, (folder, _) in cases.items()}
    for name, run in runs.items():
        try:
            _, err = run.communicate(timeout=60)  # it used to hang here forever
        except subprocess.TimeoutExpired:
            run.kill()
            pytest.fail(f"{name}: run hung")
        folder, expected = cases[name]
        lines = [line for line in err.splitlines() if "error" in line]
        assert run.returncode == 2, (name, err)
        assert len(lines) == 1 and expected in lines[0] and str(folder) in lines[0], (name, err)
        assert "Traceback" not in err, (name, err)


def test_a_publisher_refused_for_its_keys_leaves_no_socket_behind(tmp_path):
    address = _address()
    for folder, expected in _bad_key_folders(tmp_path).values():
        started = time.monotonic()
        with pytest.raises(PublishError, match=expected.replace("`", ".")):
            Publisher(address, curve_keys_dir=folder).start()
        assert time.monotonic() - started < 5
    with Publisher(address) as pub:  # the port is free again
        assert pub.bound_address == address


def test_keys_command_writes_secrets_for_the_owner_only_in_one_folder_per_party(tmp_path):
    result = meshstream("keys", str(tmp_path / "k"), "--client", "alice", "--client", "bob")
    assert result.returncode == 0, result.stderr
    k = tmp_path / "k"
    secrets = sorted(p.relative_to(k).as_posix() for p in k.rglob("*.key_secret"))
    assert secrets == ["alice/alice.key_secret", "bob/bob.key_secret", "server/server.key_secret"]
    for path in k.rglob("*.key_secret"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for folder in ("server", "alice", "bob"):
        assert (k / folder).stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (k / "server" / "authorized_clients").iterdir()) == ["alice.key", "bob.key"]
    assert (k / "alice" / "server.key").read_bytes() == (k / "server" / "server.key").read_bytes()
    assert f"--curve-keys {k / 'alice'} --client-name alice" in result.stdout
    again = meshstream("keys", str(k), "--client", "alice")  # never overwrites keys
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_secret_key_others_can_read_is_refused_by_the_subscriber_and_listen(tmp_path):
    keys = create_curve_keys(tmp_path / "k")
    secret = keys / "client" / "client.key_secret"
    os.chmod(secret, 0o640)
    with pytest.raises(SubscriberError, match=f"run `chmod 600 {secret}`"):
        Subscriber(_address(), curve_keys_dir=keys / "client")
    listen = meshstream("listen", _address(), "--curve-keys", str(keys / "client"), "--timeout", "1", timeout=60)
    assert listen.returncode == 2 and f"chmod 600 {secret}" in listen.stderr and "Traceback" not in listen.stderr
    os.chmod(secret, 0o600)
    with Publisher(address := _address(), curve_keys_dir=keys / "server") as pub:
        pub.set_meta({"body_model": "m"})
        with Subscriber(address, curve_keys_dir=keys / "client") as sub:  # fixed as told: accepted
            assert sub.wait_for_meta(5).header["body_model"] == "m"


# 2. Malformed headers and the end of the stream ------------------------------------------------------
FRAME = {"kind": "frame", "frame_index": 0, "pts_s": 0.0, "t_capture_ns": 1, "t_publish_ns": 2,
         "people": [{"id": 0, "score": 1.0, "bbox": [0, 0, 1, 1]}]}


def _malformed_headers() -> list[bytes]:
    """The header mistakes that used to end a subscriber with a TypeError or RecursionError."""
    good = {"v": 1, **FRAME, "seq": 0}
    spec = {"name": "keypoints", "dtype": "float32", "shape": [1, 33, 3]}

    def with_(**changes):
        return json.dumps({**good, **changes}).encode()

    return [
        with_(arrays=[{**spec, "dtype": ["float32"]}]),
        with_(arrays=[{**spec, "name": ["keypoints"]}]),
        b'{"v":1,"kind":"frame","deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        with_(seq="5", arrays=[]), with_(seq=None, arrays=[]),
        with_(frame_index="7", arrays=[]), with_(t_capture_ns="1", arrays=[]), with_(pts_s="0.5", arrays=[]),
        with_(pts_s=float("nan"), arrays=[]),  # json.dumps writes NaN; the protocol forbids it
        json.dumps({"v": 1, "kind": "meta", "seq": 0, "arrays": [], "intrinsics": {"fx": "wide"}}).encode(),
        json.dumps({"v": 1, "kind": "meta", "seq": 0, "arrays": [], "joint_names": 24}).encode(),
    ]


def _wait_for_subscription(xpub: zmq.Socket, prefix: bytes, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if xpub.poll(100) and xpub.recv() == b"\x01" + prefix:
            return
    raise AssertionError(f"no subscription to {prefix!r}")


def _send_mixed(xpub: zmq.Socket) -> int:
    """Each malformed header followed by a good frame, then the end message; returns frames sent."""
    keypoints = np.zeros((1, 33, 3), np.float32)
    seq = 0
    for header in _malformed_headers():
        xpub.send_multipart([b"meshstream.frame", header, keypoints.tobytes()] if b"keypoints" in header
                            else [b"meshstream.frame", header])
        xpub.send_multipart([bytes(p) for p in protocol.encode(protocol.FRAME_TOPIC, {**FRAME, "seq": seq},
                                                               [("keypoints", keypoints)])])
        seq += 1
    xpub.send_multipart([bytes(p) for p in protocol.encode(protocol.FRAME_TOPIC,
                                                           {"kind": "end", "seq": seq, "reason": "finished"})])
    return seq


def test_malformed_headers_are_skipped_and_the_end_message_ends_frames_and_listen():
    context = zmq.Context()
    xpub = context.socket(zmq.XPUB)
    address = _address()
    xpub.bind(address)
    try:
        # The Python subscriber: frames() survives every malformed message and ends on "end".
        with Subscriber(address) as sub:
            _wait_for_subscription(xpub, b"meshstream.frame")
            sent = _send_mixed(xpub)
            received = [m.header["seq"] for m in sub.frames()]  # no timeout: only the end message ends it
            assert received == list(range(sent))
            assert sub.stats["malformed"] == len(_malformed_headers()) and sub.stats["missed"] == 0
            assert sub.end.header == {"v": 1, "kind": "end", "seq": sent, "reason": "finished", "arrays": []}
        # meshstream listen: prints every good frame, reports each bad one, exits 0 on the end message.
        listen = meshstream_popen("listen", address, "--timeout", "30")
        _wait_for_subscription(xpub, b"meshstream.frame")
        sent = _send_mixed(xpub)
        out, err = listen.communicate(timeout=60)
    finally:
        xpub.close(0)
        context.term()
    assert listen.returncode == 0, err
    assert sum(line.startswith("frame ") for line in out.splitlines()) == sent
    assert out.splitlines()[-1] == f"end of stream (finished): the publisher sent {sent} frames"
    assert err.count("malformed message skipped") == len(_malformed_headers()), err
    assert "Traceback" not in err


def test_a_finished_run_ends_listen_and_the_readme_loop_and_counts_a_one_frame_clip(tmp_path):
    clip = make_clip(tmp_path / "one.mkv", frames=1)
    address = _address()
    readme_loop = _python("""
        import sys
        from stream.client import Subscriber
        with Subscriber(sys.argv[1]) as sub:
            for msg in sub.frames():  # no timeout: returns when the publisher's stream ends
                print("frame", msg.header["frame_index"], flush=True)
            print("ended", sub.end.header["reason"], sub.end.header["seq"], flush=True)
    """, address)
    # One subscriber per run: --wait-subscribers waits for the first one only, and a second one
    # joining a moment later would miss the clip's only frame.
    run = meshstream("run", str(clip), "--pose", "off", "--publish", address, "--wait-subscribers", "20",
                     "--linger", "2")
    loop_out, loop_err = readme_loop.communicate(timeout=30)
    assert run.returncode == 0, run.stderr
    assert "published 1 messages" in run.stdout, run.stdout
    assert readme_loop.returncode == 0, loop_err
    assert loop_out.splitlines()[0] == "frame 0" and loop_out.splitlines()[1].startswith("ended ")
    listen_address = _address()
    listen = meshstream_popen("listen", listen_address, "--timeout", "20")
    run = meshstream("run", str(clip), "--pose", "off", "--publish", listen_address, "--wait-subscribers", "20",
                     "--linger", "2")
    assert run.returncode == 0, run.stderr
    out, err = listen.communicate(timeout=30)
    assert listen.returncode == 0, err
    assert [line.split()[0] for line in out.splitlines() if not line.startswith("topology")] == ["frame", "end"]
    assert "nothing received" not in err
    assert loop_out.splitlines()[1].endswith(" 1")


# 3. A peer flooding topology requests --------------------------------------------------------------
FLOODER = """
    import sys, time, zmq
    context = zmq.Context()
    sub = context.socket(zmq.XSUB)  # sends its (un)subscriptions as messages: the fastest way to flip
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.SNDHWM, 100_000)
    sub.connect(sys.argv[1])
    time.sleep(0.2)
    print("flooding", flush=True)
    flips, end = 0, time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        try:
            sub.send(b"\\x01meshstream.meta", zmq.NOBLOCK)
            sub.send(b"\\x00meshstream.meta", zmq.NOBLOCK)
            flips += 1
        except zmq.Again:
            pass
    print(flips, flush=True)
    sub.close(0)
    context.term()
"""

COUNTER = """
    import json, sys
    from stream.client import Subscriber
    with Subscriber(sys.argv[1]) as sub:
        sub.wait_for_meta(20)
        print("ready", flush=True)
        frames = [m.header["seq"] for m in sub.frames(timeout_s=10)]
        print(json.dumps({"frames": len(frames), "meta": sub.stats["meta"], "end": sub.end is not None}), flush=True)
"""


def test_a_peer_resubscribing_to_meta_cannot_starve_the_other_subscribers():
    address = _address()
    faces = np.arange(27_500 * 3, dtype=np.int32).reshape(-1, 3)  # 330 KB of topology, as the open model's
    vertices = np.zeros((1, 13_718, 3), np.float32)
    frames, fps = 90, 30
    with Publisher(address, meta_interval_s=2.0) as pub:
        started = time.monotonic()
        pub.set_meta({"body_model": "m"}, [("faces", faces)])
        counter = _python(COUNTER, address)
        assert counter.stdout.readline().strip() == "ready", counter.stderr.read()
        flooder = _python(FLOODER, address, str(frames / fps + 2))
        assert flooder.stdout.readline().strip() == "flooding"
        time.sleep(0.5)
        for i in range(frames):  # 3 s of 30 fps frames with a body's vertices
            pub.publish({**FRAME, "frame_index": i}, [("vertices", vertices)])
            if i == frames // 2:  # a late joiner still gets the topology during the flood
                with Subscriber(address) as late:
                    assert np.array_equal(late.wait_for_meta(2.0)["faces"], faces)
            time.sleep(1 / fps)
        flips = int(flooder.communicate(timeout=30)[0].split()[-1])
        pub.end_of_stream()
        result = json.loads(counter.communicate(timeout=30)[0].splitlines()[-1])
        meta_requests, meta_sent = pub.meta_requests, pub.meta_sent
        lifetime_s = time.monotonic() - started
    print(f"flood: {flips} meta flips, {meta_requests} requests seen, {meta_sent} topology sends; "
          f"the other subscriber got {result['frames']}/{frames} frames, {result['meta']} topology messages")
    assert meta_requests > 1000  # the flood did reach the publisher
    assert result["frames"] >= 0.9 * frames and result["end"]
    assert meta_sent <= lifetime_s / 0.25 + 2  # at most 4 topology sends a second


# 4. A peer sending a huge message --------------------------------------------------------------------
def _zmtp_pub_greeting() -> bytes:
    """ZMTP 3.0 greeting of a NULL-security peer (64 bytes), as any ZeroMQ publisher sends."""
    return b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)


def _zmtp_ready(socket_type: bytes) -> bytes:
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from /proc")
def test_a_message_claiming_1_gib_is_dropped_before_the_subscriber_buffers_it():
    """A rogue publisher (speaking ZMTP over a plain TCP socket) announces one 1 GiB message part
    and streams 256 MiB of it: the subscriber must drop the connection at the size, not buffer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    subscriber = _python("""
        import sys
        from stream.client import Subscriber
        with Subscriber(sys.argv[1]) as sub:
            print("ready", flush=True)
            sub.recv(60)
    """, address)
    streamed = 0
    try:
        assert subscriber.stdout.readline().strip() == "ready", subscriber.stderr.read()
        listener.settimeout(20)
        conn, _ = listener.accept()
        conn.settimeout(20)
        baseline = _rss_mib(subscriber.pid)
        conn.sendall(_zmtp_pub_greeting())
        _read_exactly(conn, 64)  # the subscriber's greeting
        conn.sendall(_zmtp_ready(b"PUB"))
        flags = _read_exactly(conn, 2)  # its READY command: flags, size, body
        assert flags[0] == 0x04
        _read_exactly(conn, flags[1])
        chunk = b"meshstream.frame" + bytes((1 << 20) - 16)  # 1 MiB, sent 256 times: the test stays small
        try:
            conn.sendall(bytes([0x02]) + struct.pack(">Q", 1 << 30))  # a long, last frame of 1 GiB
            for _ in range(256):
                conn.sendall(chunk)
                streamed += len(chunk)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass  # the subscriber hung up: what it should do
        time.sleep(0.5)
        grown = _rss_mib(subscriber.pid) - baseline
        conn.close()
    finally:
        listener.close()
        subscriber.kill()
        subscriber.communicate()
    print(f"huge message: {streamed / 2**20:.0f} MiB streamed before the hang-up, subscriber grew {grown:.1f} MiB")
    assert grown < 32, f"the subscriber buffered the message: +{grown:.0f} MiB"
    assert streamed < 200 << 20  # it hung up instead of reading on


# 5. The documents state the limits the code applies -----------------------------------------------
def test_protocol_and_security_docs_state_the_limits_and_end_reasons_the_code_uses():
    import inspect

    from stream import client, publisher

    protocol_doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    security_doc = (ROOT / "docs" / "SECURITY.md").read_text()
    assert client.DEFAULT_MAX_MESSAGE_BYTES == 64 << 20 and protocol.MAX_HEADER_BYTES == 1 << 20
    for doc in (protocol_doc, security_doc):
        assert "64 MiB" in doc and "1 MiB" in doc and f"{protocol.MAX_JSON_DEPTH} deep" in doc
    assert inspect.signature(Publisher).parameters["meta_resend_min_s"].default == 0.25 and "0.25 s" in protocol_doc
    assert "4 times a second" in security_doc and publisher.MAX_SUBSCRIPTION_BYTES == 4096 and "4 KiB" in security_doc
    end_section = protocol_doc.split("## 6. End messages")[1].split("\n## ")[0]
    assert all(f'`"{reason}"`' in end_section for reason in protocol.END_REASONS)
    assert "| 1 | 1.1 | `end` message" in protocol_doc


def test_sent_counts_every_frame_once_the_producer_releases_its_socket():
    """What `meshstream run` prints as "published N messages" is read right after the publishing
    stage closes: by then every frame handed over must be counted."""
    vertices = np.zeros((1, 13_718, 3), np.float32)
    with Publisher(_address(), handover_hwm=1000) as pub:
        for burst in (1, 50, 200):
            before = pub.sent

            def produce():
                for i in range(burst):
                    assert pub.publish({**FRAME, "frame_index": i}, [("vertices", vertices)])
                pub.release_thread_socket()

            producer = threading.Thread(target=produce)
            producer.start()
            producer.join()
            assert pub.sent - before == burst
