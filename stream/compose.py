"""The one place where the chain is built: :func:`compose` turns a :class:`stream.config.Config`
(and any sinks given from code) into a ready-to-run :class:`Chain`.

    source -> pose -> track -> lift -> smooth -> body -> world -> sinks
              (engines.pose)     (lifter + fit)                   publish (ZeroMQ), results (.npz),
                                                          overlay (.mp4), sinks from code

``run``, ``process``, ``bench`` and the library (:func:`meshstream.open`) all call it; nothing
else constructs stages.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from stream.config import SAMPLE_CLIP, Config, ConfigError
from stream.frames import Camera, Packet
from stream.pipeline import LIVE, OFFLINE, Pipeline, Stage

log = logging.getLogger("meshstream")


class ComposeError(Exception):
    """The chain cannot be built with these options here (an input that does not open, a body
    model that does not load, an output that cannot be written); the text says what to do."""


def engine_threads(requested: int | None) -> int:
    """Intra-op threads per engine: ``requested``, or half the cores (at least 1). The stages run
    at once, so engines that each take every core only contend (docs/benchmarks.md)."""
    if requested is not None:
        return requested
    return max(1, (os.cpu_count() or 2) // 2)


def load_lifter(config: Config, body_model):
    """The shipped lifter, or None when turned off, when its weights are missing, or when the
    body model is not the one it was trained for (it predicts that model's parameters)."""
    if config.lifter == "off":
        return None
    from engines.lift import Lifter

    backend = config.backend if config.backend in ("eager", "compile", "tensorrt") else "auto"
    try:
        lifter = Lifter.load(device=config.device, backend=backend)
    except FileNotFoundError as exc:
        log.warning("no lifter: %s; fitting bodies without it", exc)
        return None
    trained_for = lifter.metadata.get("body_model")
    if trained_for is not None and trained_for != getattr(body_model, "model_id", None):
        log.warning("the shipped lifter was trained for %s, not %s: fitting bodies without it "
                    "(retrain it for this model: docs/lifter.md)", trained_for, body_model.model_id)
        return None
    return lifter


def load_body_model(config: Config):
    """The body model the config names; ComposeError with the loader's advice when it does not load."""
    from engines.body import load_body_model as load

    try:
        return load(config.body_model, device=config.device)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ComposeError(f"cannot load body model {config.body_model!r}: {exc}") from exc


@dataclass
class Engines:
    """What the engine stages share and what sinks need to know about them.

    fit_body_model: the body model the lift stage fits, on the CPU (the fit runs there by
    design: small batched solves, one thread); the same object as ``body_model`` on a CPU run.
    """

    body_model: object
    lifter: object | None
    fit_body_model: object | None = None

    def __post_init__(self):
        if self.fit_body_model is None:
            self.fit_body_model = self.body_model

    @property
    def has_body(self) -> bool:
        return self.body_model is not None


def load_engines(config: Config) -> Engines:
    """The body model (and its CPU copy for the fit on a GPU run) and the lifter, loaded once."""
    body_model = load_body_model(config)
    fit_model = body_model if config.device == "cpu" else load_body_model(config.replace(device="cpu"))
    lifter = load_lifter(config, body_model) if config.pose != "off" else None
    return Engines(body_model, lifter, fit_model)


def engine_stages(config: Config, engines: Engines) -> list[Stage]:
    """pose -> track -> lift -> smooth -> body -> world, as the config asks (with ``--pose off``: none)."""
    from stream.stages import BodyStage, LiftStage, PoseStage, SmoothStage, TrackStage, WorldStage

    if config.pose == "off":
        return []
    if engines.lifter is None and not config.refine:
        raise ComposeError("--no-refine needs the learned lifter, which is not available for this body model")
    stages = [
        PoseStage(backend=config.backend, device=config.device, max_people=config.max_people,
                  keep_masks=engines.lifter is not None and config.lifter_shape),
        TrackStage(),
        LiftStage(engines.fit_body_model, lifter=engines.lifter, refine=config.refine,
                  fit_iterations=config.fit_iterations, fit_tolerance=config.fit_tolerance,
                  fit_anchor=config.fit_anchor, lifter_shape=config.lifter_shape),
        SmoothStage(config.smoothing, lag_frames=config.smoothing_lag),
        BodyStage(engines.body_model),
    ]
    if config.world:
        stages.append(WorldStage(engines.body_model, lock_feet=config.lock_feet))
    return stages


def open_source(config: Config):
    """The config's source (the bundled sample clip when none); ComposeError when it does not open."""
    from stream.sources import SourceError, open_source as open_spec

    spec = config.source or str(SAMPLE_CLIP)
    try:
        return open_spec(spec, realtime=config.realtime, max_side=config.max_side,
                         open_timeout_s=config.open_timeout_s, read_timeout_s=config.read_timeout_s,
                         max_reconnects=None if config.max_reconnects < 0 else config.max_reconnects)
    except SourceError as exc:
        raise ComposeError(str(exc)) from exc


@dataclass
class Chain:
    """A built chain: the source, the stages in order and the pipeline that runs them.

    writers: the file sinks by stage name (results, overlay, ...), for their counts after a run.
    """

    config: Config
    source: object
    stages: list[Stage]
    pipeline: Pipeline
    engines: Engines
    camera: Camera
    publisher: object | None = None
    writers: dict[str, object] = field(default_factory=dict)
    _own_publisher: bool = False

    def run(self):
        """Run to the end of the input; returns the pipeline's stats (see :meth:`Pipeline.run`)."""
        wait_s, count = self.config.wait_subscribers_s, self.config.wait_subscribers_count
        if self.publisher is not None and wait_s > 0 and not self.publisher.wait_for_subscriber(wait_s, count):
            log.warning("fewer than %d subscriber(s) after %.1f s; starting anyway", count, wait_s)
        reason = "error"
        try:
            stats = self.pipeline.run()
            reason = "finished"
            return stats
        except KeyboardInterrupt:
            reason = "interrupted"
            raise
        finally:
            if self._own_publisher and self.publisher is not None:
                self.publisher.end_of_stream(reason)  # subscribers stop cleanly (docs/PROTOCOL.md)

    def stop(self) -> None:
        """Stop reading; the frames already read still go through (thread-safe)."""
        self.pipeline.stop()

    def summary(self) -> dict:
        """The run's statistics (JSON-ready): pipeline, source, publisher."""
        summary = self.pipeline.stats.summary()
        summary["source"] = self.source.stats.as_dict()
        summary["policy"] = self.pipeline.policy
        if self.publisher is not None:
            summary["publisher"] = self.publisher.stats()
        return summary

    def write_stats(self) -> None:
        if self.config.stats_json:
            with open(self.config.stats_json, "w") as f:
                json.dump(self.summary(), f, indent=1, default=float)

    def close(self) -> None:
        """Close what the chain opened itself (the publisher; stages close when the pipeline ends)."""
        if self._own_publisher and self.publisher is not None:
            self.publisher.close()
            self._own_publisher = False


def compose(config: Config, sinks: list | tuple = (), source=None, publisher=None, engines: Engines | None = None,
            on_result: Callable[[Packet], None] | None = None, policy: str | None = None) -> Chain:
    """Build the chain the config describes.

    sinks: extra outputs from code: :class:`stream.pipeline.Stage` objects, or writers (anything
        with ``add(packet)`` and ``close()``), run after the config's own sinks.
    source: an open source to use instead of opening ``config.source``.
    publisher: a started :class:`stream.publisher.Publisher` to publish on (the caller closes
        it) instead of binding ``config.publish``.
    engines: body model and lifter already loaded (bench builds several chains).
    on_result: called with each finished packet, in the last stage's thread.
    policy: "live" or "offline" (default: live for live sources and --realtime files).

    Order of work: outputs are checked and the publisher bound first, so that a wrong path or a
    port in use fails before any model loads; then the source opens, then the models load.
    Raises ComposeError (or ConfigError) with advice.
    """
    import torch

    from stream.stages import PublishOptions, PublishStage, WriterStage

    for path in (config.results, config.render, config.bvh, config.glb):
        if path:
            _check_output_folder(path)
    own_publisher = publisher is None and config.publish is not None
    if own_publisher:
        publisher = _bind_publisher(config)
    try:
        if source is None:
            source = open_source(config)
        torch.set_num_threads(engine_threads(config.threads))
        if engines is None:
            engines = load_engines(config)
        stages = engine_stages(config, engines)
        camera = Camera(fov_deg=config.fov_deg)
        intrinsics = camera.intrinsics(source.width or 640, source.height or 480)
        writers: dict[str, object] = {}
        names = [s.name for s in stages]
        if publisher is not None:
            from stream.protocol import meta_message

            publisher.set_meta(*meta_message(engines.body_model, intrinsics, source=source.describe(),
                                             has_body=bool(stages), stages=names + ["publish"]))
            options = PublishOptions(vertices=config.publish_vertices,
                                     vertices_dtype="float16" if config.float16 else "float32",
                                     keypoints=bool(stages), source_name=config.source_name)
            stages.append(PublishStage(publisher, options))
        if config.results:
            writers["results"] = _results_writer(config, source, engines, intrinsics, names)
            stages.append(WriterStage(writers["results"], name="results"))
        if config.render:
            writers["overlay"] = _overlay_writer(config, source, engines, intrinsics)
            stages.append(WriterStage(writers["overlay"], name="overlay", budget_ms=30.0))
        stages += _export_stages(config, source, engines, writers)
        for sink in sinks:
            if isinstance(sink, Stage):
                stages.append(sink)
            else:
                name = getattr(sink, "name", None) or type(sink).__name__.lower()
                writers[name] = sink
                stages.append(WriterStage(sink, name=name))
        if policy is None:
            policy = LIVE if getattr(source, "live", False) else OFFLINE
        pipeline = Pipeline(source, stages, policy=policy, max_frames=config.max_frames, camera=camera,
                            on_result=on_result, report_every_s=config.report_every_s or None)
    except BaseException:
        if own_publisher:
            publisher.close()
        raise
    log.info("stages: %s", " -> ".join(s.name for s in stages))
    return Chain(config, source, stages, pipeline, engines, camera, publisher, writers, own_publisher)


def _export_stages(config: Config, source, engines: Engines, writers: dict) -> list[Stage]:
    """The animation files (BVH, GLB, written when the run ends), the VMC sender and the 3D viewer."""
    from stream.stages import WriterStage
    from stream.writers import WriterError

    stages = []
    fps = source.fps or 30.0  # a live source without a nominal rate: frames are numbered at 30 fps
    try:
        if config.bvh:
            from stream.exporters import BvhWriter

            writers["bvh"] = BvhWriter(config.bvh, engines.body_model, fps)
            stages.append(WriterStage(writers["bvh"], name="bvh"))
        if config.glb:
            from stream.exporters import GlbWriter

            writers["glb"] = GlbWriter(config.glb, engines.body_model, fps)
            stages.append(WriterStage(writers["glb"], name="glb"))
        if config.vmc:
            from stream.vmc import VmcSender

            writers["vmc"] = VmcSender(config.vmc, max_people=config.vmc_people, body_model=engines.body_model)
            stages.append(WriterStage(writers["vmc"], name="vmc"))
        if config.view is not None:
            from stream.viewer import MeshViewer

            body = engines.body_model
            writers["view"] = MeshViewer(port=config.view, faces=None if body is None else body.faces,
                                         parents=None if body is None else body.parents)
            log.info("3D viewer: open %s in a browser", writers["view"].url)
            stages.append(WriterStage(writers["view"], name="view"))
    except (WriterError, ValueError, ImportError) as exc:
        raise ComposeError(str(exc)) from exc
    return stages


def _check_output_folder(path: str) -> None:
    from pathlib import Path

    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise ComposeError(f"folder {parent} does not exist (create it or choose another output path)")
    if not os.access(parent, os.W_OK):
        raise ComposeError(f"cannot write in {parent} (no permission)")


def _bind_publisher(config: Config):
    from stream.publisher import PublishError, Publisher

    try:
        return Publisher(config.publish, meta_interval_s=config.meta_interval_s, linger_ms=int(config.linger_s * 1000),
                         curve_keys_dir=config.curve_keys).start()
    except PublishError as exc:
        raise ComposeError(str(exc)) from exc


def _results_writer(config: Config, source, engines: Engines, intrinsics, stage_names: list[str]):
    from stream import __version__
    from stream.writers import NpzWriter, WriterError

    meta = {"input": str(config.source or SAMPLE_CLIP), "fps": source.fps, "width": source.width,
            "height": source.height,
            "intrinsics": {k: v for k, v in intrinsics.as_dict().items() if k in ("fx", "fy", "cx", "cy")},
            "body_model": getattr(engines.body_model, "model_id", None), "meshstream_version": __version__,
            "stages": stage_names}
    try:
        return NpzWriter(config.results, meta=meta, vertices=config.results_vertices, source_stats=source.stats)
    except WriterError as exc:
        raise ComposeError(str(exc)) from exc


def _overlay_writer(config: Config, source, engines: Engines, intrinsics):
    from stream.writers import OverlayVideoWriter, WriterError

    faces = None if engines.body_model is None else engines.body_model.faces
    try:
        return OverlayVideoWriter(config.render, source.fps, source.width, source.height,
                                  intrinsics=(intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy), faces=faces,
                                  keypoints=config.render_keypoints, side_view=config.render_side_view)
    except WriterError as exc:
        raise ComposeError(str(exc)) from exc


__all__ = ["Chain", "ComposeError", "ConfigError", "Engines", "compose", "engine_stages", "engine_threads",
           "load_engines"]
