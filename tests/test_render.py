"""The rasterizer: coverage, depth order, perspective-correct interpolation, ids, near plane."""

from __future__ import annotations

import numpy as np
import pytest

from engines.render import Camera, Mesh, overlay, render, track_color

# With fx = fy = 1 and the principal point at 0, a vertex at (u, v, 1) projects to (u, v) in
# pixels exactly; pixel (i, j) covers [i, i+1) x [j, j+1), its centre at (i + 0.5, j + 0.5).
UNIT_CAMERA = Camera(1.0, 1.0, 0.0, 0.0, 10, 8)


def quad(x0, y0, x1, y1, z=1.0):
    vertices = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return vertices, faces


def test_axis_aligned_quad_covers_exactly_its_pixels():
    vertices, faces = quad(2, 2, 6, 5)
    result = render(UNIT_CAMERA, [Mesh(vertices, faces)])
    expected = np.zeros((8, 10), bool)
    expected[2:5, 2:6] = True  # columns 2..5, rows 2..4
    np.testing.assert_array_equal(result.mask, expected)
    np.testing.assert_allclose(result.depth[expected], 1.0)
    assert np.isinf(result.depth[~expected]).all()


def test_pixel_centres_on_the_edges_follow_the_top_left_rule():
    # Edges through pixel centres: the left and top ones take them, the right and bottom not.
    vertices, faces = quad(2.5, 2.5, 6.5, 5.5)
    result = render(UNIT_CAMERA, [Mesh(vertices, faces)])
    expected = np.zeros((8, 10), bool)
    expected[2:5, 2:6] = True
    np.testing.assert_array_equal(result.mask, expected)
    np.testing.assert_allclose(result.depth[expected], 1.0)
    assert np.isinf(result.depth[~expected]).all()


def test_adjacent_quads_share_their_edge_without_gaps_or_overlap():
    left_v, left_f = quad(1.5, 1.5, 4.5, 6.5)  # the shared edge runs through pixel centres
    right_v, right_f = quad(4.5, 1.5, 8.5, 6.5)
    result = render(UNIT_CAMERA, [Mesh(left_v, left_f), Mesh(right_v, right_f)])
    assert (result.instance[1:6, 1:4] == 0).all()
    assert (result.instance[1:6, 4:8] == 1).all()
    assert result.mask.sum() == 5 * 7


def test_triangle_covers_the_pixel_centres_inside_it():
    camera = Camera(1.0, 1.0, 0.0, 0.0, 40, 30)
    corners = np.array([[3.3, 2.7, 1.0], [35.6, 9.2, 1.0], [12.1, 27.4, 1.0]], np.float32)
    result = render(camera, [Mesh(corners, np.array([[0, 1, 2]]))])
    ys, xs = np.mgrid[0:30, 0:40] + 0.5
    a, b, c = corners[:, :2].astype(np.float64)

    def side(p, q):
        return (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    inside = ((s1 > 0) & (s2 > 0) & (s3 > 0)) | ((s1 < 0) & (s2 < 0) & (s3 < 0))
    np.testing.assert_array_equal(result.mask, inside)
    assert inside.sum() > 300


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangle_hides_the_farther_one_whatever_the_order(near_first):
    camera = Camera(100.0, 100.0, 20.0, 20.0, 40, 40)
    near_v = np.array([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.0, 0.3, 2.0]], np.float32)
    far_v = np.array([[-0.6, 0.6, 4.0], [0.6, 0.6, 4.0], [0.0, -0.6, 4.0]], np.float32)
    tri = np.array([[0, 1, 2]])
    red = Mesh(near_v, tri, vertex_colors=np.tile([1.0, 0.0, 0.0], (3, 1)))
    blue = Mesh(far_v, tri, vertex_colors=np.tile([0.0, 0.0, 1.0], (3, 1)))
    meshes = [red, blue] if near_first else [blue, red]
    near_id = 0 if near_first else 1
    result = render(camera, meshes, ambient=1.0)
    centre = (20, 20)
    assert result.instance[centre] == near_id
    assert result.depth[centre] == pytest.approx(2.0, rel=1e-5)
    assert tuple(result.image[centre]) == (255, 0, 0)
    both = result.instance >= 0
    far_only = both & (result.instance != near_id)
    assert far_only.sum() > 50  # the far triangle still shows around the near one
    np.testing.assert_allclose(result.depth[far_only], 4.0, rtol=1e-5)
    assert (result.image[far_only] == [0, 0, 255]).all()


