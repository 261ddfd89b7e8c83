"""A minimal RTSP server for the reconnect tests: one H.264 stream over RTP interleaved in TCP.

    python tests/stream_rtsp_server.py PORT FIRST_FRAME [FPS] [STOP_AFTER [stall|drop]]

Serves rtsp://127.0.0.1:PORT/live to one client at a time (OPTIONS, DESCRIBE, SETUP with
RTP/AVP/TCP interleaved, PLAY, TEARDOWN), sending frames in real time from PLAY on; prints
"serving" once listening. H.264 is packetized per RFC 6184 (single NAL unit packets, FU-A for
larger NAL units); the encoder repeats SPS/PPS with every key frame so no sprop-parameter-sets
are needed in the SDP. Killing the process drops the stream. With STOP_AFTER, each client gets that
many frames; then the server keeps the connection open but silent (stall, the default) or
closes it (drop) and waits for the next client.
"""

import socket
import struct
import sys
import time
from fractions import Fraction

import av
import numpy as np

MAX_PAYLOAD = 1400
SDP = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=meshstream test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:track1\r\n")


def read_request(conn: socket.socket, buffer: bytearray) -> tuple[str, dict[str, str]] | None:
    """One RTSP request (method line, headers); skips interleaved data the client sends."""
    while True:
        if buffer[:1] == b"$" and len(buffer) >= 4:  # interleaved RTCP from the client
            size = struct.unpack(">H", buffer[2:4])[0]
            if len(buffer) >= 4 + size:
                del buffer[: 4 + size]
                continue
        end = buffer.find(b"\r\n\r\n")
        if buffer[:1] != b"$" and end >= 0:
            text = bytes(buffer[:end]).decode()
            del buffer[: end + 4]
            lines = text.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
            return lines[0], headers
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buffer += chunk


def reply(conn: socket.socket, cseq: str, extra: str = "", body: str = "") -> None:
    head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    conn.sendall((head + "\r\n" + body).encode())


def nal_units(annex_b: bytes) -> list[bytes]:
    """Split an Annex B byte stream at its start codes."""
    units, i, start = [], 0, None
    while i < len(annex_b) - 2:
        if annex_b[i] == 0 and annex_b[i + 1] == 0 and annex_b[i + 2] == 1:
            if start is not None:
                units.append(annex_b[start:i].rstrip(b"\x00"))
            i += 3
            start = i
        else:
            i += 1
    if start is not None:
        units.append(annex_b[start:])
    return [u for u in units if u]


def rtp_payloads(nal: bytes) -> list[bytes]:
    """RFC 6184 payloads for one NAL unit: itself, or FU-A fragments."""
    if len(nal) <= MAX_PAYLOAD:
        return [nal]
    indicator = (nal[0] & 0xE0) | 28
    kind = nal[0] & 0x1F
    data = nal[1:]
    chunks = [data[i:i + MAX_PAYLOAD] for i in range(0, len(data), MAX_PAYLOAD)]
    out = []
    for k, chunk in enumerate(chunks):
        header = kind | (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
        out.append(bytes([indicator, header]) + chunk)
    return out


def stream_frames(conn: socket.socket, first: int, fps: int, stop_after: int | None = None,
                  stop: str = "stall") -> None:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuv420p"
    encoder.time_base = Fraction(1, fps)
    encoder.framerate = Fraction(fps)
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5", "x264-params": "repeat-headers=1"}
    seq, ssrc, t0, i = 0, 0x4D455348, time.monotonic(), 0
    while True:
        image = np.full((48, 64, 3), 40, np.uint8)
        image[:, : (first + i) % 64] = 220
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        for packet in encoder.encode(frame):
            payloads = [p for nal in nal_units(bytes(packet)) for p in rtp_payloads(nal)]
            timestamp = (i * 90000 // fps) & 0xFFFFFFFF
            for k, payload in enumerate(payloads):
                marker = 0x80 if k == len(payloads) - 1 else 0
                rtp = struct.pack(">BBHII", 0x80, marker | 96, seq & 0xFFFF, timestamp, ssrc) + payload
                conn.sendall(b"$\x00" + struct.pack(">H", len(rtp)) + rtp)
                seq += 1
        i += 1
        if stop_after is not None and i >= stop_after:
            if stop == "drop":
                return
            time.sleep(3600)  # connected, silent
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def serve_one(conn: socket.socket, port: int, first: int, fps: int, stop_after: int | None = None,
              stop: str = "stall") -> None:
    buffer = bytearray()
    while True:
        request = read_request(conn, buffer)
        if request is None:
            return
        line, headers = request
        method, cseq = line.split(" ", 1)[0], headers.get("cseq", "0")
        if method == "OPTIONS":
            reply(conn, cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n")
        elif method == "DESCRIBE":
            reply(conn, cseq, f"Content-Base: rtsp://127.0.0.1:{port}/live/\r\nContent-Type: application/sdp\r\n", SDP)
        elif method == "SETUP":
            reply(conn, cseq, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4d455348;timeout=60\r\n")
        elif method == "PLAY":
            reply(conn, cseq, "Session: 4d455348\r\nRange: npt=0.000-\r\n")
            stream_frames(conn, first, fps, stop_after, stop)
            return
        elif method == "TEARDOWN":
            reply(conn, cseq, "Session: 4d455348\r\n")
            return
        else:
            conn.sendall(f"RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n".encode())


def main() -> None:
    port, first = int(sys.argv[1]), int(sys.argv[2])
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    stop_after = int(sys.argv[4]) if len(sys.argv) > 4 else None
    stop = sys.argv[5] if len(sys.argv) > 5 else "stall"
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    print("serving", flush=True)
    while True:
        conn, _ = server.accept()
        try:
            serve_one(conn, port, first, fps, stop_after, stop)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
