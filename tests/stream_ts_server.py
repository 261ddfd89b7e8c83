"""A tiny live video server for the reconnect tests: serves MPEG-TS over TCP or HTTP on loopback.

    python tests/stream_ts_server.py PORT FIRST_FRAME [FPS] [tcp|http]

Waits for one client on tcp://127.0.0.1:PORT (or, for http, answers one GET on
http://127.0.0.1:PORT/live.ts with an endless response body), then sends an endless H.264 stream in real time
(frames numbered from FIRST_FRAME: the number is drawn as a bar so it can be seen); prints
"serving" once the client is connected. Killing the process drops the stream.
"""

import socket
import sys
import time
from fractions import Fraction

import av
import numpy as np


def _http_response_body(port: int):
    """Accept one HTTP client on loopback, read its request, send the response headers and return
    the connection as a binary file to write the body into (no length: the stream never ends)."""
    server = socket.create_server(("127.0.0.1", port))
    connection, _ = server.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = connection.recv(4096)
        if not chunk:
            raise SystemExit("client left before sending a request")
        request += chunk
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
    return connection.makefile("wb", buffering=0)


def main() -> None:
    port, first = int(sys.argv[1]), int(sys.argv[2])
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    scheme = sys.argv[4] if len(sys.argv) > 4 else "tcp"
    if scheme == "http":
        container = av.open(_http_response_body(port), "w", format="mpegts")
    else:
        container = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts")
    print("serving", flush=True)
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.time_base = Fraction(1, fps)
    stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5"}
    t0 = time.monotonic()
    i = 0
    while True:
        image = np.full((48, 64, 3), 40, np.uint8)
        image[:, : (first + i) % 64] = 220
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
        i += 1
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main()
