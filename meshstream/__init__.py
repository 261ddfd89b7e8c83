"""meshstream's public API: video of people in, a 3D body per person per frame out.

    import meshstream

    with meshstream.open("video.mp4", results="out.npz") as run:
        for frame in run:
            for person in frame.bodies:
                print(frame.index, person.id, person.joints[meshstream.Joint.LEFT_WRIST])

The implementation lives in the repository's ``stream`` (runtime) and ``engines`` (models)
packages; this module is the stable name to import (docs/ARCHITECTURE.md says why).
"""

from engines.skeleton import Joint, Landmark
from stream import __version__
from stream.api import FrameResult, PersonResult, Run, open
from stream.client import Subscriber
from stream.compose import Chain, ComposeError, compose
from stream.config import Config, ConfigError
from stream.frames import Camera, Intrinsics, Packet, Person
from stream.pipeline import Stage

__all__ = ["open", "Run", "FrameResult", "PersonResult", "Config", "ConfigError", "compose", "Chain",
           "ComposeError", "Subscriber", "Stage", "Packet", "Person", "Camera", "Intrinsics", "Joint", "Landmark",
           "__version__"]
