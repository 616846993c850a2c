"""Keep the C allocator from holding on to memory the pipeline has freed.

glibc gives each thread that allocates its own arena (up to eight per core) and raises its
mmap threshold to the largest block freed so far: after the first 16 MiB pack buffer is
freed, later ones come from an arena and their pages stay with the process. A backup's
peak RSS measured 270 MiB that way; with two arenas and large blocks always mapped (and
unmapped when freed) it is 190 MiB, at no measurable cost in time (docs/performance.md).
"""

from __future__ import annotations

import sys

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 1 << 20
_ARENAS = 2
_done = False


def tune_allocator() -> None:
    """Once per process, before the pipeline's threads start; a no-op off glibc."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_ARENA_MAX, _ARENAS)
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
