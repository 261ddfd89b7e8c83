"""Frame and per-frame result types that move through the pipeline.

A :class:`Frame` is what a source produces: one decoded picture with its timestamps. A
:class:`Person` is what the engines make of one person in it, filled in stage by stage
(keypoints first, then body parameters when a lifter exists, then joints and vertices). A
:class:`Packet` carries one frame and everything known about it from stage to stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.pinhole import Intrinsics


@dataclass(frozen=True)
class Camera:
    """Where a run's intrinsics come from: the user's (fx, fy, cx, cy) in pixels when given,
    else a centred pinhole whose longer image side spans ``fov_deg`` degrees."""

    fov_deg: float = 60.0
    given: tuple[float, float, float, float] | None = None

    def intrinsics(self, width: int, height: int) -> Intrinsics:
        if self.given is not None:
            return Intrinsics(*(float(v) for v in self.given), int(width), int(height))
        return Intrinsics.from_fov(width, height, self.fov_deg)


@dataclass
class Frame:
    """One decoded video frame.

    index: 0-based frame number in the source, counting the frames the source could not
        deliver (corrupt or undecodable): after a skipped frame the next index jumps, so an
        index always names the same picture of the input. Across a network reconnect it keeps
        counting from the last frame before the drop.
    pts_s: presentation time in seconds from the container's time base (None if unknown).
    t_capture_ns: ``time.monotonic_ns()`` when the frame was handed to the pipeline.
    image: (H, W, 3) uint8 RGB, C-contiguous, upright (the container's rotation applied).
    new_timeline: True on the first frame of a source and on the first frame after a break
        in its timeline (a network reconnect, or timestamps going backwards): what came before
        says nothing about this frame (tracks and filters start afresh).
    """

    index: int
    pts_s: float | None
    t_capture_ns: int
    image: np.ndarray
    new_timeline: bool = False

    @property
    def t_s(self) -> float:
        """The frame's time in seconds: pts_s, or the capture time when the container has none."""
        return self.pts_s if self.pts_s is not None else self.t_capture_ns / 1e9

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Person:
    """Everything known about one person in one frame; fields stay None until a stage fills them.

    track_id: stable id across frames (-1 until tracking assigns one).
    score: detection/presence confidence in [0, 1].
    bbox: (4,) float32 x0, y0, x1, y1 in image pixels.
    keypoints: (33, 3) float32 BlazePose keypoints: x, y in pixels, visibility in [0, 1].
    world_landmarks: (33, 3) float32 metres, hip-centred.
    mask: (H, W) float32 person probability, or None.
    global_orient (3,), body_pose (23, 3): axis-angle radians, camera frame.
    betas (10,); transl (3,) metres, camera frame.
    joints (24, 3) and vertices (V, 3): metres, camera frame.
    world_transl (3,): the root joint (pelvis) in the world frame of stream.world (metres, y up,
        floor at y = 0); world_orient (3,): the root's orientation there, axis-angle radians;
        foot_contact (2,) float32: 1 where the left, right foot is on the floor (docs/world.md).
    """

    track_id: int = -1
    score: float = 0.0
    bbox: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoints_z: np.ndarray | None = None
    world_landmarks: np.ndarray | None = None
    mask: np.ndarray | None = None
    global_orient: np.ndarray | None = None
    body_pose: np.ndarray | None = None
    betas: np.ndarray | None = None
    transl: np.ndarray | None = None
    joints: np.ndarray | None = None
    vertices: np.ndarray | None = None
    world_transl: np.ndarray | None = None
    world_orient: np.ndarray | None = None
    foot_contact: np.ndarray | None = None


@dataclass
class Packet:
    """One frame on its way through the pipeline.

    people: filled by the pose stage and refined by later stages.
    intrinsics: the camera the bodies are placed with (given by the user, or from the field of
        view), filled by the pipeline for every frame.
    floor: the floor and camera pose found by the world stage (stream.world.Floor), or None.
    stage_ms: how long each stage spent on this frame, milliseconds.
    """

    frame: Frame
    people: list[Person] = field(default_factory=list)
    intrinsics: Intrinsics | None = None
    floor: object | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
