"""Animation exports: BVH (one file per person) and GLB (binary glTF 2.0, all people).

Both work as sinks (``add(packet)`` per frame, ``close()`` writes) and from a finished results
file::

    from stream.exporters import BvhWriter, GlbWriter, export_bvh, export_glb
    export_bvh("out/sample.npz", "out/sample.bvh")     # -> [out/sample.bvh, out/sample.<id>.bvh ...]
    export_glb("out/sample.npz", "out/sample.glb")

Conventions (docs/CONSUMERS.md): y up, the camera at the origin looking along -z (meshstream's
camera frame turned half a turn about x); BVH in centimetres with ZXY rotation channels, frame
k = video frame k; GLB in metres, key times frame_index / fps. GLB needs the ``export`` extra
(pygltflib): ``pip install 'meshstream[export]'``; BVH needs nothing more.
"""

from stream.exporters.bvh import BvhWriter, bvh_paths, export_bvh
from stream.exporters.gltf import GlbWriter, export_glb
from stream.exporters.motion import Y_UP_FROM_CAMERA, ExportError

__all__ = ["Y_UP_FROM_CAMERA", "BvhWriter", "ExportError", "GlbWriter", "bvh_paths", "export_bvh", "export_glb"]
