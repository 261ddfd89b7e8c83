"""From one frame's detected people to tracked, fitted, smoothed bodies.

:class:`BodyReconstructor` is the "lift, refine, track and smooth" part of the pipeline, usable
alone (a script, a test) or inside a pipeline stage. Per frame:

1. Track: stable ids for the detections (:class:`stream.tracking.Tracker`), unless the caller
   gives them (the pipeline tracks in a stage of its own).
2. Select: people with fewer than ``min_visible_keypoints`` visible keypoints, or no visible
   shoulder or hip, get no body (never a guess); the lifter's own rule.
3. Lift: the learned lifter's pose, shape and translation, when a lifter is given; it anchors
   the fit and gives the shape.
4. Shape: one shape per track: the track's consolidated betas once they have settled, else the
   lifter's when ``lifter_shape`` is on, else the average body (zeros).
5. Refine: the SMPLify-style fit (:class:`engines.fit.BodyFitter`) to the keypoints and world
   landmarks, warm-started from the track's previous fit; skipped when ``refine`` is off (the
   pipeline turns it off under overload), leaving the lifter's answer.
6. Smooth: per track (:class:`stream.smoothing.SmootherBank`), with dt from timestamps; tracks
   that expire are forgotten.

The result per person: global_orient (3,), body_pose (23,3), betas (10,), transl (3,) float32 in
the camera frame, or None when the person gets no body.
"""

from __future__ import annotations

import logging
import math
import time
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from engines.fit import ANCHORED_WEIGHTS, BodyFitter, FitWeights, GaussianPosePrior
from stream.smoothing import BodyParams, SmootherBank
from stream.tracking import Tracker

log = logging.getLogger("meshstream.reconstruct")

# BlazePose indices of the torso: a body is fitted only when some of it is seen.
_TORSO = (11, 12, 23, 24)


@dataclass
class Reconstruction:
    """One frame's people, in the detections' order: ids (P,) int64 and a body or None each."""

    track_ids: np.ndarray
    bodies: list[BodyParams | None]
    fit_reprojection_px: np.ndarray  # (P,) NaN where there is no fit


