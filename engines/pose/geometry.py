"""BlazePose pre- and post-processing: anchors, detection decoding, NMS, ROIs, crops, projection.

Parameters are MediaPipe's (``pose_detection_cpu.pbtxt``, ``pose_detection_to_roi.pbtxt``,
``pose_landmarks_to_roi.pbtxt``, ``tensors_to_pose_landmarks_and_segmentation.pbtxt``). All
coordinates here are image pixels in OpenCV's convention (pixel ``i`` covers ``[i, i+1)`` for
the crop corners, as MediaPipe's image-to-tensor warp does) unless a name says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engines.geometry import box_iou

# Detector (pose_detection_cpu.pbtxt).
DETECTOR_SIZE = 224
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHOR_MIN_SCALE, ANCHOR_MAX_SCALE = 0.1484375, 0.75
NUM_ANCHORS = 2254
SCORE_CLIP = 100.0
MIN_DETECTION_SCORE = 0.5
NMS_IOU_THRESHOLD = 0.3
# ROI (pose_detection_to_roi / pose_landmarks_to_roi): keypoints 0 (centre) and 1 (size/rotation).
ROI_SCALE = 1.25
ROI_TARGET_ANGLE = math.pi / 2
# Landmarks (tensors_to_pose_landmarks_and_segmentation.pbtxt).
LANDMARK_SIZE = 256
NUM_LANDMARKS = 39
NUM_BODY_LANDMARKS = 33
AUX_CENTRE, AUX_SCALE = 33, 34
PRESENCE_THRESHOLD = 0.5
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -80.0, 80.0)))


def ssd_anchors() -> np.ndarray:
    """The detector's 2254 anchor centres, (2254, 2) float32 x, y in [0, 1], in output order.

    MediaPipe's SSD anchor layout with fixed anchor size: consecutive layers of equal stride
    share one feature map; each layer gives one anchor per location plus one interpolated-scale
    anchor per layer, so 2 anchors at strides 8 and 16 and 6 at the shared stride 32.
    """
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        last = layer
        while last < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[last] == stride:
            last += 1
        per_location = 2 * (last - layer)  # aspect ratio 1.0 + interpolated scale, per layer
        side = math.ceil(DETECTOR_SIZE / stride)
        ys, xs = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_location, axis=0))
        layer = last
    anchors = np.concatenate(centres).astype(np.float32)
    assert len(anchors) == NUM_ANCHORS, len(anchors)
    return anchors


@dataclass
class Letterbox:
    """How an image was fitted into a square tensor: ``matrix`` maps image pixels to tensor
    pixels (2x3); ``padding`` is (left, top, right, bottom) as fractions of the tensor side."""

    matrix: np.ndarray
    padding: tuple[float, float, float, float]
    size: int


def letterbox(image: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Fit ``image`` (H, W, 3) uint8 into a (size, size, 3) float32 tensor in [-1, 1], aspect kept,
    centred, zero border (pixel value 0, i.e. -1 after scaling)."""
    height, width = image.shape[:2]
    side = float(max(width, height))
    scale = size / side
    matrix = np.array([[scale, 0.0, (side - width) / 2 * scale], [0.0, scale, (side - height) / 2 * scale]], np.float64)
    warped = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    tensor = warped.astype(np.float32) * (2.0 / 255.0) - 1.0
    pad_x = (1.0 - width / side) / 2
    pad_y = (1.0 - height / side) / 2
    return tensor, Letterbox(matrix, (pad_x, pad_y, pad_x, pad_y), size)


