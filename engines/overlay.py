"""Opaque, lit body meshes drawn over video frames, one colour per person, with OpenGL.

The meshes are rasterised by OpenGL through moderngl in an off-screen EGL context, so no
display is needed: on a machine without a GPU, Mesa's llvmpipe driver does the work on the CPU
(Debian packages libgl1, libegl1, libegl-mesa0 and libgl1-mesa-dri). That takes about 20 ms of
CPU for a person in a 720x1280 frame where the project's own torch rasteriser (engines.render)
takes about 200 (docs/benchmarks.md, "Overlay rendering").
Where no EGL context can be made, :class:`MeshOverlay` falls back to engines.render, slower but
with the same picture.

Conventions are those of engines.render: camera frame x right, y down, z forward (OpenCV),
metres; intrinsics (fx, fy, cx, cy) in pixels with pixel (i, j) covering [i, i + 1) x [j, j + 1).

What a frame gets:
- each person's mesh, opaque, in the colour of their track id (:func:`person_color`), lit by a
  light above the camera (ambient + Lambert + a little specular); edges anti-aliased with
  ``samples=4`` (MSAA; it about doubles the cost on llvmpipe, so the default is 1);
- optionally a side panel (:meth:`MeshOverlay.side_panel`): the same meshes seen from the
  camera's right, orthographic, depth running left to right with a line every metre.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("meshstream.overlay")

__all__ = ["PALETTE", "person_color", "MeshOverlay", "GLUnavailable"]

# Colours (RGB, 0-255) that stand out on ordinary footage and from each other; a track id picks
# PALETTE[id % len(PALETTE)]. People without a track id (id < 0) are drawn in UNTRACKED_COLOR.
PALETTE = (
    (66, 135, 245),   # blue
    (245, 130, 48),   # orange
    (60, 180, 75),    # green
    (230, 25, 75),    # red
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (240, 50, 230),   # magenta
    (210, 245, 60),   # lime
    (255, 225, 25),   # yellow
    (0, 128, 128),    # teal
)
UNTRACKED_COLOR = (200, 200, 200)

# Lighting (fractions of the albedo).
AMBIENT, DIFFUSE, SPECULAR, SHININESS = 0.30, 0.70, 0.20, 24.0
# Side panel: depth (metres) kept either side of the people along the viewing direction.
SIDE_DEPTH_RANGE_M = 20.0


def person_color(track_id: int) -> tuple[int, int, int]:
    """The mesh colour (r, g, b) 0-255 of a track id: the same id always gets the same colour."""
    track_id = int(track_id)
    return UNTRACKED_COLOR if track_id < 0 else PALETTE[track_id % len(PALETTE)]


class GLUnavailable(RuntimeError):
    """No off-screen OpenGL context could be made (moderngl or Mesa's EGL libraries missing)."""


def _create_context():
    try:
        import moderngl
    except ImportError as exc:
        raise GLUnavailable(f"moderngl is not installed ({exc}); pip install moderngl") from exc
    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # glcontext raises plain Exceptions when libEGL or a driver is missing
        raise GLUnavailable(f"no EGL context ({exc}); on Debian/Ubuntu: apt-get install libgl1 libegl1 libegl-mesa0 "
                            "libgl1-mesa-dri") from exc


_VERTEX_SHADER = """
#version 330
uniform mat4 mvp;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_color;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    v_color = in_color;
    gl_Position = mvp * vec4(in_pos, 1.0);
}
"""

# Lighting in the camera frame. to_light: unit vector towards the light. The viewer is at `eye`
# (perspective) or, when `ortho` is set, infinitely far along `view_dir` (a unit vector towards
# the viewer). Normals are turned towards the viewer (two-sided lighting).
_FRAGMENT_SHADER = f"""
#version 330
uniform vec3 to_light;
uniform vec3 eye;
uniform vec3 view_dir;
uniform bool ortho;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_color;
out vec4 f_color;
void main() {{
    vec3 to_eye = ortho ? view_dir : normalize(eye - v_pos);
    vec3 n = normalize(v_normal);
    if (dot(n, to_eye) < 0.0) n = -n;
    float diffuse = max(dot(n, to_light), 0.0);
    float specular = pow(max(dot(n, normalize(to_light + to_eye)), 0.0), {SHININESS:.1f});
    vec3 rgb = v_color * ({AMBIENT:.3f} + {DIFFUSE:.3f} * diffuse) + {SPECULAR:.3f} * specular;
    f_color = vec4(min(rgb, vec3(1.0)), 1.0);
}}
"""


def perspective_matrix(intrinsics, width: int, height: int, near: float = 0.05, far: float = 100.0) -> np.ndarray:
    """(4, 4) float32 clip matrix of a pinhole camera, image rows top to bottom in GL's rows
    bottom to top (so a read-back needs no flip)."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return np.array([
        [2 * fx / width, 0, 2 * cx / width - 1, 0],
        [0, 2 * fy / height, 2 * cy / height - 1, 0],
        [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, 1, 0],
    ], np.float32)


def side_matrix(scale: float, centre_z: float, centre_x: float, row_of_y: tuple[float, float],
                width: int, height: int) -> np.ndarray:
    """(4, 4) float32 clip matrix of the side view: an orthographic camera on the +x side.

    Depth z runs left to right, ``scale`` px per metre, ``centre_z`` at the panel's centre column;
    a point's row is ``a * y + b`` with ``(a, b) = row_of_y``; nearer the viewer = larger x.
    """
    a, b = row_of_y
    return np.array([
        [0, 0, 2 * scale / width, 2 * (width / 2 - scale * centre_z) / width - 1],
        [0, 2 * a / height, 0, 2 * b / height - 1],
        [-1 / SIDE_DEPTH_RANGE_M, 0, 0, centre_x / SIDE_DEPTH_RANGE_M],
        [0, 0, 0, 1],
    ], np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float32 of vertices (V, 3) and faces (F, 3)."""
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    face_normals = np.cross(v1 - v0, v2 - v0)  # length = twice the area
    flat = faces.ravel()
    normals = np.stack([np.bincount(flat, np.repeat(face_normals[:, k], 3), minlength=len(vertices))
                        for k in range(3)], axis=1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


_BACKGROUND_VERTEX_SHADER = """
#version 330
void main() {
    vec2 corner = vec2(float(gl_VertexID & 1), float((gl_VertexID >> 1) & 1));
    gl_Position = vec4(corner * 2.0 - 1.0, 1.0, 1.0);
}
"""

# The frame itself, pixel for pixel: GL row y is image row y (see perspective_matrix).
_BACKGROUND_FRAGMENT_SHADER = """
#version 330
uniform sampler2D frame;
out vec4 f_color;
void main() {
    f_color = vec4(texelFetch(frame, ivec2(gl_FragCoord.xy), 0).rgb, 1.0);
}
"""


class _GLCanvas:
    """An off-screen framebuffer of one size (multisampled when samples > 1, then with a
    resolved copy to read from), and a texture holding the picture the meshes are drawn over."""

    def __init__(self, ctx, width: int, height: int, samples: int):
        samples = min(samples, ctx.max_samples) if samples > 1 else 0
        self.target = ctx.framebuffer(color_attachments=[ctx.renderbuffer((width, height), 4, samples=samples)],
                                      depth_attachment=ctx.depth_renderbuffer((width, height), samples=samples))
        self.resolved = (ctx.framebuffer(color_attachments=[ctx.renderbuffer((width, height), 4)])
                         if samples else None)
        self.background = ctx.texture((width, height), 3)


class MeshOverlay:
    """Draws body meshes over frames of one size.

    faces: (F, 3) triangles shared by every person's mesh; width, height: frame size in pixels;
    intrinsics: (fx, fy, cx, cy) pixels; samples: MSAA samples per pixel (1 = no anti-aliasing);
    backend: "auto" (OpenGL when an EGL context can be made, else engines.render), "gl" (OpenGL
    or :class:`GLUnavailable`) or "cpu" (engines.render); cull_backfaces: skip triangles facing
    away from the viewer (a third faster; right for closed meshes wound counter-clockwise seen
    from outside, as the body models are). Use from one thread at a time; the GL context is made
    on first use, in the thread that draws.
    """

    def __init__(self, faces, width: int, height: int, intrinsics, samples: int = 1, backend: str = "auto",
                 cull_backfaces: bool = True):
        if backend not in ("auto", "gl", "cpu"):
            raise ValueError(f"backend must be 'auto', 'gl' or 'cpu', got {backend!r}")
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise ValueError(f"faces must be (F, 3) triangles, got {faces.shape}")
        self.faces = faces.astype(np.int64)
        self.num_vertices = int(self.faces.max()) + 1
        self.width, self.height = int(width), int(height)
        self.intrinsics = tuple(float(v) for v in intrinsics)
        self.samples = int(samples)
        self.backend = backend
        self._ctx = None
        self._canvases: dict[tuple[int, int], _GLCanvas] = {}
        self._program = None
        self._vao_people = -1
        self._side_centre: tuple[float, float] | None = None
        self.cull_backfaces = bool(cull_backfaces)
        # With rows flipped (see perspective_matrix) outward faces appear clockwise on screen.
        self._front_face = "cw" if self.cull_backfaces else None

    # -- OpenGL resources ------------------------------------------------------------------

    @property
    def uses_gl(self) -> bool:
        """Whether meshes are drawn with OpenGL (decided on the first draw when backend="auto")."""
        self._ensure_backend()
        return self.backend == "gl"

    def _ensure_backend(self) -> None:
        if self.backend == "cpu" or self._ctx is not None:
            return
        try:
            self._ctx = _create_context()
            try:
                self._program = self._ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
                self._background_program = self._ctx.program(vertex_shader=_BACKGROUND_VERTEX_SHADER,
                                                             fragment_shader=_BACKGROUND_FRAGMENT_SHADER)
                self._background_vao = self._ctx.vertex_array(self._background_program, [])
            except Exception as exc:  # a driver below OpenGL 3.3
                self._ctx.release()
                self._ctx = None
                raise GLUnavailable(f"the OpenGL driver cannot run the overlay's shaders ({exc})") from exc
        except GLUnavailable as exc:
            if self.backend == "gl":
                raise
            log.warning("drawing meshes with engines.render (slow): %s", exc)
            self.backend = "cpu"
            return
        self.backend = "gl"

    def _canvas(self, width: int, height: int) -> _GLCanvas:
        key = (width, height)
        if key not in self._canvases:
            self._canvases[key] = _GLCanvas(self._ctx, width, height, self.samples)
        return self._canvases[key]

    def _upload(self, people: list[tuple[np.ndarray, tuple[int, int, int]]]) -> None:
        """People's vertices, normals and colours into one vertex buffer; indices for as many."""
        ctx, count = self._ctx, len(people)
        V = self.num_vertices
        data = np.empty((count * V, 9), np.float32)
        for i, (vertices, color) in enumerate(people):
            rows = data[i * V:(i + 1) * V]
            rows[:, 0:3] = vertices
            rows[:, 3:6] = vertex_normals(vertices, self.faces)
            rows[:, 6:9] = np.asarray(color, np.float32) / 255.0
        if self._vao_people != count:
            for name in ("_vao", "_vbo", "_ibo"):
                if getattr(self, name, None) is not None:
                    getattr(self, name).release()
            offsets = (np.arange(count) * V)[:, None, None]
            indices = (self.faces[None] + offsets).astype(np.uint32)
            self._ibo = ctx.buffer(indices.tobytes())
            self._vbo = ctx.buffer(reserve=data.nbytes)
            self._vao = ctx.vertex_array(self._program, [(self._vbo, "3f 3f 3f", "in_pos", "in_normal", "in_color")],
                                         index_buffer=self._ibo, index_element_size=4)
            self._vao_people = count
        self._vbo.write(data.tobytes())

    def _draw_gl(self, image: np.ndarray, box: tuple[int, int, int, int], mvp: np.ndarray, to_light, eye,
                 view_dir, ortho: bool) -> None:
        """Render the uploaded people over ``image`` (H, W, 3) uint8 inside ``box`` (x0, y0, x1,
        y1) px, in place: the box's pixels are sent as the background and read back drawn over."""
        import moderngl

        height, width = image.shape[:2]
        x0, y0, x1, y1 = box
        viewport = (x0, y0, x1 - x0, y1 - y0)
        canvas = self._canvas(width, height)
        ctx, prog = self._ctx, self._program
        canvas.background.write(np.ascontiguousarray(image[y0:y1, x0:x1]), viewport=viewport, alignment=1)
        prog["mvp"].write(np.ascontiguousarray(mvp.T).tobytes())  # GL matrices are column-major
        prog["to_light"].value = tuple(float(v) for v in to_light)
        prog["eye"].value = tuple(float(v) for v in eye)
        prog["view_dir"].value = tuple(float(v) for v in view_dir)
        prog["ortho"].value = bool(ortho)
        ctx.scissor = viewport  # only the box is cleared, shaded and resolved
        canvas.target.color_mask = (False, False, False, False)  # depth only: the background covers the colour
        canvas.target.use()
        canvas.target.clear(depth=1.0)
        canvas.target.color_mask = (True, True, True, True)
        canvas.target.use()
        ctx.disable(moderngl.DEPTH_TEST)
        canvas.background.use(0)
        self._background_vao.render(moderngl.TRIANGLE_STRIP, vertices=4)
        ctx.enable(moderngl.DEPTH_TEST)
        if self._front_face:
            ctx.front_face = self._front_face
            ctx.enable(moderngl.CULL_FACE)
        self._vao.render()
        ctx.disable(moderngl.CULL_FACE)
        source = canvas.target
        if canvas.resolved is not None:
            ctx.copy_framebuffer(canvas.resolved, canvas.target)
            source = canvas.resolved
        ctx.scissor = None
        raw = source.read(viewport=viewport, components=3, alignment=1)
        image[y0:y1, x0:x1] = np.frombuffer(raw, np.uint8).reshape(y1 - y0, x1 - x0, 3)

    # -- drawing ---------------------------------------------------------------------------

    def _check(self, people) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
        checked = []
        for track_id, vertices in people:
            vertices = np.asarray(vertices, np.float32)
            if vertices.shape != (self.num_vertices, 3):
                raise ValueError(f"track {track_id}: vertices must be ({self.num_vertices}, 3) like the faces, "
                                 f"got {vertices.shape}")
            if np.isfinite(vertices).all():
                checked.append((vertices, person_color(track_id)))
        return checked

    def draw(self, image: np.ndarray, people, side_view: bool = False):
        """Draw meshes over a frame.

        image: (H, W, 3) uint8 RGB of the overlay's size; people: (track_id, vertices (V, 3)
        camera frame, metres) pairs. Returns the new image (H, W, 3) uint8; per person, the
        box (x0, y0, x1, y1) px of their projected vertices clipped to the frame, or None when
        they are not in view or not finite; and with ``side_view`` the :meth:`side_panel` of the
        same people (else None).
        """
        out, boxes, checked = self._draw_main(image, list(people))
        panel = self._side_panel(checked, uploaded=self.backend == "gl" and bool(checked)) if side_view else None
        return out, boxes, panel

    def side_panel(self, people, width: int | None = None) -> np.ndarray:
        """The people seen from the camera's right: (H, width, 3) uint8 RGB (width defaults to
        the frame's). Orthographic: rows match the main view's at the people's depth, columns
        are depth (a labelled line per metre); the framing follows the people smoothly."""
        return self._side_panel(self._check(list(people)), uploaded=False, width=width)

    def _draw_main(self, image: np.ndarray, people: list):
        image = np.asarray(image)
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be ({self.height}, {self.width}, 3) uint8, got {image.shape} {image.dtype}")
        boxes = [self._projected_box(np.asarray(v, np.float32)) for _, v in people]
        checked = self._check(people)
        out = image.copy()
        drawn = [b for b in boxes if b is not None]
        if not checked or not drawn:
            return out, boxes, []
        box = (min(b[0] for b in drawn), min(b[1] for b in drawn), max(b[2] for b in drawn), max(b[3] for b in drawn))
        self._ensure_backend()
        if self.backend == "gl":
            with self._ctx:  # current in this thread for the call (EGL contexts are per thread)
                self._upload(checked)
                mvp = perspective_matrix(self.intrinsics, self.width, self.height)
                # the light: above the camera and a little to its left, shining forward and down
                to_light = np.array([-0.3, -0.6, -1.0]) / np.linalg.norm([-0.3, -0.6, -1.0])
                self._draw_gl(out, box, mvp, to_light, (0, 0, 0), (0, 0, -1), False)
        else:
            _composite(out, self._draw_cpu(checked, box), box)
        return out, boxes, checked

    def _side_panel(self, checked, uploaded: bool, width: int | None = None) -> np.ndarray:
        import cv2

        width = int(width or self.width)
        height = self.height
        panel = np.empty((height, width, 3), np.uint8)
        panel[:] = (38, 40, 46)
        fx, fy, cx, cy = self.intrinsics
        if checked:
            stacked = np.concatenate([v for v, _ in checked])
            target = (float(np.median(stacked[:, 2])), float(np.median(stacked[:, 0])))
            if self._side_centre is None:
                self._side_centre = target
            else:  # ease towards the people so that the view does not jitter
                self._side_centre = tuple(0.85 * p + 0.15 * t for p, t in zip(self._side_centre, target))
        centre_z, centre_x = self._side_centre or (3.0, 0.0)
        centre_z = max(centre_z, 0.5)
        scale = fy / centre_z  # px per metre, as the main view at the people's depth
        row_of_y = (scale, cy)
        thickness = max(1, round(height / 720))
        font = 0.45 * max(1.0, height / 720)
        first, last = np.floor(centre_z - width / 2 / scale), np.ceil(centre_z + width / 2 / scale)
        for z in np.arange(max(first, 0.0), last + 1):
            u = int(round(width / 2 + scale * (z - centre_z)))
            if 0 <= u < width:
                cv2.line(panel, (u, 0), (u, height - 1), (70, 74, 84), thickness)
                cv2.putText(panel, f"{z:.0f} m", (u + 4, height - 10), cv2.FONT_HERSHEY_SIMPLEX, font,
                            (150, 155, 165), thickness, cv2.LINE_AA)
        cv2.putText(panel, "side view", (10, int(30 * font / 0.45)), cv2.FONT_HERSHEY_SIMPLEX, font * 1.3,
                    (190, 195, 205), thickness, cv2.LINE_AA)
        if not checked:
            return panel
        self._ensure_backend()
        box = (0, 0, width, height)
        if self.backend == "gl":
            with self._ctx:
                if not uploaded:
                    self._upload(checked)
                mvp = side_matrix(scale, centre_z, centre_x, row_of_y, width, height)
                to_light = np.array([1.0, -0.6, -0.4]) / np.linalg.norm([1.0, -0.6, -0.4])
                self._draw_gl(panel, box, mvp, to_light, (0, 0, 0), (1, 0, 0), True)
        else:
            _composite(panel, self._draw_cpu_side(checked, scale, centre_z, row_of_y, width, height), box)
        return panel

    def release(self) -> None:
        """Free the GL context (the object can still draw: a new context is made on next use)."""
        if self._ctx is not None:
            self._ctx.release()
        self._ctx, self._program, self._canvases, self._vao_people = None, None, {}, -1
        self._background_program = self._background_vao = None
        self._vao = self._vbo = self._ibo = None
        if self.backend == "gl":
            self.backend = "auto"

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            # EGL contexts are current in one thread: move this one to the caller's.
            self._ctx.__enter__()
    
    def _projected_box(self, vertices: np.ndarray) -> tuple[int, int, int, int] | None:
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            return None
        z = vertices[:, 2]
        front = vertices[z > 0.05]
        if len(front) == 0:
            return None
        fx, fy, cx, cy = self.intrinsics
        u = fx * front[:, 0] / front[:, 2] + cx
        v = fy * front[:, 1] / front[:, 2] + cy
        x0, x1 = int(np.clip(np.floor(u.min()) - 1, 0, self.width)), int(np.clip(np.ceil(u.max()) + 1, 0, self.width))
        y0, y1 = int(np.clip(np.floor(v.min()) - 1, 0, self.height)), int(np.clip(np.ceil(v.max()) + 1, 0, self.height))
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    # -- the fallback: engines.render ----------------------------------------------------------

    def _draw_cpu(self, people, box) -> np.ndarray:
        from engines.render import Camera

        fx, fy, cx, cy = self.intrinsics
        x0, y0, x1, y1 = box
        # only the box is rendered: shift the principal point
        camera = Camera(fx, fy, cx - x0, cy - y0, x1 - x0, y1 - y0)
        return self._cpu_rgba(camera, [(v, c) for v, c in people], light=(0.3, 0.6, 1.0))

    def _draw_cpu_side(self, people, scale, centre_z, row_of_y, width, height) -> np.ndarray:
        from engines.render import Camera

        # An orthographic side view as a distant pinhole camera on the +x side.
        distance = 1000.0
        # its frame: x' = z - centre_z (right), y' = y (down), z' = distance - x (forward); a rotation
        turned = [(np.stack([v[:, 2] - centre_z, v[:, 1], distance - v[:, 0]], axis=1), c) for v, c in people]
        a, b = row_of_y
        f = scale * distance
        camera = Camera(f, a * distance, width / 2, b, width, height)
        return self._cpu_rgba(camera, turned, light=(0.3, 0.6, 1.0))

    def _cpu_rgba(self, camera, people, light) -> np.ndarray:
        from engines.render import Mesh, render

        meshes = [Mesh(v, self.faces,
                       vertex_colors=np.broadcast_to(np.asarray(c, np.float32) / 255.0, v.shape).copy())
                  for v, c in people]
        result = render(camera, meshes, light_dir=light, ambient=AMBIENT, cull_backfaces=self.cull_backfaces)
        rgba = np.zeros(result.image.shape[:2] + (4,), np.uint8)
        mask = result.mask
        rgba[mask, :3] = result.image[mask]
        rgba[mask, 3] = 255
        return rgba


def _composite(image: np.ndarray, rgba: np.ndarray, box) -> None:
    """image[box] = rgba (opaque where alpha is 255, nothing where 0) over it, in place."""
    x0, y0, x1, y1 = box
    region = image[y0:y1, x0:x1]
    alpha = rgba[..., 3]
    covered = alpha > 0
    if not covered.any():
        return
    region[covered] = rgba[..., :3][covered]
