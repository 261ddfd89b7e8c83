"""The lifter's network as an engine: run through :mod:`engines.backends` like the BlazePose
networks (eager CPU, ``torch.compile``, TensorRT on CUDA), batched over people.

Back ends need every input batched (a dynamic first dimension, for TensorRT's optimisation
profile), so :class:`LifterModule` takes the camera matrix per person, (P,3,3), and returns
only the four tensors the lifter's users need. The back end is chosen by
:func:`engines.backends.create_engine` with its logged fallback chain: on CPU ``auto`` means
eager (the network is a small MLP and a small CNN: 0.2 ms per person eagerly; there is no
.tflite file for LiteRT); on CUDA ``auto`` means TensorRT -> torch.compile -> eager.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from engines.backends import Engine, NetworkSpec, create_engine
from engines.lift.network import MASK_SIZE, NUM_KEYPOINTS, LiftNetwork

# Per input, its shape with a placeholder batch of 1 (the batch is dynamic).
LIFTER_INPUT_SHAPES = [
    (1, NUM_KEYPOINTS, 3),     # keypoints: x, y pixels and visibility
    (1, 4),                    # boxes: x0, y0, x1, y1 pixels
    (1, 3, 3),                 # intrinsics, per person
    (1, NUM_KEYPOINTS, 3),     # world landmarks, metres (zeros when absent)
    (1,),                      # world_present: 1.0 or 0.0
    (1, MASK_SIZE, MASK_SIZE),  # mask crops in [0,1] (zeros when absent)
    (1,),                      # mask_present: 1.0 or 0.0
]


class LifterModule(nn.Module):
    """:class:`LiftNetwork` with every input batched over people (what back ends run).

    forward(keypoints (P,33,3), boxes (P,4), intrinsics (P,3,3), world (P,33,3),
    world_present (P,), masks (P,64,64), mask_present (P,)) -> (global_orient (P,3),
    body_pose (P,23,3), betas (P,10), transl (P,3)), float32, camera frame.
    """

    def __init__(self, network: LiftNetwork):
        super().__init__()
        self.network = network

    def forward(self, keypoints: Tensor, boxes: Tensor, intrinsics: Tensor, world: Tensor, world_present: Tensor,
                masks: Tensor, mask_present: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.network(keypoints, boxes, intrinsics, world, world_present, masks, mask_present)
        return out[0], out[1], out[2], out[3]


def weights_hash(network: nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes, float32 values): identifies its weights."""
    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def lifter_spec(network: LiftNetwork) -> NetworkSpec:
    """The :class:`NetworkSpec` of a lifter network (a frozen copy of its weights, on the CPU)."""
    config = dict(network.config)
    weights = {name: value.detach().to("cpu", torch.float32).clone() for name, value in network.state_dict().items()}

    def make_module() -> nn.Module:
        copy = LiftNetwork(**config)
        copy.load_state_dict(weights)
        return LifterModule(copy).eval()

    return NetworkSpec(name="lifter", make_module=make_module, input_shapes=list(LIFTER_INPUT_SHAPES),
                       weights_hash=weights_hash(network))


def create_lifter_engine(network: LiftNetwork, backend: str = "auto", device: str | torch.device = "cpu", *,
                         fp16: bool = False, max_batch: int = 16, strict: bool = False) -> Engine:
    """An engine running ``network`` (see :func:`engines.backends.create_engine` for the chain)."""
    return create_engine(lifter_spec(network), backend, device, fp16=fp16, max_batch=max_batch, strict=strict)
