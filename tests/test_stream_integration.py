"""The runtime's stages with the real engines: body model skinning, rasterized overlay,
results with vertices, and vertices on the wire. Body parameters are given by the test (the
lifter that will produce them is not part of the project yet)."""

import json
import time

import numpy as np
import pytest

from stream.frames import Frame, Packet, Person
from stream.pipeline import PipelineContext
from tests.stream_helpers import free_port


@pytest.fixture(scope="module")
def body_model():
    from engines.body import load_body_model

    return load_body_model("open")


def _standing_person(track_id=3, x=0.0):
    """Upright in the camera frame (y down): the model's y-up body turned by pi about x, 3 m away."""
    return Person(track_id=track_id, score=0.95, bbox=np.array([40, 20, 120, 220], np.float32),
                  keypoints=np.full((33, 3), 50.0, np.float32),
                  global_orient=np.array([np.pi, 0, 0], np.float32), body_pose=np.zeros((23, 3), np.float32),
                  betas=np.zeros(10, np.float32), transl=np.array([x, 0.0, 3.0], np.float32))


def _packet(index=0, people=None, size=(240, 160)):
    image = np.full((*size, 3), 30, np.uint8)
    return Packet(Frame(index, index / 30, time.monotonic_ns(), image), people or [])


def test_body_stage_fills_joints_and_vertices_from_the_parameters(body_model):
    import torch

    from stream.stages import BodyStage

    stage = BodyStage(body_model)
    stage.open(PipelineContext())
    packet = stage.process(_packet(people=[_standing_person(), Person(track_id=9)]))
    person, without = packet.people
    assert person.vertices.shape == (body_model.num_vertices, 3) and person.joints.shape == (24, 3)
    assert without.vertices is None  # nobody's parameters, nothing made up
    expected = body_model(torch.tensor([[np.pi, 0, 0]]), torch.zeros(1, 23, 3), torch.zeros(1, 10),
                          torch.tensor([[0.0, 0.0, 3.0]]))
    np.testing.assert_allclose(person.vertices, expected.vertices[0].numpy(), atol=1e-5)
    assert person.joints[15, 1] < person.joints[0, 1]  # head above pelvis: y down in the camera frame


def test_overlay_draws_the_mesh_with_the_rasterizer_and_the_skeleton(body_model, tmp_path):
    import av

    from stream.frames import Intrinsics
    from stream.stages import BodyStage
    from stream.writers import OverlayVideoWriter

    stage = BodyStage(body_model)
    stage.open(PipelineContext())
    camera = Intrinsics.from_fov(160, 240)
    intrinsics = (camera.fx, camera.fy, camera.cx, camera.cy)
    writer = OverlayVideoWriter(tmp_path / "o.mp4", 30, 160, 240, intrinsics=intrinsics, faces=body_model.faces)
    with_mesh = writer.compose(stage.process(_packet(people=[_standing_person()])))
    empty = writer.compose(_packet())
    fx, fy, cx, cy = intrinsics
    centre = (int(cy), int(cx))  # the body is centred 3 m in front of the camera
    assert np.abs(with_mesh[centre].astype(int) - 30).sum() > 30
    assert (empty == 30).all()
    assert with_mesh[5, 5].tolist() == [30, 30, 30]  # the corner stays background
    for i in range(3):
        writer.add(stage.process(_packet(i, [_standing_person()])))
    writer.close()
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


def test_results_file_holds_body_fields_and_vertices_when_asked(body_model, tmp_path):
    from stream.stages import BodyStage
    from stream.writers import NpzWriter

    stage = BodyStage(body_model)
    stage.open(PipelineContext())
    writer = NpzWriter(tmp_path / "r.npz", meta={"fps": 30}, vertices=True)
    writer.add(stage.process(_packet(0, [_standing_person(1, -0.5), _standing_person(2, 0.5)])))
    writer.add(_packet(1))  # a frame with nobody
    writer.add(stage.process(_packet(2, [_standing_person(1)])))
    writer.close()
    data = np.load(tmp_path / "r.npz")
    assert data["frame_index"].tolist() == [0, 0, 2] and data["track_id"].tolist() == [1, 2, 1]
    assert data["vertices"].shape == (3, body_model.num_vertices, 3) and data["vertices"].dtype == np.float32
    assert np.isfinite(data["body_pose"]).all() and data["transl"][1].tolist() == [0.5, 0.0, 3.0]
    meta = json.loads(str(data["meta"]))
    assert meta["frames"] == 3 and meta["rows"] == 3 and meta["fps"] == 30
    assert meta["not_computed"] == ["world_transl", "world_orient", "foot_contact"]  # no world stage ran


def test_vertices_go_on_the_wire_as_float16_with_faces_in_the_topology(body_model):
    from stream.client import Subscriber
    from stream.publisher import Publisher
    from stream.frames import Intrinsics
    from stream.protocol import meta_message
    from stream.stages import BodyStage, PublishOptions, PublishStage

    address = f"tcp://127.0.0.1:{free_port()}"
    body = BodyStage(body_model)
    body.open(PipelineContext())
    with Publisher(address) as publisher, Subscriber(address) as sub:
        publisher.set_meta(*meta_message(body_model, Intrinsics(300.0, 300.0, 80.0, 120.0, 160, 240), has_body=True))
        publish = PublishStage(publisher, PublishOptions(vertices_dtype="float16"))
        publish.open(PipelineContext())
        assert publisher.wait_for_subscriber(5)
        packet = body.process(_packet(people=[_standing_person()]))
        publish.process(packet)
        message = next(sub.frames(timeout_s=5))
        publish.close()
        meta = sub.wait_for_meta(5)
    assert meta["faces"].shape == tuple(body_model.faces.shape) and meta["faces"].dtype == np.int32
    assert meta.header["num_vertices"] == body_model.num_vertices and meta.header["has_body"]
    vertices = message["vertices"]
    assert vertices.dtype == np.float16 and vertices.shape == (1, body_model.num_vertices, 3)
    np.testing.assert_allclose(vertices[0].astype(np.float32), packet.people[0].vertices, atol=2e-3)
    assert message["joints"].shape == (1, 24, 3) and message["body_pose"].shape == (1, 23, 3)
    assert message.header["people"][0]["id"] == 3
