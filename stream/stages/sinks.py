"""Sink stages: where finished frames go (the ZeroMQ publisher, files, any writer)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.frames import Packet
from stream.pipeline import Stage


@dataclass
class PublishOptions:
    """What frame messages carry. vertices_dtype: "float32" or "float16"; keypoints: False
    when no pose stage runs (no keypoints array at all); source_name: the topic suffix
    (meshstream.frame.<source_name>)."""

    vertices: bool = True
    vertices_dtype: str = "float32"
    keypoints: bool = True
    source_name: str | None = None


class PublishStage(Stage):
    """Publishes each packet on a :class:`stream.publisher.Publisher` (never blocks)."""

    name = "publish"
    inputs = ("frame",)
    outputs = ("published",)
    budget_ms = 5.0

    def __init__(self, publisher, options: PublishOptions | None = None):
        from stream.protocol import FRAME_TOPIC

        self.publisher = publisher
        self.options = options or PublishOptions()
        self.topic = FRAME_TOPIC + (f".{self.options.source_name}" if self.options.source_name else "")

    def process(self, packet: Packet) -> Packet:
        from stream.protocol import frame_message

        fields, arrays = frame_message(packet, vertices=self.options.vertices,
                                       vertices_dtype=self.options.vertices_dtype, keypoints=self.options.keypoints)
        self.publisher.publish(fields, arrays, topic=self.topic)
        return packet

    def close(self) -> None:
        self.publisher.release_thread_socket()


class WriterStage(Stage):
    """Adds each packet to a writer (anything with ``add(packet)`` and ``close()``: the results
    file, the overlay video, exporters) and finalises it on close. ``name`` tells the stages
    apart in the statistics."""

    inputs = ("frame",)
    outputs = ()

    def __init__(self, writer, name: str = "writer", budget_ms: float = 5.0):
        self.writer = writer
        self.name = name
        self.budget_ms = budget_ms

    def process(self, packet: Packet) -> Packet:
        self.writer.add(packet)
        return packet

    def close(self) -> None:
        self.writer.close()
