"""``oklog testsvc``: emit numbered records at a fixed rate, for demos and load."""

from __future__ import annotations

import sys
import time


def testsvc_main(service_id: str, rate: float, size: int, count: int) -> int:
    out = sys.stdout.buffer
    interval = 1.0 / rate if rate > 0 else 0.0
    start = time.monotonic()
    i = 0
    pad = "x" * max(0, size - len(service_id) - 20)
    try:
        while count <= 0 or i < count:
            i += 1
            out.write(f"{service_id} {i:010d} {pad}\n".encode())
            out.flush()
            if interval:
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0