@dataclass
class Detection:
    """One detected person: ``score``; ``box`` (4,) x0, y0, x1, y1 and ``keypoints`` (4, 2) x, y,
    both in image pixels (after letterbox removal)."""

    score: float
    box: np.ndarray
    keypoints: np.ndarray


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                      min_score: float = MIN_DETECTION_SCORE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the detector's outputs for one image.

    ``raw_boxes`` (2254, 12): box centre x, y, width, height, then 4 keypoints x, y, in 224-px
    units relative to the anchor; ``raw_scores`` (2254,) logits. Returns (scores (N,),
    boxes (N, 4) x0, y0, x1, y1, keypoints (N, 4, 2)) for scores >= ``min_score``, normalised to
    the letterboxed tensor ([0, 1]).
    """
    scores = sigmoid(np.clip(raw_scores.reshape(-1), -SCORE_CLIP, SCORE_CLIP))
    keep = np.nonzero(scores >= min_score)[0]
    raw = raw_boxes[keep].astype(np.float64) / DETECTOR_SIZE
    centre = raw[:, 0:2] + anchors[keep]
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) + anchors[keep][:, None, :]
    return scores[keep], boxes, keypoints


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float = NMS_IOU_THRESHOLD) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression.

    1. Take the highest-scoring remaining detection.
    2. Every remaining detection overlapping it by IoU > ``iou_threshold`` (itself included)
       joins its cluster and leaves the pool.
    3. The output keeps the top score and the score-weighted mean of the cluster's boxes and
       keypoints.
    """
    order = np.argsort(-scores, kind="stable")
    remaining = list(order)
    out = []
    while remaining:
        top = remaining[0]
        rest = np.array(remaining)
        overlap = box_iou(boxes[top][None], boxes[rest])[0]
        cluster = rest[overlap > iou_threshold]
        if len(cluster) == 0:
            cluster = np.array([top])
        weights = scores[cluster][:, None]
        box = (boxes[cluster] * weights).sum(0) / weights.sum()
        kps = (keypoints[cluster] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((float(scores[top]), box, kps))
        clustered = set(cluster.tolist()) | {top}
        remaining = [i for i in remaining if i not in clustered]
    return out


def remove_letterbox(points: np.ndarray, box: Letterbox, image_width: int, image_height: int) -> np.ndarray:
    """Map points (..., 2) normalised to the letterboxed tensor back to image pixels."""
    left, top, right, bottom = box.padding
    x = (points[..., 0] - left) / (1.0 - left - right) * image_width
    y = (points[..., 1] - top) / (1.0 - top - bottom) * image_height
    return np.stack([x, y], axis=-1)


def normalize_angle(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


@dataclass
class Roi:
    """A rotated square region: centre ``cx``, ``cy`` and side ``size`` in image pixels,
    ``rotation`` in radians (clockwise in image coordinates, 0 = upright)."""

    cx: float
    cy: float
    size: float
    rotation: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (float(self.cx), float(self.cy), float(self.size), float(self.rotation))

    def corners(self) -> np.ndarray:
        """(4, 2) corners of the region in image pixels (top-left, top-right, bottom-right, bottom-left)."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        half = self.size / 2
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        rot = np.array([[c, -s], [s, c]])
        return local @ rot.T + np.array([self.cx, self.cy])


def roi_from_alignment_points(centre: np.ndarray, scale_point: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """The landmark ROI from two alignment points in pixels (detection keypoints 0/1, or the
    auxiliary landmarks 33/34): centred on ``centre``, side ``2 * |scale_point - centre| * scale``
    (already square), rotated so that ``scale_point`` is straight above ``centre``."""
    dx = float(scale_point[0] - centre[0])
    dy = float(scale_point[1] - centre[1])
    side = 2.0 * math.hypot(dx, dy) * scale
    rotation = normalize_angle(ROI_TARGET_ANGLE - math.atan2(-dy, dx))
    return Roi(float(centre[0]), float(centre[1]), side, rotation)


def roi_to_crop_matrix(roi: Roi, size: int = LANDMARK_SIZE) -> np.ndarray:
    """(2, 3) affine map from image pixels to crop pixels: the ROI's top-left corner goes to
    (0, 0) and its side to ``size``, un-rotating it."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    k = size / roi.size
    # crop = k * R(-rotation) (p - centre) + size / 2
    linear = k * np.array([[c, s], [-s, c]])
    offset = np.array([size / 2, size / 2]) - linear @ np.array([roi.cx, roi.cy])
    return np.concatenate([linear, offset[:, None]], axis=1)


def crop_roi(image: np.ndarray, roi: Roi, size: int = LANDMARK_SIZE) -> np.ndarray:
    """The rotated ROI of ``image`` (H, W, 3) uint8 as a (size, size, 3) float32 tensor in [0, 1],
    bilinear, border replicated."""
    warped = cv2.warpAffine(image, roi_to_crop_matrix(roi, size), (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped.astype(np.float32) * (1.0 / 255.0)


def refine_from_heatmap(xy_norm: np.ndarray, heatmap_logits: np.ndarray, kernel: int = HEATMAP_KERNEL,
                        min_confidence: float = HEATMAP_MIN_CONFIDENCE) -> np.ndarray:
    """MediaPipe's heatmap refinement of landmark positions.

    ``xy_norm`` (L, 2) landmark x, y in [0, 1] of the crop; ``heatmap_logits`` (h, w, L).
    For each landmark: in a ``kernel`` window around its heatmap cell, the sigmoid-weighted mean
    cell index (divided by the heatmap size) replaces the position when the window's maximum
    confidence is at least ``min_confidence``. Returns a refined copy (L, 2).
    """
    height, width, count = heatmap_logits.shape
    out = np.array(xy_norm, dtype=np.float64, copy=True)
    half = (kernel - 1) // 2
    # 1. Each landmark's cell (truncation toward zero, as MediaPipe's int cast); those outside
    #    the heatmap keep their position.
    cols = np.trunc(out[:, 0] * width).astype(np.int64)
    rows = np.trunc(out[:, 1] * height).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    # 2. The kernel window around it, cut at the heatmap's edges: (L, k, k) cell indices.
    offsets = np.arange(-half, half + 1)
    window_rows = rows[:, None, None] + offsets[None, :, None]
    window_cols = cols[:, None, None] + offsets[None, None, :]
    valid = ((window_rows >= 0) & (window_rows < height) & (window_cols >= 0) & (window_cols < width)
             & inside[:, None, None])
    # 3. Confidence (sigmoid of the logits) in the windows only.
    landmark = np.broadcast_to(np.arange(count)[:, None, None], valid.shape)
    logits = heatmap_logits[np.clip(window_rows, 0, height - 1), np.clip(window_cols, 0, width - 1), landmark]
    window = np.where(valid, sigmoid(logits), 0.0)
    total = window.sum(axis=(1, 2))
    # 4. The confidence-weighted mean cell where the window is confident enough.
    refine = inside & (window.max(axis=(1, 2)) >= min_confidence) & (total > 0)
    safe_total = np.where(total > 0, total, 1.0)
    mean_col = (window * window_cols).sum(axis=(1, 2)) / safe_total
    mean_row = (window * window_rows).sum(axis=(1, 2)) / safe_total
    out[:, 0] = np.where(refine, mean_col / width, out[:, 0])
    out[:, 1] = np.where(refine, mean_row / height, out[:, 1])
    return out


def project_to_image(xy_crop_norm: np.ndarray, roi: Roi) -> np.ndarray:
    """Landmarks (L, 2) normalised to the crop -> image pixels (rotate and scale by the ROI)."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    local = (xy_crop_norm - 0.5) * roi.size
    x = c * local[:, 0] - s * local[:, 1] + roi.cx
    y = s * local[:, 0] + c * local[:, 1] + roi.cy
    return np.stack([x, y], axis=1)


def rotate_world(world: np.ndarray, rotation: float) -> np.ndarray:
    """World landmarks (L, 3) rotated about the z axis by the ROI rotation (x, y only)."""
    c, s = math.cos(rotation), math.sin(rotation)
    out = np.array(world, dtype=np.float64, copy=True)
    out[:, 0] = c * world[:, 0] - s * world[:, 1]
    out[:, 1] = s * world[:, 0] + c * world[:, 1]
    return out


def warp_mask_to_image(mask: np.ndarray, roi: Roi, image_width: int, image_height: int) -> np.ndarray:
    """A crop-space mask (size, size) float32 warped back to the image (H, W), zero outside."""
    size = mask.shape[0]
    inverse = cv2.invertAffineTransform(roi_to_crop_matrix(roi, size))
    return cv2.warpAffine(mask.astype(np.float32), inverse, (image_width, image_height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