def test_texture_on_slanted_plane_is_interpolated_perspective_correctly():
    # A plane receding from z = 1 (left edge, x = -1) to z = 5 (right edge, x = 1), textured
    # with a horizontal ramp: texel column k holds value k, so texture coordinate s samples
    # value s * 256 - 0.5 (bilinear, texel centres at (k + 0.5) / 256).
    camera = Camera(200.0, 200.0, 160.0, 60.0, 320, 120)
    vertices = np.array([[-1, -0.5, 1], [1, -0.5, 5], [1, 0.5, 5], [-1, 0.5, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv_per_vertex = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    uv = uv_per_vertex[faces]
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(4, axis=0)
    result = render(camera, [Mesh(vertices, faces, uv=uv, texture=ramp)], ambient=1.0)

    row = 59
    cols = np.nonzero(result.mask[row])[0]
    assert cols.size > 150
    # The ray through column c hits the plane x = -1 + 2 s, z = 1 + 4 s where
    # (c - cx) / fx = x / z, so s = (a + 1) / (2 - 4 a) with a = (c - cx) / fx.
    a = (cols + 0.5 - camera.cx) / camera.fx
    s = (a + 1) / (2 - 4 * a)
    expected_value = np.clip(s * 256 - 0.5, 0, 255)
    expected_depth = 1 + 4 * s
    got = result.image[row, cols, 0].astype(np.float64)
    assert np.abs(got - expected_value).max() <= 1.0
    np.testing.assert_allclose(result.depth[row, cols], expected_depth, rtol=1e-4)
    # Affine (screen-space) interpolation would be far off in the middle of the plane.
    affine = (cols - cols[0]) / (cols[-1] - cols[0]) * 255
    assert np.abs(affine - expected_value).max() > 40


def test_instance_ids_and_empty_pixels_keep_the_background():
    camera = Camera(100.0, 100.0, 32.0, 24.0, 64, 48)
    background = np.full((48, 64, 3), 17, np.uint8)
    left_v, faces = quad(-0.28, -0.1, -0.08, 0.1, z=1.0)
    right_v, _ = quad(0.08, -0.1, 0.28, 0.1, z=1.0)
    result = render(camera, [Mesh(left_v, faces), Mesh(right_v, faces)], background=background)
    assert result.instance.dtype == np.int16 and result.depth.dtype == np.float32
    assert result.image.dtype == np.uint8 and result.image.shape == (48, 64, 3)
    assert (result.instance[23, 5:22] == 0).all()
    assert (result.instance[23, 42:58] == 1).all()
    empty = result.instance == -1
    assert empty.sum() > 0.5 * empty.size
    assert np.isinf(result.depth[empty]).all()
    assert (result.image[empty] == 17).all()
    assert (result.face[empty] == -1).all() and set(np.unique(result.face[~empty])) == {0, 1}
    assert (result.image[~empty] != 17).any()


def test_mesh_behind_the_camera_is_not_drawn_and_near_crossing_triangles_are_dropped():
    camera = Camera(100.0, 100.0, 32.0, 24.0, 64, 48)
    behind_v, faces = quad(-0.2, -0.2, 0.2, 0.2, z=-2.0)
    result = render(camera, [Mesh(behind_v, faces)])
    assert not result.mask.any()
    # One triangle in front, one with a vertex behind the near plane: only the first is drawn.
    vertices = np.array([[-0.2, -0.2, 1], [0.2, -0.2, 1], [0.2, 0.2, 1], [-0.2, 0.2, 0.005]], np.float32)
    result = render(camera, [Mesh(vertices, faces)], near=0.01)
    assert result.mask.any()
    assert set(np.unique(result.face[result.mask])) == {0}


def test_lambert_shading_follows_the_light_direction():
    camera = Camera(100.0, 100.0, 32.0, 24.0, 64, 48)
    vertices, faces = quad(-0.2, -0.2, 0.2, 0.2, z=1.0)
    white = Mesh(vertices, faces, vertex_colors=np.ones((4, 3), np.float32))
    lit = render(camera, [white], light_dir=(0, 0, 1), ambient=0.2)
    grazing = render(camera, [white], light_dir=(1, 0, 0), ambient=0.2)
    assert tuple(lit.image[23, 31]) == (255, 255, 255)
    assert tuple(grazing.image[23, 31]) == (51, 51, 51)  # ambient only: 0.2 * 255


def test_backface_culling_keeps_front_faces_only():
    camera = Camera(100.0, 100.0, 32.0, 24.0, 64, 48)
    vertices, faces = quad(-0.2, -0.2, 0.2, 0.2, z=1.0)
    # (x0,y0) -> (x1,y0) -> (x1,y1): right-hand normal (x) x (x + y) = +z, away from the camera;
    # the reversed winding's normal points at the camera.
    back = render(camera, [Mesh(vertices, faces)], cull_backfaces=True)
    front = render(camera, [Mesh(vertices, faces[:, ::-1].copy())], cull_backfaces=True)
    assert front.mask.sum() > 100
    assert not back.mask.any()


def test_bad_inputs_raise_clear_errors():
    vertices, faces = quad(0, 0, 1, 1)
    with pytest.raises(ValueError, match="background"):
        render(UNIT_CAMERA, [Mesh(vertices, faces)], background=np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        render(UNIT_CAMERA, [Mesh(vertices, faces + 10)])
    with pytest.raises(ValueError, match="uv"):
        render(UNIT_CAMERA, [Mesh(vertices, faces, texture=np.zeros((4, 4, 3), np.uint8))])


def test_overlay_blends_only_where_meshes_are_drawn():
    vertices, faces = quad(2, 2, 6, 5)
    result = render(UNIT_CAMERA, [Mesh(vertices, faces, vertex_colors=np.ones((4, 3)))], ambient=1.0)
    frame = np.full((8, 10, 3), 100, np.uint8)
    out = overlay(frame, result, alpha=0.5)
    assert (out[~result.mask] == 100).all()
    assert (out[result.mask] == 178).all()  # (100 + 255) / 2 rounded


def test_track_colors_are_stable_and_distinct():
    colors = [track_color(i) for i in range(8)]
    assert colors[3] == track_color(3)
    assert all(0.0 <= c <= 1.0 for rgb in colors for c in rgb)
    gaps = [np.abs(np.subtract(a, b)).max() for i, a in enumerate(colors) for b in colors[i + 1:]]
    assert min(gaps) > 0.1


def test_repeat_texture_tiles_instead_of_clamping():
    camera = Camera(1.0, 1.0, 0.0, 0.0, 8, 2)
    vertices, faces = quad(0, 0, 8, 2)
    uv = np.array([[0, 0], [2, 0], [2, 1], [0, 1]], np.float32)[faces]  # two copies across the quad
    texture = np.zeros((1, 2, 3), np.uint8)
    texture[0, 1] = 200  # left half black, right half bright
    tiled = render(camera, [Mesh(vertices, faces, uv=uv, texture=texture, repeat_texture=True)], ambient=1.0)
    clamped = render(camera, [Mesh(vertices, faces, uv=uv, texture=texture)], ambient=1.0)
    row = tiled.image[0, :, 0].astype(int)
    # each copy of the texture spans four columns and runs from dark to bright.
    assert row[0] < 60 and row[3] > 140 and row[4] < 60 and row[7] > 140
    assert (clamped.image[0, 4:, 0] == 200).all()
