"""Helpers for the stream tests: tiny clips made with PyAV, free ports, subprocess runners."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_clip(path: Path, images, fps: int = 30, codec: str = "libx264", options: dict | None = None) -> Path:
    """Encode RGB uint8 images (H, W, 3) as a clip at ``fps``, one frame each. Returns path."""
    import av

    images = list(images)
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "g": "4", **(options or {})}
        stream.time_base = Fraction(1, fps)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_clip(path: Path, frames: int = 12, width: int = 96, height: int = 64, fps: int = 30,
              codec: str = "libx264", options: dict | None = None) -> Path:
    """Write a small synthetic clip: a bright square moving over a gradient. Returns path."""
    ys, xs = np.mgrid[0:height, 0:width]

    def images():
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = (xs * 255 // max(1, width - 1)).astype(np.uint8)
            image[..., 1] = (ys * 255 // max(1, height - 1)).astype(np.uint8)
            x0 = (i * 5) % max(1, width - 16)
            image[8:24, x0:x0 + 16] = 255
            yield image

    return write_clip(path, images(), fps, codec, options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def meshstream(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m stream ARGS`` from the repository root; returns the completed process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kwargs.setdefault("timeout", 120)
    return subprocess.run([sys.executable, "-m", "stream", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, **kwargs)


def _interruptible() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt even when the test runner itself was started with SIGINT ignored (as a
    non-interactive shell starts background jobs)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def meshstream_popen(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``python -m stream ARGS`` from the repository root; Ctrl-C (SIGINT) reaches it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "stream", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible, **kwargs)
