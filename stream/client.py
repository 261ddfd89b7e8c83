"""Python subscriber for meshstream (protocol: docs/PROTOCOL.md).

    from stream.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5556") as sub:
        for msg in sub.frames(timeout_s=5):
            people = msg.header["people"]          # [{"id", "score", "bbox"}, ...]
            keypoints = msg.arrays["keypoints"]    # (P, 33, 3) float32, a view on the buffer
            faces = sub.meta.arrays.get("faces")   # (F, 3) int32 topology, once known

Arrays are read-only numpy views on the received ZeroMQ buffers (no copy). A malformed message
raises :class:`stream.protocol.ProtocolError` from :meth:`Subscriber.recv`; the subscriber stays
usable and counts it in ``stats["malformed"]``. Gaps in ``seq`` (messages lost because this
subscriber read too slowly) are counted in ``stats["missed"]``. :meth:`Subscriber.frames` ends
when the publisher says its stream has ended (an ``end`` message; ``Subscriber.end`` holds it).
A message part larger than ``max_message_bytes`` is refused by ZeroMQ before it is buffered
(the connection is dropped; ZeroMQ reconnects).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterator

import zmq

from stream import protocol
from stream.keys import CurveKeyError, load_public_key, load_secret_key
from stream.protocol import Message, ProtocolError

log = logging.getLogger("meshstream.client")

# Largest message part accepted (bytes). A frame's largest part is its vertices: P x V x 3 x 4
# bytes, 165 KB per person for the open model (V = 13,718), so 64 MiB is ~400 people.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20


class SubscriberError(Exception):
    """The subscriber could not connect (bad address, bad keys) or timed out."""


class Subscriber:
    """Subscribes to frame and meta topics at ``address`` (e.g. "tcp://127.0.0.1:5556").

    topics: topic prefixes for frames (default all meshstream frames). rcvhwm: messages kept
    before ZeroMQ drops for this subscriber. max_message_bytes: largest message part accepted
    (ZMQ_MAXMSGSIZE; a larger one is dropped unread and the connection closed; -1: no limit).
    curve_keys_dir: this client's key folder, with ``server.key`` (the server's public key) and
    ``<client_name>.key_secret`` (readable by its owner only).
    """

    def __init__(self, address: str, topics: tuple[str, ...] = (protocol.FRAME_TOPIC,), rcvhwm: int = 100,
                 curve_keys_dir: str | os.PathLike | None = None, client_name: str = "client",
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.address = address
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        try:
            if curve_keys_dir is not None:
                self._configure_curve(Path(curve_keys_dir), client_name)
        except CurveKeyError as exc:
            self.close()
            raise SubscriberError(str(exc)) from None
        try:
            self.socket.connect(address)
        except (zmq.ZMQError, OSError, ValueError) as exc:
            self.close()
            raise SubscriberError(f"cannot connect to {address!r}: {exc} (use e.g. tcp://127.0.0.1:5556)") from exc
        self.socket.setsockopt_string(zmq.SUBSCRIBE, protocol.META_TOPIC)
        for topic in topics:
            self.socket.setsockopt_string(zmq.SUBSCRIBE, topic)
        self.meta: Message | None = None
        self.end: Message | None = None  # the publisher's end-of-stream message, once received
        self._last_seq: int | None = None
        self.stats = {"frames": 0, "meta": 0, "malformed": 0, "missed": 0}

    def _configure_curve(self, directory: Path, client_name: str) -> None:
        if not directory.is_dir():
            state = "is not a folder" if directory.exists() else "does not exist"
            raise CurveKeyError(f"CURVE key folder {directory} {state} (make one with `meshstream keys DIR`; "
                                "a client uses DIR/<name>)")
        public, secret = load_secret_key(directory / f"{client_name}.key_secret", "client")
        server_key = load_public_key(directory / "server.key")
        if (directory / "server.key_secret").exists():
            log.warning("%s holds the server's secret key; a client needs only server.key (give each client "
                        "its own folder)", directory)
        self.socket.curve_publickey = public
        self.socket.curve_secretkey = secret
        self.socket.curve_serverkey = server_key

    def request_meta(self) -> None:
        """Ask the publisher for the topology again (re-subscribing to the meta topic)."""
        self.socket.setsockopt_string(zmq.UNSUBSCRIBE, protocol.META_TOPIC)
        self.socket.setsockopt_string(zmq.SUBSCRIBE, protocol.META_TOPIC)

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """The next message (frame, meta or end), or None after ``timeout_s`` without one.

        Raises ProtocolError for a malformed message (the next call receives the next one).
        """
        if timeout_s is not None and not self.socket.poll(int(timeout_s * 1000)):
            return None
        parts = self.socket.recv_multipart(copy=False)
        try:
            message = protocol.decode(parts)
        except ProtocolError:
            self.stats["malformed"] += 1
            raise
        if message.kind == "meta":
            self.meta = message
            self.stats["meta"] += 1
        elif message.kind == "end":
            # seq of an end message = frame messages published; frames after the last one seen were lost.
            self._count_gap(message.header["seq"])
            self._last_seq = None  # a publisher started again on the address counts from 0
            self.end = message
        else:
            self._count_gap(message.header["seq"])
            self._last_seq = message.header["seq"]
            self.stats["frames"] += 1
            self.end = None  # frames again: a new stream has begun
        return message

    def _count_gap(self, seq: int) -> None:
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.stats["missed"] += seq - self._last_seq - 1

    def frames(self, timeout_s: float | None = None, skip_malformed: bool = True) -> Iterator[Message]:
        """Frame messages until the publisher ends its stream (``self.end`` is then set) or
        ``timeout_s`` passes without a frame (None: wait forever); meta messages update
        ``self.meta`` on the way. Malformed messages are skipped (and counted) unless
        ``skip_malformed`` is False."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = self.recv(left)
            except ProtocolError:
                if skip_malformed:
                    continue
                raise
            if message is None or message.kind == "end":
                return
            if message.kind == "frame":
                if timeout_s is not None:
                    deadline = time.monotonic() + timeout_s
                yield message

    def wait_for_meta(self, timeout_s: float = 5.0) -> Message:
        """Receive until the topology arrives; raises SubscriberError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.meta is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SubscriberError(f"no topology from {self.address} within {timeout_s} s")
            try:
                self.recv(left)
            except ProtocolError:
                continue
        return self.meta

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
