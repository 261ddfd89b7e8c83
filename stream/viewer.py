"""A live 3D view of every person's body mesh in the browser, built on viser.

:class:`MeshViewer` serves a web page (http://HOST:PORT) that shows, updating live: each
tracked person's mesh in a colour of its own (a person who leaves disappears), a floor grid
under their feet and the camera as a frustum at the origin. It is fed two ways:

- as a sink inside a run (``meshstream run --view``): ``add(packet)`` per finished frame,
  ``close()`` at the end;
- from a publisher's frames (``meshstream view tcp://127.0.0.1:5556``): :meth:`set_topology`
  with the meta message, :meth:`show_message` per frame message.

Display axes: meshstream's bodies are in the camera frame (OpenCV: x right, y down, z forward,
metres). The viewer shows them in a z-up world with the camera at the origin looking along +y:
``world = (x, z, -y)``, so people stand upright on the grid and the camera looks at them.
Updates are throttled to ``max_rate_hz`` (frames in between are skipped; the newest one shows).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time

import numpy as np

log = logging.getLogger("meshstream.viewer")
logging.getLogger("websockets").setLevel(logging.WARNING)  # viser's server: one line per connection otherwise

DEFAULT_VIEW_PORT = 8080
# Camera frame (x right, y down, z forward) -> display world (x right, y forward, z up).
CAMERA_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], np.float32)
# The same rotation as a quaternion (w, x, y, z): -90 degrees about x.
CAMERA_TO_WORLD_WXYZ = (math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0)
# One colour per track id (id modulo the list), RGB 0-255: distinct on a white background.
PERSON_COLOURS = ((66, 135, 245), (235, 97, 52), (46, 184, 92), (170, 85, 220), (240, 180, 30),
                  (30, 180, 190), (220, 60, 140), (120, 120, 120))
FLOOR_BELOW_CAMERA_M = 1.5  # where the floor is drawn before anyone's feet have been seen


class ViewerError(ValueError):
    """The viewer cannot start (viser missing, address unusable); the text says what to do."""


def colour_of(track_id: int) -> tuple[int, int, int]:
    """The RGB colour (0-255) a person is drawn in."""
    return PERSON_COLOURS[int(track_id) % len(PERSON_COLOURS)]


def to_world(points: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> display-world points (..., 3) float32 (see module doc)."""
    return np.asarray(points, np.float32) @ CAMERA_TO_WORLD.T


