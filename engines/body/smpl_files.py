"""Reading SMPL, SMPL+H and SMPL-X model files (.pkl or .npz, a file or a folder) into a BodyModel.

The files themselves are licence-gated (registration at https://smpl.is.tue.mpg.de and
https://smpl-x.is.tue.mpg.de) and never ship with meshstream. This reader takes the arrays
straight from the file and needs neither chumpy nor the smplx package:

- ``.npz``: read with ``allow_pickle=False``.
- ``.pkl``: the official SMPL files are Python-2 pickles of chumpy objects, and chumpy does not
  import on current Python/NumPy. A restricted unpickler resolves only numpy, scipy.sparse and
  copyreg classes, and maps every ``chumpy.*`` class to :class:`_ChumpyArray`, a stand-in that
  keeps the array chumpy stored (its ``x`` attribute). Nothing else can be instantiated, so a
  pickle cannot run arbitrary code through this reader.

SMPL+H and SMPL-X are reduced to SMPL's 24-joint body: their 22 body joints are kept, the
finger joints of each hand fold into SMPL's hand joint (placed at the middle finger's base
knuckle), and jaw and eye joints fold into the head. With zero hand, jaw, eye and expression
parameters this gives exactly the body of the full model.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np

from engines.body.landmarks import NUM_VERTICES, smpl_family_landmarks
from engines.body.model import BodyModel
from engines.skeleton import NUM_SMPL_JOINTS, SMPL_PARENTS

WHERE_FROM = ("SMPL files come from https://smpl.is.tue.mpg.de and SMPL+H/SMPL-X files from "
              "https://smpl-x.is.tue.mpg.de (free registration; the licence is for non-commercial "
              "research); or use load_body_model('open'), which needs no file")

# Names the official downloads use, in order of preference, per gender.
_FILE_NAMES = {
    "neutral": ["SMPL_NEUTRAL", "basicModel_neutral_lbs_10_207_0_v1.0.0", "basicmodel_neutral_lbs_10_207_0_v1.1.0",
                "SMPLX_NEUTRAL", "SMPLH_NEUTRAL", "neutral/model"],
    "male": ["SMPL_MALE", "basicmodel_m_lbs_10_207_0_v1.0.0", "basicModel_m_lbs_10_207_0_v1.0.0",
             "basicmodel_m_lbs_10_207_0_v1.1.0", "SMPLX_MALE", "SMPLH_MALE", "male/model"],
    "female": ["SMPL_FEMALE", "basicModel_f_lbs_10_207_0_v1.0.0", "basicmodel_f_lbs_10_207_0_v1.1.0",
               "SMPLX_FEMALE", "SMPLH_FEMALE", "female/model"],
}
_SUBFOLDERS = ["", "smpl", "smplx", "smplh", "models"]
_REQUIRED = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")

# Index of the middle finger's base knuckle (SMPL's hand joint) among each family's joints.
_HAND_JOINTS = {52: (25, 40), 55: (28, 43)}  # SMPL+H, SMPL-X


class BodyModelFileError(ValueError):
    """A body-model file is missing or is not a usable SMPL-family file."""


class _ChumpyArray:
    """Stand-in for chumpy's classes in a pickle: keeps the state and exposes the stored array."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}

    def array(self) -> np.ndarray:
        value = self.state.get("x")
        if value is None:  # not a plain chumpy array: accept a single stored array, if that is all
            arrays = [v for v in self.state.values() if isinstance(v, (np.ndarray, _ChumpyArray))]
            if len(arrays) != 1:
                raise BodyModelFileError("a chumpy object in the file holds no array ('x')")
            value = arrays[0]
        return value.array() if isinstance(value, _ChumpyArray) else np.asarray(value)


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED_PREFIXES = ("numpy", "scipy.sparse")

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyArray
        if module in ("copy_reg", "copyreg") and name in ("_reconstructor", "__newobj__"):
            return getattr(importlib.import_module("copyreg"), name)
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
            return getattr(importlib.import_module("_codecs"), name)
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset", "slice", "complex"):
            return getattr(importlib.import_module("builtins"), name)
        if module.startswith("scipy.sparse"):
            import scipy.sparse

            if hasattr(scipy.sparse, name):  # old private module paths (scipy.sparse.csc)
                return getattr(scipy.sparse, name)
        if module.startswith(self._ALLOWED_PREFIXES):
            if module.startswith("numpy.core"):  # NumPy 1 pickles under NumPy 2
                module = "numpy._core" + module[len("numpy.core"):]
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a body-model file")


