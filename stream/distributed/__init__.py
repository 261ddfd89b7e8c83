"""meshstream on a Ray cluster (optional: ``pip install 'meshstream[ray]'``).

- :mod:`stream.distributed.archive`: many videos, one task per video on a pool of worker actors
  that load the models once (``meshstream process --ray``).
- :mod:`stream.distributed.serve`: many live streams, one pipeline actor per camera or URL, each
  publishing on its own address and topic, restarted alone when it fails (``meshstream serve``).

Without a cluster the same code runs on a local Ray started on this machine. docs/SCALING.md.
"""

from __future__ import annotations

import logging

log = logging.getLogger("meshstream.distributed")


class DistributedError(Exception):
    """Ray is missing or cannot be reached, or the inputs cannot be run; the text says what to do."""


def require_ray():
    """The ``ray`` module, or DistributedError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DistributedError("Ray is not installed: pip install 'meshstream[ray]' (or pip install ray)") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
    """Join the Ray cluster at ``address`` ("auto": the one `ray start` made on this machine;
    "ray://HOST:10001": a remote one), or start a local Ray on this machine when ``address`` is
    None or "local" (``num_cpus``/``num_gpus``: what the local Ray may use). Returns the ray module;
    a driver already connected stays on its cluster."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    common = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
    try:
        if address in (None, "", "local"):
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **common)
        else:
            ray.init(address=address, **common)
    except ConnectionError as exc:
        raise DistributedError(f"cannot reach the Ray cluster at {address}: {exc} (start it with `ray start --head`, "
                               "or leave the address out to run on this machine)") from exc
    return ray


def cluster_resources(ray) -> dict:
    """CPUs and GPUs the cluster has in all (floats, as Ray counts them)."""
    resources = ray.cluster_resources()
    return {"CPU": float(resources.get("CPU", 0)), "GPU": float(resources.get("GPU", 0))}
