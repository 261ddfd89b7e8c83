"""A tiny live video server for the reconnect test: serves MPEG-TS over TCP on loopback.

    python tests/stream_ts_server.py PORT FIRST_FRAME [FPS]

Waits for one client on tcp://127.0.0.1:PORT, then sends an endless H.264 stream in real time
(frames numbered from FIRST_FRAME: the number is drawn as a bar so it can be seen); prints
"serving" once the client is connected. Killing the process drops the stream.
"""

import sys
import time
from fractions import Fraction

import av
import numpy as np


def main() -> None:
    port, first = int(sys.argv[1]), int(sys.argv[2])
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
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
