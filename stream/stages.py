"""The product's pipeline stages and the function that chains them.

    Source -> pose (engines.pose.PoseEstimator: detect + landmarks) -> track (stream.tracking)
           -> [lift: engines.lift, when it exists] -> body (engines.body skinning)
           -> sinks: publish (ZeroMQ), results (.npz), overlay (.mp4)

Stages whose engine is not installed are left out (and said so in the log); the runtime runs
with whichever exist. :func:`build_stages` does the chaining for the commands.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass

import numpy as np

from stream.frames import Packet, Person
from stream.pipeline import PipelineContext, Stage

log = logging.getLogger("meshstream.stages")


def module_exists(name: str) -> bool:
    """Whether ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def default_intrinsics(width: int, height: int, fov_deg: float = 60.0) -> tuple[float, float, float, float]:
    """Pinhole (fx, fy, cx, cy) in pixels for a camera whose longer side spans ``fov_deg``."""
    focal = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2)
    return (focal, focal, width / 2.0, height / 2.0)


class PoseStage(Stage):
    """Detects people and their 33 keypoints with engines.pose.PoseEstimator.

    Fills packet.people (score, bbox, keypoints, keypoints_z, world_landmarks, mask).
    Under overload (live) it asks the estimator to detect less often, when it can.
    """

    name = "pose"
    inputs = ("frame",)
    outputs = ("people",)

    def __init__(self, backend: str = "auto", device: str = "cpu", max_people: int = 4, budget_ms: float = 60.0,
                 keep_masks: bool = False):
        self.backend, self.device, self.max_people = backend, device, max_people
        self.budget_ms = budget_ms
        self.exclusive_device = device.startswith("cuda")
        self.keep_masks = keep_masks
        self.estimator = None
        self._base_detect_every = None
        self._last_t_s: float | None = None

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        from engines.pose import PoseEstimator

        self.estimator = PoseEstimator(backend=self.backend, device=self.device, max_people=self.max_people,
                                       with_mask=self.keep_masks)
        self._base_detect_every = getattr(self.estimator, "detect_every", None)

    def process(self, packet: Packet) -> Packet:
        if self._base_detect_every is not None:
            # Degrade hook: detect less often as the degrade level rises (1x, 2x, 4x, 8x).
            self.estimator.detect_every = self._base_detect_every * (2 ** self.context.degrade_level)
        people = []
        frame = packet.frame
        t_s = frame.pts_s if frame.pts_s is not None else frame.t_capture_ns / 1e9
        if self._last_t_s is not None and t_s < self._last_t_s:
            self.estimator.reset()  # the timeline restarted (a reconnected stream)
        self._last_t_s = t_s
        for obs in self.estimator(frame.image, timestamp_s=t_s):
            people.append(Person(
                score=float(getattr(obs, "presence", 1.0)),
                bbox=np.asarray(obs.bbox, np.float32),
                keypoints=np.ascontiguousarray(obs.keypoints, np.float32),
                keypoints_z=getattr(obs, "keypoints_z", None),
                world_landmarks=getattr(obs, "world_landmarks", None),
                mask=getattr(obs, "mask", None) if self.keep_masks else None,
            ))
        packet.people = people
        return packet


class TrackStage(Stage):
    """Stable person ids across frames and short occlusions (stream.tracking.Tracker: a Kalman
    filter per box, matched by IoU and keypoint similarity).

    Time is the frame's pts_s (capture time when unknown); when it goes back (a network
    stream that restarted), the tracker starts over (ids keep increasing).
    """

    name = "track"
    inputs = ("people",)
    outputs = ("track_id",)
    budget_ms = 3.0

    def __init__(self, max_age_s: float = 1.0):
        self.max_age_s = max_age_s
        self.tracker = None
        self._last_t_s: float | None = None

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        from stream.tracking import Tracker

        self.tracker = Tracker(max_age_s=self.max_age_s)

    def process(self, packet: Packet) -> Packet:
        frame = packet.frame
        t_s = frame.pts_s if frame.pts_s is not None else frame.t_capture_ns / 1e9
        if self._last_t_s is not None and t_s < self._last_t_s:
            self.tracker.reset()
        self._last_t_s = t_s
        people = [p for p in packet.people if p.bbox is not None and np.isfinite(p.bbox).all()]
        if not people:
            self.tracker.update(t_s, np.zeros((0, 4)), None)
            return packet
        have_keypoints = all(p.keypoints is not None for p in people)
        ids = self.tracker.update(t_s, np.stack([p.bbox for p in people]),
                                  np.stack([p.keypoints for p in people]) if have_keypoints else None)
        for person, track_id in zip(people, ids):
            person.track_id = int(track_id)
        return packet


