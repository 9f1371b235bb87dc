"""The node's malloc tuning caps glibc's arenas: worker threads share them
instead of each keeping its own freed buffers resident (oklog.malloc)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys, threading
    from oklog.malloc import tune_malloc
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    start, end = threading.Barrier(8), threading.Barrier(8)
    def work():
        start.wait()  # all eight threads alive and allocating at once
        for _ in range(200):
            libc.free(libc.malloc(64 << 10))
        end.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc.malloc_stats()  # one "Arena N:" section per arena, on stderr
    """
)


def _arenas(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return len(re.findall(r"^Arena \d+:", out.stderr, re.M))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_process_keeps_at_most_two_arenas() -> None:
    untuned = _arenas("plain")
    if untuned <= 2:
        pytest.skip(f"this libc made {untuned} arenas for eight threads without a cap")
    assert _arenas("tuned") <= 2
