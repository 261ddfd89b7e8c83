"""Time engines.render on a 640x480 frame with two textured human bodies (Anny's mesh), or,
with --overlay, the overlay video's mesh drawing on the frames of a real results file.

    python tools/bench_render.py [--repeats 20] [--threads 1] [--size 640x480] [--distance 3.2]
    python tools/bench_render.py --overlay RESULTS.npz [--video CLIP] [--frames N]

--overlay needs a results file with vertices (`meshstream process CLIP -o RESULTS.npz
--vertices`). For each frame, one after the other on the same frame: the previous overlay
(engines.render, then blended 60 % over the frame), engines.overlay with OpenGL (1 and 4
samples per pixel) and with its engines.render fallback, and the whole overlay frame as the
video writer composes it (mesh, labels); then the composed frames encoded with libx264 at three
presets (and once with the encoder's own RGB to YUV conversion). Prints wall and CPU time (all
threads) per frame.

Uses the anny package's template body (13,718 vertices, 27,420 triangles, MakeHuman UVs) when
it is installed, otherwise two ellipsoids of the same size. Prints the median and best time per
frame, with and without back-face culling.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

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


def bench_overlay(results_path: str, video_path: str | None, max_frames: int | None) -> int:
    import json

    import av

    from engines.body import load_body_model
    from engines.overlay import MeshOverlay
    from stream.frames import Frame, Packet, Person
    from stream.writers import OverlayVideoWriter

    data = np.load(results_path)
    if "vertices" not in data:
        raise SystemExit(f"{results_path} has no vertices: make it with `meshstream process CLIP -o FILE --vertices`")
    meta = json.loads(str(data["meta"]))
    video_path = video_path or meta["input"]
    k = meta["intrinsics"]
    intrinsics = (k["fx"], k["fy"], k["cx"], k["cy"])
    faces = load_body_model("open").faces
    rows_of = {}
    for row, index in enumerate(data["frame_index"].tolist()):
        rows_of.setdefault(index, []).append(row)
    with av.open(video_path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = frames[:max_frames] if max_frames else frames
    height, width = frames[0].shape[:2]
    camera = Camera(*intrinsics, width, height)

    def previous(image, people):  # the overlay before engines.overlay: render, blend 60 %
        meshes = [Mesh(vertices=v, faces=faces) for _, v in people]
        rendered = render(camera, meshes, background=image)
        mask = (rendered.instance >= 0)[..., None]
        return np.where(mask, (0.6 * rendered.image + 0.4 * image).astype(np.uint8), image)

    gl1 = MeshOverlay(faces, width, height, intrinsics, samples=1, backend="gl")
    gl4 = MeshOverlay(faces, width, height, intrinsics, samples=4, backend="gl")
    cpu = MeshOverlay(faces, width, height, intrinsics, backend="cpu")
    scratch = tempfile.TemporaryDirectory()
    writer = OverlayVideoWriter(Path(scratch.name) / "overlay.mp4", 30, width, height, intrinsics=intrinsics,
                                faces=faces)
    methods = {
        "previous overlay (engines.render + blend)": lambda image, people, packet: previous(image, people),
        "engines.overlay OpenGL, 1 sample": lambda image, people, packet: gl1.draw(image, people),
        "engines.overlay OpenGL, 4 samples": lambda image, people, packet: gl4.draw(image, people),
        "engines.overlay fallback (engines.render)": lambda image, people, packet: cpu.draw(image, people),
        "writer.compose (OpenGL mesh + labels)": lambda image, people, packet: writer.compose(packet),
    }
    first = [(int(data["track_id"][r]), data["vertices"][r]) for r in rows_of.get(0, [])]
    for method in methods.values():  # contexts, buffers and shaders made before timing
        method(frames[0], first, Packet(Frame(0, None, 0, frames[0]), [Person(track_id=t, vertices=v)
                                                                       for t, v in first]))
    times = {name: [] for name in methods}
    cpu_times = {name: [] for name in methods}
    composed = []
    for index, image in enumerate(frames):
        rows = rows_of.get(index, [])
        people = [(int(data["track_id"][r]), data["vertices"][r]) for r in rows
                  if np.isfinite(data["vertices"][r]).all()]
        packet = Packet(Frame(index, None, 0, image), [Person(track_id=t, vertices=v) for t, v in people])
        for name, method in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            result = method(image, people, packet)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)  # all threads: llvmpipe's too
            if name.startswith("writer.compose"):
                composed.append(result)  # what the writer would encode
    writer.close()
    rows = sum(len(r) for r in rows_of.values())
    print(f"{len(frames)} frames {width}x{height} of {video_path}, {rows} person-rows in the file, "
          f"torch threads {torch.get_num_threads()}")
    base = statistics.median(times[next(iter(methods))])
    base_cpu = statistics.mean(cpu_times[next(iter(methods))])
    for name, values in times.items():
        median, used = statistics.median(values), statistics.mean(cpu_times[name])
        print(f"{name:42s} wall median {median * 1e3:6.1f} ms, CPU mean {used * 1e3:6.1f} ms per frame; "
              f"{base / median:5.1f}x less wall, {base_cpu / used:5.1f}x less CPU than the previous overlay")
    import cv2

    # the writer's other cost: encoding, with the frame converted to YUV 4:2:0 by OpenCV as the
    # writer does, and (last row) by the encoder's own conversion from RGB, as it did before
    for preset, convert in (("veryfast", "cv2"), ("superfast", "cv2"), ("ultrafast", "cv2"), ("veryfast", "av")):
        path = Path(scratch.name) / f"{preset}-{convert}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
            stream.options = {"preset": preset, "crf": "23"}
            start, start_cpu = time.perf_counter(), time.process_time()
            for index, image in enumerate(composed):
                image = np.ascontiguousarray(image[: stream.height, : stream.width])
                if convert == "cv2":
                    frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
                else:
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
            wall, used = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"encoding, libx264 {preset:9s} (RGB->YUV by {convert:3s}) wall {wall / len(composed) * 1e3:6.1f} ms, "
              f"CPU {used / len(composed) * 1e3:6.1f} ms per frame, {path.stat().st_size / 1024:.0f} KiB")
    scratch.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overlay", metavar="RESULTS.npz", help="time the overlay on this results file's frames")
    parser.add_argument("--video", help="with --overlay: the clip (default: the results file's input)")
    parser.add_argument("--frames", type=int, help="with --overlay: at most this many frames")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--distance", type=float, default=3.2, help="distance of the nearer body (m); the "
                        "other is 0.4 m further (default 3.2: two whole bodies in a 60-degree view)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # 1 by default, as `meshstream process` on 2 cores
    if args.overlay:
        return bench_overlay(args.overlay, args.video, args.frames)
    width, height = (int(s) for s in args.size.lower().split("x"))

    body = anny_body()
    kind = "anny"
    if body is None:
        body, kind = ellipsoid_body(), "ellipsoid"
    vertices, faces, uv = body
    rng = np.random.default_rng(0)
    texture = rng.integers(90, 220, size=(512, 512, 3), dtype=np.uint8)
    background = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    camera = Camera.from_horizontal_fov(width, height, 60.0)
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
