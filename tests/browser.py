"""Headless Chromium for the viewer tests, driven over the DevTools protocol.

:func:`chromium_path` finds Debian's ``chromium`` (installing it with apt-get when running as
root, as CI does; otherwise the tests skip, saying why). :class:`HeadlessChromium` starts it
with software WebGL (SwiftShader), opens pages, evaluates JavaScript and takes screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The Chromium executable; installed with apt-get when missing and running as root.
    None when there is none and it cannot be installed here."""
    for name in CHROMIUM_NAMES:
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
    if not shutil.which("chromium"):
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
    return shutil.which("chromium")


class HeadlessChromium:
    """One headless Chromium with one page; a context manager (the browser ends on exit)."""

    def __init__(self, executable: str, width: int = 960, height: int = 720, start_timeout_s: float = 60.0):
        from websockets.sync.client import connect

        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="meshstream-chromium-")
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--no-first-run", "--disable-extensions",
             "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
             f"--window-size={width},{height}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port = self._devtools_port(start_timeout_s)
            deadline = time.monotonic() + start_timeout_s
            while True:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                    pages = [t for t in json.load(response) if t.get("type") == "page"]
                if pages or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if not pages:
                raise RuntimeError("headless Chromium opened no page")
            self._socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        except BaseException:
            self.close()
            raise
        self._next_id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _devtools_port(self, timeout_s: float) -> int:
        marker = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self.process.returncode}: {self.process.stderr.read()[-2000:]}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError(f"Chromium did not open its DevTools port within {timeout_s} s")

    def call(self, method: str, timeout_s: float = 60.0, **params) -> dict:
        """One DevTools command; returns its result (events received meanwhile are dropped)."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self._socket.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for_text(self, text: str, timeout_s: float = 60.0) -> bool:
        """Whether ``text`` appears in the page's visible text within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        probe = f"document.body ? document.body.innerText.includes({json.dumps(text)}) : false"
        while time.monotonic() < deadline:
            if self.evaluate(probe):
                return True
            time.sleep(0.25)
        return False

    def hide(self, css_selector: str) -> None:
        """Hide the page's elements matching ``css_selector``, now and when they appear later."""
        self.evaluate("(() => { const s = document.createElement('style'); "
                      f"s.textContent = {json.dumps(css_selector + ' { display: none !important; }')}; "
                      "document.head.appendChild(s); })()")

    def screenshot(self) -> np.ndarray:
        """The page as it is drawn now: (H, W, 3) uint8 RGB."""
        import cv2

        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(image[..., ::-1])

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
