"""The consumer compresses a batch once, per topic, for targets that take
segment files, and sends the records to the others (fakes of its Protocols)."""

from __future__ import annotations

import pytest
import trio
from test_consumer import FakeSource

from oklog.records import segfile
from oklog.records.merge import merge_dedup
from oklog.records.record import make_headers, now_ms, stamp_lines
from oklog.store.consumer import Consumer


class Target:
    def __init__(self, name: str, takes: bool, local: bool = False) -> None:
        self.name, self.takes, self.local = name, takes, local
        self.calls: list[tuple[bytes, bytes | None]] = []

    def takes_encoded(self) -> bool:
        return self.takes

    async def replicate(self, data: bytes, encoded: bytes | None = None) -> int:
        await trio.lowlevel.checkpoint()
        self.calls.append((data, encoded))
        return 0 if self.local else len(encoded if encoded is not None else data)


def records(ms: int, first: int, n: int, topic: bytes) -> bytes:
    return stamp_lines([b"%s line %d" % (topic, i) for i in range(n)], make_headers(ms, first, n, topic))


@pytest.mark.trio
async def test_each_topic_is_one_file_for_targets_that_take_them():
    ms = now_ms()
    alpha, beta = records(ms, 0, 200, b"alpha"), records(ms + 1, 0, 200, b"beta")
    src = FakeSource("i", {"s1": alpha, "s2": beta})
    takes, plain, local = Target("new", True), Target("old", False), Target("self", True, local=True)
    c = Consumer(lambda: [src], lambda: [takes, plain, local], 3, batch_size=1 << 20, batch_age=30.0)
    assert await c.cycle() is True
    want = merge_dedup([alpha, beta])
    assert plain.calls == [(want, None)]
    for t in (takes, local):  # this node's store keeps the same files
        assert [part for part, _ in t.calls] == [alpha, beta]
        for part, file in t.calls:
            assert file is not None and segfile.is_compressed(file[:4]) and segfile.decode(file) == part
    assert takes.calls == local.calls  # compressed once for both
    st = c.stats
    assert st.replicated_bytes == 2 * len(want)  # the two other members'
    assert st.replicated_wire_bytes == len(want) + sum(len(f or b"") for _, f in takes.calls)
    assert sorted(src.committed) == ["s1", "s2"]


@pytest.mark.trio
async def test_no_other_member_takes_files_nothing_is_compressed():
    src = FakeSource("i", {"s1": records(now_ms(), 0, 50, b"default")})
    plain, local = Target("old", False), Target("self", True, local=True)
    c = Consumer(lambda: [src], lambda: [plain, local], 2, batch_size=1 << 20, batch_age=30.0)
    assert await c.cycle() is True
    assert [e for _, e in plain.calls + local.calls] == [None, None]
    assert c.stats.replicated_wire_bytes == c.stats.replicated_bytes > 0
