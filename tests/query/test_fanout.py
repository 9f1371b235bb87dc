"""merge_streams in-process, over trio channels standing in for members' answers."""

import pytest
import trio
import trio.lowlevel

from oklog.query.fanout import merge_streams


def rec(i: int, text: str = "x") -> bytes:
    return b"01ARZ3NDEKTSV4RRFFQ69G5F%02d t %s\n" % (i, text.encode())


async def feed(tx: trio.MemorySendChannel[bytes], chunks: list[bytes]) -> None:
    async with tx:
        for c in chunks:
            await tx.send(c)
            await trio.lowlevel.checkpoint()


class Failing:
    """A member's stream that yields its chunks, then raises."""

    def __init__(self, chunks: list[bytes], exc: BaseException) -> None:
        self.chunks = list(chunks)
        self.exc = exc

    async def __aenter__(self) -> "Failing":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> "Failing":
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.chunks:
            return self.chunks.pop(0)
        raise self.exc


@pytest.mark.trio
async def test_streams_merge_in_order_and_replicas_count_once():
    out: list[bytes] = []

    async def emit(data: bytes) -> None:
        out.append(data)

    a_tx, a_rx = trio.open_memory_channel[bytes](1)
    b_tx, b_rx = trio.open_memory_channel[bytes](1)
    async with trio.open_nursery() as n:
        n.start_soon(feed, a_tx, [rec(1) + rec(3), rec(5)])
        n.start_soon(feed, b_tx, [rec(2), rec(3) + rec(4) + rec(6)])
        await merge_streams([a_rx, b_rx], emit)
    assert b"".join(out) == b"".join(rec(i) for i in range(1, 7))


@pytest.mark.trio
async def test_records_below_the_watermark_are_emitted_before_a_slow_stream_ends():
    out: list[bytes] = []
    a_tx, a_rx = trio.open_memory_channel[bytes](1)
    b_tx, b_rx = trio.open_memory_channel[bytes](1)
    first = trio.Event()

    async def emit(data: bytes) -> None:
        out.append(data)
        first.set()

    async def slow() -> None:
        async with b_tx:
            await b_tx.send(rec(2))
            await first.wait()  # only ends once something was emitted
            await b_tx.send(rec(9))

    async with trio.open_nursery() as n:
        n.start_soon(feed, a_tx, [rec(1), rec(3)])
        n.start_soon(slow)
        await merge_streams([a_rx, b_rx], emit)
    assert out[0] == rec(1)  # below every open stream's last record: out before b ends
    assert b"".join(out) == rec(1) + rec(2) + rec(3) + rec(9)


@pytest.mark.trio
async def test_a_failed_stream_is_dropped_when_on_fail_says_its_records_are_elsewhere():
    out: list[bytes] = []
    seen: list[tuple[int, str]] = []

    async def emit(data: bytes) -> None:
        out.append(data)

    def on_fail(i: int, exc: BaseException) -> bool:
        seen.append((i, str(exc)))
        return True

    a_tx, a_rx = trio.open_memory_channel[bytes](1)
    async with trio.open_nursery() as n:
        n.start_soon(feed, a_tx, [rec(1), rec(2), rec(3)])
        await merge_streams([a_rx, Failing([rec(1)], RuntimeError("cut"))], emit, on_fail)
    assert seen == [(1, "cut")]
    assert b"".join(out) == rec(1) + rec(2) + rec(3)


@pytest.mark.trio
@pytest.mark.parametrize("carry_on", [False, None])
async def test_a_failed_stream_aborts_the_merge_unless_carried_on(carry_on):
    async def emit(data: bytes) -> None:
        pass

    on_fail = (lambda i, exc: False) if carry_on is not None else None
    a_tx, a_rx = trio.open_memory_channel[bytes](1)
    with pytest.raises(BaseExceptionGroup) as e:
        async with trio.open_nursery() as n:
            n.start_soon(feed, a_tx, [rec(1)])
            await merge_streams([a_rx, Failing([], RuntimeError("cut"))], emit, on_fail)
    assert e.group_contains(RuntimeError, match="cut", depth=None)


@pytest.mark.trio
async def test_no_streams_emit_nothing():
    called = []

    async def emit(data: bytes) -> None:
        called.append(data)

    await merge_streams([], emit)
    assert called == []
