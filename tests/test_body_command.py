"""`meshstream body --render` draws the open model: a real subprocess writing a real PNG."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from tests.conftest import ROOT


def test_body_render_writes_a_sheet_with_a_body_in_every_view(tmp_path):
    out = tmp_path / "sheet.png"
    done = subprocess.run([sys.executable, "-m", "stream", "body", "--render", str(out), "--tile", "96"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "meshstream-open-1" in done.stdout
    image = cv2.imread(str(out))
    tile_width, tile_height = 96, int(96 * 1.2)
    assert image.shape[1] == 9 * tile_width and image.shape[0] == 2 * tile_height + 24
    for row in range(2):
        for column in range(9):
            tile = image[row * tile_height:(row + 1) * tile_height, column * tile_width:(column + 1) * tile_width]
            drawn = (np.abs(tile.astype(int) - 245).sum(-1) > 30)[25:]  # below the label
            assert drawn.mean() > 0.03, (row, column)


def test_body_with_a_missing_model_file_is_a_user_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "stream", "body", "--model", str(tmp_path / "SMPL_NEUTRAL.pkl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "smpl.is.tue.mpg.de" in done.stderr and "SMPL_NEUTRAL.pkl" in done.stderr
