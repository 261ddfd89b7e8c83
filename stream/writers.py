"""Writers: results files (.npz) and overlay videos (.mp4, PyAV encode).

Results (.npz), one row per (frame, person):

    frame_index (N,) int64      pts_s (N,) float64        track_id (N,) int64
    score (N,) float32          bbox (N, 4) float32       keypoints2d (N, 33, 3) float32
    global_orient (N, 3)        body_pose (N, 23, 3)      betas (N, 10)      transl (N, 3)
    joints (N, 24, 3)           vertices (N, V, 3) only with vertices=True
    world_transl (N, 3)         world_orient (N, 3)       foot_contact (N, 2) (1 = on the floor)
    meta: a JSON string (fps, width, height, intrinsics, body model, version, counts,
          ``not_computed``: the arrays no stage produced in this run, which hold NaN, and
          ``world``: the last floor and camera estimate of the world stage, docs/world.md)

The file is rewritten atomically (temporary file, then rename) every ``flush_every_s`` and on
close, so an interrupted or failed run leaves a valid file with what was done.
"""

from __future__ import annotations

import json
import logging
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from stream import __version__
from stream.frames import Packet, Person
from stream.protocol import PERSON_ARRAYS

log = logging.getLogger("meshstream.writers")

# Per-person arrays of the results file: the wire protocol's (stream.protocol.PERSON_ARRAYS) under
# their results names, betas with the body models' 10 shape coefficients; vertices only on request.
ROW_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    spec.results_name: (spec.attribute, tuple(10 if n is None else n for n in spec.shape))
    for name, spec in PERSON_ARRAYS.items() if name != "vertices"}


class WriterError(Exception):
    """A results file or video could not be written; the message says where and why."""


def _check_writable(path: Path) -> None:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise WriterError(f"folder {parent} does not exist (create it or choose another output path)")
    if not os.access(parent, os.W_OK):
        raise WriterError(f"cannot write in {parent} (no permission)")


class NpzWriter:
    """Collects per-(frame, person) rows and writes them as .npz (see module docstring).

    meta: JSON-able facts about the run (fps, width, height, intrinsics, body model...).
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, vertices: bool = False,
                 flush_every_s: float = 10.0):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise WriterError(f"results file {self.path} must end in .npz")
        _check_writable(self.path)
        self.meta = dict(meta or {})
        self.vertices = vertices
        self.flush_every_s = flush_every_s
        self._rows: dict[str, list] = {k: [] for k in
                                       ("frame_index", "pts_s", "track_id", "score", "bbox", *ROW_ARRAYS, "vertices")}
        self._computed: set[str] = set()
        self.frames = 0
        self._last_flush = time.monotonic()
        self._num_vertices: int | None = None
        self._floor = None

    def add(self, packet: Packet) -> None:
        """Add one frame's people (a frame with nobody adds no row, but is counted)."""
        self.frames += 1
        frame = packet.frame
        if getattr(packet, "floor", None) is not None:
            self._floor = packet.floor
        for person in packet.people:
            self._add_person(frame.index, frame.pts_s, person)
        if time.monotonic() - self._last_flush > self.flush_every_s:
            self.flush()

    def _add_person(self, frame_index: int, pts_s: float | None, person: Person) -> None:
        rows = self._rows
        rows["frame_index"].append(frame_index)
        rows["pts_s"].append(np.nan if pts_s is None else pts_s)
        rows["track_id"].append(person.track_id)
        rows["score"].append(person.score)
        rows["bbox"].append(np.full(4, np.nan, np.float32) if person.bbox is None else np.asarray(person.bbox, np.float32))
        for name, (attribute, shape) in ROW_ARRAYS.items():
            value = getattr(person, attribute)
            if value is not None:
                self._computed.add(name)
                rows[name].append(np.asarray(value, np.float32).reshape(shape))
            else:
                rows[name].append(np.full(shape, np.nan, np.float32))
        if self.vertices:
            if person.vertices is not None:
                self._computed.add("vertices")
                self._num_vertices = len(person.vertices)
            rows["vertices"].append(person.vertices)

    def _arrays(self) -> dict[str, np.ndarray]:
        rows = self._rows
        n = len(rows["frame_index"])
        out = {
            "frame_index": np.asarray(rows["frame_index"], np.int64).reshape(n),
            "pts_s": np.asarray(rows["pts_s"], np.float64).reshape(n),
            "track_id": np.asarray(rows["track_id"], np.int64).reshape(n),
            "score": np.asarray(rows["score"], np.float32).reshape(n),
            "bbox": np.asarray(rows["bbox"], np.float32).reshape(n, 4),
        }
        for name, (_, shape) in ROW_ARRAYS.items():
            out[name] = np.asarray(rows[name], np.float32).reshape(n, *shape)
        if self.vertices:
            v = self._num_vertices or 0
            filled = [np.full((v, 3), np.nan, np.float32) if x is None else np.asarray(x, np.float32)
                      for x in rows["vertices"]]
            out["vertices"] = np.asarray(filled, np.float32).reshape(n, v, 3)
        names = [*ROW_ARRAYS] + (["vertices"] if self.vertices else [])
        meta = {**self.meta, "version": __version__, "frames": self.frames, "rows": n,
                "not_computed": [k for k in names if k not in self._computed]}
        if self._floor is not None:
            meta["world"] = self._floor.as_dict()
        out["meta"] = np.array(json.dumps(meta, default=_json_default))
        return out

    def flush(self) -> None:
        """Write everything so far (atomically: temporary file, then rename)."""
        tmp = self.path.with_name(self.path.name + ".partial.npz")
        try:
            np.savez(tmp, **self._arrays())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise WriterError(f"cannot write {self.path}: {exc}") from exc
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        log.info("wrote %s: %d frames, %d rows", self.path, self.frames, len(self._rows["frame_index"]))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Fraction):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, color=(0, 255, 0), min_visibility: float = 0.5) -> None:
    """Draw BlazePose keypoints (33, 3) [x, y, visibility] and their edges onto image in place."""
    import cv2

    from engines.skeleton import BLAZEPOSE_EDGES

    scale = max(1, round(max(image.shape[:2]) / 640))
    points = keypoints[:, :2]
    visible = keypoints[:, 2] >= min_visibility
    for a, b in BLAZEPOSE_EDGES:
        if visible[a] and visible[b]:
            pa = tuple(int(round(v)) for v in points[a])
            pb = tuple(int(round(v)) for v in points[b])
            cv2.line(image, pa, pb, color, 2 * scale, cv2.LINE_AA)
    for (x, y), ok in zip(points, visible):
        if ok:
            cv2.circle(image, (int(round(x)), int(round(y))), 2 * scale + 1, (255, 60, 60), -1, cv2.LINE_AA)


