"""Event time (pure): parsing producers' times, the window, stamping and
sorting a batch; and the VictoriaLogs JSON-lines form and topic labels."""

from __future__ import annotations

import json

import pytest

from oklog.ingest.eventtime import EventWindow, Sequencer, Stamper, rfc3339_ns
from oklog.ingest.httpingest import (
    Batch,
    loki_topic,
    parse_event_time,
    parse_loki,
    parse_vlogs,
    stamp_batch,
)
from oklog.records.record import now_ms, split_record, ulid_ms

NOW_MS = 1_764_000_000_000
S = 10**9


@pytest.mark.parametrize(
    "value, want",
    [
        ("2025-11-24T16:00:00Z", 1_764_000_000 * S),
        ("2025-11-24T16:00:00.123456789Z", 1_764_000_000 * S + 123456789),
        ("2025-11-24T16:00:00.1234567891234Z", 1_764_000_000 * S + 123456789),  # beyond ns: cut
        ("2025-11-24T17:00:00+01:00", 1_764_000_000 * S),
        ("2025-11-24T17:00:00+0100", 1_764_000_000 * S),
        ("2025-11-24 16:00:00", 1_764_000_000 * S),  # no zone: UTC
        (1_764_000_000, 1_764_000_000 * S),  # seconds
        (1_764_000_000.5, 1_764_000_000 * S + S // 2),
        (1_764_000_000_123, 1_764_000_000_123_000_000),  # milliseconds
        (1_764_000_000_123_456, 1_764_000_000_123_456_000),  # microseconds
        (1_764_000_000_123_456_789, 1_764_000_000_123_456_789),  # nanoseconds
        ("1764000000", 1_764_000_000 * S),
        ("yesterday", None),
        (True, None),
        (None, None),
        ([1], None),
        (float("nan"), None),
        ("2025-13-45T99:00:00Z", None),
    ],
)
def test_parse_event_time(value, want):
    assert parse_event_time(value) == want


def test_rfc3339_ns():
    assert rfc3339_ns(1_764_000_000 * S + 5) == "2025-11-24T16:00:00.000000005Z"
    assert rfc3339_ns(10**30) == str(10**30)  # beyond datetime: the number itself


def test_window_decides_ulid_or_line():
    st = Stamper(EventWindow(past=3600, future=300), now=NOW_MS)
    too_old = (NOW_MS - 3_601_000) * 10**6
    times = [(NOW_MS - 3_599_000) * 10**6, (NOW_MS + 299_000) * 10**6, too_old, None, (NOW_MS + 301_000) * 10**6]
    recs, split = st.stamp_group(b"t", [b"a", b"b", b"c", b"d", b"e"], times, False, 100)
    got = [(ulid_ms(u), ln) for u, _, ln in map(split_record, recs)]
    assert got == [
        (NOW_MS - 3_599_000, b"a"),
        (NOW_MS + 299_000, b"b"),
        (NOW_MS, rfc3339_ns(too_old).encode() + b" c"),
        (NOW_MS, b"d"),
        (NOW_MS, rfc3339_ns((NOW_MS + 301_000) * 10**6).encode() + b" e"),
    ]
    assert (st.event_stamped, st.outside, split) == (2, 2, 0)
    # lines that show their time already are not given it twice
    recs, _ = st.stamp_group(b"t", [b"t c"], [too_old], True, 100)
    assert split_record(recs[0])[2] == b"t c"


def test_sequencer_keeps_arrival_order_within_a_millisecond():
    seq = Sequencer(size=2)
    a, b = seq.reserve(5), seq.reserve(5, 3)
    assert b == a + 1 and seq.reserve(5) == a + 4
    seq.reserve(6)
    seq.reserve(7)  # 5 forgotten: a fresh random run
    assert seq.reserve(5) >> 79 == 0  # top bit clear: increments cannot overflow


def test_stamp_batch_sorts_by_event_time_and_splits():
    t = (now_ms() - 1000) * 10**6  # inside the default window
    batch = Batch()
    batch.add(b"a", [b"late", b"early"], [t + 2 * 10**6, t])
    batch.add(b"b", [b"now-ish", b"x" * 25], [None, t + 10**6])
    ulids: list[bytes] = []
    records, split = stamp_batch(batch, EventWindow(), limit=10, ulids_out=ulids)
    assert split == 2  # 25 bytes in pieces of 10
    parsed = [split_record(r) for r in records]
    assert records == sorted(records)
    assert [(t_, ln) for _, t_, ln in parsed][:5] == [
        (b"a", b"early"), (b"b", b"xxxxxxxxxx"), (b"b", b"xxxxxxxxxx"), (b"b", b"xxxxx"), (b"a", b"late")
    ]
    assert ulid_ms(parsed[0][0]) == t // 10**6
    assert len(ulids) == 4 and ulids[1] == parsed[0][0]  # each line's first ULID, in the order sent


def test_loki_topic_labels():
    assert loki_topic({"application": "pay", "x": "y"}, None, b"d") == b"pay"
    assert loki_topic({"service_name": "svc"}, None, b"d") == b"svc"
    assert loki_topic({"job": "j", "service_name": "svc"}, None, b"d") == b"j"
    assert loki_topic({"team": "core"}, None, b"d", ("team",)) == b"core"
    body = json.dumps({"streams": [{"stream": {"team": "core"}, "values": [["1", "x"]]}]}).encode()
    assert parse_loki(body, None, b"d", topic_labels=("team",)).groups[0][0] == b"core"


def test_parse_vlogs():
    lines = [
        {"_msg": "hello", "_time": "2025-11-24T16:00:00Z", "stream": "billing", "level": "info"},
        {"message": "fallback field", "timestamp": 1_764_000_000.25, "stream": "billing"},
        {"no": "message", "stream": "other!"},
        "a bare string",
    ]
    body = b"\n".join(json.dumps(x).encode() for x in lines) + b"\nnot json\n\n"
    batch = parse_vlogs(body, ["_msg"], "_time", ["stream"], b"default")
    assert batch.groups == [
        (b"billing", [b"{level=info,stream=billing} hello", b'{stream=billing,timestamp=1764000000.25} fallback field']),
        (b"other_", [json.dumps(lines[2]).encode()]),
        (b"default", [b"a bare string", b"not json"]),
    ]
    assert batch.times == [[1_764_000_000 * S, None], [None], [None, None]]
    assert batch.invalid_json == 1
    batch = parse_vlogs(body, ["message"], "timestamp", [], b"default")
    assert batch.groups[0][1][1] == b"{stream=billing} fallback field"
    assert batch.times[0][1] == 1_764_000_000 * S + S // 4


def test_fields_prefix_matches_labels_prefix():
    from oklog.ingest.httpingest import fields_prefix, labels_prefix

    fields = {"b": "x y", "a": 1, "c": {"n": [1, "q\"uote"]}, "d": None, "e": True, "k=ey": "v\nw", "f": ""}
    as_text = {"b": "x y", "a": "1", "c": '{"n":[1,"q\\"uote"]}', "d": "null", "e": "true", "k=ey": "v\nw", "f": ""}
    assert fields_prefix(fields) == labels_prefix(as_text)
    assert fields_prefix(fields) == fields_prefix(dict(reversed(list(fields.items()))))  # cached pairs too
    assert fields_prefix({}) == b""
