"""The lifter's camera: a weak-perspective camera in the person's box, and its translation.

The box frame. A person's box (x0, y0, x1, y1) pixels is made square about its centre
(bx, by) with side ``b = max(x1 - x0, y1 - y0)`` pixels. A pixel (u, v) has box coordinates

    x_n = (u - bx) / (b / 2),    y_n = (v - by) / (b / 2)

so the square box spans [-1, 1] on both axes.

The weak-perspective camera (s, tx, ty). A body-model point X (camera-frame axes, metres,
computed with transl = 0) projects to box coordinates

    x_n = s * (X_x + tx),    y_n = s * (X_y + ty)

(s per metre, tx and ty metres). This is the perspective projection of the body placed at
translation T = (Tx, Ty, Tz), linearised at the depth Tz; matching the two gives, with the
intrinsics fx, fy, cx, cy (pixels),

    Tz = 2 * fx / (b * s)
    Tx = tx + (bx - cx) * Tz / fx
    Ty = ty + (by - cy) * Tz / fy

(exact for points at depth Tz; y uses fy/fx * s as its scale, which is s for square pixels).
:func:`camera_to_translation` applies it, :func:`translation_to_camera` inverts it.
All functions are batched over people and torch.export-able.
"""

from __future__ import annotations

import torch
from torch import Tensor


def square_boxes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(P,4) x0, y0, x1, y1 pixels -> centre x (P,), centre y (P,), side (P,) pixels (at least 1)."""
    centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
    centre_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    return centre_x, centre_y, side


def pixels_to_box(points: Tensor, boxes: Tensor) -> Tensor:
    """(P,N,2) pixels -> (P,N,2) box coordinates (the square box spans [-1, 1])."""
    centre_x, centre_y, side = square_boxes(boxes)
    centre = torch.stack([centre_x, centre_y], -1)[:, None]
    return (points - centre) / (0.5 * side)[:, None, None]


def box_to_pixels(points: Tensor, boxes: Tensor) -> Tensor:
    """(P,N,2) box coordinates -> (P,N,2) pixels; the inverse of :func:`pixels_to_box`."""
    centre_x, centre_y, side = square_boxes(boxes)
    centre = torch.stack([centre_x, centre_y], -1)[:, None]
    return points * (0.5 * side)[:, None, None] + centre


def camera_to_translation(camera: Tensor, boxes: Tensor, intrinsics: Tensor) -> Tensor:
    """Weak-perspective camera (P,3) (s per metre, tx, ty metres) -> translation (P,3) metres.

    boxes (P,4) pixels; intrinsics (3,3), or (P,3,3) one per person. See the module docstring
    for the formula.
    """
    fx, fy, cx, cy = intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]
    centre_x, centre_y, side = square_boxes(boxes)
    scale = camera[:, 0].clamp(min=1e-3)
    depth = 2.0 * fx / (side * scale)
    trans_x = camera[:, 1] + (centre_x - cx) * depth / fx
    trans_y = camera[:, 2] + (centre_y - cy) * depth / fy
    return torch.stack([trans_x, trans_y, depth], -1)


def translation_to_camera(translation: Tensor, boxes: Tensor, intrinsics: Tensor) -> Tensor:
    """Translation (P,3) metres -> weak-perspective camera (P,3); inverts :func:`camera_to_translation`.

    boxes (P,4) pixels; intrinsics (3,3) or (P,3,3).
    """
    fx, fy, cx, cy = intrinsics[..., 0, 0], intrinsics[..., 1, 1], intrinsics[..., 0, 2], intrinsics[..., 1, 2]
    centre_x, centre_y, side = square_boxes(boxes)
    depth = translation[:, 2].clamp(min=1e-3)
    scale = 2.0 * fx / (side * depth)
    offset_x = translation[:, 0] - (centre_x - cx) * depth / fx
    offset_y = translation[:, 1] - (centre_y - cy) * depth / fy
    return torch.stack([scale, offset_x, offset_y], -1)
