"""Render a synthetic benchmark: videos of moving people with their exact 3D bodies beside them.

    python tools/make_synthetic.py --out DIR --seed S [--clips 6] [--frames 60] [--size 640x480]
                                   [--motions tools/synthetic_motions.txt] [--contact-sheet]

For each clip: one to three people of the open body model (random shapes, skin, hair and
clothes on Anny's UV layout, hair and clothes with volume), posed by motion-capture clips
retargeted onto the body's own skeleton and turned to face the camera roughly, placed on a
textured floor before a wall, seen by a static camera of random height and focal length at a
distance that makes people 50-80 % of the frame tall, lit by a random directional light;
rendered with engines.render (supersampled, then area-downsampled), with a soft contact
shadow, slight sensor noise, and
written as DIR/<clip>.mp4 (H.264 via PyAV) and DIR/<clip>.npz, the ground truth, one row per
(frame, person), in the results format of `meshstream process`:

    frame_index (N,) int32; pts_s (N,) float64; track_id (N,) int32 (the person)
    global_orient (N, 3), body_pose (N, 23, 3), betas (N, 10), transl (N, 3): camera frame
    joints (N, 24, 3); landmarks (N, 33, 3) metres; vertices (N, V, 3) metres
    keypoints2d (N, 33, 3): landmarks projected with the intrinsics (pixels; pixel i covers
        [i, i+1)) and visibility 1/0 (inside the frame and not hidden by a surface more than
        OCCLUSION_TOLERANCE_M in front of it)
    masks (N, H, W) bool: the pixels where this person is the visible surface
    intrinsics (3, 3) float32; meta: JSON (fps, width, height, intrinsics, body_model, camera:
        height_m, world_to_camera (3, 3) rotation and position_m (3,) in the world frame: y up,
        floor at y = 0, ...)

People are listed in every frame, also when outside the view (their keypoints are then all
invisible, and `meshstream eval` ignores them). Motions come from a clip list (one CMU trial per
line); by default only clips held out of the lifter's training (meshstream_tools.mocap.HELD_OUT_CLIPS)
are accepted, so the benchmark scores motions the lifter never saw.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.render import Camera, Mesh, render
from meshstream_tools import REPOSITORY as ROOT

DEFAULT_MOTIONS = ROOT / "tools" / "synthetic_motions.txt"
OCCLUSION_TOLERANCE_M = 0.10
PEOPLE_WEIGHTS = (0.4, 0.35, 0.25)  # chance of 1, 2, 3 people
VERSION = "synthetic-2"
# Framing (see docs/accuracy.md, "Synthetic benchmark"): a 1.7 m person at the set's centre spans
# FRAME_FILL of the frame height; the distance follows from the random field of view.
HFOV_DEG = (40.0, 70.0)
FRAME_FILL = (0.5, 0.8)
REFERENCE_STATURE_M = 1.7
DISTANCE_M = (1.8, 8.0)
DEPTH_JITTER = 0.15  # people stand up to this fraction of the distance nearer or farther
CAMERA_HEIGHT_M = (0.7, 2.0)
AIM_HEIGHT_M = (0.8, 0.95)
FACING_SPREAD_DEG = 70.0  # mean facing direction within this angle of the camera


# ----------------------------------------------------------------------------------------------
# Geometry helpers


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World (y up) -> camera (x right, y down, z forward) rotation of a camera at ``position``
    looking at ``target``, with no roll. (3, 3), rows are the camera axes in world coordinates."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def transform_body_params(global_orient, transl, pelvis_rest, rotation, offset):
    """Move a body by the rigid map p -> rotation @ p + offset, in the model's convention
    (vertices = R_g (x - j0) + j0 + transl, j0 the rest pelvis joint).

    global_orient (F, 3) axis-angle, transl (F, 3), pelvis_rest (3,) -> the new (F, 3), (F, 3).
    """
    from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    r_g = axis_angle_to_matrix(torch.as_tensor(global_orient, dtype=torch.float64))
    new_r = torch.as_tensor(rotation, dtype=torch.float64) @ r_g
    new_orient = matrix_to_axis_angle(new_r).numpy()
    new_transl = (np.asarray(transl, np.float64) + pelvis_rest) @ np.asarray(rotation).T + offset - pelvis_rest
    return new_orient, new_transl


def mean_facing_angle(global_orient: np.ndarray, rest_joints: np.ndarray) -> float:
    """Mean horizontal facing direction of a motion (world y up), as the angle atan2(x, z)
    (radians) that rotation_y adds to. global_orient (F, 3) axis-angle; rest_joints (24, 3) of
    the body (SMPL order). 0 when the body turns so much that no direction dominates."""
    from engines.rotations import axis_angle_to_matrix

    across = (rest_joints[1] - rest_joints[2]) + (rest_joints[16] - rest_joints[17])  # left minus right
    up = 0.5 * (rest_joints[16] + rest_joints[17]) - 0.5 * (rest_joints[1] + rest_joints[2])
    forward_rest = np.cross(across, up)
    forward_rest /= np.linalg.norm(forward_rest)
    rotations = axis_angle_to_matrix(torch.as_tensor(global_orient, dtype=torch.float64)).numpy()
    forward = rotations @ forward_rest  # (F, 3)
    horizontal = forward[:, [0, 2]]
    horizontal /= np.maximum(np.linalg.norm(horizontal, axis=1, keepdims=True), 1e-9)
    mean = horizontal.mean(axis=0)
    if np.linalg.norm(mean) < 1e-6:
        return 0.0
    return math.atan2(mean[0], mean[1])


# ----------------------------------------------------------------------------------------------
# Clip set-up


@dataclass
class Person:
    track_id: int
    motion: str
    start: int
    betas: np.ndarray  # (10,)
    global_orient: np.ndarray  # (F, 3) camera frame
    body_pose: np.ndarray  # (F, 23, 3)
    transl: np.ndarray  # (F, 3) camera frame
    look: object  # synthetic_appearance.Look


def read_motion_list(path: Path, allow_training: bool) -> list[str]:
    from meshstream_tools.mocap import HELD_OUT_CLIPS

    if not path.is_file():
        raise SystemExit(f"no motion list {path}; give --motions FILE with one CMU trial (e.g. 07_09) per line")
    trials = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            trials.append(line)
    if not trials:
        raise SystemExit(f"{path} lists no motions")
    training = [t for t in trials if t not in HELD_OUT_CLIPS]
    if training and not allow_training:
        raise SystemExit(f"{path} lists clips the lifter trains on ({', '.join(training)}); the benchmark must use "
                         f"held-out clips (meshstream_tools.mocap.HELD_OUT_CLIPS), or pass --allow-training-motions")
    return trials


class MotionLibrary:
    """Retargeted motions per (trial, body shape), resampled to the video's frame rate."""

    def __init__(self, trials: list[str], fps: float):
        from meshstream_tools.mocap import list_clips

        self.fps = fps
        index = {c.trial: c for c in list_clips("all")}
        missing = [t for t in trials if t not in index]
        if missing:
            raise SystemExit(f"motions {missing} are not in the mocap INDEX.csv; list trials such as 07_09")
        self.infos = {t: index[t] for t in trials}
        self.trials = trials

    def frames_available(self, trial: str) -> int:
        info = self.infos[trial]
        return int((info.frames - 1) / info.fps * self.fps)

    def load(self, trial: str, rest_joints: np.ndarray):
        from meshstream_tools.mocap import load_clip

        motion, _ = load_clip(self.infos[trial], rest_joints=rest_joints, fps=self.fps)
        return motion


