"""A world frame for a static camera, found from the people's feet: the floor, the camera's
height, pitch and roll, and each person's root motion and foot contacts in that frame.

World frame (docs/world.md): metres, y up, the floor is y = 0, the origin is the point of the
floor straight below the camera (the camera is at (0, h, 0)), z points back toward the camera
(the camera looks along -z, tilted by its pitch), x = y cross z (to the camera's right when it
has no roll). For a level camera this is the camera frame turned half a turn about x and raised
by h, the frame the animation exporters already used.

Pieces, each usable alone:

- :func:`fit_floor`: a plane through points on the floor (soles of standing feet), robust to
  points off it, pulled toward an "up" prior where the points do not fix it (all on a line);
- :class:`Floor`: the fitted plane with the camera's height, pitch, roll and the camera-to-world
  transform;
- :class:`FloorEstimator`: collects sole points of still feet over time and refits;
- :class:`WorldTracker`: per person, the root's world position and orientation, per-foot
  contact flags (height above the floor and speed, with hysteresis) and, optionally, foot
  locking (the root is shifted so that contact feet do not slide).

Everything is numpy on small arrays: a few hundred microseconds a person per frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

# SMPL joints: (ankle, foot) of the left and the right side; pelvis (root) and neck.
FOOT_JOINTS = ((7, 10), (8, 11))
PELVIS, NECK = 0, 12
# BlazePose keypoints of each foot: ankle, heel, foot index (left, right).
FOOT_KEYPOINTS = ((27, 29, 31), (28, 30, 32))
# Height of the ankle and foot joints above the sole of a flat foot (the open model's rest pose:
# 7.7 and 2.7 cm), for when only joints are known (no vertices).
JOINT_ABOVE_SOLE_M = (0.077, 0.027)

# Contact rule (hysteresis): a foot touches down when its sole is within CONTACT_ON_M of the floor
# and it moves slower than CONTACT_ON_SPEED; it lifts off when above CONTACT_OFF_M or faster than
# CONTACT_OFF_SPEED. Speeds are horizontal, metres per second, of the slower of ankle and foot
# joint (a heel that is down keeps the ankle still; a toe that is down keeps the foot joint still).
CONTACT_ON_M, CONTACT_OFF_M = 0.05, 0.08
CONTACT_ON_SPEED, CONTACT_OFF_SPEED = 0.80, 1.20
# Floor samples: feet slower than this (m/s, camera frame) are taken as standing.
STILL_FOOT_SPEED = 0.60


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass(frozen=True)
class Floor:
    """The floor plane in the camera frame: ``normal . p + offset`` is the height of the
    camera-frame point p (metres) above the floor; ``normal`` (3,) is a unit vector pointing up.

    samples: how many sole points the fit used.
    """

    normal: np.ndarray
    offset: float
    samples: int = 0

    @property
    def camera_height_m(self) -> float:
        """The camera's height above the floor, metres."""
        return float(self.offset)

    @property
    def camera_pitch_deg(self) -> float:
        """How far the camera's optical axis points below the horizon, degrees (negative: above)."""
        return math.degrees(math.asin(float(np.clip(-self.normal[2], -1.0, 1.0))))

    @property
    def camera_roll_deg(self) -> float:
        """Rotation of the camera about its optical axis, degrees; positive when its right side is
        raised (the horizon then runs down to the right in the image)."""
        return math.degrees(math.atan2(float(self.normal[0]), float(-self.normal[1])))

    def heights(self, points: np.ndarray) -> np.ndarray:
        """Height above the floor of camera-frame points (..., 3) -> (...), metres."""
        return np.asarray(points, np.float64) @ self.normal + self.offset

    def rotation(self) -> np.ndarray:
        """(3, 3) camera-to-world rotation; its rows are the world axes in camera coordinates."""
        y = _unit(self.normal)
        back = np.array([0.0, 0.0, -1.0])
        z = back - (back @ y) * y
        if np.linalg.norm(z) < 1e-6:  # looking straight down: take the image's up as "back"
            z = np.array([0.0, -1.0, 0.0]) - (-y[1]) * y
        z = _unit(z)
        return np.stack([np.cross(y, z), y, z])

    def camera_to_world(self) -> tuple[np.ndarray, np.ndarray]:
        """(R (3, 3), t (3,)): a camera-frame point p is at ``R @ p + t`` in the world frame."""
        return self.rotation(), np.array([0.0, self.offset, 0.0])

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) -> world frame (..., 3), metres."""
        rotation, translation = self.camera_to_world()
        return np.asarray(points, np.float64) @ rotation.T + translation

    def as_dict(self) -> dict:
        """JSON-ready: the frame header's ``world`` object (docs/PROTOCOL.md)."""
        rotation, translation = self.camera_to_world()
        matrix = np.concatenate([rotation, translation[:, None]], axis=1)
        return {"floor": [round(float(v), 6) for v in (*self.normal, self.offset)],
                "camera_to_world": [[round(float(v), 6) for v in row] for row in matrix],
                "camera_height_m": round(self.camera_height_m, 4),
                "camera_pitch_deg": round(self.camera_pitch_deg, 3),
                "camera_roll_deg": round(self.camera_roll_deg, 3),
                "samples": int(self.samples)}


