"""ZeroMQ publisher of meshstream messages (protocol: docs/PROTOCOL.md).

The publishing socket is an XPUB owned by one background thread. Producers (pipeline stages,
in their own threads) serialize a whole message first, then hand it over a per-thread inproc
PUSH socket without blocking: if the hand-over queue is full the message is dropped and
counted, so publishing never blocks the pipeline. Subscribers that read too slowly lose
messages at their high-water mark inside ZeroMQ; they see it as gaps in ``seq``.

Topology for late joiners: the XPUB socket sees every subscription (XPUB_VERBOSE). When a
subscription covers ``meshstream.meta`` (the exact topic or any prefix of it, including the
empty "everything" subscription), the publisher sends the current topology, at most once per
``meta_resend_min_s`` however many subscriptions arrive (requests in between are answered
together), so a peer that keeps resubscribing cannot flood the others. It also republishes it
every ``meta_interval_s``, and at once when it changes. A subscriber asks again by unsubscribing
from and resubscribing to ``meshstream.meta``.

End of stream: :meth:`Publisher.end_of_stream` (or :meth:`Publisher.close`, if nobody called it)
sends one ``end`` message on the frame topic after every frame already handed over, so that
subscribers stop without waiting for a timeout.

Optional CURVE (``curve_keys_dir``): the server's folder made by ``meshstream keys``
(stream.keys): ``server.key_secret`` (readable by its owner only) and ``authorized_clients/*.key``,
the public keys allowed to subscribe; others complete no handshake and receive nothing. Keys are
checked before any socket exists, so a bad folder is a clear error, never a hang.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zmq

from stream import protocol
from stream.keys import CurveKeyError, create_curve_keys, load_server_keys  # noqa: F401 - create_curve_keys re-exported

log = logging.getLogger("meshstream.publisher")

# A subscription message is a topic prefix; anything longer is not one of ours.
MAX_SUBSCRIPTION_BYTES = 4096
# Events read (subscriptions) or messages forwarded per turn of the loop, so neither starves the other.
BATCH = 256


class PublishError(Exception):
    """The publisher could not start (bad address, port in use, bad keys)."""


def _bind_error_message(address: str, exc: zmq.ZMQError) -> str:
    if exc.errno == zmq.EADDRINUSE:
        return f"cannot publish on {address}: the port is already in use (stop the other program or pick another port)"
    if exc.errno in (zmq.EINVAL, zmq.EPROTONOSUPPORT) or "Invalid argument" in str(exc) or "not supported" in str(exc):
        return (f"cannot publish on {address!r}: not a valid ZeroMQ address ({exc}); "
                "use e.g. tcp://127.0.0.1:5556 or tcp://*:5556")
    if exc.errno == zmq.EADDRNOTAVAIL or "No such device" in str(exc) or "Cannot assign" in str(exc):
        return f"cannot publish on {address}: that network address is not on this machine ({exc})"
    return f"cannot publish on {address}: {exc}"


class Publisher:
    """Publishes frame and meta messages on a ZeroMQ XPUB socket from a background thread.

    address: where to bind, e.g. "tcp://127.0.0.1:5556". sndhwm: messages queued per
    subscriber before ZeroMQ drops for that subscriber. handover_hwm: messages waiting for the
    publisher thread before producers' messages are dropped (counted in ``dropped``).
    meta_interval_s: topology republish period. meta_resend_min_s: least time between two sends
    of the topology asked for by subscriptions. linger_ms: how long close() may wait to flush.
    curve_keys_dir: the server's CURVE folder (``DIR/server`` of ``meshstream keys DIR``).
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5556", sndhwm: int = 32, handover_hwm: int = 64,
                 meta_interval_s: float = 2.0, linger_ms: int = 500, curve_keys_dir: str | os.PathLike | None = None,
                 topic: str = protocol.FRAME_TOPIC, meta_resend_min_s: float = 0.25):
        self.address = address
        self.sndhwm = sndhwm
        self.handover_hwm = handover_hwm
        self.meta_interval_s = meta_interval_s
        self.meta_resend_min_s = meta_resend_min_s
        self.linger_ms = linger_ms
        self.curve_keys_dir = Path(curve_keys_dir) if curve_keys_dir else None
        self.topic = topic
        self.context = zmq.Context()
        self._inproc = f"inproc://meshstream-publisher-{id(self):x}"
        self._local = threading.local()
        self._pushers: list[zmq.Socket] = []
        self._pushers_lock = threading.Lock()
        self._meta_frames: list | None = None
        self._meta_dirty = False
        self._meta_requested = False
        self._meta_lock = threading.Lock()
        self._end_frames: list | None = None
        self._end_sent = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._curve: tuple[bytes, bytes] | None = None
        self._auth = None
        self._seq = 0
        self._meta_seq = 0
        self._handed = 0  # messages handed over to the publishing thread
        self._handed_lock = threading.Lock()
        # Counters (read from any thread).
        self.sent = 0  # frame messages given to the XPUB socket
        self.dropped = 0
        self.meta_sent = 0
        self.meta_requests = 0  # subscriptions that asked for the topology
        self.subscriptions = 0
        self.frame_subscriptions = 0
        self.bound_address: str | None = None
        self.error: BaseException | None = None  # set if the publishing thread failed

    # 1. Life cycle ---------------------------------------------------------------------------
    def start(self) -> "Publisher":
        """Check the keys, bind and start the publishing thread; raises PublishError with
        advice on failure (and leaves no socket or thread behind)."""
        try:
            if self.curve_keys_dir is not None:
                self._start_curve()
        except (CurveKeyError, zmq.ZMQError, ValueError, OSError) as exc:
            self._terminate()
            raise PublishError(str(exc)) from None
        self._thread = threading.Thread(target=self._serve, name="publisher", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._terminate()
            raise PublishError(str(self._start_error)) from self._start_error
        return self

    def _start_curve(self) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        public, secret, authorized = load_server_keys(self.curve_keys_dir)
        self._curve = (public, secret)
        self._auth = ThreadAuthenticator(self.context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(authorized))

    def end_of_stream(self, reason: str = "finished", timeout_s: float | None = None) -> bool:
        """Send the ``end`` message after every frame already handed over (call it once the
        last frame is published, from any thread). reason: one of protocol.END_REASONS.
        Returns True once it is on the socket; later calls do nothing."""
        if reason not in protocol.END_REASONS:
            raise ValueError(f"end-of-stream reason {reason!r}: use one of {protocol.END_REASONS}")
        if self._end_frames is not None or self._thread is None or not self._thread.is_alive():
            return self._end_sent.is_set()
        timeout_s = self._flush_timeout_s() if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        header = {"kind": "end", "seq": self._seq, "reason": reason}
        self._end_frames = [bytes(f) for f in protocol.encode(self.topic, header)]
        return self._end_sent.wait(max(0.0, deadline - time.monotonic()) + 0.2)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every message handed over so far is on the XPUB socket (``sent`` is then
        final for them). True if it is, False after ``timeout_s``."""
        deadline = time.monotonic() + (self._flush_timeout_s() if timeout_s is None else timeout_s)
        while self.sent < self._handed:
            if self._thread is None or not self._thread.is_alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def _flush_timeout_s(self) -> float:
        return 2 + self.linger_ms / 1000

    def close(self) -> None:
        """Send the end message if end_of_stream() was not called, flush what is queued, then
        close every socket (each waits at most linger_ms)."""
        if self.error is None:
            self.end_of_stream("closed")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 + self.linger_ms / 1000)
        self._terminate()

    def _terminate(self) -> None:
        with self._pushers_lock:
            for sock in self._pushers:
                sock.close(linger=0)
            self._pushers.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if not self.context.closed:
            self.context.term()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _make_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.XPUB)
        try:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            if self._curve is not None:
                sock.curve_publickey, sock.curve_secretkey = self._curve
                sock.curve_server = True
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _serve(self) -> None:
        # 1. Sockets: XPUB bound to the user's address, PULL for hand-overs from producers.
        xpub = pull = None
        try:
            xpub = self._make_socket()
            try:
                xpub.bind(self.address)
            except zmq.ZMQError as exc:
                raise PublishError(_bind_error_message(self.address, exc)) from exc
            self.bound_address = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            pull = self.context.socket(zmq.PULL)
            pull.setsockopt(zmq.RCVHWM, self.handover_hwm)
            pull.setsockopt(zmq.LINGER, 0)
            pull.bind(self._inproc)
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            for sock in (pull, xpub):
                if sock is not None:
                    sock.close(linger=0)
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(xpub, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        next_meta = time.monotonic() + self.meta_interval_s
        last_meta = float("-inf")
        try:
            # 2. Loop: forward hand-overs, answer meta subscriptions (rate-limited), republish meta.
            while not self._stop.is_set():
                events = dict(poller.poll(timeout=20))
                if xpub in events:
                    self._read_subscriptions(xpub)
                if pull in events:
                    self._forward(pull, xpub)
                now = time.monotonic()
                if (self._meta_dirty or now >= next_meta
                        or (self._meta_requested and now - last_meta >= self.meta_resend_min_s)):
                    if self._send_meta(xpub):
                        last_meta = now
                    next_meta = now + self.meta_interval_s
                if self._end_frames is not None and not self._end_sent.is_set():
                    self._forward(pull, xpub, limit=None)
                    xpub.send_multipart(self._end_frames, copy=False)
                    self._end_sent.set()
            # 3. Shutdown: forward what is already handed over, then close with linger.
            self._forward(pull, xpub, limit=None)
        except Exception as exc:  # noqa: BLE001 - surfaced to producers by publish()
            log.error("publisher thread failed: %s", exc)
            self.error = exc
        finally:
            pull.close(linger=0)
            xpub.close(linger=self.linger_ms)

    def _read_subscriptions(self, xpub: zmq.Socket) -> None:
        meta = protocol.META_TOPIC.encode()
        topic = self.topic.encode()
        for _ in range(BATCH):
            try:
                event = xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] == b"\x01":
                self.subscriptions += 1
                prefix = event[1:]
                if topic.startswith(prefix) or prefix.startswith(topic):
                    self.frame_subscriptions += 1
                if meta.startswith(prefix):
                    self.meta_requests += 1
                    self._meta_requested = True

    def _forward(self, pull: zmq.Socket, xpub: zmq.Socket, limit: int | None = BATCH) -> None:
        count = 0
        while limit is None or count < limit:
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            xpub.send_multipart(frames, copy=False)
            self.sent += 1
            count += 1

    def _send_meta(self, xpub: zmq.Socket) -> bool:
        with self._meta_lock:
            frames = self._meta_frames
            self._meta_dirty = False
            self._meta_requested = False
        if frames is None:
            return False
        xpub.send_multipart(frames, copy=False)  # bytes parts: zero-copy, kept alive by ZeroMQ
        self.meta_sent += 1
        return True

    # 2. Producers ----------------------------------------------------------------------------
    def _pusher(self) -> zmq.Socket:
        sock = getattr(self._local, "push", None)
        if sock is None:
            sock = self.context.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.handover_hwm)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._inproc)
            self._local.push = sock
            with self._pushers_lock:
                self._pushers.append(sock)
        return sock

    def set_meta(self, fields: dict[str, Any], arrays: Sequence[tuple[str, np.ndarray]] = ()) -> None:
        """Set (or replace) the topology message; it goes out at once to meta subscribers."""
        header = {"kind": "meta", "seq": self._meta_seq, **fields, "meta_interval_s": self.meta_interval_s}
        self._meta_seq += 1
        frames = protocol.encode(protocol.META_TOPIC, header, arrays)
        frames = [bytes(f) for f in frames]  # owned copy: resent many times
        with self._meta_lock:
            self._meta_frames = frames
            self._meta_dirty = True

    def publish(self, fields: dict[str, Any], arrays: Sequence[tuple[str, np.ndarray]] = (),
                topic: str | None = None) -> bool:
        """Publish one frame message without blocking. ``fields``: frame_index, pts_s,
        t_capture_ns, people, ...; ``seq``, ``kind``, ``v`` and ``t_publish_ns`` are added.
        Returns False if it was dropped (hand-over queue full). Raises PublishError if the
        publishing thread has failed."""
        if self.error is not None:
            raise PublishError(f"publishing on {self.address} failed: {self.error}")
        header = {"kind": "frame", "seq": self._seq, **fields, "t_publish_ns": time.monotonic_ns()}
        self._seq += 1
        frames = protocol.encode(topic or self.topic, header, arrays)  # 1. serialize everything
        return self._handover(frames)  # 2. then send

    def _handover(self, frames: list) -> bool:
        try:
            self._pusher().send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.dropped += 1
            return False
        with self._handed_lock:
            self._handed += 1
        return True

    def release_thread_socket(self) -> None:
        """Close the calling thread's hand-over socket (call from a producer thread when done);
        returns once what it handed over is on the XPUB socket (so ``sent`` counts it)."""
        sock = getattr(self._local, "push", None)
        if sock is not None:
            self._local.push = None
            with self._pushers_lock:
                if sock in self._pushers:
                    self._pushers.remove(sock)
            sock.close(linger=1000)
            self.flush()

    def wait_for_subscriber(self, timeout_s: float, count: int = 1) -> bool:
        """Wait until ``count`` subscriptions to frames have come (or ``timeout_s`` passes);
        True if they did."""
        deadline = time.monotonic() + timeout_s
        while self.frame_subscriptions < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.frame_subscriptions >= count

    def stats(self) -> dict:
        return {"sent": self.sent, "dropped": self.dropped, "meta_sent": self.meta_sent,
                "meta_requests": self.meta_requests, "subscriptions": self.subscriptions,
                "end_sent": self._end_sent.is_set()}
