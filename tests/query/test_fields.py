"""-where, -fields and -by on JSON, logfmt, malformed and plain lines
(oklog.query.fields), against the dicts the lines were made from, and against
grep on real loghub lines."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
from conftest import corpus_lines

from oklog.query.engine import MODE_LINES, QueryError
from oklog.query.fields import by_lines, parse_condition, parse_fields, project
from oklog.query.terms import build_matcher
from oklog.records.record import encode_ulid

LEVELS = ["info", "warn", "error", "debug"]
MSGS = ["request done", "upstream timeout after 3s", "cache miss", 'said "hi"']


def made(n: int, seed: int = 1):
    """(line, fields or None) pairs: JSON, logfmt, malformed JSON, plain lines."""
    rnd = random.Random(seed)
    plain = [ln for ln in corpus_lines() if b"=" not in ln and not ln.lstrip().startswith(b"{")]
    out = []
    for _ in range(n):
        d = {
            "status": rnd.choice([200, 201, 404, 500, 503]),
            "level": rnd.choice(LEVELS),
            "msg": rnd.choice(MSGS),
            "dur": round(rnd.random() * 2, 3),
        }
        kind = rnd.randrange(4)
        if kind == 0:
            nested = {"http": {"status": d["status"]}, "level": d["level"], "msg": d["msg"], "dur": d["dur"]}
            out.append((json.dumps(nested).encode(), d))
        elif kind == 1:
            msg = d["msg"].replace('"', '\\"')
            out.append((f'level={d["level"]} status={d["status"]} dur={d["dur"]} msg="{msg}"'.encode(), d))
        elif kind == 2:
            out.append((json.dumps(d).encode()[:-3], None))  # cut short: neither JSON nor logfmt
        else:
            out.append((rnd.choice(plain), None))
    return out


ROWS = made(6000)
BUF = b"".join(encode_ulid(1_764_000_000_000 + i, i) + b" t " + ln + b"\n" for i, (ln, _) in enumerate(ROWS))


def where(*conds: str) -> list[bytes]:
    m = build_matcher([], False, False, [], None, conds)
    return m.scan_format(BUF, 0, len(BUF), MODE_LINES).split(b"\n")[:-1]


@pytest.mark.parametrize(
    ("conds", "ref"),
    [
        (["status>=500"], lambda d: d["status"] >= 500),
        (["status<201"], lambda d: d["status"] < 201),
        (["status!=200"], lambda d: d["status"] != 200),
        (["level=error"], lambda d: d["level"] == "error"),
        (["level=error", "status>=500"], lambda d: d["level"] == "error" and d["status"] >= 500),
        (["msg~timeout"], lambda d: "timeout" in d["msg"]),
        (["msg!~timeout|miss"], lambda d: "timeout" not in d["msg"] and "miss" not in d["msg"]),
        (["dur>1.5"], lambda d: d["dur"] > 1.5),
        (["dur<=1e-1"], lambda d: d["dur"] <= 0.1),
        (['msg="said \\"hi\\""'], lambda d: False),  # quotes only strip around the value
        (["msg=cache miss"], lambda d: d["msg"] == "cache miss"),
    ],
)
def test_where_equals_reference(conds, ref):
    got = where(*conds)
    # nested JSON lines hold status as http.status: a condition on `status` does not see it there
    want = []
    for line, d in ROWS:
        if d is None:
            continue
        nested = line.startswith(b'{"http"')
        if nested and any(c.startswith("status") for c in conds):
            if any(c.startswith("status!=") for c in conds) and len(conds) == 1:
                want.append(line)  # missing field: != holds
            continue
        if ref(d):
            want.append(line)
    assert got == want


def test_dotted_names_reach_into_json():
    got = where("http.status>=500")
    want = [ln for ln, d in ROWS if d is not None and ln.startswith(b'{"http"') and d["status"] >= 500]
    assert got == want and want


def test_logfmt_on_real_lines_equals_grep():
    data = b"\n".join(corpus_lines()) + b"\n"
    lines = data.split(b"\n")[:-1]
    buf = b"".join(encode_ulid(1, i) + b" t " + ln + b"\n" for i, ln in enumerate(lines))
    m = build_matcher([], False, False, [], None, ["uid=0"])
    got = m.scan_format(buf, 0, len(buf), MODE_LINES).split(b"\n")[:-1]
    r = subprocess.run(["grep", "-E", "(^|[[:space:],;])uid=0([[:space:],;]|$)"], input=data, capture_output=True, env={"LC_ALL": "C"})
    assert got == r.stdout.split(b"\n")[:-1] and got


def test_skipped_counted_and_bad_conditions():
    m = build_matcher([], False, False, [], None, ["level=error"])
    m.scan_format(BUF, 0, len(BUF), MODE_LINES)
    # every unstructured line holding the prefilter literals ("level", "error") is skipped
    assert m.where.skipped == sum(1 for ln, d in ROWS if d is None and b"level" in ln and b"error" in ln)
    for bad in ("status", "=5", "msg~(", ""):
        with pytest.raises(QueryError):
            build_matcher([], False, False, [], None, [bad])
    assert parse_condition(" status >= 500 ").op == ">="
    assert parse_fields(b"no fields here") is None
    assert parse_fields(b'{"a": {"b": 1}}') == {"a": {"b": 1}}
    assert parse_fields(b'a=1 b="x y" c=') == {"a": "1", "b": "x y", "c": ""}


def test_fields_and_by():
    lines = b'{"a": 1, "b": {"c": "x"}}\nk=v a=2\nplain line\n'
    assert project(lines, ["a", "b.c"]) == b"a=1 b.c=x\na=2\n"
    recs = b"".join(encode_ulid(5, i) + b" top " + ln + b"\n" for i, ln in enumerate(lines.split(b"\n")[:-1]))
    out = by_lines(recs, "a").split(b"\n")[:-1]
    sizes = [len(r) + 1 for r in recs.split(b"\n")[:-1]]
    assert [x[27:] for x in out] == [b'%d "1"' % sizes[0], b'%d "2"' % sizes[1], b"%d null" % sizes[2]]
    assert [x[27:].split(b" ")[1] for x in by_lines(recs, "topic").split(b"\n")[:-1]] == [b'"top"'] * 3