def blend_floors(old: Floor, new: Floor, weight: float) -> Floor:
    """A floor ``weight`` (0..1) of the way from ``old`` to ``new`` (normal and offset), so that a
    live world frame moves smoothly when the floor is refitted."""
    normal = _unit((1.0 - weight) * old.normal + weight * new.normal)
    return Floor(normal, (1.0 - weight) * old.offset + weight * new.offset, new.samples)


def fit_floor(points: np.ndarray, up_prior=(0.0, -1.0, 0.0), prior_m2: float = 0.01,
              inlier_m: float = 0.03, iterations: int = 6) -> Floor:
    """The plane through camera-frame sole points (N, 3), metres.

    Robust (iteratively reweighted, Cauchy weights with scale ``inlier_m``), and regularised:
    the normal minimises ``n' C n + prior_m2 * |n - (n . u) u|^2`` with C the weighted
    covariance of the points and u the up prior, so that where the points spread less than
    about sqrt(prior_m2) (one person stepping in place, a straight walk) the normal stays near
    the prior, and where they spread more the points decide. The normal points to the prior's
    side.
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if len(points) < 3:
        raise ValueError(f"a floor needs at least 3 points; got {len(points)}")
    up = _unit(up_prior)
    across = np.eye(3) - np.outer(up, up)
    normal = up
    offset = -float(np.median(points @ normal))
    for _ in range(iterations):
        residual = points @ normal + offset
        weights = 1.0 / (1.0 + (residual / inlier_m) ** 2)
        mean = weights @ points / weights.sum()
        centred = points - mean
        covariance = (centred * weights[:, None]).T @ centred / weights.sum()
        _, vectors = np.linalg.eigh(covariance + prior_m2 * across)
        normal = vectors[:, 0] if vectors[:, 0] @ up >= 0 else -vectors[:, 0]
        offset = -float(mean @ normal)
    return Floor(normal, offset, len(points))


def foot_vertex_indices(lbs_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of the left and the right foot (ankle down): those skinned mostly to the
    ankle and foot joints. lbs_weights (V, 24) -> two int arrays of vertex indices."""
    weights = np.asarray(lbs_weights)
    return tuple(np.flatnonzero(weights[:, list(side)].sum(axis=1) > 0.5) for side in FOOT_JOINTS)


def feet_seen(keypoints: np.ndarray | None, width: int, height: int, min_visibility: float = 0.5) -> np.ndarray:
    """Whether each foot (left, right) is seen: its BlazePose ankle, heel and toe keypoints
    (33, 3) visible and inside the image. -> (2,) bool (all True without keypoints)."""
    if keypoints is None:
        return np.ones(2, bool)
    keypoints = np.asarray(keypoints)
    out = np.empty(2, bool)
    for side, indices in enumerate(FOOT_KEYPOINTS):
        x, y, visibility = keypoints[list(indices)].T
        out[side] = bool(((visibility > min_visibility) & (x >= 0) & (x < width) & (y >= 0) & (y < height)).all())
    return out