class BodyStage(Stage):
    """Skins the body model: people's global_orient/body_pose/betas/transl -> joints, vertices.

    Needs the "body_params" a lift stage produces; people without parameters are left as is.
    """

    name = "body"
    inputs = ("body_params",)
    outputs = ("joints", "vertices")
    budget_ms = 20.0

    def __init__(self, model):
        self.model = model
        self.exclusive_device = str(getattr(model, "device", "cpu")).startswith("cuda")

    def process(self, packet: Packet) -> Packet:
        import torch

        people = [p for p in packet.people if p.global_orient is not None]
        if not people:
            return packet
        as_tensor = lambda name: torch.from_numpy(np.stack([getattr(p, name) for p in people]).astype(np.float32))  # noqa: E731
        with torch.inference_mode():
            out = self.model(as_tensor("global_orient"), as_tensor("body_pose").reshape(len(people), 23, 3),
                             as_tensor("betas"), as_tensor("transl"))
        vertices = out.vertices.detach().to("cpu", torch.float32).numpy()
        joints = out.joints.detach().to("cpu", torch.float32).numpy()
        for k, person in enumerate(people):
            person.vertices = np.ascontiguousarray(vertices[k])
            person.joints = np.ascontiguousarray(joints[k])
        return packet


@dataclass
class PublishOptions:
    vertices: bool = True
    vertices_dtype: str = "float32"  # or "float16"
    keypoints: bool = True  # False when no pose stage runs (no keypoints array at all)
    source_name: str | None = None  # topic suffix: meshstream.frame.<source_name>


def frame_message(packet: Packet, options: PublishOptions, width: int | None = None,
                  height: int | None = None) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """Header fields and (name, array) buffers of one frame message (protocol v1).

    Per-person arrays are stacked: row i belongs to header["people"][i]. An array is sent
    only when every person in the frame has it (so shapes stay rectangular).
    """
    frame = packet.frame
    people = packet.people
    fields = {
        "frame_index": frame.index,
        "pts_s": frame.pts_s,
        "t_capture_ns": frame.t_capture_ns,
        "width": width or frame.width,
        "height": height or frame.height,
        "people": [{"id": int(p.track_id), "score": round(float(p.score), 5),
                    "bbox": [round(float(v), 2) for v in (p.bbox if p.bbox is not None else (0, 0, 0, 0))]}
                   for p in people],
    }
    arrays: list[tuple[str, np.ndarray]] = []
    have = lambda name: all(getattr(p, name) is not None for p in people)  # noqa: E731
    if options.keypoints and have("keypoints"):
        arrays.append(("keypoints", np.stack([p.keypoints for p in people]).astype(np.float32, copy=False)
                       if people else np.zeros((0, 33, 3), np.float32)))
    if people:
        for name, shape in (("global_orient", (3,)), ("body_pose", (23, 3)), ("betas", (-1,)), ("transl", (3,)),
                            ("joints", (24, 3))):
            if have(name):
                arrays.append((name, np.stack([np.asarray(getattr(p, name), np.float32).reshape(shape) for p in people])))
        if options.vertices and have("vertices"):
            dtype = np.float16 if options.vertices_dtype == "float16" else np.float32
            arrays.append(("vertices", np.stack([p.vertices for p in people]).astype(dtype, copy=False)))
    return fields, arrays


class PublishStage(Stage):
    """Publishes each packet on a :class:`stream.publisher.Publisher` (never blocks)."""

    name = "publish"
    inputs = ("frame",)
    outputs = ("published",)
    budget_ms = 5.0

    def __init__(self, publisher, options: PublishOptions | None = None):
        self.publisher = publisher
        self.options = options or PublishOptions()
        from stream.protocol import FRAME_TOPIC

        self.topic = FRAME_TOPIC + (f".{self.options.source_name}" if self.options.source_name else "")
        self.publish_latency_ms: list[float] = []

    def process(self, packet: Packet) -> Packet:
        fields, arrays = frame_message(packet, self.options)
        self.publisher.publish(fields, arrays, topic=self.topic)
        import time

        self.publish_latency_ms.append((time.monotonic_ns() - packet.frame.t_capture_ns) / 1e6)
        return packet

    def close(self) -> None:
        self.publisher.release_thread_socket()


class WriterStage(Stage):
    """Adds each packet to a writer (anything with ``add(packet)`` and ``close()``) and
    finalizes the file on close."""

    name = "writer"
    inputs = ("frame",)
    outputs = ()
    budget_ms = 5.0

    def __init__(self, writer):
        self.writer = writer

    def process(self, packet: Packet) -> Packet:
        self.writer.add(packet)
        return packet

    def close(self) -> None:
        self.writer.close()