def _to_array(value) -> np.ndarray:
    if isinstance(value, _ChumpyArray):
        return value.array()
    if hasattr(value, "toarray") and "scipy.sparse" in type(value).__module__:
        return value.toarray()
    return np.asarray(value)


def resolve_model_file(path: str | Path, gender: str = "neutral") -> Path:
    """The model file for ``path``: the file itself, or the usual name inside a folder."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if gender not in _FILE_NAMES:
            raise BodyModelFileError(f"gender must be one of {sorted(_FILE_NAMES)}, not {gender!r}")
        for sub in _SUBFOLDERS:
            for stem in _FILE_NAMES[gender]:
                for ext in (".npz", ".pkl"):
                    candidate = path / sub / f"{stem}{ext}"
                    if candidate.is_file():
                        return candidate
        names = ", ".join(f"{n}.pkl/.npz" for n in _FILE_NAMES[gender][:3])
        raise BodyModelFileError(f"no {gender} SMPL-family model file in folder {path} (looked for {names}, "
                                 f"..., also in subfolders smpl/, smplx/, smplh/). {WHERE_FROM}.")
    raise BodyModelFileError(f"body model file {path} does not exist; expected an SMPL/SMPL+H/SMPL-X "
                             f".pkl or .npz file or a folder holding one. {WHERE_FROM}.")


def read_model_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an SMPL-family file, as numpy (no chumpy, no smplx)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                raw = {key: data[key] for key in data.files if key in _REQUIRED + ("posedirs",)}
        elif path.suffix == ".pkl":
            with open(path, "rb") as handle:
                raw = _RestrictedUnpickler(handle, encoding="latin1").load()
            if not isinstance(raw, dict):
                raise BodyModelFileError(f"holds a {type(raw).__name__}, not a dictionary of arrays")
        else:
            raise BodyModelFileError("has an unknown extension (expected .pkl or .npz)")
        arrays = {key: _to_array(value) for key, value in raw.items() if key in _REQUIRED + ("posedirs",)}
    except BodyModelFileError as exc:
        raise BodyModelFileError(f"{path}: {exc}. Expected an SMPL/SMPL+H/SMPL-X model file. {WHERE_FROM}.") from None
    except Exception as exc:  # corrupt zip, truncated pickle, refused class ...
        raise BodyModelFileError(f"{path} could not be read as an SMPL-family model file "
                                 f"({type(exc).__name__}: {exc}). {WHERE_FROM}.") from exc
    missing = [key for key in _REQUIRED if key not in arrays]
    if missing:
        raise BodyModelFileError(f"{path} is not an SMPL-family model file: it lacks {', '.join(missing)} "
                                 f"(expected {', '.join(_REQUIRED)}, and posedirs). {WHERE_FROM}.")
    return arrays


def _reduce_to_smpl_body(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """SMPL+H/SMPL-X (52/55 joints) -> SMPL's 24: regressor rows, weights and pose correctives."""
    regressor, weights = arrays["J_regressor"], arrays["weights"]
    num_joints = regressor.shape[0]
    if num_joints == NUM_SMPL_JOINTS:
        return arrays
    if num_joints not in _HAND_JOINTS:
        raise BodyModelFileError(f"{path} has {num_joints} joints; expected 24 (SMPL), 52 (SMPL+H) or "
                                 f"55 (SMPL-X). {WHERE_FROM}.")
    parents = arrays["kintree_table"][0].astype(np.int64)
    left_hand, right_hand = _HAND_JOINTS[num_joints]
    # Each joint's SMPL counterpart: body joints themselves; a descendant of a wrist -> that
    # side's hand joint; anything else under the head (jaw, eyes) -> head.
    target = np.arange(num_joints)
    for joint in range(22, num_joints):
        ancestor = joint
        while ancestor >= 22:
            ancestor = int(parents[ancestor])
        target[joint] = {20: 22, 21: 23}.get(ancestor, ancestor)
    new_weights = np.zeros((weights.shape[0], NUM_SMPL_JOINTS))
    np.add.at(new_weights.T, target, weights.T)
    new_regressor = np.concatenate([regressor[:22], regressor[[left_hand, right_hand]]], axis=0)
    reduced = dict(arrays, J_regressor=new_regressor, weights=new_weights)
    if "posedirs" in arrays:
        posedirs = arrays["posedirs"]  # (V, 3, (J-1)*9): keep joints 1..21, zero for the hands
        body = posedirs[:, :, : 21 * 9]
        reduced["posedirs"] = np.concatenate([body, np.zeros(body.shape[:2] + (18,))], axis=2)
    return reduced


