"""3D body accuracy measures, one definition for the whole project (numpy, batch first).

Every function is unit-agnostic: the result is in the inputs' unit (metres in, metres out).
Definitions, as in the literature (docs/accuracy.md): MPJPE after aligning the pelvis joints
(SMPL joint 0); PA-MPJPE after the best similarity transform (Umeyama, no reflection); PVE with
each mesh's pelvis at the origin; acceleration error from second differences of pelvis-aligned
joints. ``stream.evaluation`` (``meshstream eval``) and the lifter's tools
(``meshstream_tools.lift_metrics``, torch in and out) both use these.
"""

from __future__ import annotations

import numpy as np

PELVIS = 0  # SMPL joint 0




def pelvis_aligned(points: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Points (N, K, 3) minus each instance's pelvis joints[:, 0] (N, 24, 3)."""
    return points - joints[:, PELVIS:PELVIS + 1]


def mpjpe(pred_joints: np.ndarray, gt_joints: np.ndarray) -> np.ndarray:
    """Mean per-joint position error after aligning the pelvis joints: (N, J, 3) x2 -> (N,)."""
    diff = pelvis_aligned(pred_joints, pred_joints) - pelvis_aligned(gt_joints, gt_joints)
    return np.linalg.norm(diff, axis=-1).mean(axis=-1)


def procrustes_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Best similarity transform (scale, rotation, translation) of source onto target, least squares.

    source, target (N, J, 3) -> aligned source (N, J, 3), float64. Umeyama's closed form with
    the reflection excluded (engines.geometry.procrustes).
    """
    import torch

    from engines.geometry import procrustes

    points = torch.from_numpy(np.asarray(source, dtype=np.float64))
    scale, rotation, translation = procrustes(points, torch.from_numpy(np.asarray(target, dtype=np.float64)),
                                              with_scale=True)
    aligned = scale[:, None, None] * points @ rotation.transpose(1, 2) + translation[:, None]
    return aligned.numpy()


def pa_mpjpe(pred_joints: np.ndarray, gt_joints: np.ndarray) -> np.ndarray:
    """Mean per-joint error after similarity Procrustes alignment of pred to gt: (N, J, 3) x2 -> (N,)."""
    aligned = procrustes_align(pred_joints, gt_joints)
    return np.linalg.norm(aligned - gt_joints, axis=-1).mean(axis=-1)


def pve(pred_vertices, gt_vertices, pred_joints, gt_joints) -> np.ndarray:
    """Mean per-vertex error with each mesh translated so its pelvis joint is at the origin -> (N,)."""
    diff = pelvis_aligned(pred_vertices, pred_joints) - pelvis_aligned(gt_vertices, gt_joints)
    return np.linalg.norm(diff, axis=-1).mean(axis=-1)


def acceleration_error(pred_joints: np.ndarray, gt_joints: np.ndarray) -> np.ndarray:
    """Per-frame acceleration error of one track over consecutive frames: (T, J, 3) x2 -> (T - 2,).

    Accelerations are second differences x[t+1] - 2 x[t] + x[t-1] of pelvis-aligned joints
    (units per frame^2); the error is the mean over joints of the norm of their difference.
    """
    if pred_joints.shape[0] < 3:
        return np.zeros(0)
    p = pelvis_aligned(pred_joints, pred_joints)
    g = pelvis_aligned(gt_joints, gt_joints)
    accel_p = p[2:] - 2 * p[1:-1] + p[:-2]
    accel_g = g[2:] - 2 * g[1:-1] + g[:-2]
    return np.linalg.norm(accel_p - accel_g, axis=-1).mean(axis=-1)
