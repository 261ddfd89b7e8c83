"""The overlay: real body-model meshes drawn with OpenGL (engines.overlay, off-screen EGL on
Mesa) and through the overlay video writer: coverage, colours per id, labels, keypoints, side view.

The OpenGL tests need an EGL driver (Debian: libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri); they fail,
not skip, without one, since the overlay would silently fall back to the slow renderer.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch

from engines.overlay import PALETTE, MeshOverlay, person_color
from stream.frames import Frame, Packet, Person

WIDTH, HEIGHT = 240, 320
INTRINSICS = (300.0, 300.0, WIDTH / 2, HEIGHT / 2)
GREY = 90


@pytest.fixture(scope="module")
def body_model():
    from engines.body import load_body_model

    return load_body_model("open")


def pose_body(body_model, x=0.0, z=3.0, turn=0.0, arm=0.0) -> np.ndarray:
    """Vertices (V, 3) of an upright body (camera frame, y down) at (x, ~0, z) m, turned about the
    vertical by ``turn`` rad, the left shoulder raised by ``arm`` rad."""
    body_pose = torch.zeros(1, 23, 3)
    body_pose[0, 15, 2] = -arm
    out = body_model(torch.tensor([[np.pi, turn, 0.0]]), body_pose, torch.zeros(1, 10),
                     torch.tensor([[x, 0.1, z]], dtype=torch.float32))
    return out.vertices[0].numpy()


def grey_frame(width=WIDTH, height=HEIGHT) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def projected(vertices: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = INTRINSICS
    return np.stack([fx * vertices[:, 0] / vertices[:, 2] + cx, fy * vertices[:, 1] / vertices[:, 2] + cy], 1)


def drawn_mask(image: np.ndarray) -> np.ndarray:
    return (image != GREY).any(axis=-1)


def mean_chroma(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean (r, g, b) / (r + g + b) of the masked pixels: the hue of a lit colour, whatever the shading."""
    rgb = image[mask].astype(np.float64)
    return (rgb / np.maximum(rgb.sum(1, keepdims=True), 1)).mean(0)


def palette_chroma(track_id: int) -> np.ndarray:
    rgb = np.asarray(person_color(track_id), np.float64)
    return rgb / rgb.sum()


def test_opengl_context_is_available_for_the_overlay():
    overlay = MeshOverlay(np.array([[0, 1, 2]]), 8, 8, (8, 8, 4, 4), backend="auto")
    assert overlay.uses_gl, "no EGL context: apt-get install libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri"


def test_mesh_is_opaque_and_covers_the_pixels_its_vertices_project_to(body_model):
    vertices = pose_body(body_model)
    overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend="gl")
    frame = grey_frame()
    image, boxes, panel = overlay.draw(frame, [(1, vertices)])
    assert panel is None and frame.tolist() == grey_frame().tolist()  # the input is left alone
    mask = drawn_mask(image)
    uv = projected(vertices)
    cols, rows = np.floor(uv).astype(int).T
    # every vertex lies on the drawn surface, to within a pixel (thin fingers cover no pixel centre)
    near_mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert near_mask[rows, cols].all() and mask[rows, cols].mean() > 0.85
    # nothing outside the projected vertices' box, and that box is what draw reports
    x0, y0, x1, y1 = boxes[0]
    assert (x0, y0) == (int(np.floor(uv[:, 0].min())) - 1, int(np.floor(uv[:, 1].min())) - 1)
    outside = np.ones_like(mask)
    outside[y0:y1, x0:x1] = False
    assert not mask[outside].any()
    # opaque: inside the silhouette no pixel keeps the grey of the frame blended in
    inner = mask.copy()
    for axis in (0, 1):
        inner &= np.roll(mask, 1, axis) & np.roll(mask, -1, axis)
    assert mask.sum() > 3000
    colour = np.asarray(person_color(1), np.float64)
    shade = image[inner].astype(np.float64) / colour  # lit colour = albedo * shade (+ highlight)
    assert np.median(np.ptp(shade, axis=1)) < 0.05  # same shade factor in r, g and b: no grey mixed in


def test_opengl_and_fallback_renderers_draw_the_same_silhouette(body_model):
    vertices = pose_body(body_model, turn=0.6, arm=1.2)
    masks = {}
    for backend in ("gl", "cpu"):
        overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend=backend)
        masks[backend] = drawn_mask(overlay.draw(grey_frame(), [(2, vertices)])[0])
    iou = (masks["gl"] & masks["cpu"]).sum() / (masks["gl"] | masks["cpu"]).sum()
    assert iou > 0.97


