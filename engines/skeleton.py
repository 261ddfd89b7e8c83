"""Names and trees shared by every model: SMPL's 24 joints, BlazePose's 33 keypoints, COCO's 17.

Paper-style names (pelvis, spine1, ...) follow SMPL's own joint order, which the wire protocol
and the results files use.
"""

from __future__ import annotations

from enum import IntEnum

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)

# Parent of each SMPL joint (-1 for the root). Every parent comes before its children.
SMPL_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)

NUM_SMPL_JOINTS = 24
NUM_BODY_POSE_JOINTS = 23  # all but the root, whose rotation is global_orient
NUM_BETAS = 10

# Left/right pairs of SMPL joints, for mirroring poses.
SMPL_MIRROR: tuple[int, ...] = (
    0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22,
)

BLAZEPOSE_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
NUM_KEYPOINTS = 33

# Left/right pairs of BlazePose keypoints, for mirroring.
BLAZEPOSE_MIRROR: tuple[int, ...] = (
    0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21,
    24, 23, 26, 25, 28, 27, 30, 29, 32, 31,
)

# Line segments drawn for a BlazePose skeleton (pairs of keypoint indices).
BLAZEPOSE_EDGES: tuple[tuple[int, int], ...] = (
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24),
    (23, 25), (25, 27), (27, 29), (29, 31), (27, 31), (24, 26), (26, 28), (28, 30), (30, 32), (28, 32),
    (15, 17), (15, 19), (15, 21), (17, 19), (16, 18), (16, 20), (16, 22), (18, 20),
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10),
)

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# COCO-17 keypoints are a subset of BlazePose's 33: index into the 33 for each COCO keypoint.
COCO17_FROM_BLAZEPOSE: tuple[int, ...] = tuple(BLAZEPOSE_NAMES.index(name) for name in COCO17_NAMES)


# Names for indices: Joint.LEFT_KNEE == 4 (SMPL's 24 joints), Landmark.LEFT_WRIST == 15
# (BlazePose's 33 keypoints), so that code reads joints[:, Joint.LEFT_KNEE] rather than joints[:, 4].
Joint = IntEnum("Joint", {name.upper(): i for i, name in enumerate(SMPL_JOINT_NAMES)})
Landmark = IntEnum("Landmark", {name.upper(): i for i, name in enumerate(BLAZEPOSE_NAMES)})
