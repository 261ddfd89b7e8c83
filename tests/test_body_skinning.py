"""The skinning path: float16, torch.export with a dynamic batch, the shape cache, input checks."""

from __future__ import annotations

import pytest
import torch

from engines.body import BodyOutput, load_body_model
from meshstream_tools.random_files import smpl_arrays, write_npz

# float16 against float64 on a model about 1.7 m tall: half precision has 11 significant bits
# (0.5 mm steps at 1 m); blending 24 transforms in float16 stays within 5 mm.
FLOAT16_TOLERANCE_M = 5e-3


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    return write_npz(smpl_arrays(seed=3), tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.npz")


def parameters(batch: int, seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 3, generator=generator).to(dtype),
        (0.5 * torch.randn(batch, 23, 3, generator=generator)).to(dtype),
        torch.randn(batch, 10, generator=generator).to(dtype),
        (0.3 * torch.randn(batch, 3, generator=generator)).to(dtype),
    )


def test_float16_matches_float64_within_stated_tolerance(smpl_file):
    exact = load_body_model(smpl_file, dtype=torch.float64)
    half = load_body_model(smpl_file, dtype=torch.float16)
    args = parameters(5, seed=1, dtype=torch.float64)
    reference = exact(*args)
    result = half(*(a.half() for a in args))
    assert result.vertices.dtype == torch.float16
    for name in ("vertices", "joints", "landmarks", "landmarks_coco"):
        error = (getattr(result, name).double() - getattr(reference, name)).abs().max().item()
        assert error < FLOAT16_TOLERANCE_M, (name, error)


def test_export_with_dynamic_batch_matches_eager_at_two_batch_sizes(smpl_file):
    model = load_body_model(smpl_file)
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = parameters(2)
    exported = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example))
    runnable = exported.module()
    for size in (1, 7):
        args = parameters(size, seed=size)
        eager, graph = model(*args), runnable(*args)
        for name in ("vertices", "joints", "landmarks", "landmarks_coco"):
            torch.testing.assert_close(getattr(graph, name), getattr(eager, name), atol=1e-5, rtol=1e-5)


def test_shape_cache_serves_equal_betas_and_recomputes_changed_ones(smpl_file):
    model = load_body_model(smpl_file)
    global_orient, body_pose, betas, transl = parameters(3)
    first = model(global_orient, body_pose, betas, transl)
    assert (model.cache_misses, model.cache_hits) == (1, 0)
    second = model(global_orient, body_pose * 0.5, betas.clone(), transl)  # equal values, new tensor
    assert (model.cache_misses, model.cache_hits) == (1, 1)
    changed = betas.clone()
    changed[1, 4] += 1.0
    third = model(global_orient, body_pose, changed, transl)
    assert (model.cache_misses, model.cache_hits) == (2, 1)
    fresh = load_body_model(smpl_file)(global_orient, body_pose, changed, transl)
    torch.testing.assert_close(third.vertices, fresh.vertices)
    assert not torch.allclose(third.vertices, first.vertices)
    assert isinstance(second, BodyOutput)
    # In-place edits of the caller's tensor must not poison the cache.
    betas[0, 0] += 2.0
    edited = model(global_orient, body_pose, betas, transl)
    torch.testing.assert_close(edited.vertices, load_body_model(smpl_file)(global_orient, body_pose, betas, transl).vertices)


def test_rest_joints_equal_posed_joints_at_zero_pose(smpl_file):
    model = load_body_model(smpl_file)
    _, _, betas, _ = parameters(2)
    zero = model(torch.zeros(2, 3), torch.zeros(2, 23, 3), betas)
    torch.testing.assert_close(zero.joints, model.rest_joints(betas))
    torch.testing.assert_close(zero.vertices, model.rest_vertices(betas), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda a: {**a, "body_pose": a["body_pose"][:, :21]}, ValueError, r"body_pose must have shape \(B, 23, 3\); got \(2, 21, 3\)"),
        (lambda a: {**a, "global_orient": a["global_orient"][0]}, ValueError, r"global_orient must have shape \(B, 3\)"),
        (lambda a: {**a, "betas": a["betas"][:1]}, ValueError, "betas has batch size 1 but global_orient has 2"),
        (lambda a: {**a, "transl": a["transl"].double()}, TypeError, "transl is torch.float64 but the model is torch.float32"),
        (lambda a: {**a, "betas": a["betas"].long()}, TypeError, "betas is torch.int64"),
        (lambda a: {**a, "body_pose": a["body_pose"].clone().index_fill_(1, torch.tensor([4]), float("nan"))},
         ValueError, "body_pose contains NaN"),
        (lambda a: {**a, "transl": a["transl"] / 0.0}, ValueError, "transl contains NaN or infinite"),
        (lambda a: {**a, "betas": a["betas"].numpy()}, TypeError, "betas must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(smpl_file, change, error, message):
    model = load_body_model(smpl_file)
    names = ("global_orient", "body_pose", "betas", "transl")
    good = dict(zip(names, parameters(2)))
    with pytest.raises(error, match=message):
        model(**change(good))
