"""Landmark regressors (BlazePose-33, COCO-17) for SMPL-topology and SMPL-X-topology models.

Each landmark is a weighted sum of a few vertices and SMPL joints (see
:class:`engines.body.model.LandmarkRegressor`).

Sources of the vertex indices: the per-topology vertex ids that the smplx package publishes
for OpenPose/COCO keypoints (``smplx/vertex_ids.py``: nose, eyes, ears, fingertips, big/small
toes, heels), read as facts. Points without a published vertex are derived, and are
approximations:
- BlazePose shoulders, elbows, wrists, hips, knees, ankles: SMPL's joints of the same name.
- eye inner/outer corners: the eye vertex moved 24% of the inter-eye distance towards /
  away from the midline (an adult's eye is about 3 cm wide, eyes about 6.3 cm apart).
- mouth corners: from nose, eyes and ears (below the nose, 40% of the eye spacing sideways).
- pinky/index knuckles: 55% of the way from the wrist joint to the fingertip; thumb
  (BlazePose's second thumb knuckle): 75% of the way to the thumb tip.
- foot index: midway between the big and small toe tips.
"""

from __future__ import annotations

import numpy as np

from engines.body.model import LandmarkRegressor
from engines.skeleton import BLAZEPOSE_NAMES, COCO17_FROM_BLAZEPOSE, NUM_SMPL_JOINTS, SMPL_JOINT_NAMES

# Vertex ids per topology (facts from smplx's vertex_ids; "left" is the body's left, +x).
VERTEX_IDS = {
    "smpl": dict(nose=332, reye=6260, leye=2800, rear=4071, lear=583, rthumb=6191, rindex=5782,
                 rpinky=6133, lthumb=2746, lindex=2319, lpinky=2673, lbigtoe=3216, lsmalltoe=3226,
                 lheel=3387, rbigtoe=6617, rsmalltoe=6624, rheel=6787),
    "smplx": dict(nose=9120, reye=9929, leye=9448, rear=616, lear=6, rthumb=8079, rindex=7669,
                  rpinky=8022, lthumb=5361, lindex=4933, lpinky=5286, lbigtoe=5770, lsmalltoe=5780,
                  lheel=8846, rbigtoe=8463, rsmalltoe=8474, rheel=8635),
}
NUM_VERTICES = {"smpl": 6890, "smplx": 10475}

_JOINT_LANDMARKS = {
    "left_shoulder": "left_shoulder", "right_shoulder": "right_shoulder",
    "left_elbow": "left_elbow", "right_elbow": "right_elbow",
    "left_wrist": "left_wrist", "right_wrist": "right_wrist",
    "left_hip": "left_hip", "right_hip": "right_hip", "left_knee": "left_knee",
    "right_knee": "right_knee", "left_ankle": "left_ankle", "right_ankle": "right_ankle",
}


def _recipes(ids: dict[str, int]) -> dict[str, dict]:
    """Each BlazePose landmark as {("v", vertex) or ("j", joint name): weight}."""
    v = lambda name: ("v", ids[name])  # noqa: E731
    j = lambda name: ("j", name)  # noqa: E731
    recipes: dict[str, dict] = {"nose": {v("nose"): 1.0}}
    for side, other in (("l", "r"), ("r", "l")):
        full = "left" if side == "l" else "right"
        eye, other_eye = v(f"{side}eye"), v(f"{other}eye")
        recipes[f"{full}_eye"] = {eye: 1.0}
        recipes[f"{full}_eye_inner"] = {eye: 0.76, other_eye: 0.24}
        recipes[f"{full}_eye_outer"] = {eye: 1.24, other_eye: -0.24}
        recipes[f"{full}_ear"] = {v(f"{side}ear"): 1.0}
        recipes[f"mouth_{full}"] = {v("nose"): 1.45, eye: 0.4 - 0.275, other_eye: -0.4 - 0.275,
                                    v(f"{side}ear"): 0.05, v(f"{other}ear"): 0.05}
        wrist = j(f"{full}_wrist")
        recipes[f"{full}_pinky"] = {wrist: 0.45, v(f"{side}pinky"): 0.55}
        recipes[f"{full}_index"] = {wrist: 0.45, v(f"{side}index"): 0.55}
        recipes[f"{full}_thumb"] = {wrist: 0.25, v(f"{side}thumb"): 0.75}
        recipes[f"{full}_heel"] = {v(f"{side}heel"): 1.0}
        recipes[f"{full}_foot_index"] = {v(f"{side}bigtoe"): 0.5, v(f"{side}smalltoe"): 0.5}
    for landmark, joint in _JOINT_LANDMARKS.items():
        recipes[landmark] = {j(joint): 1.0}
    return recipes


def regressor_from_recipes(recipes: dict[str, dict], names: tuple[str, ...]) -> LandmarkRegressor:
    """Pack {name: {("v", index) | ("j", joint name): weight}} into a LandmarkRegressor."""
    width = max(1, max(sum(1 for key in recipes[n] if key[0] == "v") for n in names))
    index = np.zeros((len(names), width), np.int64)
    weight = np.zeros((len(names), width), np.float64)
    joint_weight = np.zeros((len(names), NUM_SMPL_JOINTS), np.float64)
    for row, name in enumerate(names):
        column = 0
        for (kind, key), w in recipes[name].items():
            if kind == "v":
                index[row, column], weight[row, column] = key, w
                column += 1
            else:
                joint_weight[row, SMPL_JOINT_NAMES.index(key)] += w
    return LandmarkRegressor(index, weight, joint_weight)


def smpl_family_landmarks(topology: str) -> tuple[LandmarkRegressor, LandmarkRegressor]:
    """(BlazePose-33, COCO-17) regressors for topology "smpl" (6890 vertices, also SMPL+H) or
    "smplx" (10475 vertices)."""
    recipes = _recipes(VERTEX_IDS[topology])
    coco_names = tuple(BLAZEPOSE_NAMES[i] for i in COCO17_FROM_BLAZEPOSE)
    return regressor_from_recipes(recipes, BLAZEPOSE_NAMES), regressor_from_recipes(recipes, coco_names)
