"""The track stage: stable person ids across frames (the pipeline's only tracker)."""

from __future__ import annotations

import numpy as np

from stream.frames import Packet
from stream.pipeline import PipelineContext, Stage


class TrackStage(Stage):
    """Gives every person a stable ``track_id`` across frames and short occlusions
    (:class:`stream.tracking.Tracker`: a Kalman filter per box, matched by IoU and keypoint
    similarity). Time is the frame's :attr:`stream.frames.Frame.t_s`; a new timeline starts the
    tracker over (ids keep increasing)."""

    name = "track"
    inputs = ("people",)
    outputs = ("track_id",)
    budget_ms = 3.0

    def __init__(self, max_age_s: float = 1.0):
        self.max_age_s = max_age_s
        self.tracker = None

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        from stream.tracking import Tracker

        self.tracker = Tracker(max_age_s=self.max_age_s)

    def process(self, packet: Packet) -> Packet:
        frame = packet.frame
        if frame.new_timeline:
            self.tracker.reset()
        people = [p for p in packet.people if p.bbox is not None and np.isfinite(p.bbox).all()]
        if not people:
            self.tracker.update(frame.t_s, np.zeros((0, 4)), None)
            return packet
        have_keypoints = all(p.keypoints is not None for p in people)
        ids = self.tracker.update(frame.t_s, np.stack([p.bbox for p in people]),
                                  np.stack([p.keypoints for p in people]) if have_keypoints else None)
        for person, track_id in zip(people, ids):
            person.track_id = int(track_id)
        return packet