def sole_points(joints: np.ndarray, up: np.ndarray, foot_vertices: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The lowest point of each foot along ``up``: (2, 3) (left, right), camera frame, metres.

    foot_vertices: each foot's vertices (K, 3) (the sole is the lowest of them); without them,
    the ankle and foot joints (24, 3) lowered by their height above a flat sole.
    """
    up = _unit(up)
    out = np.empty((2, 3))
    for side in range(2):
        if foot_vertices is not None:
            verts = np.asarray(foot_vertices[side], np.float64)
            out[side] = verts[int(np.argmin(verts @ up))]
        else:
            candidates = [np.asarray(joints[j], np.float64) - JOINT_ABOVE_SOLE_M[k] * up
                          for k, j in enumerate(FOOT_JOINTS[side])]
            out[side] = min(candidates, key=lambda p: float(p @ up))
    return out


class FloorEstimator:
    """The floor of a static camera's scene, from the feet of the people in it over time.

    Each frame, :meth:`observe` takes each person's joints (and foot vertices when known); the
    sole of a foot that is still (slower than ``still_speed`` m/s), seen, and not clearly above
    the person's other foot is kept as a floor sample (the last ``max_samples``). The "up" prior
    is the mean direction from the soles to the neck (people stand), without roll by default
    (:attr:`up_prior`); the samples override it where they spread more than about
    sqrt(prior_m2). :attr:`floor` is refitted (:func:`fit_floor`) every ``refit_every``
    observed frames once ``min_samples`` are in; it is None before.
    """

    def __init__(self, max_samples: int = 6000, min_samples: int = 30, refit_every: int = 10,
                 still_speed: float = STILL_FOOT_SPEED, prior_m2: float = 0.01, level_prior: bool = True):
        self.level_prior = level_prior
        self.max_samples = max_samples
        self.min_samples = min_samples
        self.refit_every = refit_every
        self.still_speed = still_speed
        self.prior_m2 = prior_m2
        self.reset()

    def reset(self) -> None:
        self.samples: deque = deque(maxlen=self.max_samples)
        self._up_sum = np.zeros(3)
        self._previous: dict[int, tuple[float, np.ndarray]] = {}
        self._since_fit = 0
        self.floor: Floor | None = None

    @property
    def up(self) -> np.ndarray:
        """The current up direction, camera frame: the floor's normal, else the prior."""
        if self.floor is not None:
            return self.floor.normal
        return self.up_prior

    @property
    def up_prior(self) -> np.ndarray:
        """The up direction before the feet decide: the people's mean body axis (their pitch),
        turned to no roll when ``level_prior`` (tripods, webcams and wall cameras are seldom
        rolled; a monocular body's sideways lean is less reliable than that)."""
        axis = self._up_sum.copy() if self._up_sum.any() else np.array([0.0, -1.0, 0.0])
        if self.level_prior:
            axis[0] = 0.0
        return _unit(axis) if axis.any() else np.array([0.0, -1.0, 0.0])

    def observe(self, t_s: float, people) -> None:
        """One frame: people is a list of (track_id, joints (24, 3), foot vertices or None) or
        (track_id, joints, foot vertices, seen (2,) bool), camera frame, metres; a foot that is
        not ``seen`` (its keypoints hidden or outside the image) gives no floor sample."""
        up = self.up
        for track_id, joints, feet, *rest in people:
            seen = np.asarray(rest[0], bool) if rest and rest[0] is not None else np.ones(2, bool)
            joints = np.asarray(joints, np.float64)
            if not np.isfinite(joints).all():
                continue
            soles = sole_points(joints, up, feet)
            feet_joints = joints[[j for side in FOOT_JOINTS for j in side]].reshape(2, 2, 3)
            body_axis = joints[NECK] - soles.mean(axis=0)
            if np.linalg.norm(body_axis) > 0.8:  # roughly upright (a standing adult: about 1.4 m)
                self._up_sum += _unit(body_axis)
            previous = self._previous.get(track_id)
            self._previous[track_id] = (t_s, feet_joints)
            if previous is None or not 0 < t_s - previous[0] < 0.5:
                continue
            speed = np.linalg.norm(feet_joints - previous[1], axis=-1).min(axis=-1) / (t_s - previous[0])  # (2,)
            heights = soles @ up
            for side in range(2):
                if seen[side] and speed[side] < self.still_speed and heights[side] < heights.min() + 0.05:
                    self.samples.append(soles[side])
        for gone in [k for k, (seen_s, _) in self._previous.items() if t_s - seen_s > 2.0]:
            del self._previous[gone]
        self._since_fit += 1
        if len(self.samples) >= self.min_samples and (self.floor is None or self._since_fit >= self.refit_every):
            self.refit()

    def refit(self) -> Floor | None:
        """Fit the floor to the samples now (None while there are fewer than min_samples)."""
        if len(self.samples) < self.min_samples:
            return self.floor
        self.floor = fit_floor(np.asarray(self.samples), self.up_prior, prior_m2=self.prior_m2)
        self._since_fit = 0
        return self.floor


@dataclass
class PersonWorld:
    """One person in one frame, world frame (metres, y up, floor at y = 0).

    root (3,): the root joint (pelvis) position; orient (3,): the root's orientation, axis-angle
    radians; contact (2,) bool: left, right foot on the floor; sole_height (2,): each foot's
    lowest point above the floor, metres; correction (3,): what foot locking added to the root.
    """

    root: np.ndarray
    orient: np.ndarray
    contact: np.ndarray
    sole_height: np.ndarray
    correction: np.ndarray


@dataclass
class _Track:
    t_s: float
    feet: np.ndarray | None = None  # (2, 2, 3) world ankle and foot joints, uncorrected
    contact: np.ndarray = field(default_factory=lambda: np.zeros(2, bool))
    anchors: np.ndarray = field(default_factory=lambda: np.full((2, 3), np.nan))
    correction: np.ndarray = field(default_factory=lambda: np.zeros(3))


class WorldTracker:
    """Each person's world-frame root, orientation and foot contacts, frame by frame.

    lock_feet: shift each person's root (horizontally) so that a foot in contact stays where it
    touched down: the correction is the mean over contact feet of (touch-down position - where
    the foot is now). A contact foot that moves faster than ``follow_speed`` m/s between two
    frames (at 30 fps: 7 cm) is taken to pivot or slide for real, and its touch-down point
    moves with it that frame (smaller motion is the estimate's jitter, and is held). It may creep back toward zero by ``release_speed`` m/s while feet are
    down (at 30 fps: 1 mm a frame), is never more than ``max_correction_m`` (the foot slides
    rather), and decays with time constant ``decay_s`` while no foot is down, so the locked path
    cannot wander from the estimate. Causal: the current frame's correction
    uses only this and earlier frames (no added latency).
    """

    def __init__(self, lock_feet: bool = False, release_speed: float = 0.03, decay_s: float = 0.5,
                 max_correction_m: float = 0.10, follow_speed: float = 2.0, forget_after_s: float = 1.0):
        self.lock_feet = lock_feet
        self.follow_speed = follow_speed
        self.max_correction_m = max_correction_m
        self.release_speed = release_speed
        self.decay_s = decay_s
        self.forget_after_s = forget_after_s
        self._tracks: dict[int, _Track] = {}

    def reset(self) -> None:
        self._tracks.clear()

    def update(self, floor: Floor, t_s: float, track_id: int, joints: np.ndarray, global_orient: np.ndarray,
               foot_vertices=None, next_joints: tuple[float, np.ndarray] | None = None) -> PersonWorld:
        """One person in one frame: joints (24, 3) and global_orient (3,) in the camera frame;
        foot_vertices: (left (K, 3), right (K, 3)) camera frame, or None; next_joints: (t_s,
        joints) of the same person in the next frame, when known (offline: speeds from both
        neighbours)."""
        rotation, translation = floor.camera_to_world()
        joints_w = np.asarray(joints, np.float64) @ rotation.T + translation
        orient = Rotation.from_matrix(rotation @ Rotation.from_rotvec(np.asarray(global_orient, np.float64)).as_matrix())
        soles = sole_points(joints, floor.normal, foot_vertices)
        sole_height = floor.heights(soles)
        feet = joints_w[[j for side in FOOT_JOINTS for j in side]].reshape(2, 2, 3)

        track = self._tracks.get(track_id)
        if track is None or not 0 < t_s - track.t_s <= self.forget_after_s:
            track = _Track(t_s)
            self._tracks[track_id] = track
        dt = t_s - track.t_s
        speed = None
        if next_joints is not None and 0 < next_joints[0] - t_s <= self.forget_after_s:
            next_w = np.asarray(next_joints[1], np.float64) @ rotation.T + translation
            next_feet = next_w[[j for side in FOOT_JOINTS for j in side]].reshape(2, 2, 3)
            if track.feet is not None and dt > 0:
                speed = _horizontal(next_feet - track.feet) / (next_joints[0] - t_s + dt)
            else:
                speed = _horizontal(next_feet - feet) / (next_joints[0] - t_s)
        elif track.feet is not None and dt > 0:
            speed = _horizontal(feet - track.feet) / dt
        if speed is not None:
            slowest = speed.min(axis=1)  # (2,)
            for side in range(2):
                if track.contact[side]:
                    track.contact[side] = not (sole_height[side] > CONTACT_OFF_M or slowest[side] > CONTACT_OFF_SPEED)
                else:
                    track.contact[side] = bool(sole_height[side] < CONTACT_ON_M and slowest[side] < CONTACT_ON_SPEED)
        if self.lock_feet:
            self._lock(track, feet[:, 1], None if track.feet is None else track.feet[:, 1], dt)
        track.t_s, track.feet = t_s, feet
        return PersonWorld(joints_w[PELVIS] + track.correction, orient.as_rotvec(), track.contact.copy(),
                           sole_height, track.correction.copy())

    def _lock(self, track: _Track, foot: np.ndarray, previous: np.ndarray | None, dt: float) -> None:
        """Update the track's root correction from its contact feet (foot, previous (2, 3): the
        foot joints now and in the frame before, world frame, uncorrected)."""
        wanted = []
        for side in range(2):
            if not track.contact[side]:
                track.anchors[side] = np.nan
                continue
            if not np.isfinite(track.anchors[side]).all():  # touch-down: stay where it is shown now
                track.anchors[side] = foot[side] + track.correction
            elif previous is not None and dt > 0:
                moved = foot[side] - previous[side]
                moved[1] = 0.0
                if np.linalg.norm(moved) > self.follow_speed * dt:  # a real pivot or slide: let it through
                    track.anchors[side] = track.anchors[side] + moved
            target = track.anchors[side] - foot[side]
            target[1] = 0.0
            # Creep back toward the estimate (a bounded slide), and never more than
            # max_correction_m from it, so that the locked path cannot wander off.
            norm = float(np.linalg.norm(target))
            if norm > 0:
                kept = min(max(norm - self.release_speed * max(dt, 0.0), 0.0), self.max_correction_m)
                target = target * (kept / norm)
                track.anchors[side] = foot[side] + target
            wanted.append(target)
        if wanted:
            track.correction = np.mean(wanted, axis=0)
        elif dt > 0:
            track.correction = track.correction * math.exp(-dt / self.decay_s)

    def forget_unseen(self, t_s: float) -> None:
        for track_id in [k for k, v in self._tracks.items() if t_s - v.t_s > self.forget_after_s]:
            del self._tracks[track_id]


def _horizontal(delta: np.ndarray) -> np.ndarray:
    """Length of the horizontal (x, z) part of world-frame displacements (..., 3) -> (...)."""
    return np.hypot(delta[..., 0], delta[..., 2])
