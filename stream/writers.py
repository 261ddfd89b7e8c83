"""Writers: results files (.npz) and overlay videos (.mp4, PyAV encode).

Results (.npz), one row per (frame, person):

    frame_index (N,) int64      pts_s (N,) float64        track_id (N,) int64
    score (N,) float32          bbox (N, 4) float32       keypoints2d (N, 33, 3) float32
    global_orient (N, 3)        body_pose (N, 23, 3)      betas (N, 10)      transl (N, 3)
    joints (N, 24, 3)           vertices (N, V, 3) only with vertices=True
    meta: a JSON string (fps, width, height, intrinsics, body model, version, counts,
          ``not_computed``: the arrays no stage produced in this run, which hold NaN, and
          ``source_stats``: what the source read and lost, see below)

``frame_index`` is the frame's number in the input (stream.frames.Frame.index): frames the
source skipped as corrupt or undecodable leave gaps, so a row always names the right picture.
``source_stats`` (when the writer is given the source's statistics) counts ``frames``
delivered, ``skipped_frames`` (frames of the input never delivered: the gaps),
``corrupt_packets`` and ``decode_errors`` (what was skipped), ``reconnects`` and ``truncated``.

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
VIDEO_CLOCK_HZ = 90000  # time base of the overlay video's timestamps (ticks per second)


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
    source_stats: the source's statistics, read at every write into meta ``source_stats``:
    an object with ``as_dict()`` (a :class:`stream.sources.SourceStats`, e.g. ``source.stats``)
    or a callable returning a JSON-able dict.
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, vertices: bool = False,
                 flush_every_s: float = 10.0, source_stats=None):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise WriterError(f"results file {self.path} must end in .npz")
        _check_writable(self.path)
        self.meta = dict(meta or {})
        self.vertices = vertices
        self.flush_every_s = flush_every_s
        self.source_stats = source_stats
        self._rows: dict[str, list] = {k: [] for k in
                                       ("frame_index", "pts_s", "track_id", "score", "bbox", *ROW_ARRAYS, "vertices")}
        self._computed: set[str] = set()
        self.frames = 0
        self._last_flush = time.monotonic()
        self._num_vertices: int | None = None

    def add(self, packet: Packet) -> None:
        """Add one frame's people (a frame with nobody adds no row, but is counted)."""
        self.frames += 1
        frame = packet.frame
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
        if self.source_stats is not None:
            stats = self.source_stats
            meta["source_stats"] = stats.as_dict() if hasattr(stats, "as_dict") else stats()
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
    cv2.rectangle(image, (x0, y0), (x1, y1), color, max(1, round(max(image.shape[:2]) / 720)), cv2.LINE_AA)
    if label:
        draw_label(image, label, ((x0 + x1) / 2, y0), color)


def draw_label(image: np.ndarray, text: str, anchor, color) -> None:
    """Write ``text`` centred above ``anchor`` (x, y) px, in ``color`` (r, g, b) on a dark halo
    so that it reads on any footage; below the anchor when there is no room above. In place."""
    import cv2

    font = cv2.FONT_HERSHEY_DUPLEX
    scale = max(0.6, min(image.shape[:2]) / 720 * 1.3)
    thickness = max(1, round(scale * 2))
    halo = max(2, round(scale * 3))  # px of dark around the letters
    (w, h), baseline = cv2.getTextSize(text, font, scale, thickness)
    letters = np.zeros((h + baseline + 2 * halo, w + 2 * halo), np.uint8)
    cv2.putText(letters, text, (halo, halo + h), font, scale, 255, thickness, cv2.LINE_AA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * halo + 1, 2 * halo + 1))
    dark = cv2.GaussianBlur(cv2.dilate(letters, kernel), (3, 3), 0)
    # where the label goes: above the anchor, else below it, kept inside the image
    H, W = image.shape[:2]
    lh, lw = letters.shape
    x = int(round(float(anchor[0]) - lw / 2))
    y = int(round(float(anchor[1]))) - lh - 2
    if y < 0:
        y = int(round(float(anchor[1]))) + 2
    x, y = min(max(x, 0), max(0, W - lw)), min(max(y, 0), max(0, H - lh))
    region = image[y:y + lh, x:x + lw]
    lh, lw = region.shape[:2]
    shade = 1.0 - 0.8 * dark[:lh, :lw, None] / 255.0
    ink = letters[:lh, :lw, None] / 255.0
    blended = region * shade * (1 - ink) + np.asarray(color, np.float64) * ink
    region[:] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