def _check_address(host: str, port: int) -> None:
    """ViewerError unless ``host:port`` can be served now (viser itself would try the next
    ports, or keep trying forever for an address that is not this machine's)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ViewerError(f"viewer host {host!r} is not an address of this machine ({exc.strerror}); "
                          "use 127.0.0.1, 0.0.0.0 or one of its IP addresses") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ViewerError(f"viewer port {port} is in use on {host}; choose another port "
                                  "(0: any free port)") from None
            raise ViewerError(f"cannot serve the viewer on {host}:{port}: {exc.strerror}; use 127.0.0.1, "
                              "0.0.0.0 or one of this machine's IP addresses") from None


class MeshViewer:
    """A viser server showing people's meshes, the floor and the camera (see module doc).

    port: HTTP port (0: any free port; one in use is a ViewerError).
    host: interface to serve on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    faces: (F, 3) int triangle indices of the body model (None: set later with set_topology;
        until then people are drawn as skeletons when joints come, else not at all).
    parents: (24,) parent joint index per joint (-1 for the root), for skeletons.
    intrinsics: a stream.frames.Intrinsics for the camera frustum (else taken from packets).
    max_rate_hz: most scene updates per second.
    """

    def __init__(self, port: int = DEFAULT_VIEW_PORT, host: str = "127.0.0.1", faces=None, parents=None,
                 intrinsics=None, max_rate_hz: float = 15.0, label: str = "meshstream"):
        try:
            import viser
        except ImportError as exc:
            raise ViewerError("the 3D viewer needs viser: pip install 'meshstream[view]'") from exc
        if not 0 <= int(port) <= 65535:
            raise ViewerError(f"viewer port must be from 0 to 65535, got {port}")
        if max_rate_hz <= 0:
            raise ViewerError(f"viewer rate must be more than 0, got {max_rate_hz}")
        _check_address(host, int(port))
        with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner; we say where the page is
            self.server = viser.ViserServer(host=host, port=int(port), label=label, verbose=False)
        self.host = host
        self.requested_port = int(port)
        self.min_interval_s = 1.0 / max_rate_hz
        self.faces = None if faces is None else np.ascontiguousarray(faces, np.int32)
        self.parents = None if parents is None else np.asarray(parents, np.int64)
        self._lock = threading.Lock()
        self._people: dict[int, tuple[str, object]] = {}  # track id -> (kind "mesh"/"skeleton", handle)
        self._last_update = -math.inf
        self._floor_z: float | None = None  # display-world height of the floor, metres
        self._camera_shape = None
        self._closed = False
        self.frames_shown = 0
        self._setup_scene()
        if intrinsics is not None:
            self.set_camera(intrinsics)
        if self.requested_port and self.port != self.requested_port:  # taken between the check and now
            log.warning("port %d is in use: the viewer is on port %d", self.requested_port, self.port)

    # ------------------------------------------------------------------ the scene
    def _setup_scene(self) -> None:
        scene = self.server.scene
        scene.set_up_direction("+z")
        self.server.gui.configure_theme(show_share_button=False)  # no public share links of the scene
        self._floor = scene.add_grid("/floor", width=10.0, height=10.0, plane="xy", cell_size=0.5,
                                     section_size=1.0, position=(0.0, 4.0, -FLOOR_BELOW_CAMERA_M))
        self._frustum = None
        self.set_camera(None)
        # Start the browser's camera behind and above the real one, looking where people stand.
        self.server.initial_camera.position = (1.8, -1.4, 1.0)
        self.server.initial_camera.look_at = (0.0, 2.8, -0.5)
        self._status = self.server.gui.add_markdown("waiting for frames")

    def set_camera(self, intrinsics) -> None:
        """Draw the camera as a frustum at the origin: from a stream.frames.Intrinsics or a dict
        with fy, width, height (pixels); None: a 60 degree, 4:3 camera until one is known."""
        if intrinsics is None:
            width, height, fy = 640, 480, 0.5 * 640 / math.tan(math.radians(30.0))
        else:
            get = intrinsics.get if isinstance(intrinsics, dict) else lambda k: getattr(intrinsics, k, None)
            width, height, fy = get("width"), get("height"), get("fy")
            if not width or not height or not fy:
                return
        shape = (int(width), int(height), round(float(fy), 3))
        if shape == self._camera_shape:
            return
        self._camera_shape = shape
        fov = 2.0 * math.atan(0.5 * height / fy)  # vertical, radians
        self._frustum = self.server.scene.add_camera_frustum(
            "/camera", fov=fov, aspect=width / height, scale=0.25, color=(40, 40, 40),
            wxyz=CAMERA_TO_WORLD_WXYZ, position=(0.0, 0.0, 0.0))

    def set_topology(self, faces=None, parents=None) -> None:
        """The body model's triangles (F, 3) and joint parents (24,), e.g. from the meta message."""
        with self._lock:
            if faces is not None:
                faces = np.ascontiguousarray(faces, np.int32)
                if self.faces is None or not np.array_equal(faces, self.faces):
                    self.faces = faces
                    self._remove_all()  # meshes with the old triangles are rebuilt on the next frame
            if parents is not None:
                self.parents = np.asarray(parents, np.int64)

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        """Where to open the viewer (a wildcard host is shown as 127.0.0.1)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ frames in
    def due(self) -> bool:
        """Whether a frame given now would be shown (the rate limit has passed)."""
        return time.monotonic() - self._last_update >= self.min_interval_s

    def add(self, packet) -> None:
        """Show a stream.frames.Packet's people (a sink: skipped when under the rate limit)."""
        if not self.due():
            return
        if packet.intrinsics is not None:
            self.set_camera(packet.intrinsics)
        people = {int(p.track_id): (p.vertices, p.joints) for p in packet.people}
        self.show(people, frame_index=packet.frame.index)

    def show_message(self, message) -> bool:
        """Show a decoded frame message (stream.client.Subscriber); returns whether it was shown
        (False under the rate limit)."""
        if not self.due():
            return False
        header, arrays = message.header, message.arrays
        ids = [int(p["id"]) for p in header["people"]]
        vertices, joints = arrays.get("vertices"), arrays.get("joints")
        people = {tid: (None if vertices is None else vertices[i], None if joints is None else joints[i])
                  for i, tid in enumerate(ids)}
        self.show(people, frame_index=header.get("frame_index"))
        return True

    def show(self, people: dict[int, tuple], frame_index: int | None = None) -> None:
        """Replace what is shown: ``people`` maps track id -> (vertices (V, 3) or None,
        joints (24, 3) or None), camera frame, metres. Ids not in ``people`` disappear."""
        with self._lock:
            if self._closed:
                return
            self._last_update = time.monotonic()
            lowest = []
            with self.server.atomic():
                for track_id in [t for t in self._people if t not in people]:
                    self._people.pop(track_id)[1].remove()
                for track_id, (vertices, joints) in people.items():
                    lowest_z = self._show_person(track_id, vertices, joints)
                    if lowest_z is not None:
                        lowest.append(lowest_z)
                if lowest:
                    self._move_floor(min(lowest))
                self._status.content = (f"frame {frame_index if frame_index is not None else '-'} · "
                                        f"{len(people)} {'person' if len(people) == 1 else 'people'}")
            self.frames_shown += 1

    def _show_person(self, track_id: int, vertices, joints) -> float | None:
        """Create or update one person's mesh (or skeleton); returns their lowest display height."""
        name = f"/people/{track_id}"
        kind, handle = self._people.get(track_id, (None, None))
        if vertices is not None and self.faces is not None and len(vertices) > int(self.faces.max()):
            points = to_world(vertices)
            if kind == "mesh":
                handle.vertices = points
            else:
                if handle is not None:
                    handle.remove()
                handle = self.server.scene.add_mesh_simple(name, points, self.faces, color=colour_of(track_id),
                                                           side="double")
                self._people[track_id] = ("mesh", handle)
            return float(points[:, 2].min())
        if joints is not None and self.parents is not None:
            points = to_world(joints)
            bones = np.array([(points[j], points[p]) for j, p in enumerate(self.parents) if p >= 0], np.float32)
            if kind == "skeleton":
                handle.points = bones
            else:
                if handle is not None:
                    handle.remove()
                handle = self.server.scene.add_line_segments(name, bones, colour_of(track_id), thickness=0.03)
                self._people[track_id] = ("skeleton", handle)
            return float(points[:, 2].min())
        if handle is not None:  # nothing drawable this frame
            self._people.pop(track_id)[1].remove()
        return None

    def _move_floor(self, lowest_z: float) -> None:
        """Follow the lowest point of the people (their feet), smoothed; moved by 1 cm or more."""
        floor = lowest_z if self._floor_z is None else 0.9 * self._floor_z + 0.1 * lowest_z
        if self._floor_z is None or abs(floor - float(self._floor.position[2])) >= 0.01:
            self._floor.position = (0.0, 4.0, floor)
        self._floor_z = floor

    def _remove_all(self) -> None:
        for _, handle in self._people.values():
            handle.remove()
        self._people.clear()

    @property
    def people_shown(self) -> dict[int, str]:
        """What is drawn now: track id -> "mesh" or "skeleton"."""
        with self._lock:
            return {track_id: kind for track_id, (kind, _) in sorted(self._people.items())}

    def close(self) -> None:
        """Stop serving (the page stops updating); safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()


__all__ = ["CAMERA_TO_WORLD", "DEFAULT_VIEW_PORT", "MeshViewer", "ViewerError", "colour_of", "to_world"]