def load_smpl_family(path: str | Path, gender: str = "neutral", **model_kwargs) -> BodyModel:
    """A BodyModel from an SMPL, SMPL+H or SMPL-X file (or a folder holding one)."""
    file = resolve_model_file(path, gender)
    arrays = _reduce_to_smpl_body(read_model_arrays(file), file)
    vertices = arrays["v_template"]
    num_vertices = vertices.shape[0]
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise BodyModelFileError(f"{file}: v_template must be (V,3), got {vertices.shape}. {WHERE_FROM}.")
    parents = tuple(int(p) for p in arrays["kintree_table"][0][:22]) + (20, 21)
    parents = (-1,) + parents[1:]
    if parents != SMPL_PARENTS:
        raise BodyModelFileError(f"{file}: its kinematic tree is not SMPL's body tree. {WHERE_FROM}.")
    topology = {6890: "smpl", 10475: "smplx"}.get(num_vertices)
    if topology is None:
        raise BodyModelFileError(f"{file}: {num_vertices} vertices; SMPL/SMPL+H have 6890 and SMPL-X 10475. "
                                 f"{WHERE_FROM}.")
    family = {"smpl": "smpl", "smplx": "smplx"}[topology]
    if topology == "smpl" and "SMPLH" in file.name.upper():
        family = "smplh"
    landmarks, landmarks_coco = smpl_family_landmarks(topology)
    assert NUM_VERTICES[topology] == num_vertices
    posedirs = arrays.get("posedirs")
    if posedirs is not None and posedirs.shape[-1] != (NUM_SMPL_JOINTS - 1) * 9:
        raise BodyModelFileError(f"{file}: posedirs has shape {posedirs.shape}; expected (V,3,207) after "
                                 f"reduction to SMPL's body. {WHERE_FROM}.")
    gender_tag = next((g for g in ("neutral", "female", "male") if g in file.name.lower()), gender)
    if "_m_" in file.name.lower():
        gender_tag = "male"
    elif "_f_" in file.name.lower():
        gender_tag = "female"
    try:
        return BodyModel(
            v_template=vertices, shapedirs=arrays["shapedirs"], J_regressor=arrays["J_regressor"],
            lbs_weights=arrays["weights"], faces=arrays["f"], posedirs=posedirs,
            landmarks=landmarks, landmarks_coco=landmarks_coco,
            model_id=f"{family}-{gender_tag}", **model_kwargs,
        )
    except ValueError as exc:
        raise BodyModelFileError(f"{file}: malformed model file ({exc}). {WHERE_FROM}.") from exc
