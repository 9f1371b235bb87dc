import pytest

from oklog.records.record import (
    ULID_LEN,
    RecordError,
    ULIDSource,
    decode_ulid,
    encode_ulid,
    make_headers,
    split_record,
    stamp_lines,
    validate_topic,
)


def test_ulid_roundtrip():
    for ms, rand in [(0, 0), (1, 1), ((1 << 48) - 1, (1 << 80) - 1), (1795464634000, 12345)]:
        u = encode_ulid(ms, rand)
        assert len(u) == ULID_LEN
        assert decode_ulid(u) == (ms, rand)


def test_ulid_text_order_is_numeric_order():
    a = encode_ulid(1000, 5)
    b = encode_ulid(1000, 6)
    c = encode_ulid(1001, 0)
    assert a < b < c


@pytest.mark.parametrize("bad", ["", "short", "U" * 26, "8" + "0" * 25])
def test_decode_rejects_malformed(bad):
    with pytest.raises(RecordError):
        decode_ulid(bad)


def test_headers_monotonic_within_and_across_batches():
    clock = iter([5, 5, 4, 9]).__next__  # a clock that goes backwards once
    src = ULIDSource(clock)
    seen = []
    for n in (3, 1000, 2, 7):
        seen += [h[:ULID_LEN] for h in src.headers(n)]
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


def test_headers_carry_across_low_bits():
    # Force the slow path: the low 30 bits overflow within the batch.
    first = (1 << 30) - 2
    heads = make_headers(42, first, 5, b"t")
    ulids = [h[:ULID_LEN] for h in heads]
    assert [decode_ulid(u) for u in ulids] == [(42, first + i) for i in range(5)]


def test_stamp_and_split():
    lines = [b"hello", b"", b"bin\x00\xff\r%"]
    src = ULIDSource(lambda: 7)
    data = stamp_lines(lines, src.headers(3, b"my-topic"))
    recs = data.split(b"\n")[:-1]
    assert [split_record(r)[2] for r in recs] == lines
    assert {split_record(r)[1] for r in recs} == {b"my-topic"}


@pytest.mark.parametrize("topic", ["default", "a", "A-b_9"])
def test_topics_ok(topic):
    assert validate_topic(topic) == topic.encode()


@pytest.mark.parametrize("topic", ["", "-x", "has space", "x" * 200, "é"])
def test_topics_rejected(topic):
    with pytest.raises(RecordError):
        validate_topic(topic)
