"""Scatter-gather: one query to every store member, one merged answer.

Each member's answer is a stream of records sorted by ULID. The merge emits,
as data arrives, every record up to the *watermark* — the smallest "last ULID
received" among streams still open — so output is in order and starts before
the slowest member finishes. Duplicates (the same ULID from several replicas)
are dropped by the block merge.

Status: every member must answer with headers within the per-member timeout;
one that errors or times out is counted (``X-Oklog-Error-Count``) and the
response is 206 Partial Content. A member that fails after streaming began
aborts the response (the client sees a truncated transfer, never a hang and
never a silently short 200).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from oklog.query.engine import iter_merge, seek
from oklog.record import ULID_LEN

Emit = Callable[[bytes], Awaitable[None]]


@dataclass
class MemberStream:
    """What the fan-out needs from one member: its stats and a chunk channel."""

    name: str
    segments: int = 0
    bytes: int = 0
    chunks: trio.MemoryReceiveChannel | None = None
    error: str = ""


@dataclass
class MergeState:
    buffers: list[bytes] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)

    def watermark(self) -> bytes | None:
        """Largest key below which every open stream is complete; None: wait."""
        w: bytes | None = None
        for buf, done in zip(self.buffers, self.done, strict=True):
            if done:
                continue
            if not buf:
                return None
            start = buf.rfind(b"\n", 0, len(buf) - 1) + 1
            last = buf[start : start + ULID_LEN]
            if w is None or last < w:
                w = last
        return w

    def take_upto(self, key: bytes | None) -> bytes:
        """Merge and remove everything <= key (everything if key is None)."""
        parts = []
        for i, buf in enumerate(self.buffers):
            if not buf:
                continue
            if key is None:
                parts.append(buf)
                self.buffers[i] = b""
            else:
                cut = seek(buf, key + b"\x00")
                if cut:
                    parts.append(buf[:cut])
                    self.buffers[i] = buf[cut:]
        if not parts:
            return b""
        if len(parts) == 1:
            return parts[0]
        return b"".join(iter_merge(parts))


async def merge_streams(streams: list[trio.MemoryReceiveChannel], emit: Emit, fmt_async) -> None:
    """Merge sorted record streams (channels of whole-record chunks) in order."""
    n = len(streams)
    if n == 0:
        return
    state = MergeState([b""] * n, [False] * n)
    wake = trio.Event()
    failures: list[BaseException] = []

    async def pump(i: int, rx: trio.MemoryReceiveChannel) -> None:
        nonlocal wake
        try:
            async with rx:
                async for chunk in rx:
                    state.buffers[i] += chunk
                    wake.set()
                    # Backpressure: don't read far ahead of what can be emitted.
                    while len(state.buffers[i]) > (16 << 20) and not failures:
                        await trio.sleep(0.005)
        except BaseException as e:  # noqa: BLE001 — reported below
            failures.append(e)
        finally:
            state.done[i] = True
            wake.set()

    async with trio.open_nursery() as nursery:
        for i, rx in enumerate(streams):
            nursery.start_soon(pump, i, rx)
        while True:
            await wake.wait()
            wake = trio.Event()
            if failures:
                raise failures[0]
            if all(state.done):
                out = state.take_upto(None)
                if out:
                    await emit(await fmt_async(out))
                return
            w = state.watermark()
            if w is not None:
                out = state.take_upto(w)
                if out:
                    await emit(await fmt_async(out))