class OverlayVideoWriter:
    """Writes an mp4 of the frames with each person's body mesh drawn over them (opaque, lit,
    in a colour kept per track id: engines.overlay) and an id label above each person. One output
    frame per input frame.

    fps: output rate; width, height: the frames' size (px); intrinsics: (fx, fy, cx, cy) of the
    frames, needed to draw meshes; faces: (F, 3) triangles of the body model, needed too.
    keypoints: also draw the 2D keypoints (BlazePose skeleton); side_view: put a second panel to
    the right, the meshes seen from the camera's right (the video is then twice as wide);
    renderer: "auto" (OpenGL off-screen, else the slower engines.render), "gl" or "cpu";
    preset: libx264's speed preset (encoding is about half the overlay's cost: "superfast"
    takes a quarter less CPU than "veryfast" for files twice as large). People without a mesh
    get their detection box instead.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None, width: int, height: int,
                 intrinsics: tuple[float, float, float, float] | None = None, faces: np.ndarray | None = None,
                 codec: str = "libx264", crf: int = 23, *, keypoints: bool = False, side_view: bool = False,
                 renderer: str = "auto", preset: str = "veryfast"):
        import av

        self.path = Path(path)
        _check_writable(self.path)
        self.intrinsics = intrinsics
        self.faces = faces
        self.keypoints = bool(keypoints)
        self.side_view = bool(side_view)
        self.renderer = renderer
        self._overlay = None  # engines.overlay.MeshOverlay, made for the first frame's size
        self.frame_width, self.frame_height = width - width % 2, height - height % 2
        self.width = self.frame_width * (2 if self.side_view else 1)
        self.height = self.frame_height
        self.rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        try:
            self.container = av.open(str(self.path), "w")
        except av.error.FFmpegError as exc:
            raise WriterError(f"cannot create video {self.path}: {exc}") from exc
        if codec not in av.codecs_available:
            codec = "mpeg4"
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        # A fine time base (90 kHz, as MPEG uses) so each frame keeps its source time: a
        # variable-frame-rate input is not snapped to a grid of 1 / fps.
        self.clock_hz = VIDEO_CLOCK_HZ if codec != "mpeg4" else 60000  # MPEG-4 part 2 allows <= 65535
        self.stream.time_base = self.stream.codec_context.time_base = Fraction(1, self.clock_hz)
        if codec == "libx264":
            self.stream.options = {"preset": preset, "crf": str(crf)}
        self.frames = 0
        self._last_pts = -1
        self._pts0_s: float | None = None
        self._mesh_warned = False

    def _mesh_overlay(self, image: np.ndarray):
        """The mesh renderer for frames of this size, or None when meshes cannot be drawn."""
        if self.intrinsics is None or self.faces is None:
            return None
        height, width = image.shape[:2]
        if self._overlay is None or (self._overlay.width, self._overlay.height) != (width, height):
            try:
                from engines.overlay import MeshOverlay
            except ImportError:
                if not self._mesh_warned:
                    log.warning("engines.overlay is not available: the overlay shows boxes only")
                    self._mesh_warned = True
                return None
            if self._overlay is not None:
                self._overlay.release()
            self._overlay = MeshOverlay(self.faces, width, height, self.intrinsics, backend=self.renderer)
        return self._overlay

    def compose(self, packet: Packet) -> np.ndarray:
        """The overlay image for one packet: (H, W, 3) uint8, or (H, 2 W, 3) with the side view."""
        from engines.overlay import person_color

        image = packet.frame.image
        meshed = [p for p in packet.people if p.vertices is not None]
        overlay = self._mesh_overlay(image) if meshed else None
        boxes: dict[int, tuple] = {}
        panel = None
        if overlay is not None:
            out, mesh_boxes, panel = overlay.draw(image, [(p.track_id, p.vertices) for p in meshed],
                                                  side_view=self.side_view)
            boxes = {id(p): b for p, b in zip(meshed, mesh_boxes) if b is not None}
        else:
            out = image.copy()
        for person in packet.people:
            color = person_color(person.track_id)
            if self.keypoints and person.keypoints is not None:
                draw_skeleton(out, person.keypoints)
            label = f"id {person.track_id}" if person.track_id >= 0 else None
            if id(person) in boxes:
                x0, y0, x1, _ = boxes[id(person)]
                if label:
                    draw_label(out, label, ((x0 + x1) / 2, y0), color)
            elif person.bbox is not None and np.isfinite(person.bbox).all():
                draw_box(out, person.bbox, label, color)
        if self.side_view:
            if panel is None:  # nobody with a mesh in this frame: the empty panel
                empty = self._mesh_overlay(image)
                panel = np.full_like(image, 38) if empty is None else empty.side_panel([])
            out = np.concatenate([out, panel], axis=1)
        return out

    def add(self, packet: Packet) -> None:
        import av
        import cv2

        image = self.compose(packet)
        if self.side_view:  # each panel cropped to even size
            half = image.shape[1] // 2
            image = np.concatenate([image[: self.height, : self.frame_width],
                                    image[: self.height, half: half + self.frame_width]], axis=1)
        else:
            image = image[: self.height, : self.width]
        # RGB -> YUV 4:2:0 (BT.601, limited range, as FFmpeg's default) with OpenCV: a sixth of
        # the CPU time that the encoder's own conversion takes at 720x1280
        yuv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if packet.frame.pts_s is not None:
            if self._pts0_s is None:
                self._pts0_s = packet.frame.pts_s
            pts = int(round((packet.frame.pts_s - self._pts0_s) * self.clock_hz))
        else:
            pts = int(round(self.frames * self.clock_hz / self.rate))
        pts = max(self._last_pts + 1, pts)
        frame.pts = pts
        frame.time_base = self.stream.time_base
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
            if self._overlay is not None:
                self._overlay.release()
        log.info("wrote %s: %d frames", self.path, self.frames)