def test_culling_back_faces_leaves_the_picture_unchanged(body_model):
    # culling the wrong side would show the inside of the far surface: shading and depth order change
    people = [(1, pose_body(body_model, x=-0.3, turn=0.8, arm=1.0)), (2, pose_body(body_model, x=0.4, z=4.0, turn=2.8))]
    images = [MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend="gl", cull_backfaces=cull).draw(
        grey_frame(), people, side_view=True) for cull in (True, False)]
    (culled, _, culled_side), (full, _, full_side) = images
    assert (np.abs(culled.astype(int) - full).max(-1) > 8).mean() < 0.002
    assert (np.abs(culled_side.astype(int) - full_side).max(-1) > 8).mean() < 0.002


def test_a_track_keeps_its_colour_across_frames_and_two_tracks_differ(body_model):
    overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend="gl")
    first = overlay.draw(grey_frame(), [(4, pose_body(body_model, x=-0.3))])[0]
    later = overlay.draw(grey_frame(), [(4, pose_body(body_model, x=0.2, z=3.5, turn=1.0, arm=1.0))])[0]
    chroma_first = mean_chroma(first, drawn_mask(first))
    chroma_later = mean_chroma(later, drawn_mask(later))
    np.testing.assert_allclose(chroma_first, chroma_later, atol=0.02)
    np.testing.assert_allclose(chroma_first, palette_chroma(4), atol=0.03)

    both = overlay.draw(grey_frame(), [(4, pose_body(body_model, x=-0.45)), (5, pose_body(body_model, x=0.45))])[0]
    left, right = drawn_mask(both), drawn_mask(both)
    left[:, WIDTH // 2:] = False
    right[:, : WIDTH // 2] = False
    assert np.abs(mean_chroma(both, left) - mean_chroma(both, right)).max() > 0.1
    np.testing.assert_allclose(mean_chroma(both, right), palette_chroma(5), atol=0.03)


def test_palette_is_stable_and_distinct_for_consecutive_ids():
    assert person_color(7) == person_color(7) == person_color(7 + len(PALETTE))
    colours = [person_color(i) for i in range(len(PALETTE))]
    assert len(set(colours)) == len(PALETTE)
    assert person_color(-1) not in colours  # untracked people are not mistaken for a track


def test_the_nearer_person_hides_the_farther_one(body_model):
    overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend="gl")
    near, far = pose_body(body_model, z=2.5), pose_body(body_model, z=4.0)
    for people in ([(1, near), (2, far)], [(2, far), (1, near)]):
        image = overlay.draw(grey_frame(), people)[0]
        centre = image[HEIGHT // 2 - 10: HEIGHT // 2 + 10, WIDTH // 2 - 5: WIDTH // 2 + 5]
        np.testing.assert_allclose(mean_chroma(centre, np.ones(centre.shape[:2], bool)), palette_chroma(1), atol=0.03)


@pytest.mark.parametrize("backend", ["gl", "cpu"])
def test_side_panel_shows_depth_from_the_right(body_model, backend):
    overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend=backend)
    _, _, panel = overlay.draw(grey_frame(), [(1, pose_body(body_model, x=0.0, z=2.5)),
                                              (2, pose_body(body_model, x=0.0, z=4.5))], side_view=True)
    assert panel.shape == (HEIGHT, WIDTH, 3)
    columns = {}
    for track_id in (1, 2):
        target = np.asarray(person_color(track_id), np.float64)
        chroma = panel.astype(np.float64) / np.maximum(panel.sum(-1, keepdims=True), 1)
        close = (np.abs(chroma - target / target.sum()).max(-1) < 0.04) & (panel.sum(-1) > 150)
        assert close.sum() > 200, track_id
        columns[track_id] = np.nonzero(close)[1].mean()
    # depth runs left to right: the nearer person (1) is left of the farther one, ~2 m apart
    assert columns[2] - columns[1] > 1.5 * overlay.intrinsics[1] / 3.5


def test_drawing_from_another_thread_than_the_first_draw(body_model):
    overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend="gl")
    vertices = pose_body(body_model)
    expected = overlay.draw(grey_frame(), [(1, vertices)])[0]
    results = []
    worker = threading.Thread(target=lambda: results.append(overlay.draw(grey_frame(), [(1, vertices)])[0]))
    worker.start()
    worker.join(60)
    assert results and np.array_equal(results[0], expected)
    overlay.release()


