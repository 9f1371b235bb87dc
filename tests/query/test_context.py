"""-A/-B/-C (oklog.query.context) against grep over the same lines, per topic."""

from __future__ import annotations

import subprocess

import pytest
from conftest import sample_lines

from oklog.query.context import ContextFilter
from oklog.query.engine import Matcher, Query
from oklog.records.record import encode_ulid

LINES = [ln for ln in sample_lines(4000, seed=9) if b"\r" not in ln]
TOPICS = [b"a", b"bb", b"a", b"a", b"c"]


def records(topics) -> list[bytes]:
    return [encode_ulid(1_764_000_000_000 + i, i) + b" " + topics[i % len(topics)] + b" " + ln + b"\n" for i, ln in enumerate(LINES)]


def grep(lines: list[bytes], *args: str) -> list[bytes]:
    r = subprocess.run(["grep", *args], input=b"".join(ln + b"\n" for ln in lines), capture_output=True, env={"LC_ALL": "C"})
    return r.stdout.split(b"\n")[:-1]


def per_topic(out: list[bytes | None], nxt_topics: list[bytes]) -> dict[bytes, list[bytes]]:
    """Printed lines (and -- separators) of each topic, in order."""
    res: dict[bytes, list[bytes]] = {}
    pending = 0
    for item in out:
        if item is None:
            pending += 1
            continue
        topic, line = item.split(b" ", 2)[1:]
        lst = res.setdefault(topic, [])
        if pending:
            lst.append(b"--")
            pending = 0
        lst.append(line[:-1])
    return res


@pytest.mark.parametrize("term", ["error", "INFO", "session"])
@pytest.mark.parametrize(("flag", "before", "after"), [("-A2", 0, 2), ("-B3", 3, 0), ("-C1", 1, 1), ("-C0", 0, 0)])
@pytest.mark.parametrize("topics", [[b"t"], TOPICS])
def test_context_equals_grep_per_topic(term, flag, before, after, topics):
    recs = records(topics)
    f = ContextFilter(Matcher(Query(term.encode())), before, after)
    data = b"".join(recs)
    out: list[bytes | None] = []
    cut = len(b"".join(recs[: len(recs) // 3]))  # fed in two pieces, as the merge hands them over
    out += f.feed(data[:cut])
    out += f.feed(data[cut:])
    got = per_topic(out, topics)
    for t in set(topics):
        lines = [r.split(b" ", 2)[2][:-1] for r in recs if r.split(b" ", 2)[1] == t]
        assert got.get(t, []) == grep(lines, "-F", flag, term), t
