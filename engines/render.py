"""A z-buffered, perspective-correct triangle rasterizer on the CPU (torch, vectorised).

Used to draw body meshes over video frames, to make silhouettes, and to render the synthetic
benchmark. No Python loop runs per triangle: every triangle's candidate pixels (the pixel
centres inside its screen bounding box) are enumerated in chunks, tested with edge functions,
and the nearest surface per pixel is chosen with one ``scatter_reduce(amin)`` over a packed
(depth, face) key. Shading is then done once per visible pixel.

Conventions
-----------
- Camera frame: x right, y down, z forward (OpenCV), metres. Pinhole projection
  ``u = fx * x / z + cx``, ``v = fy * y / z + cy`` in pixels, where pixel (column i, row j)
  covers [i, i + 1) x [j, j + 1) and its centre is (i + 0.5, j + 0.5): the image spans
  [0, width] x [0, height] (the convention of MediaPipe's landmarks and of engines/pose), so a
  centred camera has cx = width / 2, cy = height / 2.
- Coverage: a pixel is covered when its centre is inside the triangle; a centre exactly on an
  edge belongs to the triangle whose edge is a top or left edge (the top-left rule), so two
  triangles sharing an edge never both claim a pixel.
- Near plane: a triangle with any vertex at z <= ``near`` is dropped whole (no clipping). Meshes
  are expected in front of the camera; a body partly behind the camera loses those triangles.
- Depth: the camera-frame z of the visible surface (metres), interpolated perspective-correctly.
- Colours: per mesh, either vertex colours (V, 3) in [0, 1], or a texture (h, w, 3) uint8 with
  per-corner UV coordinates (F, 3, 2) (u right, v up, v = 0 at the texture image's bottom row,
  as in OBJ files; bilinear sampling, clamped at the border), or a flat default colour.
- Lighting: Lambert plus ambient, ``colour = albedo * (ambient + (1 - ambient) * max(0, n . l))``
  with ``l`` the unit vector *towards* the light, i.e. ``-light_dir`` where ``light_dir`` is the
  direction the light travels, in the camera frame. The default (0, 0.5, 1) is light shining
  forward and downward from above the camera. Normals are interpolated from area-weighted vertex
  normals (perspective-correct) and turned to face the camera when a back face is seen.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
import torch

from engines.pinhole import Intrinsics

__all__ = ["Camera", "Mesh", "RenderResult", "render", "overlay", "track_color", "vertex_normals"]

# Candidate pixels tested at once; bounds the peak memory (about 60 bytes per candidate).
DEFAULT_CHUNK = 1 << 21
_EMPTY_KEY = torch.iinfo(torch.int64).max


# The renderer's camera is the project's one pinhole type.
Camera = Intrinsics


@dataclass
class Mesh:
    """One triangle mesh in the camera frame.

    vertices (V, 3) float metres; faces (F, 3) int vertex indices; optional vertex_colors (V, 3)
    in [0, 1]; optional uv (F, 3, 2) per-corner texture coordinates together with texture
    (h, w, 3) uint8 RGB; optional vertex_normals (V, 3) (computed from the faces when absent);
    repeat_texture: tile the texture for uv outside [0, 1] instead of clamping at its border.
    """

    vertices: object
    faces: object
    vertex_colors: object = None
    uv: object = None
    texture: object = None
    vertex_normals: object = None
    repeat_texture: bool = False  # wrap uv outside [0, 1] (tiling) instead of clamping


@dataclass
class RenderResult:
    """What :func:`render` returns.

    image (H, W, 3) uint8 RGB; depth (H, W) float32 metres, inf where empty; instance (H, W) int16,
    index of the mesh seen at each pixel, -1 where empty; face (H, W) int32, index of the triangle
    (within its mesh) seen at each pixel, -1 where empty.
    """

    image: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    face: np.ndarray = field(repr=False)

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where any mesh is drawn."""
        return self.instance >= 0


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (V, 3) from vertices (V, 3) and faces (F, 3) (right-hand winding)."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    face_normals = torch.linalg.cross(v1 - v0, v2 - v0)  # length = twice the area
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals.index_add_(0, faces[:, i], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def _as_tensor(x, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _check_mesh(index: int, mesh: Mesh) -> tuple[torch.Tensor, torch.Tensor]:
    vertices = _as_tensor(mesh.vertices, torch.float32)
    faces = _as_tensor(mesh.faces, torch.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"mesh {index}: vertices must be (V, 3), got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"mesh {index}: faces must be (F, 3) triangles, got {tuple(faces.shape)}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise ValueError(f"mesh {index}: faces index vertices outside 0..{vertices.shape[0] - 1}")
    if mesh.vertex_colors is not None and tuple(np.shape(mesh.vertex_colors)) != (vertices.shape[0], 3):
        raise ValueError(f"mesh {index}: vertex_colors must be (V, 3) = ({vertices.shape[0]}, 3), "
                         f"got {tuple(np.shape(mesh.vertex_colors))}")
    if (mesh.uv is None) != (mesh.texture is None):
        raise ValueError(f"mesh {index}: give both uv (F, 3, 2) and texture (h, w, 3), or neither")
    if mesh.uv is not None:
        if tuple(np.shape(mesh.uv)) != (faces.shape[0], 3, 2):
            raise ValueError(f"mesh {index}: uv must be (F, 3, 2) = ({faces.shape[0]}, 3, 2), "
                             f"got {tuple(np.shape(mesh.uv))}")
        tex_shape = np.shape(mesh.texture)
        if len(tex_shape) != 3 or tex_shape[2] != 3 or tex_shape[0] < 1 or tex_shape[1] < 1:
            raise ValueError(f"mesh {index}: texture must be (h, w, 3) uint8 RGB, got {tex_shape}")
    return vertices, faces


def _candidates(xmin, ymin, box_w, counts, first, last):
    """Pixel coordinates of the candidates of faces first..last-1 (indices into the kept faces)."""
    c = counts[first:last]
    owner = torch.repeat_interleave(torch.arange(first, last), c)
    starts = torch.cumsum(c, 0) - c
    local = torch.arange(int(c.sum())) - torch.repeat_interleave(starts, c)
    w = box_w[owner]
    px = xmin[owner] + local % w
    py = ymin[owner] + torch.div(local, w, rounding_mode="floor")
    return owner, px, py


def _edge_weights(sx, sy, owner, px, py, top_left):
    """Edge functions of pixel centres (px, py) against their faces, normalised so that the
    weights are the screen-space barycentrics (b0, b1, b2) (C, 3), and the inside test (C,)."""
    x0, x1, x2 = sx[owner, 0], sx[owner, 1], sx[owner, 2]
    y0, y1, y2 = sy[owner, 0], sy[owner, 1], sy[owner, 2]
    fx = px.to(torch.float32)
    fy = py.to(torch.float32)
    # e_k is the edge function of the edge opposite vertex k, positive inside (area > 0 after
    # orienting every triangle counter-clockwise on screen).
    e0 = (x2 - x1) * (fy - y1) - (y2 - y1) * (fx - x1)
    e1 = (x0 - x2) * (fy - y2) - (y0 - y2) * (fx - x2)
    e2 = (x1 - x0) * (fy - y0) - (y1 - y0) * (fx - x0)
    edges = torch.stack([e0, e1, e2], dim=1)
    tl = top_left[owner]
    inside = ((edges > 0) | ((edges == 0) & tl)).all(dim=1)
    area = edges.sum(dim=1, keepdim=True)
    return edges / area.clamp_min(1e-30), inside


def render(camera: Camera, meshes, background=None, light_dir=(0.0, 0.5, 1.0), ambient: float = 0.35, *,
           near: float = 0.01, cull_backfaces: bool = False, default_color=(0.75, 0.75, 0.75),
           background_color=(0, 0, 0), chunk_size: int = DEFAULT_CHUNK) -> RenderResult:
    """Render meshes (a list of :class:`Mesh`) seen by ``camera``.

    background: None (filled with ``background_color``) or an (H, W, 3) uint8 RGB image of the
    camera's size. ``cull_backfaces`` skips triangles facing away from the camera (right-hand
    winding = outward normal); only use it for closed, consistently wound meshes.
    Returns a :class:`RenderResult`.
    """
    H, W = int(camera.height), int(camera.width)
    if H <= 0 or W <= 0:
        raise ValueError(f"camera size must be positive, got {W}x{H}")
    if isinstance(meshes, Mesh):
        meshes = [meshes]
    meshes = list(meshes)
    if len(meshes) > 32767:
        raise ValueError(f"at most 32767 meshes per render, got {len(meshes)}")
    if background is None:
        image = np.empty((H, W, 3), np.uint8)
        image[:] = np.asarray(background_color, np.uint8)
    else:
        background = np.asarray(background)
        if background.shape != (H, W, 3) or background.dtype != np.uint8:
            raise ValueError(f"background must be ({H}, {W}, 3) uint8 RGB like the camera, "
                             f"got {background.shape} {background.dtype}")
        image = background.copy()

    # 1. Gather all meshes' triangles in one list, remembering each one's mesh and local index.
    verts_list, faces_list, owner_mesh, local_face, offset = [], [], [], [], 0
    checked = []
    for i, mesh in enumerate(meshes):
        vertices, faces = _check_mesh(i, mesh)
        checked.append((vertices, faces))
        verts_list.append(vertices)
        faces_list.append(faces + offset)
        owner_mesh.append(torch.full((faces.shape[0],), i, dtype=torch.int64))
        local_face.append(torch.arange(faces.shape[0]))
        offset += vertices.shape[0]
    depth = np.full((H, W), np.inf, np.float32)
    instance = np.full((H, W), -1, np.int16)
    face_map = np.full((H, W), -1, np.int32)
    if offset == 0 or sum(f.shape[0] for f in faces_list) == 0:
        return RenderResult(image, depth, instance, face_map)
    verts = torch.cat(verts_list)
    faces = torch.cat(faces_list)
    owner_mesh = torch.cat(owner_mesh)
    local_face = torch.cat(local_face)

    # 2. Project; drop triangles crossing the near plane, non-finite ones, and (optionally) back faces.
    z = verts[:, 2]
    zsafe = torch.where(z > near, z, torch.ones_like(z))
    # Pixel coordinates shifted by half a pixel so that integer values are pixel centres below.
    u = camera.fx * verts[:, 0] / zsafe + (camera.cx - 0.5)
    v = camera.fy * verts[:, 1] / zsafe + (camera.cy - 0.5)
    fz = z[faces]
    keep = (fz > near).all(dim=1) & torch.isfinite(verts[faces]).all(dim=(1, 2))
    if cull_backfaces:
        corner = verts[faces]
        normal = torch.linalg.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])
        keep &= (normal * corner[:, 0]).sum(dim=1) < 0
    sx, sy = u[faces], v[faces]  # (F, 3) pixels
    signed_area = (sx[:, 1] - sx[:, 0]) * (sy[:, 2] - sy[:, 0]) - (sy[:, 1] - sy[:, 0]) * (sx[:, 2] - sx[:, 0])
    keep &= signed_area.abs() > 1e-12
    kept = torch.nonzero(keep).squeeze(1)
    # Orient every kept triangle counter-clockwise on screen (positive signed area in x-right,
    # y-down pixel coordinates) by swapping two corners where needed.
    flip = signed_area[kept] < 0
    order = torch.tensor([0, 1, 2]).repeat(kept.shape[0], 1)
    order[flip] = torch.tensor([0, 2, 1])
    kfaces = torch.gather(faces[kept], 1, order)
    ksx = torch.gather(sx[kept], 1, order)
    ksy = torch.gather(sy[kept], 1, order)
    kz = torch.gather(fz[kept], 1, order)
    # Top-left rule: for the edge opposite vertex k, running from vertex k+1 to vertex k+2, a
    # centre exactly on it counts when the edge is a "top" edge (horizontal, interior below it)
    # or a "left" edge (interior to its right). With this orientation that means dy < 0, or
    # dy == 0 and dx > 0.
    nxt = [1, 2, 0]
    nxt2 = [2, 0, 1]
    dx = ksx[:, nxt2] - ksx[:, nxt]
    dy = ksy[:, nxt2] - ksy[:, nxt]
    top_left = (dy < 0) | ((dy == 0) & (dx > 0))

    # 3. Each triangle's bounding box of pixel centres, clipped to the image.
    xmin = torch.ceil(ksx.min(dim=1).values).clamp(0, W).to(torch.int64)
    xmax = torch.floor(ksx.max(dim=1).values).clamp(-1, W - 1).to(torch.int64)
    ymin = torch.ceil(ksy.min(dim=1).values).clamp(0, H).to(torch.int64)
    ymax = torch.floor(ksy.max(dim=1).values).clamp(-1, H - 1).to(torch.int64)
    box_w = (xmax - xmin + 1).clamp_min(0)
    box_h = (ymax - ymin + 1).clamp_min(0)
    counts = box_w * box_h
    has_pixels = torch.nonzero(counts > 0).squeeze(1)
    inv_z = 1.0 / kz

    # 4. Depth test over chunks of candidate pixels: per pixel keep the smallest packed key
    #    (float32 depth bits << 32 | kept-face index); positive floats sort like their bits.
    zbuffer = torch.full((H * W,), _EMPTY_KEY, dtype=torch.int64)
    if has_pixels.numel():
        cum = torch.cumsum(counts[has_pixels], 0)
        total = int(cum[-1])
        steps = torch.arange(chunk_size, total, chunk_size) if total > chunk_size else cum[:0]
        boundaries = torch.searchsorted(cum, steps, right=True)
        bounds = [0] + [int(b) for b in boundaries] + [has_pixels.numel()]
        bounds = sorted(set(bounds))
        box_w_sel = box_w[has_pixels]
        for first, last in zip(bounds[:-1], bounds[1:]):
            owner, px, py = _candidates(xmin[has_pixels], ymin[has_pixels], box_w_sel, counts[has_pixels],
                                        first, last)
            faces_idx = has_pixels[owner]
            bary, inside = _edge_weights(ksx, ksy, faces_idx, px, py, top_left)
            if not bool(inside.any()):
                continue
            bary, faces_idx = bary[inside], faces_idx[inside]
            pixel = py[inside] * W + px[inside]
            surface_z = 1.0 / (bary * inv_z[faces_idx]).sum(dim=1)
            surface_z = surface_z.clamp_min(near).to(torch.float32)
            key = (surface_z.view(torch.int32).to(torch.int64) << 32) | faces_idx
            zbuffer.scatter_reduce_(0, pixel, key, reduce="amin", include_self=True)

    # 5. Resolve the winning triangle per pixel and recompute its barycentrics there.
    covered = torch.nonzero(zbuffer != _EMPTY_KEY).squeeze(1)
    if covered.numel() == 0:
        return RenderResult(image, depth, instance, face_map)
    win_key = zbuffer[covered]
    win_face = win_key & 0xFFFFFFFF
    win_z = (win_key >> 32).to(torch.int32).view(torch.float32)
    px, py = covered % W, torch.div(covered, W, rounding_mode="floor")
    bary, _ = _edge_weights(ksx, ksy, win_face, px, py, top_left)
    bary = bary.clamp_min(0)
    persp = bary * inv_z[win_face]
    persp = persp / persp.sum(dim=1, keepdim=True)  # perspective-correct barycentrics (P, 3)
    global_face = kept[win_face]
    mesh_of_pixel = owner_mesh[global_face]

    depth.reshape(-1)[covered.numpy()] = win_z.numpy()
    instance.reshape(-1)[covered.numpy()] = mesh_of_pixel.numpy().astype(np.int16)
    face_map.reshape(-1)[covered.numpy()] = local_face[global_face].numpy().astype(np.int32)

    # 6. Shade per mesh: albedo from vertex colours, texture or the default colour; Lambert + ambient.
    light = -torch.as_tensor(light_dir, dtype=torch.float32)
    light = light / light.norm().clamp_min(1e-12)
    flat_image = image.reshape(-1, 3)
    for i, mesh in enumerate(meshes):
        sel = torch.nonzero(mesh_of_pixel == i).squeeze(1)
        if sel.numel() == 0:
            continue
        vertices, faces_i = checked[i]
        base = int(sum(c[0].shape[0] for c in checked[:i]))
        corner_ids = kfaces[win_face[sel]] - base  # (P, 3) this mesh's vertex indices, reordered
        w = persp[sel]
        if mesh.vertex_normals is not None:
            normals = _as_tensor(mesh.vertex_normals, torch.float32)
            normals = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
        else:
            normals = vertex_normals(vertices, faces_i)
        n = (normals[corner_ids] * w[:, :, None]).sum(dim=1)
        n = torch.nn.functional.normalize(n, dim=-1, eps=1e-12)
        # Turn normals towards the camera: the viewing ray to the point is its position.
        point = (vertices[corner_ids] * w[:, :, None]).sum(dim=1)
        facing_away = (n * point).sum(dim=1) > 0
        n = torch.where(facing_away[:, None], -n, n)
        lambert = (n @ light).clamp_min(0)
        shade = ambient + (1.0 - ambient) * lambert

        if mesh.uv is not None:
            uv = _as_tensor(mesh.uv, torch.float32)
            local = local_face[global_face[sel]]
            # the corners were reordered for flipped triangles: gather uv in the same order
            uv_corners = torch.gather(uv[local], 1, order[win_face[sel]][:, :, None].expand(-1, 3, 2))
            tuv = (uv_corners * w[:, :, None]).sum(dim=1)
            albedo = _sample_bilinear(np.asarray(mesh.texture), tuv, mesh.repeat_texture)
        elif mesh.vertex_colors is not None:
            colors = _as_tensor(mesh.vertex_colors, torch.float32)
            albedo = (colors[corner_ids] * w[:, :, None]).sum(dim=1)
        else:
            albedo = torch.as_tensor(default_color, dtype=torch.float32).expand(sel.numel(), 3)
        rgb = (albedo * shade[:, None]).clamp(0, 1) * 255.0 + 0.5
        flat_image[covered[sel].numpy()] = rgb.to(torch.uint8).numpy()
    return RenderResult(image, depth, instance, face_map)


def _sample_bilinear(texture: np.ndarray, uv: torch.Tensor, repeat: bool = False) -> torch.Tensor:
    """Sample an (h, w, 3) uint8 texture at uv (P, 2) (v up; clamped, or tiled when ``repeat``)
    -> (P, 3) float in [0, 1]."""
    tex = torch.as_tensor(np.ascontiguousarray(texture))
    h, w = tex.shape[:2]
    if repeat:
        x = torch.remainder(uv[:, 0] * w - 0.5, w)
        y = torch.remainder((1.0 - uv[:, 1]) * h - 0.5, h)
        x0 = x.floor().to(torch.int64).clamp(0, w - 1)
        y0 = y.floor().to(torch.int64).clamp(0, h - 1)
        x1 = (x0 + 1) % w
        y1 = (y0 + 1) % h
    else:
        x = (uv[:, 0] * w - 0.5).clamp(0, w - 1)
        y = ((1.0 - uv[:, 1]) * h - 0.5).clamp(0, h - 1)
        x0 = x.floor().to(torch.int64)
        y0 = y.floor().to(torch.int64)
        x1 = (x0 + 1).clamp_max(w - 1)
        y1 = (y0 + 1).clamp_max(h - 1)
    ax = (x - x0)[:, None]
    ay = (y - y0)[:, None]
    flat = tex.reshape(-1, 3).to(torch.float32)
    top = flat[y0 * w + x0] * (1 - ax) + flat[y0 * w + x1] * ax
    bottom = flat[y1 * w + x0] * (1 - ax) + flat[y1 * w + x1] * ax
    return (top * (1 - ay) + bottom * ay) / 255.0


def overlay(image: np.ndarray, result: RenderResult, alpha: float = 0.6) -> np.ndarray:
    """Blend a render over a video frame: image (H, W, 3) uint8 -> (H, W, 3) uint8.

    Where a mesh is drawn the output is ``(1 - alpha) * image + alpha * result.image``; elsewhere
    the frame is unchanged.
    """
    image = np.asarray(image)
    if image.shape != result.image.shape:
        raise ValueError(f"image {image.shape} and render {result.image.shape} must have the same size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = image.copy()
    mask = result.instance >= 0
    blended = (1.0 - alpha) * image[mask].astype(np.float32) + alpha * result.image[mask].astype(np.float32)
    out[mask] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def track_color(track_id: int) -> tuple[float, float, float]:
    """A distinct, stable mesh colour (r, g, b) in [0, 1] for a person's track id.

    Hues step by the golden ratio so that consecutive ids differ strongly; saturation and value
    are moderate so that shading stays readable.
    """
    hue = (0.08 + 0.618033988749895 * int(track_id)) % 1.0
    return tuple(float(c) for c in colorsys.hsv_to_rgb(hue, 0.55, 0.95))
