"""Keep a long-running server's RSS flat: cap glibc's malloc arenas, trim after sessions.

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
import functools
import os

#: mallopt parameter number of M_ARENA_MAX in glibc's <malloc.h>.
_M_ARENA_MAX = -8
DEFAULT_ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; musl and others do not
    except (OSError, AttributeError):
        return None
    return libc


def cap_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Limit glibc to `arenas` malloc arenas; True when applied.

    Does nothing where `MALLOC_ARENA_MAX` is already set (the operator's choice wins)
    or the C library is not glibc. Call it early, before worker threads start.
    """
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Give the free pages inside malloc's heaps back to the system (glibc `malloc_trim`).

    A session's end frees its decoders, buffers and cache at once, but pages shared with
    still-live allocations stay resident until trimmed. Takes a few milliseconds: call
    it off the event loop. True when some memory was released.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
