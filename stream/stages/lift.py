"""The lift stage: each tracked person's keypoints -> body parameters in the camera frame.

:class:`BodyReconstructor` does the per-frame work and is usable alone (a script, a test);
:class:`LiftStage` runs it in the pipeline. Per frame and tracked person:

1. Select: people without enough visible keypoints get no body, never a guess
   (:func:`engines.lift.lifter.enough_evidence`, the lifter's own rule).
2. Lift: the learned lifter's pose, shape and translation, when a lifter is given; it anchors
   the fit.
3. Shape: one shape per track: the track's consolidated betas once they have settled, else the
   lifter's when ``lifter_shape`` is on, else the average body (zeros). Every body's betas are
   the track's running consolidated estimate (:class:`stream.smoothing.ShapeConsolidator`).
4. Refine: the SMPLify-style fit (:class:`engines.fit.BodyFitter`) to the keypoints and world
   landmarks, warm-started from the track's previous fit; skipped when ``refine`` is off (the
   pipeline turns it off under overload), leaving the lifter's answer.

Tracking happens before (stream.stages.track), smoothing after (stream.stages.smooth).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from engines.fit import ANCHORED_WEIGHTS, BodyFitter, FitWeights, GaussianPosePrior
from stream.frames import Packet
from stream.pipeline import PipelineContext, Stage
from stream.smoothing import BodyParams, ShapeConsolidator

log = logging.getLogger("meshstream.lift")


@dataclass
class _TrackState:
    seen_s: float
    orient: np.ndarray  # (3,) the last fit
    pose: np.ndarray  # (23, 3)
    transl: np.ndarray  # (3,)


class BodyReconstructor:
    """Turns tracked people's keypoints into bodies, frame after frame.

    Args:
        body_model: an engines.body BodyModel (its landmarks are fitted to the keypoints).
        lifter: an engines.lift Lifter, or None (then the fit starts from the world landmarks).
        refine: run the fit (step 4).
        fit_iterations: the most Levenberg-Marquardt iterations per frame of the fit.
        fit_tolerance: a person's fit stops early once an iteration lowers its energy by less
            than this fraction (0.003: on held-out sequences the same accuracy, 30 % less time).
        pose_prior: "gmm" (the shipped Gaussian mixture) or "simple".
        forget_after_s: a track unseen this long loses its state (previous fit, shape).
        lifter_shape: take the shape (betas) from the lifter's silhouette network. Off by default:
            trained on synthetic silhouettes, it does not yet transfer to real masks.
        fit_weights: the fit's energy weights (default: engines.fit.ANCHORED_WEIGHTS with a lifter,
            engines.fit.FitWeights() without).
        fit_anchor: the rotation anchor weight to use instead of the weights' own (`--fit-anchor`).
    """

    def __init__(self, body_model, lifter=None, refine: bool = True, fit_iterations: int = 6,
                 fit_tolerance: float = 0.003, pose_prior: str = "gmm", forget_after_s: float = 2.0,
                 lifter_shape: bool = False, fit_weights: FitWeights | None = None, fit_anchor: float | None = None):
        from engines.body.sparse import LandmarkPoser

        self.body_model = body_model
        self.lifter = lifter
        self.refine = refine
        self.forget_after_s = forget_after_s
        self.lifter_shape = lifter_shape
        self._poser = LandmarkPoser(body_model).float()
        prior = GaussianPosePrior()
        if pose_prior == "gmm":
            from engines.pose_prior import PosePrior

            prior = GaussianPosePrior(PosePrior.load())
        if fit_weights is None:
            fit_weights = ANCHORED_WEIGHTS if lifter is not None else FitWeights()
        if fit_anchor is not None:
            fit_weights = dataclasses.replace(fit_weights, anchor=float(fit_anchor))
        self.fitter = BodyFitter(self._poser, fit_weights, pose_prior=prior,
                                 iterations=fit_iterations, tolerance=fit_tolerance)
        self._tracks: dict[int, _TrackState] = {}
        self._shapes: dict[int, ShapeConsolidator] = {}

    def warm_up(self) -> float:
        """Run fits on a made-up person, so the first real frame does not pay the one-off
        start-up costs. Returns the time of a warm-started fit of one person, in ms: what the
        fit costs per frame here."""
        from engines.geometry import project_points as project

        upright = torch.tensor([[math.pi, 0.0, 0.0]])
        landmarks = self._poser(upright, torch.zeros(1, 23, 3), torch.zeros(1, 10), torch.tensor([[0.0, 0.0, 3.0]]))[0]
        intrinsics = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
        keypoints = torch.cat([project(landmarks, intrinsics), torch.ones(1, 33, 1)], -1)
        world = landmarks - 0.5 * (landmarks[:, 23] + landmarks[:, 24])[:, None]
        first = self.fitter.fit(keypoints, intrinsics, torch.zeros(1, 10), world_landmarks=world)
        previous = (first.global_orient, first.body_pose, first.transl)
        self.fitter.fit(keypoints, intrinsics, torch.zeros(1, 10), world_landmarks=world, previous=previous)
        start = time.perf_counter()
        self.fitter.fit(keypoints, intrinsics, torch.zeros(1, 10), world_landmarks=world, previous=previous)
        return (time.perf_counter() - start) * 1000.0

    def reset(self) -> None:
        """Forget every track (a new timeline)."""
        self._tracks.clear()
        self._shapes.clear()

    def __call__(self, t_s: float, track_ids: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 intrinsics: np.ndarray, world_landmarks: np.ndarray | None = None,
                 masks: list[np.ndarray | None] | None = None, refine: bool | None = None,
                 fit_iterations: int | None = None) -> list[BodyParams | None]:
        """One frame's bodies, in the people's order (None: no body for that person).

        Args:
            t_s: the frame's time, seconds (only differences matter).
            track_ids: (P,) int stable ids (stream.stages.track).
            boxes: (P, 4) x0, y0, x1, y1 pixels. keypoints: (P, 33, 3) x, y pixels, visibility.
            intrinsics: (3, 3) pinhole matrix, pixels.
            world_landmarks: (P, 33, 3) metres, hip-centred, camera-aligned; or None.
            masks: per person a (H, W) float mask in [0, 1], or None (read by the lifter's shape).
            refine, fit_iterations: this frame's choice instead of the reconstructor's (the
                pipeline sheds work under overload).
        Returns per person global_orient (3,), body_pose (23, 3), transl (3,), betas (10,)
        float32, camera frame.
        """
        from engines.lift.lifter import enough_evidence

        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, 33, 3)
        ids = [int(t) for t in np.asarray(track_ids).reshape(len(boxes))]
        for track in [t for t, state in self._tracks.items() if t_s - state.seen_s > self.forget_after_s]:
            self._tracks.pop(track)
            self._shapes.pop(track, None)
        bodies: list[BodyParams | None] = [None] * len(boxes)
        # 1. Select.
        kp = torch.from_numpy(keypoints)
        chosen = enough_evidence(kp).nonzero().flatten().tolist() if len(boxes) else []
        if not chosen:
            return bodies
        kp = kp[chosen]
        world = None if world_landmarks is None else torch.from_numpy(np.asarray(world_landmarks, np.float32)[chosen])
        K = torch.from_numpy(np.asarray(intrinsics, np.float32))
        # 2. Lift.
        anchor = lifted = lifted_betas = None
        if self.lifter is not None:
            from engines.lift import crop_masks

            chosen_boxes = torch.from_numpy(boxes[chosen])
            crops = None
            if masks is not None and all(masks[i] is not None for i in chosen):
                crops = torch.cat([crop_masks(masks[i], chosen_boxes[row:row + 1]) for row, i in enumerate(chosen)])
            lifted = self.lifter(kp, chosen_boxes, K, world, crops)
            anchor = (lifted.global_orient.float(), lifted.body_pose.float())
            lifted_betas = lifted.betas.float()
        # 3. Shape per track: the settled estimate, else the lifter's (when asked), else the average.
        betas = torch.zeros(len(chosen), 10)
        for row, i in enumerate(chosen):
            shape = self._shapes.get(ids[i])
            if shape is not None and shape.frozen:
                betas[row] = torch.from_numpy(shape.estimate.astype(np.float32))
            elif lifted_betas is not None and self.lifter_shape:
                betas[row] = lifted_betas[row]
        # 4. Refine.
        if (self.refine if refine is None else refine) or lifted is None:
            previous = self._previous_fits([ids[i] for i in chosen], t_s)
            result = self.fitter.fit(kp, K, betas, world_landmarks=world, anchor=anchor, previous=previous,
                                     iterations=fit_iterations)
            orient, pose, transl = result.global_orient, result.body_pose, result.transl
        else:
            orient, pose, transl = anchor[0], anchor[1], lifted.transl.float()
        for row, i in enumerate(chosen):
            track = ids[i]
            state = _TrackState(t_s, orient[row].numpy().astype(np.float32), pose[row].numpy().astype(np.float32),
                                transl[row].numpy().astype(np.float32))
            self._tracks[track] = state
            consolidated = self._shapes.setdefault(track, ShapeConsolidator()).update(betas[row].numpy())
            bodies[i] = BodyParams(state.orient, state.pose, state.transl,
                                   None if consolidated is None else consolidated.astype(np.float32))
        return bodies

    def _previous_fits(self, tracks: list[int], t_s: float, max_gap_s: float = 0.5):
        """(orient (P,3), pose (P,23,3), transl (P,3)) of each track's last fit, NaN rows where none is recent."""
        if not any(t in self._tracks for t in tracks):
            return None
        orient = torch.full((len(tracks), 3), float("nan"))
        pose = torch.full((len(tracks), 23, 3), float("nan"))
        transl = torch.full((len(tracks), 3), float("nan"))
        for row, track in enumerate(tracks):
            state = self._tracks.get(track)
            if state is not None and t_s - state.seen_s <= max_gap_s:
                orient[row] = torch.from_numpy(state.orient)
                pose[row] = torch.from_numpy(state.pose)
                transl[row] = torch.from_numpy(state.transl)
        return orient, pose, transl


class LiftStage(Stage):
    """Keypoints -> bodies for every tracked person (:class:`BodyReconstructor`), placed with
    the packet's intrinsics.

    Live, the fit runs only if this machine affords it: when a warm fit of one person takes
    longer than the stage's budget and a lifter can answer alone, live frames take the lifter's
    answer. Under overload the fit is skipped (with a lifter) or runs fewer iterations (without).
    """

    name = "lift"
    inputs = ("people", "track_id")
    outputs = ("body_params",)
    budget_ms = 60.0

    def __init__(self, body_model, lifter=None, refine: bool = True, fit_iterations: int = 6,
                 fit_tolerance: float = 0.003, fit_anchor: float | None = None, lifter_shape: bool = False):
        self.body_model = body_model
        self.lifter = lifter
        self.refine = refine
        self.fit_iterations = fit_iterations
        self.fit_tolerance = fit_tolerance
        self.fit_anchor = fit_anchor
        self.lifter_shape = lifter_shape
        self.reconstructor: BodyReconstructor | None = None

    def open(self, context: PipelineContext) -> None:
        super().open(context)
        self.reconstructor = BodyReconstructor(self.body_model, lifter=self.lifter, refine=self.refine,
                                               fit_iterations=self.fit_iterations, fit_tolerance=self.fit_tolerance,
                                               lifter_shape=self.lifter_shape, fit_anchor=self.fit_anchor)
        self.fit_ms = self.reconstructor.warm_up()
        self.fit_affordable = not (context.policy == "live" and self.lifter is not None and self.refine
                                   and self.fit_ms > self.budget_ms)
        if not self.fit_affordable:
            log.info("lift: the fit takes %.0f ms per person here (budget %.0f ms): live frames use the "
                     "lifter alone; `meshstream process` fits every frame", self.fit_ms, self.budget_ms)

    def process(self, packet: Packet) -> Packet:
        frame = packet.frame
        if frame.new_timeline:
            self.reconstructor.reset()
        if packet.intrinsics is None:
            raise ValueError("the lift stage needs the packet's intrinsics (the pipeline fills them from its camera)")
        # Degrade: with a lifter, skip the fit from the first level (the lifter answers alone);
        # without one, halve the fit's iterations per level.
        level = self.context.degrade_level
        refine = self.refine and self.fit_affordable and not (level >= 1 and self.lifter is not None)
        people = [p for p in packet.people if p.keypoints is not None and p.bbox is not None]
        if not people:
            return packet
        have_world = all(p.world_landmarks is not None for p in people)
        bodies = self.reconstructor(
            frame.t_s, np.array([p.track_id for p in people], np.int64),
            np.stack([p.bbox for p in people]), np.stack([p.keypoints for p in people]),
            packet.intrinsics.matrix(),
            world_landmarks=np.stack([p.world_landmarks for p in people]) if have_world else None,
            masks=[p.mask for p in people], refine=refine, fit_iterations=max(1, self.fit_iterations >> level))
        for person, body in zip(people, bodies):
            if body is not None:
                person.global_orient, person.body_pose = body.global_orient, body.body_pose
                person.transl, person.betas = body.transl, body.betas
        return packet
