"""The pose stage: people and their 33 keypoints in each frame (engines.pose.PoseEstimator)."""

from __future__ import annotations

import numpy as np

from stream.frames import Packet, Person
from stream.pipeline import PipelineContext, Stage


class PoseStage(Stage):
    """Detects people and their 33 BlazePose keypoints.

    Fills packet.people (score, bbox, keypoints, keypoints_z, world_landmarks, and the person
    mask when ``keep_masks``). Under overload (live) it detects less often: every
    detect_every x 2^level frames. A new timeline (see :class:`stream.frames.Frame`) resets the
    estimator's landmark tracking.
    """

    name = "pose"
    inputs = ("frame",)
    outputs = ("people",)

    def __init__(self, backend: str = "auto", device: str = "cpu", max_people: int = 4, budget_ms: float = 60.0,
                 keep_masks: bool = False):
        self.backend, self.device, self.max_people = backend, device, max_people
        self.budget_ms = budget_ms
        self.keep_masks = keep_masks
        self.estimator = None
        self._base_detect_every = None

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        from engines.pose import PoseEstimator

        self.estimator = PoseEstimator(backend=self.backend, device=self.device, max_people=self.max_people,
                                       with_mask=self.keep_masks)
        self._base_detect_every = getattr(self.estimator, "detect_every", None)

    def process(self, packet: Packet) -> Packet:
        if self._base_detect_every is not None:
            self.estimator.detect_every = self._base_detect_every * (2 ** self.context.degrade_level)
        frame = packet.frame
        if frame.new_timeline:
            self.estimator.reset()
        packet.people = [
            Person(score=float(getattr(obs, "presence", 1.0)),
                   bbox=np.asarray(obs.bbox, np.float32),
                   keypoints=np.ascontiguousarray(obs.keypoints, np.float32),
                   keypoints_z=getattr(obs, "keypoints_z", None),
                   world_landmarks=getattr(obs, "world_landmarks", None),
                   mask=getattr(obs, "mask", None) if self.keep_masks else None)
            for obs in self.estimator(frame.image, timestamp_s=frame.t_s)]
        return packet