class BodyReconstructor:
    """Tracks people and turns their keypoints into bodies, frame after frame.

    Args:
        body_model: an engines.body BodyModel (its landmarks are fitted to the keypoints).
        lifter: an engines.lift Lifter, or None (then the fit starts from the world landmarks).
        smoothing: "one-euro", "kalman" or "none".
        refine: run the fit (step 5).
        fit_iterations: the most Levenberg-Marquardt iterations per frame of the fit.
        fit_tolerance: a person's fit stops early once an iteration lowers its energy by less
            than this fraction (0.003: on held-out sequences the same accuracy, 30 % less time).
        min_visible_keypoints: fewer keypoints with visibility >= 0.5 means no body.
        pose_prior: "gmm" (the shipped Gaussian mixture) or "simple".
        tracker: the tracker used when the caller gives no ids (default: a new Tracker).
        forget_after_s: a track unseen this long loses its state (previous fit, smoothing, shape).
        lifter_shape: take the shape (betas) from the lifter's silhouette network. Off by default:
            trained on synthetic silhouettes, it does not yet transfer to real masks (on the real
            sample clip it raised the fit's error from 3.3 to 9.5 px); the average body is used.
        fit_weights: the fit's energy weights (default: engines.fit.ANCHORED_WEIGHTS with a lifter,
            engines.fit.FitWeights() without).
        fit_anchor: the rotation anchor weight to use instead of the weights' own (with a lifter:
            larger trusts the lifter's joint rotations over the keypoints; its depths are held by
            the weights' anchor_depth either way; `--fit-anchor`).
    """

    def __init__(
        self,
        body_model,
        lifter=None,
        smoothing: str = "one-euro",
        refine: bool = True,
        fit_iterations: int = 6,
        fit_tolerance: float = 0.003,
        min_visible_keypoints: int = 8,
        pose_prior: str = "gmm",
        tracker: Tracker | None = None,
        forget_after_s: float = 2.0,
        lifter_shape: bool = False,
        fit_weights: FitWeights | None = None,
        fit_anchor: float | None = None,
    ):
        from engines.body.sparse import LandmarkPoser

        self.body_model = body_model
        self.lifter = lifter
        self.refine = refine
        self.forget_after_s = forget_after_s
        self.lifter_shape = lifter_shape
        self.min_visible_keypoints = min_visible_keypoints
        self.tracker = tracker or Tracker()
        self.smoothers = SmootherBank(smoothing)
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
        self._previous: dict[int, tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._shapes: dict[int, np.ndarray] = {}

    def warm_up(self) -> float:
        """Run fits on a made-up person, so the first real frame does not pay the one-off
        start-up costs (vectorised differentiation traces the code on first use). Returns the
        time of a warm-started fit of one person, in ms: what the fit costs per frame here."""
        from engines.fit import project

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
        """Forget every track (a new video)."""
        self.tracker.reset()
        self.smoothers = SmootherBank(self.smoothers.kind, **self.smoothers.params)
        self._previous.clear()
        self._shapes.clear()

    def __call__(
        self,
        t_s: float,
        boxes: np.ndarray,
        keypoints: np.ndarray,
        intrinsics: np.ndarray,
        world_landmarks: np.ndarray | None = None,
        masks: list[np.ndarray | None] | None = None,
        track_ids: np.ndarray | None = None,
    ) -> Reconstruction:
        """One frame.

        Args:
            t_s: the frame's time, seconds (pts or capture time; only differences matter).
            boxes: (P,4) x0, y0, x1, y1 pixels. keypoints: (P,33,3) x, y pixels, visibility.
            intrinsics: (3,3) pinhole matrix, pixels.
            world_landmarks: (P,33,3) metres, hip-centred, camera-aligned; or None.
            masks: per person a (H,W) float mask in [0,1], or None (used by the lifter).
            track_ids: (P,) ids from a tracker run by the caller; None to track here.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, 33, 3)
        count = len(boxes)
        # 1. Track (or take the caller's ids); forget the state of tracks long gone.
        if track_ids is None:
            ids = self.tracker.update(t_s, boxes, keypoints)
        else:
            ids = np.asarray(track_ids, np.int64).reshape(count)
        for track, (seen_s, *_) in list(self._previous.items()):
            if t_s - seen_s > self.forget_after_s or t_s < seen_s:
                self.smoothers.forget(track)
                self._previous.pop(track, None)
                self._shapes.pop(track, None)
        bodies: list[BodyParams | None] = [None] * count
        reprojection = np.full(count, np.nan, np.float32)
        # 2. Select.
        visible = keypoints[..., 2] >= 0.5
        chosen = [i for i in range(count)
                  if visible[i].sum() >= self.min_visible_keypoints and visible[i, list(_TORSO)].any()]
        if chosen:
            kp = torch.from_numpy(keypoints[chosen])
            world = None if world_landmarks is None else torch.from_numpy(np.asarray(world_landmarks, np.float32)[chosen])
            K = torch.from_numpy(np.asarray(intrinsics, np.float32))
            # 3. Lift.
            anchor = None
            lifted_betas = None
            lifted = None
            if self.lifter is not None:
                from engines.lift import crop_masks

                chosen_boxes = torch.from_numpy(boxes[chosen])
                crops = None
                if masks is not None and all(masks[i] is not None for i in chosen):
                    crops = torch.cat([crop_masks(masks[i], chosen_boxes[row:row + 1]) for row, i in enumerate(chosen)])
                lifted = self.lifter(kp, chosen_boxes, K, world, crops)
                if not bool(lifted.valid.all()):  # the lifter refuses these too: no body, not a guess
                    keep = lifted.valid.nonzero().flatten().tolist()
                    chosen = [chosen[k] for k in keep]
                    kp, lifted = kp[keep], lifted.select(torch.tensor(keep, dtype=torch.long))
                    world = None if world is None else world[keep]
                anchor = (lifted.global_orient.float(), lifted.body_pose.float())
                lifted_betas = lifted.betas.float()
        if chosen:
            # 4. Shape per track.
            betas = torch.zeros(len(chosen), 10)
            for row, i in enumerate(chosen):
                settled = self._shapes.get(int(ids[i]))
                if settled is not None:
                    betas[row] = torch.from_numpy(settled)
                elif lifted_betas is not None and self.lifter_shape:
                    betas[row] = lifted_betas[row]
            # 5. Refine.
            if self.refine or lifted is None:
                previous = self._previous_fits([int(ids[i]) for i in chosen], t_s)
                result = self.fitter.fit(kp, K, betas, world_landmarks=world, anchor=anchor, previous=previous)
                orient, pose, transl = result.global_orient, result.body_pose, result.transl
                reprojection[chosen] = result.reprojection_px.numpy()
            else:
                orient, pose, transl = anchor[0], anchor[1], lifted.transl.float()
            # 6. Smooth.
            for row, i in enumerate(chosen):
                track = int(ids[i])
                raw = BodyParams(orient[row].numpy().astype(np.float32), pose[row].numpy().astype(np.float32),
                                 transl[row].numpy().astype(np.float32), betas[row].numpy().astype(np.float32))
                self._previous[track] = (t_s, raw.global_orient, raw.body_pose, raw.transl)
                smoothed = self.smoothers.update(t_s, track, raw)
                bodies[i] = smoothed
                smoother = self.smoothers.smoothers.get(track)
                if smoother is not None and smoother.shape is not None and smoother.shape.frozen:
                    self._shapes[track] = smoother.shape.estimate.astype(np.float32)
        return Reconstruction(ids.astype(np.int64), bodies, reprojection)

    def _previous_fits(self, tracks: list[int], t_s: float, max_gap_s: float = 0.5):
        """(orient (P,3), pose (P,23,3), transl (P,3)) of each track's last fit, NaN rows where none is recent."""
        if not any(t in self._previous for t in tracks):
            return None
        orient = torch.full((len(tracks), 3), float("nan"))
        pose = torch.full((len(tracks), 23, 3), float("nan"))
        transl = torch.full((len(tracks), 3), float("nan"))
        for row, track in enumerate(tracks):
            entry = self._previous.get(track)
            if entry is not None and t_s - entry[0] <= max_gap_s:
                orient[row] = torch.from_numpy(entry[1])
                pose[row] = torch.from_numpy(entry[2])
                transl[row] = torch.from_numpy(entry[3])
        return orient, pose, transl
