"""The world stage: the floor and each person's root motion and foot contacts in a y-up world
frame, for a static camera (stream.world; docs/world.md)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from stream.frames import Packet
from stream.pipeline import LIVE, PipelineContext, Stage
from stream.world import FloorEstimator, WorldTracker, blend_floors, feet_seen, foot_vertex_indices

# Offline, each frame waits for this many later frames (2 s at 30 fps): its floor is fitted on
# them too, and its feet's speeds come from both neighbours.
WORLD_LAG_FRAMES = 60
# The published floor moves toward each refit with this time constant (seconds), so that the
# world frame glides instead of jumping.
FLOOR_GLIDE_S = 1.0


class WorldStage(Stage):
    """Adds ``packet.floor`` (:class:`stream.world.Floor`: camera height, pitch, roll) and, per
    person with joints, ``world_transl`` (3,) (the root joint, metres), ``world_orient`` (3,)
    (axis-angle) in the world frame (y up, floor at y = 0) and ``foot_contact`` (2,) float32
    (1 = on the floor; left, right). Before the floor is known (about the first second with
    someone standing or walking) they stay None.

    The published floor glides toward each refit (time constant FLOOR_GLIDE_S) instead of
    jumping. Live: causal, no frame held (each frame uses the frames up to it). Offline: each
    frame is held until ``lag_frames`` later ones have come (2 s at 30 fps), so its floor is
    fitted on them too, and its feet's speeds come from both neighbours. A new timeline
    releases what is held and starts over (the camera may have moved).

    body_model: gives the foot vertices (the soles); without it the ankle and foot joints are used.
    lock_feet: shift the world root so that contact feet do not slide (:class:`stream.world.WorldTracker`).
    """

    name = "world"
    inputs = ("joints",)
    outputs = ("world",)
    budget_ms = 5.0

    def __init__(self, body_model=None, lock_feet: bool = False, lag_frames: int = WORLD_LAG_FRAMES):
        self.lock_feet = lock_feet
        self.lag_frames = lag_frames
        self.estimator = FloorEstimator()
        self.tracker = WorldTracker(lock_feet=lock_feet)
        self._feet = None
        if body_model is not None and hasattr(body_model, "lbs_weights"):
            self._feet = foot_vertex_indices(np.asarray(body_model.lbs_weights.detach().cpu().numpy()
                                                        if hasattr(body_model.lbs_weights, "detach")
                                                        else body_model.lbs_weights))
        self._held: deque[Packet] = deque()
        self._lag = self.lag_frames
        self._live = False
        self._published = None  # the floor as published (gliding toward the fits)
        self._published_t_s = 0.0

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        self._live = context.policy == LIVE
        self._lag = 0 if self._live else self.lag_frames

    def process_batch(self, packets: list[Packet]) -> list[Packet]:
        out: list[Packet] = []
        for packet in packets:
            if packet.frame.new_timeline:
                out.extend(self.flush())
                self.estimator.reset()
                self.tracker.reset()
                self._published = None
            size = packet.intrinsics or packet.frame  # the image the keypoints are on (replays have no image)
            self.estimator.observe(packet.frame.t_s, [(p.track_id, p.joints, self._foot_vertices(p),
                                                       feet_seen(p.keypoints, size.width, size.height))
                                                      for p in self._bodies(packet)])
            self._held.append(packet)
            while len(self._held) > self._lag:
                out.append(self._release())
        return out

    def flush(self) -> list[Packet]:
        """The frames still held, with the floor fitted on everything seen."""
        self.estimator.refit()
        out = []
        while self._held:
            out.append(self._release())
        return out

    def _release(self) -> Packet:
        packet = self._held.popleft()
        t_s = packet.frame.t_s
        floor = self.estimator.floor
        if floor is not None:
            if self._published is not None and t_s > self._published_t_s:
                weight = 1.0 - math.exp(-(t_s - self._published_t_s) / FLOOR_GLIDE_S)
                floor = blend_floors(self._published, floor, weight)
            self._published, self._published_t_s = floor, t_s
        packet.floor = floor
        if floor is None:
            return packet
        following = {}
        if self._held:
            after = self._held[0]
            following = {p.track_id: (after.frame.t_s, p.joints) for p in self._bodies(after) if p.track_id >= 0}
        for person in self._bodies(packet):
            orient = person.global_orient if person.global_orient is not None else np.zeros(3)
            world = self.tracker.update(floor, t_s, person.track_id, person.joints, orient,
                                        self._foot_vertices(person), following.get(person.track_id))
            person.world_transl = world.root.astype(np.float32)
            person.world_orient = world.orient.astype(np.float32)
            person.foot_contact = world.contact.astype(np.float32)
        self.tracker.forget_unseen(t_s)
        return packet

    @staticmethod
    def _bodies(packet: Packet):
        return [p for p in packet.people if p.joints is not None and np.isfinite(p.joints).all()]

    def _foot_vertices(self, person):
        if self._feet is None or person.vertices is None:
            return None
        return tuple(person.vertices[indices] for indices in self._feet)
