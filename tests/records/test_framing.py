"""records.framing.Carry: whole records out of arbitrary chunks."""

import random

import pytest

from oklog.records.framing import Carry, TornRecord


def test_any_chunking_gives_the_same_records():
    data = b"".join(b"%026d t line %d\n" % (i, i) * (i % 3 + 1) for i in range(500))
    rng = random.Random(7)
    for _ in range(50):
        carry, out, pos = Carry(), [], 0
        while pos < len(data):
            n = rng.choice([1, 2, 7, 40, 300, 5000])
            whole = carry.feed(data[pos : pos + n])
            assert whole == b"" or whole.endswith(b"\n")
            out.append(whole)
            pos += n
        assert b"".join(out) == data and carry.rest == b""


def test_tail_is_held_then_completed():
    c = Carry()
    assert c.feed(b"a\nb") == b"a\n"
    assert c.feed(b"cd") == b"" and c.rest == b"bcd"
    assert c.feed(b"\ne") == b"bcd\n" and c.rest == b"e"


def test_whole_chunk_passes_uncopied():
    chunk = b"x\n" * 100
    assert Carry().feed(chunk) is chunk


def test_limit_bounds_a_tail_without_lf():
    c = Carry(limit=10)
    c.feed(b"12345")
    with pytest.raises(TornRecord):
        c.feed(b"678901")
    c = Carry(limit=10)
    with pytest.raises(TornRecord):
        c.feed(b"ok\n" + b"y" * 11)
