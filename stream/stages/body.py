"""The body stage: linear blend skinning of each person's body parameters."""

from __future__ import annotations

import numpy as np

from stream.frames import Packet
from stream.pipeline import Stage


class BodyStage(Stage):
    """Skins the body model: global_orient (3,), body_pose (23, 3), betas, transl (3,) ->
    joints (24, 3) and vertices (V, 3), metres, camera frame. People without parameters are
    left as they are."""

    name = "body"
    inputs = ("body_params",)
    outputs = ("joints", "vertices")
    budget_ms = 20.0

    def __init__(self, model):
        self.model = model

    def process(self, packet: Packet) -> Packet:
        import torch

        people = [p for p in packet.people if p.global_orient is not None]
        if not people:
            return packet

        def stacked(name: str):
            values = torch.from_numpy(np.stack([getattr(p, name) for p in people]).astype(np.float32))
            return values.to(self.model.device)

        with torch.inference_mode():
            out = self.model(stacked("global_orient"), stacked("body_pose").reshape(len(people), 23, 3),
                             stacked("betas"), stacked("transl"))
        vertices = out.vertices.detach().to("cpu", torch.float32).numpy()
        joints = out.joints.detach().to("cpu", torch.float32).numpy()
        for k, person in enumerate(people):
            person.vertices = np.ascontiguousarray(vertices[k])
            person.joints = np.ascontiguousarray(joints[k])
        return packet
