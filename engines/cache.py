"""Where derived artefacts (converted weights, compiled engines) live.

The cache is ``$MESHSTREAM_CACHE`` if set, else ``~/.cache/meshstream``. Nothing in it is
committed; everything in it can be rebuilt from files obtained through the package registries.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache directory, created on first use."""
    root = os.environ.get("MESHSTREAM_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "meshstream"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
