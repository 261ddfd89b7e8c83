"""The smooth stage: per-track temporal smoothing of the bodies, causal live or two-sided offline."""

from __future__ import annotations

from stream.frames import Packet, Person
from stream.pipeline import LIVE, PipelineContext, Stage
from stream.smoothing import (RTS_LAG_FRAMES, SMOOTHING_CHOICES, BodyParams, FixedLagSmoother, SmootherBank,
                              resolve_smoothing)


class SmoothStage(Stage):
    """Smooths each tracked person's body over time, with dt from the frames' timestamps.

    smoothing: "auto" (two-sided "rts" under the offline policy, the causal
    :data:`stream.smoothing.LIVE_SMOOTHING` live), "rts", "one-euro", "kalman" or "none".
    Causal filters (:class:`stream.smoothing.SmootherBank`) give each frame back at once; "rts"
    (:class:`stream.smoothing.FixedLagSmoother`) holds each frame until ``lag_frames`` later
    frames have come and releases frames in order, the rest at the end (:meth:`flush`); it is
    refused live, where holding frames would count as overload. A track unseen for
    ``forget_after_s`` starts afresh; a new timeline releases what is held and starts over.
    """

    name = "smooth"
    inputs = ("body_params",)
    outputs = ("body_params",)
    budget_ms = 5.0

    def __init__(self, smoothing: str = "auto", lag_frames: int = RTS_LAG_FRAMES, forget_after_s: float = 2.0):
        if smoothing not in SMOOTHING_CHOICES:
            raise ValueError(f"unknown smoothing {smoothing!r}; choose one of {', '.join(SMOOTHING_CHOICES)}")
        self.smoothing = smoothing
        self.lag_frames = int(lag_frames)
        self.forget_after_s = forget_after_s
        self.kind: str | None = None
        self._causal: SmootherBank | None = None
        self._two_sided: FixedLagSmoother | None = None
        self._seen_s: dict[int, float] = {}

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        self.kind = resolve_smoothing(self.smoothing, context.policy)
        if self.kind == "rts":
            if context.policy == LIVE:
                raise ValueError("--smoothing rts holds frames back (two-sided smoothing) and cannot run live; "
                                 "use one-euro or kalman, or process the file offline")
            self._two_sided = FixedLagSmoother(lag_frames=self.lag_frames, forget_after_s=self.forget_after_s)
        else:
            self._causal = SmootherBank(self.kind, consolidate_shape=False)

    def process_batch(self, packets: list[Packet]) -> list[Packet]:
        """The packets ready to go on, in order (with "rts": those ``lag_frames`` frames old)."""
        out: list[Packet] = []
        for packet in packets:
            t_s = packet.frame.t_s
            if packet.frame.new_timeline:
                out.extend(self.flush())
                self._restart()
            people = [p for p in packet.people if p.global_orient is not None]
            bodies = [BodyParams(p.global_orient, p.body_pose, p.transl, p.betas) for p in people]
            if self._two_sided is not None:
                for (held, held_people), smoothed in self._two_sided.push(
                        t_s, (packet, people), [p.track_id for p in people], bodies):
                    _set_bodies(held_people, smoothed)
                    out.append(held)
                continue
            self._forget_unseen(t_s)
            _set_bodies(people, [self._causal.update(t_s, p.track_id, body) for p, body in zip(people, bodies)])
            for person in people:
                self._seen_s[person.track_id] = t_s
            out.append(packet)
        return out

    def flush(self) -> list[Packet]:
        """The frames the two-sided smoother still holds, smoothed with what came after them."""
        if self._two_sided is None:
            return []
        out = []
        for (packet, people), smoothed in self._two_sided.flush():
            _set_bodies(people, smoothed)
            out.append(packet)
        return out

    def _restart(self) -> None:
        self._seen_s.clear()
        if self._two_sided is not None:
            self._two_sided.reset()
        else:
            self._causal = SmootherBank(self.kind, consolidate_shape=False)

    def _forget_unseen(self, t_s: float) -> None:
        for track in [t for t, seen in self._seen_s.items() if t_s - seen > self.forget_after_s]:
            self._causal.forget(track)
            del self._seen_s[track]


def _set_bodies(people: list[Person], bodies: list[BodyParams | None]) -> None:
    """Copy each smoothed body onto its person (people without one are left as they are)."""
    for person, body in zip(people, bodies):
        if body is not None:
            person.global_orient, person.body_pose = body.global_orient, body.body_pose
            person.transl, person.betas = body.transl, body.betas
