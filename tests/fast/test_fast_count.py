"""_fast.count and the case-insensitive _fast.grep against plain-Python
references, on loghub lines and on hostile input."""

from __future__ import annotations

import array
import random

import pytest
from conftest import sample_lines

import oklog._fast as fast
from oklog.query.engine import MODE_LINES, MODE_RAW, MODE_ULID

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_at(ms: int, n: int) -> bytes:
    head = "".join(ALPHABET[(ms >> (5 * k)) & 31] for k in range(9, -1, -1))
    return (head + f"{n:016d}"[-16:].replace("I", "1")).encode()


def records(lines: list[bytes], t0: int = 1_700_000_000_000, gap: int = 977) -> bytes:
    return b"".join(ulid_at(t0 + i * gap, i) + b" t " + ln + b"\n" for i, ln in enumerate(lines))


def fold(b: bytes) -> bytes:
    return bytes(c + 32 if 65 <= c <= 90 else c for c in b)  # ASCII only, as grep -i in the C locale


def ms_of(rec: bytes) -> int:
    ms = 0
    for c in rec[:10]:
        ms = ms * 32 + ALPHABET.find(chr(c)) if chr(c) in ALPHABET else ms * 32
    return ms


def split(buf: bytes) -> list[tuple[bytes, bytes]]:
    """(record, line) of every record; the last may lack its LF."""
    out = []
    for r in buf.split(b"\n"):
        out.append(r)
    if out and out[-1] == b"":
        out.pop()
    res = []
    for r in out:
        sp = r.find(b" ", 27) if len(r) > 27 else -1
        res.append((r, r[sp + 1 :] if sp >= 0 else b""))
    return res


def ref_count(buf: bytes, terms, nots, icase: bool, step: int = 0, origin: int = 0, nb: int = 0):
    f = fold if icase else (lambda b: b)
    matched, outside, counts = 0, 0, [0] * nb
    for r, line in split(buf):
        ln = f(line)
        if all(f(t) in ln for t in terms) and not any(f(t) in ln for t in nots):
            matched += 1
            if step:
                k = (ms_of(r) - origin) // step
                if ms_of(r) < origin or k >= nb:
                    outside += 1
                else:
                    counts[k] += 1
    return matched, outside, counts


def count(buf: bytes, terms, nots, icase: bool, step: int = 0, origin: int = 0, nb: int = 0):
    counts = array.array("q", [0] * nb)
    m, o = fast.count(buf, 0, len(buf), terms, nots, icase, step, origin, counts if step else None)
    return m, o, list(counts) if step else [0] * nb


@pytest.fixture(scope="module")
def corpus() -> bytes:
    return records(sample_lines(6000, seed=16))


TERMS = [b"error", b"ERROR", b"Failed", b"block", b"e", b"0", b"user=", b"INFO", b"zz-not-there", b"kernel"]


@pytest.mark.parametrize("icase", [False, True])
def test_count_terms_match_reference(corpus, icase):
    rng = random.Random(3)
    for _ in range(40):
        terms = rng.sample(TERMS, rng.randrange(0, 3))
        nots = rng.sample(TERMS, rng.randrange(0, 2))
        assert count(corpus, terms, nots, icase) == ref_count(corpus, terms, nots, icase), (terms, nots)


