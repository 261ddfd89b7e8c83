"""Body models: one API for the open model and SMPL/SMPL+H/SMPL-X files.

    from engines.body import load_body_model
    model = load_body_model("open")                 # or a path to an SMPL-family file/folder
    out = model(global_orient, body_pose, betas, transl)   # BodyOutput
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines.body.model import BodyModel, BodyOutput, LandmarkRegressor

__all__ = ["BodyModel", "BodyOutput", "LandmarkRegressor", "load_body_model"]


def load_body_model(
    spec: str | Path = "open",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    gender: str = "neutral",
) -> BodyModel:
    """A body model: ``"open"`` (the default, no licence-gated files) or a path to an SMPL,
    SMPL+H or SMPL-X model file (.pkl/.npz) or a folder holding one (``gender`` picks the
    file in a folder). Raises BodyModelFileError (a ValueError) naming the file, what was
    expected and where such files come from when a file is missing or malformed."""
    if str(spec) == "open":
        from engines.body.open_model import load_open_model

        return load_open_model(device=device, dtype=dtype)
    from engines.body.smpl_files import load_smpl_family

    return load_smpl_family(spec, gender=gender, device=device, dtype=dtype)
