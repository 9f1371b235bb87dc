"""Keep large buffers on the heap instead of fresh mmaps, in few arenas.

glibc serves allocations above its mmap threshold (128 KiB, growing up to 32 MiB)
with a new mapping each time, and every page of a new mapping costs a page fault
on first touch. On the VMs this runs on that made copying a multi-MiB buffer
5-10x slower than copying it within reused memory (measured: 0.44 GB/s vs
5.2 GB/s for 8 MiB copies). Raising the thresholds lets freed buffers be reused.

The price of those thresholds is paid per arena: each arena keeps up to the
trim threshold of freed memory, and glibc gives every thread that meets a
locked arena a new one (up to 8 per core). A node's work runs in trio's worker
threads, a different one for each call, so with eight ingest connections the
buffers of one consumer batch were freed into one arena and allocated afresh
in another: a dozen arenas of 10-30 MiB each, resident for good (measured:
240 MiB of anonymous memory idle after a 1 GiB, eight-connection ingest, 155 MiB
with two arenas). The GIL serializes most of that work anyway, so a couple of
arenas cost little contention; ``ARENA_MAX`` caps them.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2  # the main arena and one for all worker threads


def tune_malloc(mmap_threshold: int = 8 << 20, trim_threshold: int = 32 << 20, arena_max: int = ARENA_MAX) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
        ok &= libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
        if arena_max > 0:
            ok &= libc.mallopt(M_ARENA_MAX, arena_max)
        return bool(ok)
    except (OSError, AttributeError):
        return False
