"""Cap glibc's malloc arenas so that a long-running server's RSS stays flat.

glibc gives each thread that meets a busy arena a new one, up to 8 per core. A server
whose decode, inference and WebRTC threads come and go spreads small allocations over
all of them, and freed memory scattered across many arenas is seldom returned to the
system: RSS creeps up while the Python heap does not grow. Measured with 14 rolling
sessions on one server: RSS +5.6 MiB with glibc's default, +0.3 MiB with 2 arenas, while
tracemalloc saw the Python heap grow by < 0.5 MiB either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameter number of M_ARENA_MAX in glibc's <malloc.h>.
_M_ARENA_MAX = -8
DEFAULT_ARENAS = 2


def cap_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Limit glibc to `arenas` malloc arenas; True when applied.

    Does nothing where `MALLOC_ARENA_MAX` is already set (the operator's choice wins)
    or the C library is not glibc. Call it early, before worker threads start.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
