"""The lifter: BlazePose keypoints (+ world landmarks) and the person mask -> SMPL parameters.

After Pavlakos et al. 2018: a pose network on the keypoints, a shape network on the silhouette,
a weak-perspective camera turned into a camera-frame translation. Trained by
tools/train_lifter.py (meshstream_tools) on synthetic data made from the body model and CMU motion capture.

    from engines.lift import Lifter, crop_masks
    lifter = Lifter.load()
    result = lifter(keypoints (P,33,3), boxes (P,4), intrinsics (3,3), world (P,33,3) | None,
                    masks (P,64,64) | None)
    result.global_orient (P,3), result.body_pose (P,23,3), result.betas (P,10), result.transl (P,3),
    result.valid (P,) bool
"""

from engines.geometry import project_points
from engines.lift.camera import (camera_to_translation, pixels_to_box, box_to_pixels, square_boxes,
                                 translation_to_camera)
from engines.lift.lifter import (ASSET_PATH, MIN_VISIBLE_KEYPOINTS, VISIBLE_THRESHOLD, Lifter, LiftResult,
                                 crop_masks, enough_evidence)
from engines.lift.network import MASK_SIZE, LiftNetwork

__all__ = [
    "ASSET_PATH", "MASK_SIZE", "MIN_VISIBLE_KEYPOINTS", "VISIBLE_THRESHOLD", "Lifter", "LiftNetwork",
    "LiftResult", "box_to_pixels", "camera_to_translation", "crop_masks", "enough_evidence",
    "pixels_to_box", "project_points", "square_boxes", "translation_to_camera",
]