class ResultsStage(WriterStage):
    """The results file (:class:`stream.writers.NpzWriter`)."""

    name = "results"
    budget_ms = 5.0


class OverlayStage(WriterStage):
    """The overlay video (:class:`stream.writers.OverlayVideoWriter`)."""

    name = "overlay"
    budget_ms = 30.0


def load_body_model_for(spec: str | None, device: str = "cpu"):
    """The body model for ``spec`` ("open" or a path), or None if engines.body is not installed.

    Raises the loader's error (with its advice) when the package exists but the model does not load.
    """
    if not spec or not module_exists("engines.body"):
        if spec and spec != "open":
            log.warning("engines.body is not installed: --body-model %s is ignored", spec)
        return None
    from engines.body import load_body_model

    return load_body_model(spec, device=device)


def topology_fields(body_model, intrinsics, width: int, height: int, source: dict | None = None,
                    lifter: bool = False, stages: list[str] | None = None) -> tuple[dict, list[tuple[str, np.ndarray]]]:
    """Header fields and arrays of the meta (topology) message."""
    from engines.skeleton import BLAZEPOSE_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS

    fields = {
        "keypoint_names": list(BLAZEPOSE_NAMES),
        "joint_names": list(getattr(body_model, "joint_names", SMPL_JOINT_NAMES)),
        "parents": [int(v) for v in (getattr(body_model, "parents", None) if body_model is not None else SMPL_PARENTS)],
        "body_model": getattr(body_model, "model_id", None),
        "num_vertices": int(getattr(body_model, "num_vertices", 0)) if body_model is not None else 0,
        "has_body": bool(lifter and body_model is not None),
        "intrinsics": {"fx": intrinsics[0], "fy": intrinsics[1], "cx": intrinsics[2], "cy": intrinsics[3],
                       "width": width, "height": height},
        "source": source or {},
        "stages": list(stages or []),
    }
    arrays = []
    if body_model is not None:
        arrays.append(("faces", np.ascontiguousarray(np.asarray(body_model.faces), dtype=np.int32)))
    return fields, arrays


