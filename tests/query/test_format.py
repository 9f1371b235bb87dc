import json

import pytest

from oklog.query.format import as_json, lines_only, ulid_and_line, with_time
from oklog.records.record import ULIDSource, stamp_lines

LINES = [b"plain", b"", b"with  spaces ", b"bin \xff\x00", b"x" * 3000]


def records(topics):
    src = ULIDSource(lambda: 1_795_464_634_123)
    out = b""
    for t in topics:
        out += stamp_lines(LINES, src.headers(len(LINES), t))
    return out


@pytest.mark.parametrize("topics", [[b"default"], [b"a", b"bb-c", b"default"], [b"t"]])
def test_lines_only(topics):
    assert lines_only(records(topics)) == b"".join(ln + b"\n" for ln in LINES) * len(topics)


def test_ulid_and_time():
    buf = records([b"default", b"x"])
    recs = buf.split(b"\n")[:-1]
    out = ulid_and_line(buf).split(b"\n")[:-1]
    assert [o[:26] for o in out] == [r[:26] for r in recs]
    assert [o[27:] for o in out] == LINES * 2
    timed = with_time(buf).split(b"\n")[:-1]
    assert all(t.startswith(b"2026-11-23T") for t in timed)
    assert timed[0] == b"2026-11-23T" + timed[0][11:23] + b"Z plain"
    both = with_time(buf, ulid=True).split(b"\n")[:-1]
    assert both[0][:26] == recs[0][:26] and both[0].endswith(b"Z plain")


def test_json():
    buf = records([b"tp"])
    objs = [json.loads(x) for x in as_json(buf).split(b"\n")[:-1]]
    assert [o["topic"] for o in objs] == ["tp"] * len(LINES)
    assert objs[0]["line"] == "plain" and objs[3]["line"] == "bin \ufffd\x00"
    assert objs[0]["time"].endswith("Z") and len(objs[0]["ulid"]) == 26


def test_empty():
    assert lines_only(b"") == b"" and with_time(b"") == b"" and as_json(b"") == b""
