"""The live 3D viewer (stream/viewer.py, `meshstream view`, `run --view`) in a real browser:
headless Chromium (software WebGL) loads the page and its screenshots are compared with the
empty scene where the bodies are."""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.browser import HeadlessChromium, chromium_path
from stream.frames import Frame, Intrinsics, Packet, Person
from stream.viewer import MeshViewer, ViewerError, colour_of, to_world
from tests.stream_helpers import free_port, meshstream_popen

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "stream" / "assets" / "sample.mp4"
SCREENSHOT_DIR = os.environ.get("MESHSTREAM_VIEWER_SCREENSHOTS")  # keep the screenshots here when set
UPRIGHT_FACING_CAMERA = (math.pi, 0.0, 0.0)  # the body model's y up -> the camera's y down


@pytest.fixture(scope="module")
def body_model():
    from engines.body import load_body_model

    return load_body_model("open")


@pytest.fixture(scope="module")
def chromium():
    path = chromium_path()
    if path is None:
        pytest.skip("needs Debian's chromium: not installed, and not root to apt-get install it here")
    return path


@pytest.fixture
def browser(chromium):
    with HeadlessChromium(chromium, width=960, height=720) as b:
        yield b


def standing_body(body_model, x: float, depth: float = 3.5) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and joints (24, 3) of the average body standing, arms down, facing the
    camera, feet ~1.5 m below it, ``x`` metres to its right (camera frame)."""
    pose = torch.zeros(1, 23, 3)
    pose[0, 15, 2] = -1.2  # left shoulder (joint 16): arm down
    pose[0, 16, 2] = 1.2  # right shoulder (joint 17)
    out = body_model(torch.tensor([UPRIGHT_FACING_CAMERA], dtype=torch.float32), pose, None,
                     torch.tensor([[x, 0.3, depth]], dtype=torch.float32))
    return out.vertices[0].numpy(), out.joints[0].numpy()


def person_pixels(image: np.ndarray, empty: np.ndarray | None,
                  colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """(H, W) bool: pixels that differ from the empty scene (any when ``empty`` is None) and are
    coloured like a person (``colour``'s dominant channel, or any clearly coloured pixel when
    None). The floor, the camera, shadows and the panel text are grey, so they never count."""
    rgb = image.astype(np.int32)
    differs = np.ones(rgb.shape[:2], bool) if empty is None else np.abs(rgb - empty.astype(np.int32)).sum(-1) > 40
    differs[:110] = False  # the control panel
    differs[-110:, :110] = False  # the orientation gizmo (red, green, blue axes)
    saturation = rgb.max(-1) - rgb.min(-1)
    if colour is None:
        return differs & (saturation > 50)
    dominant = int(np.argmax(colour))
    others = [c for c in range(3) if c != dominant]
    return differs & (saturation > 50) & (rgb[..., dominant] > rgb[..., others].max(-1) + 30)


def box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of a mask's true pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def open_viewer(browser, url: str, text: str, timeout_s: float = 60.0) -> None:
    """Open the viewer's page and wait for ``text``; hide the notification that software
    WebGL draws (it slides in over the scene while the screenshots are taken)."""
    browser.open(url)
    assert browser.wait_for_text(text, timeout_s=timeout_s), f"{url} did not show {text!r}"
    browser.hide(".mantine-Notifications-root")


def screenshot_until(browser, condition, timeout_s: float = 60.0) -> np.ndarray:
    """Screenshots until ``condition(image)`` holds (the page draws a little after data comes);
    the last one otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        image = browser.screenshot()
        if condition(image) or time.monotonic() > deadline:
            return image
        time.sleep(0.5)


def keep(name: str, image: np.ndarray) -> None:
    if SCREENSHOT_DIR:
        import cv2

        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(Path(SCREENSHOT_DIR) / name), image[..., ::-1])


# ------------------------------------------------------------------------------------------
# Without a browser.


def test_the_display_world_is_z_up_with_the_camera_looking_along_y():
    above_and_ahead = to_world(np.array([[0.2, -1.0, 3.0]]))[0]  # camera frame: right, up 1 m, 3 m ahead
    np.testing.assert_allclose(above_and_ahead, [0.2, 3.0, 1.0])


def test_each_track_keeps_its_colour_and_neighbours_differ():
    assert colour_of(3) == colour_of(3)
    assert len({colour_of(i) for i in range(8)}) == 8


def test_a_port_in_use_and_a_foreign_host_are_one_line_errors():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ViewerError, match=f"port {port} is in use.*choose another port"):
            MeshViewer(port=port)
    with pytest.raises(ViewerError, match="not an address of this machine"):
        MeshViewer(port=0, host="no-such-host.invalid")