def draw_box(image: np.ndarray, bbox, label: str | None = None, color=(255, 200, 0)) -> None:
    import cv2

    x0, y0, x1, y1 = (int(round(float(v))) for v in bbox)
    cv2.rectangle(image, (x0, y0), (x1, y1), color, 1, cv2.LINE_AA)
    if label:
        cv2.putText(image, label, (x0 + 2, max(12, y0 + 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)


class OverlayVideoWriter:
    """Writes an mp4 with meshes (when the packet's people have vertices and intrinsics are
    known), skeletons and boxes drawn over each frame. One output frame per input frame.

    fps: output rate; intrinsics: (fx, fy, cx, cy) of the frames, needed to draw meshes;
    faces: (F, 3) triangles of the body model.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None, width: int, height: int,
                 intrinsics: tuple[float, float, float, float] | None = None, faces: np.ndarray | None = None,
                 codec: str = "libx264", crf: int = 23):
        import av

        self.path = Path(path)
        _check_writable(self.path)
        self.intrinsics = intrinsics
        self.faces = faces
        self.width, self.height = width - width % 2, height - height % 2
        self.rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        try:
            self.container = av.open(str(self.path), "w")
        except av.error.FFmpegError as exc:
            raise WriterError(f"cannot create video {self.path}: {exc}") from exc
        if codec not in av.codecs_available:
            codec = "mpeg4"
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.time_base = 1 / self.rate
        if codec == "libx264":
            self.stream.options = {"preset": "veryfast", "crf": str(crf)}
        self.frames = 0
        self._last_pts = -1
        self._pts0_s: float | None = None
        self._mesh_warned = False

    def compose(self, packet: Packet) -> np.ndarray:
        """The overlay image (H, W, 3) uint8 for one packet."""
        image = packet.frame.image
        meshes = [p for p in packet.people if p.vertices is not None]
        if meshes and self.intrinsics is not None and self.faces is not None:
            image = self._render_meshes(image, meshes)
        else:
            image = image.copy()
        for person in packet.people:
            if person.bbox is not None:
                draw_box(image, person.bbox, f"id {person.track_id}" if person.track_id >= 0 else None)
            if person.keypoints is not None:
                draw_skeleton(image, person.keypoints)
        return image

    def _render_meshes(self, image: np.ndarray, people: list[Person]) -> np.ndarray:
        try:
            from engines.render import Camera, Mesh, render
        except ImportError:
            if not self._mesh_warned:
                log.warning("engines.render is not available: the overlay shows keypoints only")
                self._mesh_warned = True
            return image.copy()
        fx, fy, cx, cy = self.intrinsics
        camera = Camera(fx, fy, cx, cy, image.shape[1], image.shape[0])
        meshes = [Mesh(vertices=np.ascontiguousarray(p.vertices, np.float32), faces=self.faces) for p in people]
        rendered = render(camera, meshes, background=image)
        # Blend: the mesh half-transparent over the video so the person stays visible.
        mask = (rendered.instance >= 0)[..., None]
        blended = np.where(mask, (0.6 * rendered.image + 0.4 * image).astype(np.uint8), image)
        return np.ascontiguousarray(blended)

    def add(self, packet: Packet) -> None:
        import av

        image = self.compose(packet)[: self.height, : self.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        pts = self.frames
        if packet.frame.pts_s is not None:
            if self._pts0_s is None:
                self._pts0_s = packet.frame.pts_s
            pts = max(self._last_pts + 1, int(round((packet.frame.pts_s - self._pts0_s) * self.rate)))
        frame.pts = pts
        self._last_pts = pts
        for out in self.stream.encode(frame):
            self.container.mux(out)
        self.frames += 1

    def close(self) -> None:
        try:
            for out in self.stream.encode():
                self.container.mux(out)
        finally:
            self.container.close()
        log.info("wrote %s: %d frames", self.path, self.frames)
