"""The body model every part of meshstream uses: one API for the open model and SMPL-family files.

:class:`BodyModel` is a stateless ``nn.Module`` that holds only buffers (template, shape and pose
directions, joint regressor folded into joint shape directions, skinning weights, parents,
landmark regressors). Calling it poses a batch of bodies::

    out = model(global_orient (B,3), body_pose (B,23,3), betas (B,10), transl (B,3))
    out.vertices (B,V,3), out.joints (B,24,3), out.landmarks (B,33,3), out.landmarks_coco (B,17,3)

Shape-dependent quantities (shaped vertices, rest joints) are cached between calls whose betas
are equal (a tracked person's shape is constant): the cache is keyed on the betas' values,
dtype and device, so a changed shape is never served stale. ``cache_hits``/``cache_misses``
count its use. Under ``torch.export``/``torch.compile`` the cache and the input checks are
skipped, so the exported graph is the pure skinning path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from engines.body.skinning import KinematicLevels, pose_rotations, shape_joints, shape_vertices, skin
from engines.skeleton import COCO17_FROM_BLAZEPOSE, NUM_BETAS, NUM_KEYPOINTS, NUM_SMPL_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS


@dataclass
class BodyOutput:
    """A posed batch of bodies, in the frame of global_orient/transl (metres).

    vertices (B,V,3); joints (B,24,3) SMPL order; landmarks (B,33,3) BlazePose order;
    landmarks_coco (B,17,3) COCO order.
    """

    vertices: Tensor
    joints: Tensor
    landmarks: Tensor
    landmarks_coco: Tensor


# A pytree node, so torch.export/compile can return it from a traced graph.
torch.export.register_dataclass(BodyOutput, serialized_type_name="engines.body.BodyOutput")


@dataclass
class LandmarkRegressor:
    """Sparse landmark definition: each landmark is a weighted sum of a few vertices and joints.

    vertex_index (L,K) int64, vertex_weight (L,K), joint_weight (L,24); rows sum to 1 overall.
    """

    vertex_index: np.ndarray
    vertex_weight: np.ndarray
    joint_weight: np.ndarray

    def validate(self, num_vertices: int, num_landmarks: int, name: str) -> None:
        if self.vertex_index.shape != self.vertex_weight.shape or self.vertex_index.ndim != 2:
            raise ValueError(f"{name} landmark regressor: index {self.vertex_index.shape} and weight "
                             f"{self.vertex_weight.shape} must be equal (L,K) shapes")
        if self.vertex_index.shape[0] != num_landmarks or self.joint_weight.shape != (num_landmarks, NUM_SMPL_JOINTS):
            raise ValueError(f"{name} landmark regressor must have {num_landmarks} rows and a "
                             f"({num_landmarks},24) joint part; got {self.vertex_index.shape}, {self.joint_weight.shape}")
        if self.vertex_index.size and (self.vertex_index.min() < 0 or self.vertex_index.max() >= num_vertices):
            raise ValueError(f"{name} landmark regressor indexes vertices outside 0..{num_vertices - 1}")
        totals = self.vertex_weight.sum(1) + self.joint_weight.sum(1)
        if not np.allclose(totals, 1.0, atol=1e-3):
            raise ValueError(f"{name} landmark regressor rows must sum to 1; got {totals.round(3).tolist()}")


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class BodyModel(nn.Module):
    """An SMPL-style body model with SMPL's 24-joint tree.

    Buffers: v_template (V,3) and lbs_weights (V,24) (public layout); for the skinning path,
    coordinate-major v_template_t (3,V), shapedirs (10, 3*V), posedirs (207, 3*V) or None and
    lbs_weights_t (24,V); j_template (24,3) and j_shapedirs (10, 72) (the joint regressor folded
    in); parents_tensor (24,) int64; the BlazePose-33 and COCO-17 landmark regressors, stacked.
    Attributes for publishing: faces (F,3) int64 numpy, joint_names, parents (numpy), model_id,
    num_vertices.
    """

    def __init__(
        self,
        *,
        v_template: np.ndarray,
        shapedirs: np.ndarray,
        J_regressor: np.ndarray,
        lbs_weights: np.ndarray,
        faces: np.ndarray,
        landmarks: LandmarkRegressor,
        landmarks_coco: LandmarkRegressor,
        model_id: str,
        posedirs: np.ndarray | None = None,
        parents: tuple[int, ...] = SMPL_PARENTS,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        """v_template (V,3) metres; shapedirs (V,3,NB>=10) SMPL layout (first 10 used);
        J_regressor (24,V) dense; lbs_weights (V,24); faces (F,3); posedirs (V,3,207) or None."""
        super().__init__()
        if dtype not in (torch.float32, torch.float64, torch.float16):
            raise TypeError(f"dtype must be float16, float32 or float64, not {dtype}")
        v_template = np.asarray(v_template, dtype=np.float64)
        num_vertices = v_template.shape[0]
        shapedirs = np.asarray(shapedirs, dtype=np.float64)
        if v_template.shape != (num_vertices, 3) or shapedirs.shape[:2] != (num_vertices, 3) or shapedirs.ndim != 3:
            raise ValueError(f"v_template must be (V,3) and shapedirs (V,3,NB); got {v_template.shape}, {shapedirs.shape}")
        if shapedirs.shape[2] < NUM_BETAS:
            raise ValueError(f"shapedirs has {shapedirs.shape[2]} shape directions; at least {NUM_BETAS} are needed")
        shapedirs = shapedirs[:, :, :NUM_BETAS]
        J_regressor = np.asarray(J_regressor, dtype=np.float64)
        if J_regressor.shape != (NUM_SMPL_JOINTS, num_vertices):
            raise ValueError(f"J_regressor must be (24,{num_vertices}); got {J_regressor.shape}")
        lbs_weights = np.asarray(lbs_weights, dtype=np.float64)
        if lbs_weights.shape != (num_vertices, NUM_SMPL_JOINTS):
            raise ValueError(f"lbs weights must be ({num_vertices},24); got {lbs_weights.shape}")
        if len(parents) != NUM_SMPL_JOINTS:
            raise ValueError(f"parents must list 24 joints; got {len(parents)}")
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= num_vertices:
            raise ValueError(f"faces must be (F,3) indices into {num_vertices} vertices")
        landmarks.validate(num_vertices, NUM_KEYPOINTS, "BlazePose")
        landmarks_coco.validate(num_vertices, len(COCO17_FROM_BLAZEPOSE), "COCO")

        self.model_id = model_id
        self.faces = faces
        self.joint_names = SMPL_JOINT_NAMES
        self.num_vertices = num_vertices
        self._levels = KinematicLevels.from_parents(tuple(int(p) for p in parents))
        self._parents_np = np.asarray(parents, dtype=np.int64)
        self.cache_hits = 0
        self.cache_misses = 0
        self._cache: tuple[Tensor, tuple[Tensor, Tensor]] | None = None

        def buffer(name, array, dt=dtype):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array)).to(device=device, dtype=dt))

        buffer("v_template", v_template)  # (V,3), the public layout
        # The skinning path's coordinate-major layout (see engines.body.skinning).
        buffer("v_template_t", v_template.T)  # (3,V)
        buffer("shapedirs", shapedirs.transpose(2, 1, 0).reshape(NUM_BETAS, -1))  # (10, 3*V)
        # The joint regressor, folded: computed in float64, stored in the model's dtype.
        buffer("j_template", J_regressor @ v_template)
        buffer("j_shapedirs", np.einsum("jv,vcb->bjc", J_regressor, shapedirs).reshape(NUM_BETAS, -1))
        buffer("lbs_weights", lbs_weights)  # (V,24)
        buffer("lbs_weights_t", lbs_weights.T)  # (24,V)
        if posedirs is not None:
            posedirs = np.asarray(posedirs, dtype=np.float64)
            expected = (num_vertices, 3, (NUM_SMPL_JOINTS - 1) * 9)
            if posedirs.shape != expected:
                raise ValueError(f"posedirs must be {expected}; got {posedirs.shape}")
            buffer("posedirs", posedirs.transpose(2, 1, 0).reshape(expected[2], -1))  # (207, 3*V)
        else:
            self.posedirs = None
        self.register_buffer("parents_tensor", torch.as_tensor(self._parents_np, device=device))
        # Both landmark regressors as one (BlazePose rows, then COCO rows, padded to the same
        # width), so the forward gathers once.
        width = max(landmarks.vertex_index.shape[1], landmarks_coco.vertex_index.shape[1])

        def padded(array):
            return np.pad(array, ((0, 0), (0, width - array.shape[1])))

        buffer("_landmark_index", np.concatenate([padded(landmarks.vertex_index), padded(landmarks_coco.vertex_index)]).astype(np.int64), torch.int64)
        buffer("_landmark_weight", np.concatenate([padded(landmarks.vertex_weight), padded(landmarks_coco.vertex_weight)]))
        buffer("_landmark_joint_weight", np.concatenate([landmarks.joint_weight, landmarks_coco.joint_weight]))

    # -- public attributes --------------------------------------------------------------------
    @property
    def parents(self) -> np.ndarray:
        """(24,) int64 numpy, -1 for the root."""
        return self._parents_np.copy()

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def has_pose_correctives(self) -> bool:
        return self.posedirs is not None

    def _chain_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == torch.float16 else self.dtype

    # -- shape ---------------------------------------------------------------------------------
    def rest_joints(self, betas: Tensor) -> Tensor:
        """Joints in the rest pose (T-pose) for these shapes: betas (B,10) -> (B,24,3)."""
        if not _compiling():
            self._check("betas", betas, (NUM_BETAS,))
        return shape_joints(self.j_template, self.j_shapedirs, betas)

    def rest_vertices(self, betas: Tensor) -> Tensor:
        """Vertices in the rest pose for these shapes: betas (B,10) -> (B,V,3)."""
        if not _compiling():
            self._check("betas", betas, (NUM_BETAS,))
        return shape_vertices(self.v_template_t, self.shapedirs, betas).transpose(1, 2).contiguous()

    def _shaped(self, betas: Tensor) -> tuple[Tensor, Tensor]:
        """(v_shaped (B,3,V), rest joints (B,24,3)), from the cache when betas are unchanged."""
        if _compiling():
            return shape_vertices(self.v_template_t, self.shapedirs, betas), shape_joints(self.j_template, self.j_shapedirs, betas)
        cached = self._cache  # one read: (betas, (v_shaped, rest joints)) or None; safe across threads
        if cached is not None:
            key, value = cached
            if (key.shape == betas.shape and key.dtype == betas.dtype and key.device == betas.device
                    and torch.equal(key, betas)):
                self.cache_hits += 1
                return value
        self.cache_misses += 1
        value = (shape_vertices(self.v_template_t, self.shapedirs, betas),
                 shape_joints(self.j_template, self.j_shapedirs, betas))
        if not betas.requires_grad:  # never cache a graph: the next backward would reuse it
            self._cache = (betas.detach().clone(), value)
        return value

    def clear_cache(self) -> None:
        """Forget the cached shape (it is also replaced whenever betas change)."""
        self._cache = None

    def _apply(self, fn, *args, **kwargs):  # .to()/.half()/.cuda() invalidate the cache
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    # -- checks --------------------------------------------------------------------------------
    def _check(self, name: str, value: Tensor, trailing: tuple[int, ...], batch: int | None = None,
               check_finite: bool = True) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, not {type(value).__name__}")
        if value.ndim != 1 + len(trailing) or tuple(value.shape[1:]) != trailing:
            expected = ", ".join(["B"] + [str(t) for t in trailing])
            raise ValueError(f"{name} must have shape ({expected}); got {tuple(value.shape)}")
        if batch is not None and value.shape[0] != batch:
            raise ValueError(f"{name} has batch size {value.shape[0]} but global_orient has {batch}; "
                             "give every input the same batch size")
        if value.dtype != self.dtype:
            raise TypeError(f"{name} is {value.dtype} but the model is {self.dtype}; convert the input "
                            f"with .to({self.dtype}) or load the model with dtype={value.dtype}")
        if value.device != self.device:
            raise ValueError(f"{name} is on {value.device} but the model is on {self.device}; move one of them")
        if check_finite and not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values; the body cannot be posed from them")

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor | None = None,
        transl: Tensor | None = None,
    ) -> BodyOutput:
        """Pose a batch of bodies.

        global_orient (B,3) and body_pose (B,23,3) axis-angle radians; betas (B,10) or None
        (zeros: the average body); transl (B,3) metres or None. Returns :class:`BodyOutput`.
        """
        batch = global_orient.shape[0]
        if betas is None:
            betas = torch.zeros(batch, NUM_BETAS, dtype=global_orient.dtype, device=global_orient.device)
        if not _compiling():
            inputs = {"global_orient": global_orient, "body_pose": body_pose, "betas": betas}
            if transl is not None:
                inputs["transl"] = transl
            trailing = {"global_orient": (3,), "body_pose": (NUM_SMPL_JOINTS - 1, 3), "betas": (NUM_BETAS,), "transl": (3,)}
            for name, value in inputs.items():
                self._check(name, value, trailing[name], batch, check_finite=False)
            # One reduction for all inputs: a sum is finite exactly when its terms are (inputs
            # are small: no overflow); name the culprit only on failure.
            total = sum(value.sum(dtype=torch.float32) for value in inputs.values())
            if not torch.isfinite(total):
                for name, value in inputs.items():
                    self._check(name, value, trailing[name], batch)
        v_shaped, rest_joints = self._shaped(betas)
        chain_dtype = self._chain_dtype()
        rotations = pose_rotations(global_orient, body_pose, chain_dtype)
        vertices, joints = skin(v_shaped, rest_joints, rotations, self.parents_tensor, self._levels,
                                self.lbs_weights_t, self.posedirs, chain_dtype)  # vertices (B,3,V)
        if transl is not None:
            vertices = vertices + transl[:, :, None]
            joints = joints + transl[:, None]
        landmarks = self._regress(vertices, joints)
        count = NUM_KEYPOINTS
        return BodyOutput(
            vertices=vertices.transpose(1, 2).contiguous(),
            joints=joints,
            landmarks=landmarks[:, :count].contiguous(),
            landmarks_coco=landmarks[:, count:].contiguous(),
        )

    def _regress(self, vertices: Tensor, joints: Tensor) -> Tensor:
        """BlazePose then COCO landmarks in one pass: vertices (B,3,V), joints (B,24,3) -> (B,33+17,3)."""
        gathered = vertices[:, :, self._landmark_index]  # (B,3,L,K)
        from_vertices = (gathered * self._landmark_weight).sum(-1).transpose(1, 2)
        return from_vertices + self._landmark_joint_weight @ joints

    def extra_repr(self) -> str:
        return (f"model_id={self.model_id!r}, vertices={self.num_vertices}, faces={len(self.faces)}, "
                f"pose_correctives={self.has_pose_correctives}, dtype={self.dtype}")
