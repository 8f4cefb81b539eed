"""echo-server caps glibc's malloc arenas (its RSS otherwise creeps up in long runs)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

#: Eight threads allocate at once, then glibc's malloc_info lists the arenas (<heap nr=...>).
_PROBE = """
import ctypes, ctypes.util, sys, threading
from server.allocator import cap_malloc_arenas
applied = cap_malloc_arenas() if sys.argv[1] == "cap" else None
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(20000):
        blocks = [bytearray(2000) for _ in range(8)]
        del blocks
threads = [threading.Thread(target=churn) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fdopen.restype = ctypes.c_void_p
out = libc.fdopen(1, b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fflush(ctypes.c_void_p(out))
print("applied", applied, flush=True)
"""


def arenas(mode: str, **env: str) -> tuple[int, str]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout.count("<heap nr="), run.stdout.strip().splitlines()[-1]


def test_capping_limits_the_arenas_busy_threads_get() -> None:
    default, _ = arenas("default")
    capped, applied = arenas("cap")
    assert applied == "applied True"
    assert capped <= 2 < default


def test_an_operators_malloc_arena_max_is_left_alone() -> None:
    _, applied = arenas("cap", MALLOC_ARENA_MAX="4")
    assert applied == "applied False"


#: Fill the heap with 2-KB blocks, free all but every 64th, then trim: the free pages between
#: the survivors go back to the system.
_TRIM = """
import sys
from pathlib import Path
from server.allocator import release_free_memory
def rss_mib():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
blocks = [bytearray(2000) for _ in range(100_000)]
survivors = blocks[::64]
del blocks
before = rss_mib()
released = release_free_memory()
print(released, before, rss_mib())
"""


def test_release_free_memory_returns_fragmented_pages() -> None:
    run = subprocess.run([sys.executable, "-c", _TRIM], capture_output=True, text=True, check=True)
    released, before, after = run.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 100, run.stdout  # ~190 MiB were freed but resident