def test_people_who_leave_are_removed_and_frames_under_the_rate_limit_are_skipped(body_model):
    vertices, joints = standing_body(body_model, 0.0)
    viewer = MeshViewer(port=0, faces=body_model.faces, parents=body_model.parents, max_rate_hz=1.0)
    try:
        person = Person(track_id=4, score=1.0, vertices=vertices, joints=joints)
        frame = Frame(index=0, pts_s=0.0, t_capture_ns=0, image=np.zeros((480, 640, 3), np.uint8))
        viewer.add(Packet(frame, [person], intrinsics=Intrinsics.from_fov(640, 480)))
        assert viewer.people_shown == {4: "mesh"}
        viewer.add(Packet(frame, []))  # within the same second: skipped
        assert viewer.people_shown == {4: "mesh"} and viewer.frames_shown == 1
        viewer.min_interval_s = 0.0
        viewer.add(Packet(frame, []))
        assert viewer.people_shown == {} and viewer.frames_shown == 2
    finally:
        viewer.close()


def test_published_frames_show_meshes_and_frames_without_vertices_show_skeletons(body_model):
    """A real publisher and subscriber: the topology's faces and parents, then frames with and
    without vertices (`run --no-vertices`)."""
    from stream.client import Subscriber
    from stream.protocol import frame_message, meta_message
    from stream.publisher import Publisher

    vertices, joints = standing_body(body_model, 0.0)
    frame = Frame(index=0, pts_s=0.0, t_capture_ns=time.monotonic_ns(), image=np.zeros((480, 640, 3), np.uint8))
    packet = Packet(frame, [Person(track_id=2, score=1.0, vertices=vertices, joints=joints)])
    address = f"tcp://127.0.0.1:{free_port()}"
    viewer = MeshViewer(port=0, max_rate_hz=1000.0)
    try:
        with Publisher(address) as publisher, Subscriber(address) as subscriber:
            publisher.set_meta(*meta_message(body_model, Intrinsics.from_fov(640, 480), has_body=True))
            meta = subscriber.wait_for_meta(10)
            viewer.set_topology(meta.arrays["faces"], meta.header["parents"])
            viewer.set_camera(meta.header["intrinsics"])
            shown = []
            for with_vertices in (True, False):
                message = None
                for _ in range(100):  # until the subscription has reached the publisher
                    publisher.publish(*frame_message(packet, vertices=with_vertices))
                    message = next(subscriber.frames(timeout_s=0.1), None)
                    if message is not None:
                        break
                assert message is not None and ("vertices" in message.arrays) == with_vertices
                viewer.show_message(message)
                shown.append(viewer.people_shown)
    finally:
        viewer.close()
    assert shown == [{2: "mesh"}, {2: "skeleton"}]


def test_run_view_takes_an_optional_port_and_adds_the_viewer_to_the_chain():
    from stream.cli import build_parser
    from stream.commands._common import config_from_args
    from stream.compose import compose

    def view_option(*flags):
        return config_from_args(build_parser().parse_args(["run", str(SAMPLE), *flags])).view

    assert (view_option(), view_option("--view"), view_option("--view", "8123")) == (None, 8080, 8123)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--view", "eighty"])
    config = config_from_args(build_parser().parse_args(["run", str(SAMPLE), "--view", "0", "--pose", "off",
                                                         "--max-frames", "3"]))
    chain = compose(config)
    try:
        assert [s.name for s in chain.stages][-1] == "view"
        viewer = chain.writers["view"]
        with socket.create_connection(("127.0.0.1", viewer.port), timeout=5):
            pass  # the page is served while the run runs
        chain.run()
        assert viewer.frames_shown >= 1
    finally:
        chain.close()
    with pytest.raises(OSError):  # the run's end closed the viewer
        socket.create_connection(("127.0.0.1", viewer.port), timeout=2).close()


# ------------------------------------------------------------------------------------------
# In the browser.