def choose_trial(rng, library: MotionLibrary, frames: int) -> str:
    long_enough = [t for t in library.trials if library.frames_available(t) >= frames]
    pool = long_enough or library.trials
    return pool[int(rng.integers(len(pool)))]


# ----------------------------------------------------------------------------------------------
# One clip


class SyntheticRenderer:
    def __init__(self, args):
        from engines.body import load_body_model
        from meshstream_tools.synthetic_appearance import TextureFactory, load_template

        self.args = args
        self.width, self.height = args.width, args.height
        self.fps = args.fps
        self.library = MotionLibrary(read_motion_list(Path(args.motions), args.allow_training_motions), args.fps)
        self.model = load_body_model(args.body)
        self.template = load_template()
        faces = np.asarray(self.model.faces, np.int64)
        if self.model.num_vertices != len(self.template.vertices) or faces.shape != self.template.faces.shape \
                or not np.array_equal(faces, self.template.faces):
            raise SystemExit(f"body model {self.model.model_id} does not share Anny's topology "
                             f"({self.model.num_vertices} vertices); textures need the open model (--body open)")
        self.faces = faces
        self.textures = TextureFactory(self.template)

    # -- 1. scene -------------------------------------------------------------------------------

    def setup(self, rng: np.random.Generator, clip_name: str):
        """Camera, light and people of one clip (see docs/accuracy.md, "Synthetic benchmark").

        The framing follows footage of people filmed on purpose: the focal length is random, and
        the distance is chosen from it so that a 1.7 m person at the centre of the set spans
        FRAME_FILL of the frame height; the camera looks at the middle of the bodies.
        """
        W, H = self.width, self.height
        hfov = rng.uniform(*HFOV_DEG)
        camera = Camera.from_horizontal_fov(W, H, hfov)
        fill = rng.uniform(*FRAME_FILL)
        distance = float(np.clip(camera.fy * REFERENCE_STATURE_M / (fill * H), *DISTANCE_M))
        cam_height = rng.uniform(*CAMERA_HEIGHT_M)
        target = np.array([0.0, rng.uniform(*AIM_HEIGHT_M), -distance])
        position = np.array([0.0, cam_height, 0.0])
        world_to_camera = look_at(position, target)
        half_width = distance * math.tan(math.radians(hfov) / 2)
        weights = np.array(PEOPLE_WEIGHTS[: self.args.max_people])
        count = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
        slots = []
        depth_jitter = DEPTH_JITTER * distance
        for _ in range(500):  # people at least 0.9 m apart; fewer people if they do not fit
            slot = np.array([rng.uniform(-0.75, 0.75) * half_width, 0.0,
                             -distance + rng.uniform(-depth_jitter, depth_jitter)])
            if all(np.linalg.norm(slot - s) > 0.9 for s in slots):
                slots.append(slot)
            if len(slots) == count:
                break
        light_dir = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0)])
        scene = {"camera": camera, "hfov_deg": hfov, "distance_m": distance, "camera_height_m": cam_height,
                 "camera_position": position, "world_to_camera": world_to_camera, "light_dir": light_dir,
                 "ambient": rng.uniform(0.3, 0.55), "tint": rng.uniform(0.9, 1.1, 3), "gain": rng.uniform(0.85, 1.15),
                 "noise_sigma": rng.uniform(0.5, 3.0), "wall_distance": distance + rng.uniform(2.0, 6.0)}
        people = [self.make_person(rng, track_id, slot, scene) for track_id, slot in enumerate(slots)]
        return scene, people

    def make_person(self, rng, track_id: int, slot: np.ndarray, scene: dict) -> Person:
        frames = self.args.frames
        betas = np.clip(rng.normal(0.0, 0.8, 10), -2.0, 2.0).astype(np.float32)
        with torch.no_grad():
            rest_joints = self.model.rest_joints(torch.from_numpy(betas)[None])[0].double().numpy()
        trial = choose_trial(rng, self.library, frames)
        motion = self.library.load(trial, rest_joints.astype(np.float32))
        available = motion.num_frames
        start = int(rng.integers(0, max(1, available - frames + 1)))
        take = np.minimum(np.arange(start, start + frames), available - 1)  # hold the last pose if short
        orient, pose, transl = motion.global_orient[take], motion.body_pose[take], motion.transl[take]
        # Place the motion: turn it about the vertical so that the body's mean facing direction
        # over the clip points within +-FACING_SPREAD_DEG of the camera (people filmed on
        # purpose face the camera roughly; the motion still turns them as it does), centre its
        # path on the slot (horizontally), then put the feet on the floor (y = 0).
        to_camera = scene["camera_position"] - slot
        wanted = math.atan2(to_camera[0], to_camera[2]) + math.radians(rng.uniform(-FACING_SPREAD_DEG,
                                                                                    FACING_SPREAD_DEG))
        heading = rotation_y(wanted - mean_facing_angle(orient, rest_joints))
        pelvis_path = (transl + rest_joints[0]) @ heading.T
        middle = pelvis_path[len(pelvis_path) // 2]
        offset = slot - np.array([middle[0], 0.0, middle[2]])
        world_orient, world_transl = transform_body_params(orient, transl, rest_joints[0], heading, offset)
        floor_shift = self.floor_offset(betas, world_orient, pose, world_transl)
        world_transl = world_transl + np.array([0.0, floor_shift, 0.0])
        # World -> camera.
        R, c = scene["world_to_camera"], scene["camera_position"]
        cam_orient, cam_transl = transform_body_params(world_orient, world_transl, rest_joints[0], R, -R @ c)
        return Person(track_id, trial, start, betas, cam_orient.astype(np.float32), pose.astype(np.float32),
                      cam_transl.astype(np.float32), self.textures.make(rng))

    def floor_offset(self, betas, orient, pose, transl) -> float:
        """Vertical shift putting the feet on y = 0: the 10th percentile over frames of the lowest vertex."""
        out = self.body(betas, orient, pose, transl)
        lowest = out.vertices[..., 1].min(dim=1).values.numpy()
        return -float(np.percentile(lowest, 10))

    def body(self, betas, orient, pose, transl):
        n = len(orient)
        with torch.no_grad():
            return self.model(torch.as_tensor(orient, dtype=torch.float32), torch.as_tensor(pose, dtype=torch.float32),
                              torch.as_tensor(np.broadcast_to(betas, (n, 10)).copy(), dtype=torch.float32),
                              torch.as_tensor(transl, dtype=torch.float32))

    # -- 2. frames ------------------------------------------------------------------------------

    def render_clip(self, rng, scene: dict, people: list[Person]):
        from meshstream_tools.synthetic_appearance import environment_meshes

        ss = self.args.supersample
        camera = scene["camera"]
        big = camera.scaled(ss)
        R, c = scene["world_to_camera"], scene["camera_position"]

        def world_to_camera(points):
            return (np.asarray(points) - c) @ R.T

        light, ambient = tuple(scene["light_dir"]), scene["ambient"]
        env = environment_meshes(rng, world_to_camera, scene["wall_distance"])
        background = render(big, env, light_dir=light, ambient=ambient, background_color=(200, 210, 225)).image
        bodies = [self.body(p.betas, p.global_orient, p.body_pose, p.transl) for p in people]
        vertices = [b.vertices.numpy() for b in bodies]
        landmarks = [b.landmarks.numpy() for b in bodies]
        joints = [b.joints.numpy() for b in bodies]
        frames, masks, visibility = [], [], []
        W, H = self.width, self.height
        for f in range(self.args.frames):
            backdrop = self.shadows(background, big, [v[f] for v in vertices], R, c)
            meshes = [Mesh(v[f], self.faces, uv=self.template.uv, texture=p.look.texture)
                      for v, p in zip(vertices, people)]
            meshes += self.shell_meshes([v[f] for v in vertices], people)
            result = render(big, meshes, background=backdrop, light_dir=light, ambient=ambient, cull_backfaces=True)
            # Instance k < P is person k's body; the shells follow, one per person that has one.
            person_of_mesh = np.array(list(range(len(people))) + [k for k, p in enumerate(people)
                                                                  if len(p.look.shell_faces)], np.int16)
            image = result.image.astype(np.float32)
            if ss > 1:
                import cv2

                image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
            image = image * scene["tint"] * scene["gain"] + rng.normal(0.0, scene["noise_sigma"], image.shape)
            frames.append(np.clip(image + 0.5, 0, 255).astype(np.uint8))
            # Masks: a person owns a pixel when most of its supersamples show that person.
            inst = np.where(result.instance >= 0, person_of_mesh[np.maximum(result.instance, 0)], -1)
            inst = inst.reshape(H, ss, W, ss)
            masks.append(np.stack([(inst == k).mean(axis=(1, 3)) > 0.5 for k in range(len(people))]))
            visibility.append(np.stack([self.visible(big, result.depth, lm[f], ss) for lm in landmarks]))
        return frames, np.stack(masks, 0), np.stack(visibility, 0), vertices, joints, landmarks

    def shell_meshes(self, vertices_per_person: list[np.ndarray], people: list[Person]) -> list[Mesh]:
        """Each person's hair and clothes shell (synthetic_appearance.shell_mesh) for one frame, in
        people order (people without any have none)."""
        from engines.render import vertex_normals
        from meshstream_tools.synthetic_appearance import shell_mesh

        meshes = []
        faces = torch.from_numpy(self.faces)
        for v, person in zip(vertices_per_person, people):
            if not len(person.look.shell_faces):
                continue
            normals = vertex_normals(torch.from_numpy(np.ascontiguousarray(v, np.float32)), faces).numpy()
            shell, shell_faces, shell_uv = shell_mesh(v, normals, self.faces, self.template.uv, person.look)
            meshes.append(Mesh(shell, shell_faces, uv=shell_uv, texture=person.look.texture))
        return meshes

    def visible(self, big: Camera, depth: np.ndarray, points: np.ndarray, ss: int) -> np.ndarray:
        """(33,) bool: inside the image and no surface more than OCCLUSION_TOLERANCE_M in front."""
        z = points[:, 2]
        u = big.fx * points[:, 0] / np.maximum(z, 1e-6) + big.cx
        v = big.fy * points[:, 1] / np.maximum(z, 1e-6) + big.cy
        inside = (z > 0.05) & (u >= 0) & (v >= 0) & (u < big.width) & (v < big.height)
        col = np.clip(u.astype(int), 0, big.width - 1)
        row = np.clip(v.astype(int), 0, big.height - 1)
        return inside & (depth[row, col] >= z - OCCLUSION_TOLERANCE_M)

    def shadows(self, background, big: Camera, vertices_per_person, R, c):
        """Darken the floor under each person: a soft ellipse around the feet (contact shadow)."""
        import cv2

        shade = np.zeros(background.shape[:2], np.float32)
        camera_to_world_r = R.T
        for v in vertices_per_person:
            world = v @ camera_to_world_r + c  # (V, 3) world, y up
            low = world[world[:, 1] < 0.25]
            if len(low) == 0:
                continue
            centre = low.mean(axis=0)
            spread = np.maximum(low.std(axis=0) * 2.2, 0.15)
            angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            ring = np.stack([centre[0] + spread[0] * np.cos(angles), np.zeros_like(angles),
                             centre[2] + spread[2] * np.sin(angles)], axis=1)
            cam = (ring - c) @ R.T
            if (cam[:, 2] < 0.1).any():
                continue
            pix = np.stack([big.fx * cam[:, 0] / cam[:, 2] + big.cx, big.fy * cam[:, 1] / cam[:, 2] + big.cy], axis=1)
            cv2.fillPoly(shade, [np.round(pix * 4).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=2)
        if not shade.any():
            return background
        sigma = max(2.0, 0.01 * big.width)
        shade = cv2.GaussianBlur(shade, (0, 0), sigma)
        return (background.astype(np.float32) * (1.0 - 0.45 * shade[..., None])).astype(np.uint8)

    # -- 3. outputs -----------------------------------------------------------------------------

    def make_clip(self, clip_index: int, out_dir: Path) -> dict:
        name = f"clip_{clip_index:03d}"
        rng = np.random.default_rng([self.args.seed, clip_index])
        started = time.perf_counter()
        scene, people = self.setup(rng, name)
        frames, masks, visible, vertices, joints, landmarks = self.render_clip(rng, scene, people)
        write_video(out_dir / f"{name}.mp4", frames, self.fps)
        camera = scene["camera"]
        K = camera.matrix()
        F, P = len(frames), len(people)
        rows = [(f, p) for f in range(F) for p in range(P)]
        fi = np.array([f for f, _ in rows], np.int32)
        pi = np.array([p for _, p in rows], np.int64)
        lm = np.stack([landmarks[p][f] for f, p in rows]).astype(np.float32)
        projected = lm[..., :2] / lm[..., 2:3] * np.array([camera.fx, camera.fy]) + np.array([camera.cx, camera.cy])
        keypoints2d = np.concatenate([projected, visible[fi, pi][..., None].astype(np.float32)], axis=-1)
        meta = {"fps": self.fps, "width": self.width, "height": self.height, "intrinsics": K.tolist(),
                "body_model": self.model.model_id, "version": VERSION, "generator": "tools/make_synthetic.py",
                "seed": self.args.seed, "clip": name, "pixel_convention": "pixel i covers [i, i+1)",
                "people": [{"track_id": p.track_id, "motion": p.motion, "start_frame": p.start} for p in people],
                "camera": {"hfov_deg": scene["hfov_deg"], "height_m": scene["camera_height_m"],
                           "distance_m": scene["distance_m"],
                           "world_to_camera": np.asarray(scene["world_to_camera"]).tolist(),
                           "position_m": np.asarray(scene["camera_position"]).tolist()},
                "light_dir": scene["light_dir"].tolist(), "ambient": scene["ambient"]}
        np.savez_compressed(
            out_dir / f"{name}.npz",
            frame_index=fi, pts_s=fi.astype(np.float64) / self.fps, track_id=pi.astype(np.int32),
            global_orient=np.stack([people[p].global_orient[f] for f, p in rows]),
            body_pose=np.stack([people[p].body_pose[f] for f, p in rows]),
            betas=np.stack([people[p].betas for f, p in rows]),
            transl=np.stack([people[p].transl[f] for f, p in rows]),
            joints=np.stack([joints[p][f] for f, p in rows]).astype(np.float32),
            landmarks=lm, keypoints2d=keypoints2d.astype(np.float32),
            vertices=np.stack([vertices[p][f] for f, p in rows]).astype(np.float32),
            masks=masks[fi, pi], intrinsics=K, meta=np.array(json.dumps(meta)),
        )
        elapsed = time.perf_counter() - started
        visible_people = int((visible.sum(axis=2) >= 6).sum())
        print(f"{name}: {P} people ({', '.join(p.motion for p in people)}), {F} frames, "
              f"{visible_people}/{F * P} person-frames with >= 6 visible keypoints, {elapsed:.1f} s", flush=True)
        return {"name": name, "frames": frames}


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "17", "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def contact_sheet(clips: list[dict], path: Path, per_clip: int = 4, thumb_width: int = 320) -> None:
    """A grid PNG: one row per clip, ``per_clip`` evenly spaced frames."""
    import cv2

    rows = []
    for clip in clips:
        frames = clip["frames"]
        picks = np.linspace(0, len(frames) - 1, per_clip).round().astype(int)
        thumbs = []
        for i in picks:
            h, w = frames[i].shape[:2]
            thumbs.append(cv2.resize(frames[i], (thumb_width, int(round(h * thumb_width / w))),
                                     interpolation=cv2.INTER_AREA))
        rows.append(np.concatenate(thumbs, axis=1))
    sheet = np.concatenate(rows, axis=0)
    cv2.imwrite(str(path), sheet[:, :, ::-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips", type=int, default=6, help="number of clips (default 6)")
    parser.add_argument("--frames", type=int, default=60, help="frames per clip (default 60)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--max-people", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--supersample", type=int, default=2, help="render at this many times the size, then "
                        "downsample (anti-aliasing; default 2)")
    parser.add_argument("--motions", default=str(DEFAULT_MOTIONS), help="clip list: one CMU trial per line")
    parser.add_argument("--allow-training-motions", action="store_true",
                        help="accept motions the lifter trains on (not for the benchmark)")
    parser.add_argument("--body", default="open", help="body model (the open model: textures need its topology)")
    parser.add_argument("--contact-sheet", action="store_true", help="also write DIR/contact_sheet.png")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a busy machine more "
                        "threads made it ten times slower; 0 keeps torch's default)")
    args = parser.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 640x480, got {args.size!r}")
    if args.frames < 1 or args.clips < 1 or args.supersample < 1:
        parser.error("--frames, --clips and --supersample must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    maker = SyntheticRenderer(args)
    print(f"set-up {time.perf_counter() - started:.1f} s", flush=True)
    clips = [maker.make_clip(i, out) for i in range(args.clips)]
    if args.contact_sheet:
        contact_sheet(clips, out / "contact_sheet.png")
    total = sum(len(c["frames"]) for c in clips)
    print(f"{len(clips)} clips, {total} frames in {out} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
