"""Show a body model: its size and, with --render, a picture of it in several poses and shapes.

The picture has one column per pose or shape (rest T-pose, arms down, walking, squatting,
waving, and the first two shape directions at +-2) and two rows (front and side views), with
the 24 joints and the bones between them drawn over the mesh. Vertices are coloured by their
skinning weights, so the picture also shows how smoothly each joint's influence blends.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

NAME = "body"
HELP = "inspect a body model; --render draws it in several poses and shapes"

log = logging.getLogger("meshstream.body")

# (label, {SMPL joint name: axis-angle in the model frame}, {beta index: value})
SCENES = [
    ("rest pose", {}, {}),
    ("arms down", {"left_shoulder": (0, 0, -1.2), "right_shoulder": (0, 0, 1.2)}, {}),
    ("walking", {"left_hip": (-0.5, 0, 0), "right_hip": (0.4, 0, 0), "left_knee": (0.3, 0, 0),
                 "right_knee": (0.8, 0, 0), "left_shoulder": (0, 0.3, -1.25), "right_shoulder": (0, 0.3, 1.25),
                 "left_elbow": (0, -0.4, 0), "right_elbow": (0, 0.6, 0)}, {}),
    ("squat", {"left_hip": (-1.5, 0, -0.15), "right_hip": (-1.5, 0, 0.15), "left_knee": (1.9, 0, 0),
               "right_knee": (1.9, 0, 0), "left_ankle": (-0.35, 0, 0), "right_ankle": (-0.35, 0, 0),
               "spine1": (0.25, 0, 0), "left_shoulder": (0, -1.4, 0), "right_shoulder": (0, 1.4, 0)}, {}),
    ("waving", {"right_shoulder": (0, 0, -1.0), "right_elbow": (0, 0.2, -1.6), "left_shoulder": (0, 0, -1.3),
                "left_elbow": (0, -1.2, 0), "head": (0, -0.4, 0), "left_wrist": (0, 0, 0.4)}, {}),
    ("shape 0 = +2", {}, {0: 2.0}),
    ("shape 0 = -2", {}, {0: -2.0}),
    ("shape 1 = +2", {}, {1: 2.0}),
    ("shape 1 = -2", {}, {1: -2.0}),
]


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="open", help="'open' (default) or a path to an SMPL/SMPL+H/SMPL-X file or folder")
    parser.add_argument("--render", type=Path, metavar="OUT.png", help="write a picture of the model here")
    parser.add_argument("--tile", type=int, default=280, help="width of one view in pixels (default 280)")


def scene_parameters(model_dtype):
    """The SCENES as batched tensors: global_orient (S,3) zeros, body_pose (S,23,3), betas (S,10)."""
    import torch

    from engines.skeleton import SMPL_JOINT_NAMES

    count = len(SCENES)
    body_pose = torch.zeros(count, 23, 3, dtype=model_dtype)
    betas = torch.zeros(count, 10, dtype=model_dtype)
    for i, (_, pose, shape) in enumerate(SCENES):
        for joint, axis_angle in pose.items():
            body_pose[i, SMPL_JOINT_NAMES.index(joint) - 1] = torch.tensor(axis_angle, dtype=model_dtype)
        for index, value in shape.items():
            betas[i, index] = value
    return torch.zeros(count, 3, dtype=model_dtype), body_pose, betas


def render_sheet(model, tile_width: int):
    """The picture: (H, W, 3) uint8 RGB."""
    import cv2
    import numpy as np
    import torch

    from engines.render import Camera, Mesh, render
    from engines.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    global_orient, body_pose, betas = scene_parameters(model.dtype)
    tile_height = int(tile_width * 1.2)
    camera = Camera.from_horizontal_fov(tile_width, tile_height, 30.0)
    # The same distance for every view (so shapes compare): 2.3 m fits the height, 1.95 m the width.
    distance = max(2.3 * camera.fy / tile_height, 1.95 * camera.fx / tile_width)
    # Model frame (y up, facing +z) -> camera frame (y down, facing the camera): a half turn about x.
    to_camera = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0], dtype=model.dtype))
    turn_side = axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0], dtype=model.dtype))  # show the left side
    palette = np.array([[0.55 + 0.45 * math.sin(1.7 * j + k * 2.1) ** 2 for k in range(3)] for j in range(24)])
    colors = model.lbs_weights.float().numpy() @ palette * 0.85
    parents = model.parents
    rows = []
    for view, rotation in (("front", to_camera), ("side", to_camera @ turn_side)):
        orient = matrix_to_axis_angle(rotation).expand(len(SCENES), 3).contiguous()
        with torch.no_grad():
            out = model(orient, body_pose, betas)
        tiles = []
        for i, (label, _, _) in enumerate(SCENES):
            vertices = out.vertices[i].float()
            joints = out.joints[i].float()
            # Centre the body's bounding box in the view, at a fixed distance.
            low, high = vertices.min(0).values, vertices.max(0).values
            shift = torch.tensor([0.0, 0.0, distance]) - (low + high) / 2 * torch.tensor([1.0, 1.0, 0.0])
            shift[2] -= (low[2] + high[2]) / 2
            mesh = Mesh(vertices=(vertices + shift).numpy(), faces=model.faces, vertex_colors=colors)
            image = render(camera, [mesh], background=np.full((tile_height, tile_width, 3), 245, np.uint8)).image.copy()
            points = joints + shift
            pixels = np.stack([camera.fx * points[:, 0] / points[:, 2] + camera.cx,
                               camera.fy * points[:, 1] / points[:, 2] + camera.cy], axis=1)
            for child, parent in enumerate(parents):
                if parent >= 0:
                    cv2.line(image, tuple(int(round(c)) for c in pixels[parent]), tuple(int(round(c)) for c in pixels[child]),
                             (40, 40, 40), 2, cv2.LINE_AA)
            for j, pixel in enumerate(pixels):
                color = (200, 30, 30) if model.joint_names[j].startswith("left") else (
                    (30, 60, 200) if model.joint_names[j].startswith("right") else (30, 150, 30))
                cv2.circle(image, tuple(int(round(c)) for c in pixel), 4, color, -1, cv2.LINE_AA)
            cv2.putText(image, f"{label} ({view})", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(image)
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows + [np.full((24, rows[0].shape[1], 3), 255, np.uint8)], axis=0)
    caption = f"{model.model_id}: {model.num_vertices} vertices, {len(model.faces)} triangles; joints: left red, right blue"
    cv2.putText(sheet, caption, (6, sheet.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def run(args) -> int:
    import cv2

    from engines.body import load_body_model
    from stream.cli import UserError

    try:
        model = load_body_model(args.model)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    print(f"{model.model_id}: {model.num_vertices} vertices, {len(model.faces)} triangles, 24 joints, "
          f"pose correctives: {'yes' if model.has_pose_correctives else 'no'}")
    if args.render is None:
        return 0
    if args.tile < 64:
        raise UserError("--tile must be at least 64 pixels")
    sheet = render_sheet(model, args.tile)
    args.render.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.render), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise UserError(f"could not write {args.render}; use a .png or .jpg path in a writable folder")
    print(f"wrote {args.render} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0