def test_the_page_shows_each_person_upright_in_their_colour_follows_them_and_drops_who_leaves(body_model, browser):
    left, right = standing_body(body_model, -0.6), standing_body(body_model, 0.6)
    further_left = standing_body(body_model, -1.2)
    blue, orange = colour_of(0), colour_of(1)
    viewer = MeshViewer(port=0, faces=body_model.faces, parents=body_model.parents, max_rate_hz=1000.0)
    try:
        viewer.show({0: left, 1: right}, frame_index=1)
        # Each update: its text in the panel, then the scene drawn with it a little later.
        def count(image, colour):
            return person_pixels(image, None, colour).sum()

        open_viewer(browser, viewer.url, "2 people")
        both = screenshot_until(browser, lambda image: count(image, blue) > 1500 and count(image, orange) > 1500)
        viewer.show({0: further_left}, frame_index=2)  # the right one leaves, the left one steps left
        assert browser.wait_for_text("1 person")
        one = screenshot_until(browser, lambda image: count(image, orange) < 50 and count(image, blue) > 1000)
        viewer.show({}, frame_index=3)
        assert browser.wait_for_text("0 people")
        empty = screenshot_until(browser, lambda image: count(image, orange) < 50 and count(image, blue) < 50)
    finally:
        viewer.close()
    keep("two_people.png", both)
    keep("empty.png", empty)
    blue_pixels, orange_pixels = person_pixels(both, empty, blue), person_pixels(both, empty, orange)
    assert blue_pixels.sum() > 1500 and orange_pixels.sum() > 1500, (blue_pixels.sum(), orange_pixels.sum())
    (bx, by, bw, bh), (ox, oy, ow, oh) = box(blue_pixels), box(orange_pixels)
    assert bx + bw / 2 < ox + ow / 2, "the person on the camera's left is drawn left of the one on its right"
    assert bh > 1.8 * bw and oh > 1.8 * ow, f"people stand upright: {bw}x{bh}, {ow}x{oh} pixels"
    height, width = empty.shape[:2]
    assert 0.1 * width < bx and ox + ow < 0.9 * width and by > 0.05 * height and oy + oh < 0.95 * height
    # The person on the right left: their pixels are back to the empty scene; the other moved left.
    assert person_pixels(one, empty, orange).sum() < 0.02 * orange_pixels.sum()
    moved = person_pixels(one, empty, blue)
    assert moved.sum() > 0.6 * blue_pixels.sum()
    mx, _, mw, _ = box(moved)
    assert mx + mw / 2 < bx + bw / 2 - 10, "the mesh follows the person's new position"


def _wait_for_page(browser, url: str, text: str, timeout_s: float) -> None:
    """Open ``url`` until it loads and shows ``text`` (the server may still be starting)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            open_viewer(browser, url, text, timeout_s=5)
            return
        except (RuntimeError, AssertionError):
            time.sleep(1.0)
    raise AssertionError(f"{url} did not show {text!r} within {timeout_s} s")


@pytest.mark.slow
def test_run_with_view_and_the_view_command_show_the_sample_persons_body(chromium):
    """`meshstream run SAMPLE --view P1 --publish ADDR` and `meshstream view ADDR --port P2`:
    both pages show the person's mesh. The run waits for the view command's subscription, so
    the run's page is loaded (empty) before the first frame."""
    address = f"tcp://127.0.0.1:{free_port()}"
    run_port, view_port = free_port(), free_port()
    run = meshstream_popen("run", str(SAMPLE), "--realtime", "--publish", address, "--view", str(run_port),
                           "--wait-subscribers", "120")
    view = None
    try:
        with HeadlessChromium(chromium, width=960, height=720) as browser:
            _wait_for_page(browser, f"http://127.0.0.1:{run_port}", "waiting for frames", timeout_s=180)
            empty = screenshot_until(browser, lambda image: person_pixels(image, None).sum() < 50)
            view = meshstream_popen("view", address, "--port", str(view_port))
            assert browser.wait_for_text("1 person", timeout_s=120), "the run's viewer showed nobody"
            in_run = screenshot_until(browser, lambda image: person_pixels(image, empty).sum() > 1500)
            open_viewer(browser, f"http://127.0.0.1:{view_port}", "1 person")
            in_view = screenshot_until(browser, lambda image: person_pixels(image, empty).sum() > 1500)
        run_out, run_err = run.communicate(timeout=120)
        assert run.returncode == 0, run_err[-3000:]
        view.send_signal(signal.SIGINT)
        view_out, view_err = view.communicate(timeout=30)
    finally:
        for process in (run, view):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    keep("run_view_empty.png", empty)
    keep("run_view.png", in_run)
    keep("view_command.png", in_view)
    assert f"http://127.0.0.1:{view_port}" in view_out
    assert view.returncode == 0, view_err[-3000:]
    assert "end of stream (finished)" in view_out
    for name, image in (("run --view", in_run), ("view", in_view)):
        body = person_pixels(image, empty)
        assert body.sum() > 1500, f"{name}: no body drawn ({body.sum()} coloured pixels)"
        x, y, w, h = box(body)
        assert h > w, f"{name}: the person stands upright ({w}x{h} pixels)"
