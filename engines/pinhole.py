"""The pinhole camera every part of meshstream uses (numpy only, so light to import).

Camera frame: x right, y down, z forward (OpenCV), metres; pixel (i, j) covers [i, i+1) x
[j, j+1). The pipeline carries it on each packet (stream.frames.Packet.intrinsics); the
renderer draws with it (engines.render.Camera is this class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Focal lengths and principal point in pixels, for an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float = 60.0) -> "Intrinsics":
        """Centred, square pixels, the image's LONGER side spanning ``fov_deg`` degrees (the
        pipeline's default camera, `--fov`)."""
        focal = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2)
        return cls(focal, focal, width / 2.0, height / 2.0, int(width), int(height))

    @classmethod
    def from_horizontal_fov(cls, width: int, height: int, fov_deg: float = 60.0) -> "Intrinsics":
        """Centred, square pixels, the image's WIDTH spanning ``fov_deg`` degrees."""
        focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
        return cls(focal, focal, width / 2.0, height / 2.0, int(width), int(height))

    def scaled(self, factor: float) -> "Intrinsics":
        """The same view at ``factor`` times the resolution (e.g. for supersampling)."""
        return Intrinsics(self.fx * factor, self.fy * factor, self.cx * factor, self.cy * factor,
                          int(round(self.width * factor)), int(round(self.height * factor)))

    def matrix(self) -> np.ndarray:
        """(3, 3) float32 pinhole matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], np.float32)

    def project(self, points) -> np.ndarray:
        """Camera-frame points (..., 3) metres -> pixel coordinates (..., 2) float32."""
        p = np.asarray(points, dtype=np.float64)
        z = p[..., 2]
        uv = np.stack([self.fx * p[..., 0] / z + self.cx, self.fy * p[..., 1] / z + self.cy], axis=-1)
        return uv.astype(np.float32)

    def as_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}
