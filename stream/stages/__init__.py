"""The pipeline's stages, in flow order; :func:`stream.compose.compose` wires them.

    source -> pose -> track -> lift -> smooth -> body -> world -> sinks (publish, writers)

Each module holds one stage and is readable alone.
"""

from stream.stages.body import BodyStage
from stream.stages.lift import BodyReconstructor, LiftStage
from stream.stages.pose import PoseStage
from stream.stages.sinks import PublishOptions, PublishStage, WriterStage
from stream.stages.smooth import SmoothStage
from stream.stages.track import TrackStage
from stream.stages.world import WorldStage

__all__ = ["PoseStage", "TrackStage", "LiftStage", "BodyReconstructor", "SmoothStage", "BodyStage", "WorldStage",
           "PublishOptions", "PublishStage", "WriterStage"]
