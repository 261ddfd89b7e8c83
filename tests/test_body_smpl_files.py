"""SMPL/SMPL-X files: meshstream's skinning equals smplx's, and files load without chumpy."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from engines.body import load_body_model
from engines.body.smpl_files import BodyModelFileError
from meshstream_tools.random_files import (smpl_arrays, smplh_arrays, smplx_arrays, write_chumpy_pickle, write_npz,
                                            write_plain_pickle)

from tests.conftest import ROOT

smplx = pytest.importorskip("smplx")
BATCH = 4


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl")
    arrays = smpl_arrays(seed=0)
    write_plain_pickle(arrays, folder / "SMPL_NEUTRAL.pkl")
    write_chumpy_pickle(arrays, folder / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")
    write_npz(arrays, folder / "smpl_neutral.npz")
    return folder


@pytest.fixture(scope="module")
def smplx_file(tmp_path_factory):
    return write_npz(smplx_arrays(seed=1), tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz")


def random_parameters(seed: int, batch: int = BATCH, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        global_orient=torch.randn(batch, 3, generator=generator, dtype=dtype),
        body_pose=0.6 * torch.randn(batch, 23, 3, generator=generator, dtype=dtype),
        betas=torch.randn(batch, 10, generator=generator, dtype=dtype),
        transl=torch.randn(batch, 3, generator=generator, dtype=dtype),
    )


@pytest.mark.parametrize("file_name", ["SMPL_NEUTRAL.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", "smpl_neutral.npz"])
def test_smpl_file_skinning_equals_smplx_in_float64(smpl_dir, file_name):
    reference = smplx.SMPL(model_path=str(smpl_dir / "SMPL_NEUTRAL.pkl"), dtype=torch.float64)
    model = load_body_model(smpl_dir / file_name, dtype=torch.float64)
    for seed in range(3):
        params = random_parameters(seed)
        ours = model(**params)
        theirs = reference(global_orient=params["global_orient"], body_pose=params["body_pose"].reshape(BATCH, -1),
                           betas=params["betas"], transl=params["transl"])
        torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.joints, theirs.joints[:, :24], atol=1e-5, rtol=0)
        # The landmarks that are published vertices of smplx's joint selector (nose, eyes, ears, heels).
        torch.testing.assert_close(ours.landmarks[:, [0, 2, 5, 7, 8, 29, 30]],
                                   theirs.joints[:, [24, 26, 25, 28, 27, 31, 34]], atol=1e-5, rtol=0)


def test_smplx_file_body_equals_smplx_with_zero_hands_face_and_expression(smplx_file):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = smplx.SMPLX(model_path=str(smplx_file), ext="npz", dtype=torch.float64, batch_size=BATCH,
                                use_pca=False, flat_hand_mean=True, num_expression_coeffs=10)
    model = load_body_model(smplx_file, dtype=torch.float64)
    assert model.model_id == "smplx-neutral" and model.num_vertices == 10475
    for seed in range(2):
        params = random_parameters(seed)
        params["body_pose"][:, 21:] = 0.0  # SMPL's hand joints: SMPL-X's (zero) hand poses
        ours = model(**params)
        theirs = reference(global_orient=params["global_orient"], body_pose=params["body_pose"][:, :21].reshape(BATCH, -1),
                           betas=params["betas"], transl=params["transl"])
        torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.joints[:, :22], theirs.joints[:, :22], atol=1e-5, rtol=0)
        # SMPL's hand joints sit at SMPL-X's middle-finger base knuckles (joints 28 and 43).
        torch.testing.assert_close(ours.joints[:, 22:], theirs.joints[:, [28, 43]], atol=1e-5, rtol=0)
        # Landmarks on SMPL-X's published vertices (nose, eyes, ears, heels) after its 55 joints.
        torch.testing.assert_close(ours.landmarks[:, [0, 2, 5, 7, 8, 29, 30]],
                                   theirs.joints[:, [55, 57, 56, 59, 58, 62, 65]], atol=1e-5, rtol=0)


def test_smplh_file_body_equals_smplx_smplh_with_flat_hands(tmp_path):
    path = write_plain_pickle(smplh_arrays(seed=2), tmp_path / "SMPLH_NEUTRAL.pkl")
    reference = smplx.SMPLH(model_path=str(path), ext="pkl", dtype=torch.float64, batch_size=BATCH,
                            use_pca=False, flat_hand_mean=True)
    model = load_body_model(path, dtype=torch.float64)
    assert model.model_id == "smplh-neutral"
    params = random_parameters(7)
    params["body_pose"][:, 21:] = 0.0
    ours = model(**params)
    theirs = reference(global_orient=params["global_orient"], body_pose=params["body_pose"][:, :21].reshape(BATCH, -1),
                       betas=params["betas"], transl=params["transl"])
    torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.joints, theirs.joints[:, list(range(22)) + [25, 40]], atol=1e-5, rtol=0)


def test_folder_resolves_to_the_usual_file_name(smpl_dir):
    model = load_body_model(smpl_dir)
    assert model.model_id == "smpl-neutral"
    assert model.faces.dtype == np.int64 and model.faces.shape == (13776, 3)
    assert model.parents.tolist()[:4] == [-1, 0, 0, 0]


def test_chumpy_pickle_loads_without_importing_chumpy_or_smplx(smpl_dir):
    code = (
        "import sys; from engines.body import load_body_model; "
        f"m = load_body_model({str(smpl_dir / 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl')!r}); "
        "assert m.num_vertices == 6890; "
        "bad = [n for n in ('chumpy', 'smplx', 'anny') if n in sys.modules]; "
        "assert not bad, bad; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_missing_file_error_names_file_expectation_and_source(tmp_path):
    missing = tmp_path / "SMPL_NEUTRAL.pkl"
    with pytest.raises(BodyModelFileError) as info:
        load_body_model(missing)
    text = str(info.value)
    assert str(missing) in text and ".pkl or .npz" in text and "smpl.is.tue.mpg.de" in text
    with pytest.raises(BodyModelFileError, match="no neutral SMPL-family model file in folder"):
        load_body_model(tmp_path)


def test_malformed_files_get_clear_errors(tmp_path):
    garbage = tmp_path / "SMPL_MALE.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(BodyModelFileError, match="could not be read as an SMPL-family model file"):
        load_body_model(garbage)
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, v_template=np.zeros((6890, 3)))
    with pytest.raises(BodyModelFileError, match="lacks shapedirs, J_regressor, weights, kintree_table, f"):
        load_body_model(incomplete)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    import pickle

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(BodyModelFileError, match="refusing to load builtins.print"):
        load_body_model(path)