class LiftStage(Stage):
    """Keypoints -> bodies: per tracked person, global_orient, body_pose, betas and transl in the
    camera frame (stream.reconstruct.BodyReconstructor: the lifter when one is shipped, the
    anchored SMPLify-style fit, per-track smoothing and one shape per track).

    smoothing: "auto" (two-sided "rts" under the offline policy, the causal
    stream.smoothing.LIVE_SMOOTHING live), "rts", "one-euro", "kalman" or "none". With "rts"
    the stage holds each frame until ``smoothing_lag`` later frames have come
    (stream.smoothing.FixedLagSmoother) and releases frames in order; the ones still held come
    out at the end of the stream (:meth:`flush`). "rts" is refused live: holding frames would
    count as overload there.

    Under overload (live) the fit runs fewer iterations (and none at all when a lifter gives
    an answer to fall back on) rather than letting latency grow.
    """

    name = "lift"
    inputs = ("people", "track_id")
    outputs = ("body_params",)
    budget_ms = 60.0

    def __init__(self, body_model, fov_deg: float = 60.0, smoothing: str = "auto", refine: bool = True,
                 fit_iterations: int = 6, fit_tolerance: float = 0.003, fit_anchor: float | None = None,
                 lifter=None, lifter_shape: bool = False, smoothing_lag: int | None = None):
        from stream.smoothing import RTS_LAG_FRAMES, SMOOTHING_CHOICES

        if smoothing not in SMOOTHING_CHOICES:
            raise ValueError(f"unknown smoothing {smoothing!r}; choose one of {', '.join(SMOOTHING_CHOICES)}")
        self.body_model = body_model
        self.fov_deg = fov_deg
        self.smoothing = smoothing
        self.smoothing_lag = RTS_LAG_FRAMES if smoothing_lag is None else int(smoothing_lag)
        self.refine = refine
        self.fit_iterations = fit_iterations
        self.fit_tolerance = fit_tolerance
        self.fit_anchor = fit_anchor
        self.lifter = lifter
        self.lifter_shape = lifter_shape
        self.reconstructor = None
        self.fixed_lag = None
        self._last_t_s: float | None = None

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        from stream.reconstruct import BodyReconstructor
        from stream.smoothing import FixedLagSmoother, resolve_smoothing

        kind = resolve_smoothing(self.smoothing, context.policy)
        if kind == "rts":
            if context.policy == "live":
                raise ValueError("--smoothing rts holds frames back (two-sided smoothing) and cannot run live; "
                                 "use auto, one-euro or kalman, or process the file offline")
            self.fixed_lag = FixedLagSmoother(lag_frames=self.smoothing_lag)
        self.smoothing_used = kind
        self.reconstructor = BodyReconstructor(self.body_model, lifter=self.lifter,
                                               smoothing="none" if kind == "rts" else kind,
                                               refine=self.refine, fit_iterations=self.fit_iterations,
                                               fit_tolerance=self.fit_tolerance,
                                               lifter_shape=self.lifter_shape, fit_anchor=self.fit_anchor)
        self.fit_ms = self.reconstructor.warm_up()
        # Live, the fit runs only if this machine affords it within the stage's budget; with a
        # lifter to answer alone, frames are not made late by a fit that cannot keep up.
        self.fit_affordable = not (context.policy == "live" and self.lifter is not None and self.refine
                                   and self.fit_ms > self.budget_ms)
        if not self.fit_affordable:
            log.info("lift: the fit takes %.0f ms per person here (budget %.0f ms): live frames use the "
                     "lifter alone; `meshstream process` fits every frame", self.fit_ms, self.budget_ms)

    def _intrinsics(self, frame) -> np.ndarray:
        given = getattr(self.context, "info", {}).get("intrinsics") if hasattr(self, "context") else None
        fx, fy, cx, cy = given if given is not None else default_intrinsics(frame.width, frame.height, self.fov_deg)
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float32)

    def process(self, packet: Packet) -> Packet:
        """One packet, smoothed causally (or not at all); with "rts" use :meth:`process_batch`."""
        released = self.process_batch([packet])
        if len(released) != 1:
            raise RuntimeError("LiftStage with rts smoothing holds packets: call process_batch and flush")
        return released[0]

    def process_batch(self, packets: list[Packet]) -> list[Packet]:
        """Bodies for each packet; returns the packets ready to go on, in order (with "rts":
        those ``smoothing_lag`` frames old, so fewer than given at first)."""
        out: list[Packet] = []
        for packet in packets:
            t_s, people, bodies = self._reconstruct(packet, out)
            if self.fixed_lag is None:
                _set_bodies(people, bodies)
                out.append(packet)
                continue
            for (held_packet, held_people), smoothed in self.fixed_lag.push(
                    t_s, (packet, people), [p.track_id for p in people], bodies):
                _set_bodies(held_people, smoothed)
                out.append(held_packet)
        return out

    def flush(self) -> list[Packet]:
        """The frames the two-sided smoother still holds, smoothed with what came after them."""
        if self.fixed_lag is None:
            return []
        out = []
        for (packet, people), smoothed in self.fixed_lag.flush():
            _set_bodies(people, smoothed)
            out.append(packet)
        return out

    def _reconstruct(self, packet: Packet, released: list[Packet]):
        """(t_s, people with keypoints, their bodies before any two-sided smoothing)."""
        frame = packet.frame
        t_s = frame.pts_s if frame.pts_s is not None else frame.t_capture_ns / 1e9
        if self._last_t_s is not None and t_s < self._last_t_s:
            # The timeline restarted (a reconnected stream): release what is held, start over.
            released.extend(self.flush())
            self.reconstructor.reset()
            if self.fixed_lag is not None:
                self.fixed_lag.reset()
        self._last_t_s = t_s
        people = [p for p in packet.people if p.keypoints is not None and p.bbox is not None]
        # Degrade: with a lifter, skip the fit from the first level (the lifter answers alone);
        # without one, halve the fit's iterations per level.
        level = getattr(self.context, "degrade_level", 0)
        fitter = self.reconstructor.fitter
        fitter.iterations = max(1, self.fit_iterations >> level)
        self.reconstructor.refine = self.refine and self.fit_affordable and not (level >= 1 and self.lifter is not None)
        have_world = bool(people) and all(p.world_landmarks is not None for p in people)
        result = self.reconstructor(
            t_s,
            np.stack([p.bbox for p in people]) if people else np.zeros((0, 4), np.float32),
            np.stack([p.keypoints for p in people]) if people else np.zeros((0, 33, 3), np.float32),
            self._intrinsics(frame),
            world_landmarks=np.stack([p.world_landmarks for p in people]) if have_world else None,
            masks=[p.mask for p in people],
            track_ids=np.array([p.track_id for p in people], np.int64) if people and all(p.track_id >= 0 for p in people) else None,
        )
        for person, track_id in zip(people, result.track_ids):
            person.track_id = int(track_id)
        return t_s, people, result.bodies


def _set_bodies(people: list[Person], bodies) -> None:
    """Copy each body's parameters onto its person (people without a body are left as they are)."""
    for person, body in zip(people, bodies):
        if body is None:
            continue
        person.global_orient = body.global_orient
        person.body_pose = body.body_pose
        person.betas = body.betas
        person.transl = body.transl