def test_bad_vertices_are_refused_with_the_expected_shape(body_model):
    overlay = MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS)
    with pytest.raises(ValueError, match=r"vertices must be \(\d+, 3\)"):
        overlay.draw(grey_frame(), [(1, np.zeros((10, 3), np.float32))])
    with pytest.raises(ValueError, match="image must be"):
        overlay.draw(grey_frame(WIDTH + 2), [])
    with pytest.raises(ValueError, match="backend"):
        MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS, backend="vulkan")


# -- through the video writer ------------------------------------------------------------------

def person_with_mesh(body_model, track_id, x=0.0, keypoints_at=(30.0, 30.0)) -> Person:
    keypoints = np.zeros((33, 3), np.float32)
    keypoints[:, 0], keypoints[:, 1] = keypoints_at
    keypoints[:, 0] += np.arange(33) % 3 * 4.0  # a small cluster away from the body, all visible
    keypoints[:, 1] += np.arange(33) // 3 * 4.0
    keypoints[:, 2] = 1.0
    return Person(track_id=track_id, score=0.9, bbox=np.array([60, 40, 180, 300], np.float32),
                  keypoints=keypoints, vertices=pose_body(body_model, x=x))


def packet(index, people) -> Packet:
    return Packet(Frame(index, index / 30, time.monotonic_ns(), grey_frame()), people)


def writer(body_model, path, **options):
    from stream.writers import OverlayVideoWriter

    return OverlayVideoWriter(path, 30, WIDTH, HEIGHT, intrinsics=INTRINSICS, faces=body_model.faces, **options)


def test_keypoints_are_off_by_default_and_drawn_when_asked(body_model, tmp_path):
    person = person_with_mesh(body_model, 1)
    cluster = (slice(28, 76), slice(28, 42))  # rows, columns around the keypoints
    plain = writer(body_model, tmp_path / "a.mp4").compose(packet(0, [person]))
    with_keypoints = writer(body_model, tmp_path / "b.mp4", keypoints=True).compose(packet(0, [person]))
    assert (plain[cluster] == GREY).all()
    assert (with_keypoints[cluster] != GREY).any(axis=-1).mean() > 0.2


def test_each_person_gets_a_readable_id_label_above_the_mesh(body_model, tmp_path):
    image = writer(body_model, tmp_path / "a.mp4").compose(packet(0, [person_with_mesh(body_model, 7)]))
    mesh_top = int(np.nonzero(drawn_mask(image[:, 100:140]).any(axis=1))[0].min())  # the label or the head
    body = drawn_mask(MeshOverlay(body_model.faces, WIDTH, HEIGHT, INTRINSICS).draw(
        grey_frame(), [(7, pose_body(body_model))])[0])
    head_top = int(np.nonzero(body.any(axis=1))[0].min())
    label = image[:head_top - 1]
    assert mesh_top < head_top - 8  # something is written above the head
    dark = (label.max(-1) < 40).sum()  # the outline
    coloured = (np.abs(label.astype(int) - person_color(7)).max(-1) < 40).sum()  # the letters
    assert dark > 40 and coloured > 20


def test_video_with_side_view_is_twice_as_wide_and_every_frame_is_written(body_model, tmp_path):
    import av

    video = writer(body_model, tmp_path / "side.mp4", side_view=True)
    assert (video.width, video.height) == (2 * WIDTH, HEIGHT)
    for i in range(4):
        video.add(packet(i, [person_with_mesh(body_model, 2, x=0.1 * i)] if i != 2 else []))
    video.close()
    with av.open(str(tmp_path / "side.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (HEIGHT, 2 * WIDTH, 3)
    target = palette_chroma(2)
    for i, frame in enumerate(frames):
        side = frame[:, WIDTH:].astype(np.float64)
        chroma = side / np.maximum(side.sum(-1, keepdims=True), 1)
        person_pixels = ((np.abs(chroma - target).max(-1) < 0.05) & (side.sum(-1) > 150)).sum()
        assert (person_pixels > 300) == (i != 2), i  # the empty frame has an empty panel
