"""The C allocator's set-up for long runs.

glibc's malloc gives threads arenas of their own (up to 8 per core). A frame's buffers (a
720p RGB frame is 2.7 MB) are made in one thread and freed in another, and the memory freed
in each arena stays with that arena: a live run's resident memory then grows for minutes by
what the arenas keep free (about 45 MB in the first two minutes of the sample clip looped, still
growing), while the memory in use stays flat. Two arenas keep that small (docs/benchmarks.md,
"Soak"). The setting has to be made before the threads allocate, so the command line makes it
first thing; a program of its own that runs the chain for hours can export MALLOC_ARENA_MAX=2.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("meshstream")

_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (mallopt M_ARENA_MAX); True when set.

    Does nothing (False) off Linux, on a C library without mallopt (musl), or when the
    environment already sets MALLOC_ARENA_MAX (the user's choice wins)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_ARENA_MAX, int(arenas)) == 1
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done