@pytest.mark.parametrize("step", [1, 1000, 60_000, 3_600_000])
def test_count_buckets_match_reference(corpus, step):
    first, last = ms_of(corpus), ms_of(corpus.rsplit(b"\n", 2)[-2])
    origin = first // step * step
    nb = (last - origin) // step + 1
    for terms in ([], [b"error"], [b"blk_"]):
        got = count(corpus, terms, [], True, step, origin, nb)
        assert got == ref_count(corpus, terms, [], True, step, origin, nb)
        assert got[1] == 0 and sum(got[2]) == got[0]
    # a window too small: what does not fit is counted as outside, never dropped
    got = count(corpus, [], [], False, step, origin + step, max(1, nb // 2))
    assert got == ref_count(corpus, [], [], False, step, origin + step, max(1, nb // 2))
    assert got[1] > 0 and sum(got[2]) + got[1] == got[0]


def test_count_ranges_and_hits_in_the_header():
    buf = records([b"plain", b"has needle", b"NEEDLE loud", b"x"])
    # the needle in a topic or ULID is no match; only the lines count
    buf += b"01ARZ3NDEKTSV4RRFFQ69G5FAV needle line\n"
    assert fast.count(buf, 0, len(buf), [b"needle"], [], False, 0, 0, None) == (1, 0)
    assert fast.count(buf, 0, len(buf), [b"needle"], [], True, 0, 0, None) == (2, 0)
    assert fast.count(buf, 0, len(buf), [b"t"], [], False, 0, 0, None) == (0, 0)  # "t" is only ever the topic
    assert fast.count(buf, 0, len(buf), [b"l"], [b"e"], False, 0, 0, None) == (2, 0)  # plain, NEEDLE loud
    r1 = buf.index(b"\n") + 1
    assert fast.count(buf, r1, len(buf), [], [], False, 0, 0, None) == (4, 0)
    assert fast.count(buf, 0, r1, [], [], False, 0, 0, None) == (1, 0)


def test_count_hostile():
    assert fast.count(b"", 0, 0, [], [], False, 0, 0, None) == (0, 0)
    assert fast.count(b"", 0, 0, [b"a"], [b"b"], True, 60_000, 0, array.array("q", [0])) == (0, 0)
    # no trailing LF: the last record still counts, as grep counts a last line
    buf = records([b"one error", b"two error"]).rstrip(b"\n")
    assert fast.count(buf, 0, len(buf), [b"error"], [], False, 0, 0, None) == (2, 0)
    assert fast.count(buf, 0, len(buf), [], [], False, 0, 0, None) == (2, 0)
    # bare LFs and short records: counted as records with empty lines
    junk = b"\n\n\nshort\nx y z\n"
    assert fast.count(junk, 0, len(junk), [], [], False, 0, 0, None) == (5, 0)
    assert fast.count(junk, 0, len(junk), [b"z"], [], False, 0, 0, None) == (0, 0)
    assert fast.count(junk, 0, len(junk), [], [], False, 1, 0, array.array("q", [0])) == (5, 0)
    with pytest.raises(ValueError):
        fast.count(buf, 0, len(buf), [b""], [], False, 0, 0, None)
    with pytest.raises(ValueError):
        fast.count(buf, 0, len(buf), [b"a\nb"], [], False, 0, 0, None)
    with pytest.raises(ValueError):
        fast.count(buf, 0, len(buf), [], [], False, -1, 0, None)
    with pytest.raises(ValueError):
        fast.count(buf, 0, len(buf), [b"a"] * 65, [], False, 0, 0, None)
    with pytest.raises(TypeError):
        fast.count(buf, 0, len(buf), ["str"], [], False, 0, 0, None)
    with pytest.raises(TypeError):
        fast.count(buf, 0, len(buf), [], [], False, 1, 0, b"readonly")
    with pytest.raises(ValueError):
        fast.count(buf, 0, len(buf), [], [], False, 1, 0, bytearray(7))
    with pytest.raises(ValueError):
        fast.count(buf, 5, 2, [], [], False, 0, 0, None)


def test_count_huge():
    # many records (more than 2^16, in both paths), a long needle, one bucket taking all
    buf = records([b"a line with the needle in it"] * 70_000, gap=0)
    counts = array.array("q", [0])
    assert fast.count(buf, 0, len(buf), [b"needle"], [], False, 10**12, 10**12, counts) == (70_000, 0)
    assert counts[0] == 70_000
    assert fast.count(buf, 0, len(buf), [b"with the NEEDLE in"], [b"absent"], True, 0, 0, None) == (70_000, 0)


@pytest.mark.parametrize("mode", [MODE_RAW, MODE_LINES, MODE_ULID])
def test_grep_icase_matches_reference(corpus, mode):
    for needle in [b"error", b"ErRoR", b"BLOCK", b"e", b"Z", b"user=ROOT", b"[", b"\xe9t\xc9", b"not-in-there-at-all"]:
        want = b""
        for r, line in split(corpus):
            if fold(needle) in fold(line):
                want += {MODE_RAW: r, MODE_LINES: line, MODE_ULID: r[:27] + line}[mode] + b"\n"
        assert fast.grep(corpus, 0, len(corpus), needle, mode, True) == want, needle


def test_grep_icase_non_ascii_is_exact():
    buf = records([b"caf\xc9", b"caf\xe9", b"CAF\xe9"])
    assert fast.grep(buf, 0, len(buf), b"caf\xe9", MODE_LINES, True) == b"caf\xe9\nCAF\xe9\n"
    assert fast.grep(buf, 0, len(buf), b"x", MODE_LINES, True) == b""
    assert fast.grep(b"", 0, 0, b"x", MODE_LINES, True) == b""


# -- logfmt_eq: the -where KEY=VALUE decision for logfmt lines ---------------------------------

LOGFMT_LINES = [
    b"uid=0 msg=ok",
    b"level=info uid=0",
    b"level=info uid=00",
    b"uid=0.0",
    b'uid="0"',
    b'msg="a uid=0 inside" uid=5',
    b'msg="a uid=5 inside" uid=0',
    b"euid=0 uid=1",
    b"euid=0",
    b"uid=0,uid=1",
    b"uid=1;uid=0",
    b"  uid=0",
    b"\tuid=0\t",
    b'{"uid": 0}',
    b' {"uid": 1} uid=0',
    b"{not json uid=0",
    b"uid=",
    b"uid= x=0",
    b"uid==0",
    b"x=uid=0",
    b"uid=0=0",
    b'msg="unterminated uid=0',
    b'msg="esc \\" uid=0" uid=1',
    b'msg="trailing backslash\\',
    b"'uid'=0",
    b"a,uid=0",
    b"uid",
    b"no pairs mention uid at all",
    b"uid =0",
    b"\xffuid=0",
    b"uid=0\r",
    b"k=v" * 50 + b" uid=0",
    b"uid=1000",
    b"uid=+0",
    b"uid=0e0",
    b"uid=-0",
    b"uid=inf level=nan",
    b"uid=1_0 level=Info",
    b"uid=root",
    b"uid=\xd9\xa3",
    b"uid=000000000000000000000",
    b"uid=10000000000000000001",
    b"uid=10 status=200.0",
    b"status=0200 level=INFO",
    b"status=200",
    b"uid=10 level=info\xff",
]


def _verdicts(lines: list[bytes], key: bytes, value: bytes, kind: int = 2) -> dict[bytes, int]:
    buf = records(lines)
    cand, verd = fast.logfmt_eq(buf, 0, len(buf), key, value, kind)
    t = array.array("q", cand)
    assert len(t) == 3 * len(verd)
    return {buf[t[3 * i + 1] : t[3 * i + 2]].rstrip(b"\n"): verd[i] for i in range(len(verd))}


@pytest.mark.parametrize(
    "key,value",
    [(b"uid", b"0"), (b"uid", b"10"), (b"uid", b"00010"), (b"status", b"200"), (b"uid", b"1e1"), (b"level", b"info"),
     (b"level", b"nan"), (b"msg", b"ok"), (b"k", b"v"), (b"uid", b"10000000000000000000")],
)
@pytest.mark.parametrize("kind", [None, 0, 1, 2])
def test_logfmt_eq_agrees_with_the_parser(key, value, kind):
    """kind None: as WhereFilter tells it; 0-2 forced (a wrong kind only ever
    makes the helper decide less, as the C checks it)."""
    from oklog.query.fields import Condition, _logfmt_eq, parse_fields

    cond = Condition(key.decode(), "=", value.decode())
    if kind is None:
        kind = _logfmt_eq([cond])[2]
    elif kind == 0 and cond._num is not None:  # text for a number would be a lie the C cannot check
        return
    lines = LOGFMT_LINES + [ln.rstrip(b"\r") for ln in sample_lines(3000, seed=5)]
    got = _verdicts(lines, key, value, kind)
    decided = 0
    for ln in lines:
        fields = parse_fields(ln)
        holds = fields is not None and cond.holds(fields)
        v = got.get(ln)
        if v is None:  # left out: no key in the line, or certainly no match
            assert not holds, ln
            assert key not in ln or fields is not None, ln  # a line left out as a non-match is no skipped line
        elif v == 1:
            assert holds, ln
            decided += 1
        elif v == 0:
            raise AssertionError("verdict 0 is never emitted")
        else:
            assert v == 2
    if any(ln == key + b"=" + value for ln in LOGFMT_LINES):
        assert decided


def test_logfmt_eq_hostile():
    assert fast.logfmt_eq(b"", 0, 0, b"uid", b"0") == (b"", b"")
    buf = records([b"uid=0"]).rstrip(b"\n")  # no trailing LF
    cand, verd = fast.logfmt_eq(buf, 0, len(buf), b"uid", b"0")
    assert verd == b"\x01" and array.array("q", cand).tolist() == [0, 29, len(buf)]
    junk = b"\n\nuid=0\n" + b"x" * 26 + b" uid=0\n"  # records too short to hold a line: never a match
    assert fast.logfmt_eq(junk, 0, len(junk), b"uid", b"0") == (b"", b"")
    for key, value in [(b"", b"0"), (b"uid", b""), (b"a=b", b"0"), (b"u d", b"0"), (b"uid", b"a b"), (b"uid", b'"0"')]:
        with pytest.raises(ValueError):
            fast.logfmt_eq(buf, 0, len(buf), key, value)
    with pytest.raises(ValueError):
        fast.logfmt_eq(buf, 3, 1, b"uid", b"0")
