"""Structurally valid SMPL-format and SMPL-X-format model files, random but well formed.

The real files are licence-gated and not available to tests and benchmarks, so they write files
with the official layout (keys, shapes, dtypes, kintree_table, sparse J_regressor) and random
contents, and compare meshstream's skinning with the smplx package's on them.

``write_chumpy_pickle`` writes the arrays the way the official SMPL .pkl files hold them: as
objects of class ``chumpy.ch.Ch`` whose state keeps the array in ``x``. The class is a local
stand-in registered under chumpy's module path only while pickling, so the file really
references chumpy and loading it proves the reader does not need chumpy.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from engines.skeleton import SMPL_PARENTS

SMPL_VERTICES = 6890
SMPLX_VERTICES = 10475
_ROOT_PARENT = 4294967295  # the official files store the root's parent as uint32 -1


def smplx_parents(with_face: bool = True) -> list[int]:
    """SMPL-X's 55-joint tree: SMPL's first 22, jaw and eyes under the head, 15 per hand
    (index, middle, pinky, ring, thumb; three joints each). Without the face: SMPL+H's 52."""
    parents = list(SMPL_PARENTS[:22]) + ([15, 15, 15] if with_face else [])
    for wrist in (20, 21):
        for _finger in range(5):  # index, middle, pinky, ring, thumb: three joints each
            parents += [wrist, len(parents), len(parents) + 1]
    return parents


def _body_arrays(rng: np.random.Generator, num_vertices: int, parents: list[int], num_shape: int) -> dict:
    num_joints = len(parents)
    # A rough body: vertices spread over a 1.7 m tall, 0.5 m wide box.
    v_template = rng.uniform([-0.25, -1.0, -0.12], [0.25, 0.7, 0.12], size=(num_vertices, 3))
    shapedirs = rng.normal(0.0, 0.01, size=(num_vertices, 3, num_shape))
    posedirs = rng.normal(0.0, 0.002, size=(num_vertices, 3, (num_joints - 1) * 9))
    # Each joint regressed from 12 vertices with positive weights summing to 1 (sparse, like SMPL's).
    rows, cols, vals = [], [], []
    for joint in range(num_joints):
        chosen = rng.choice(num_vertices, size=12, replace=False)
        weights = rng.dirichlet(np.ones(12))
        rows += [joint] * 12
        cols += chosen.tolist()
        vals += weights.tolist()
    J_regressor = scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(num_joints, num_vertices))
    # Each vertex skinned to 4 joints.
    weights = np.zeros((num_vertices, num_joints))
    chosen = np.argsort(rng.random((num_vertices, num_joints)), axis=1)[:, :4]
    np.put_along_axis(weights, chosen, rng.dirichlet(np.ones(4), size=num_vertices), axis=1)
    kintree_table = np.array([[_ROOT_PARENT] + parents[1:], list(range(num_joints))], dtype=np.int64)
    faces = rng.integers(0, num_vertices, size=(2 * num_vertices - 4, 3)).astype(np.uint32)
    return dict(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=J_regressor,
                weights=weights, kintree_table=kintree_table, f=faces)


def smpl_arrays(seed: int = 0) -> dict:
    """An SMPL-format dictionary: 6890 vertices, 24 joints, 10 betas, 207 pose correctives."""
    return _body_arrays(np.random.default_rng(seed), SMPL_VERTICES, list(SMPL_PARENTS), 10)


def _hand_arrays(rng: np.random.Generator) -> dict:
    return dict(hands_componentsl=rng.normal(size=(45, 45)), hands_componentsr=rng.normal(size=(45, 45)),
                hands_meanl=rng.normal(0, 0.1, size=45), hands_meanr=rng.normal(0, 0.1, size=45))


def smplh_arrays(seed: int = 2) -> dict:
    """An SMPL+H-format dictionary: 6890 vertices, 52 joints, 10 betas, hand PCA."""
    rng = np.random.default_rng(seed)
    arrays = _body_arrays(rng, SMPL_VERTICES, smplx_parents(with_face=False), 10)
    arrays.update(_hand_arrays(rng))
    return arrays


def smplx_arrays(seed: int = 1) -> dict:
    """An SMPL-X-format dictionary: 10475 vertices, 55 joints, 10 betas + 10 expressions."""
    rng = np.random.default_rng(seed)
    arrays = _body_arrays(rng, SMPLX_VERTICES, smplx_parents(), 20)
    arrays["J_regressor"] = arrays["J_regressor"].toarray()  # the .npz files hold it dense
    num_faces = len(arrays["f"])
    arrays.update(_hand_arrays(rng))
    arrays.update(
        lmk_faces_idx=rng.integers(0, num_faces, size=51), lmk_bary_coords=rng.dirichlet(np.ones(3), size=51),
        dynamic_lmk_faces_idx=rng.integers(0, num_faces, size=(79, 17)),
        dynamic_lmk_bary_coords=rng.dirichlet(np.ones(3), size=(79, 17)),
    )
    return arrays


def write_plain_pickle(arrays: dict, path: Path) -> Path:
    """The arrays as a latin-1-readable pickle of numpy arrays (what smplx.SMPL reads)."""
    with open(path, "wb") as handle:
        pickle.dump(arrays, handle, protocol=2)
    return path


def write_chumpy_pickle(arrays: dict, path: Path) -> Path:
    """The arrays pickled the way the official SMPL files are: numpy arrays wrapped in objects
    whose class is ``chumpy.ch.Ch`` (state: the array in ``x`` plus chumpy's bookkeeping), and
    the joint regressor as a sparse matrix under SciPy's old module path
    ``scipy.sparse.csc.csc_matrix`` (removed from current SciPy)."""

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self._itr = None

    class csc_matrix:  # noqa: N801 - the name old SciPy pickled, under its old private module
        def __init__(self, matrix):
            self.__dict__.update(matrix.__dict__)

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    csc_matrix.__module__, csc_matrix.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    fakes = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "scipy.sparse.csc")}
    fakes["chumpy.ch"].Ch = Ch
    fakes["chumpy"].ch = fakes["chumpy.ch"]
    fakes["scipy.sparse.csc"].csc_matrix = csc_matrix
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        wrapped = {key: Ch(value) if key in ("v_template", "shapedirs", "posedirs", "weights") else value
                   for key, value in arrays.items()}
        if scipy.sparse.issparse(wrapped.get("J_regressor")):
            wrapped["J_regressor"] = csc_matrix(scipy.sparse.csc_matrix(wrapped["J_regressor"]))
        with open(path, "wb") as handle:
            pickle.dump(wrapped, handle, protocol=2)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


def write_npz(arrays: dict, path: Path) -> Path:
    dense = {k: (v.toarray() if scipy.sparse.issparse(v) else v) for k, v in arrays.items()}
    np.savez(path, **dense)
    return path
