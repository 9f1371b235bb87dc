"""Query parameters: parsing and validation. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from oklog.query.engine import MAX_QUERY_LEN, Query, QueryError
from oklog.records.record import RecordError, ms_floor, normalize_ulid, validate_topic

MIN_KEY = b"0" * 26
MAX_KEY_EXCL = b"\x7f"  # above every ULID
MAX_TERMS = 32  # q and not terms, each


@dataclass(frozen=True)
class QueryParams:
    lo: bytes  # inclusive lower ULID bound (26 bytes)
    hi_excl: bytes  # exclusive upper bound (compares against 26-byte ULIDs)
    query: Query
    topic: bytes | None = None
    # More terms (oklog.query.terms): all -q terms after the first must match,
    # none of the -v terms may; -i folds case for every term.
    terms: tuple[bytes, ...] = ()  # every -q term, the first one's included
    without: tuple[bytes, ...] = ()
    icase: bool = False
    regex: bool = False  # as asked (query.regex is also true for an -i regex, with (?i))
    where: tuple[str, ...] = ()  # -where conditions (oklog.query.fields)


_TRUE = {"", "1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def parse_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise QueryError(f"{name}={value!r} is not a boolean (use true or false)")


def parse_time_ms(text: str) -> int:
    """RFC 3339 time → milliseconds since the epoch."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise QueryError(
            f"bad time {text!r}: use RFC 3339 (2026-11-23T10:00:00Z) or a ULID"
            " (oklog query also takes a duration ago: 30s, 5m, 1h30m, 2d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_bound(text: str, upper: bool) -> bytes:
    """A from/to value (RFC 3339 or ULID) → a ULID key.

    Lower bounds are inclusive. Upper bounds are returned exclusive: a time
    covers its whole millisecond; a ULID includes itself.
    """
    t = text.strip()
    if len(t) == 26 and "-" not in t and ":" not in t:
        try:
            key = normalize_ulid(t)
        except RecordError as e:
            raise QueryError(f"bad ULID {text!r}: {e}") from None
        return key + b"\x00" if upper else key
    ms = parse_time_ms(t)
    if ms < 0:
        raise QueryError(f"time {text!r} is before 1970")
    if ms >= 1 << 48:
        raise QueryError(f"time {text!r} is out of range")
    return ms_floor(ms + 1) if upper else ms_floor(ms)


def parse_params(args: dict[str, list[str]]) -> QueryParams:
    def one(name: str) -> str | None:
        v = args.get(name)
        return v[-1] if v else None

    def terms(name: str) -> tuple[bytes, ...]:
        out = tuple(v.encode("latin-1", "replace") for v in args.get(name, []) if v)
        if len(out) > MAX_TERMS:
            raise QueryError(f"{len(out)} {name} terms; the limit is {MAX_TERMS}")
        for t in out:
            if len(t) > MAX_QUERY_LEN:
                raise QueryError(f"{name} is {len(t)} bytes; the limit is {MAX_QUERY_LEN}")
        return out

    all_q = terms("q")
    without = terms("not")
    q = all_q[0] if all_q else b""
    regex = parse_bool("regex", one("regex"))
    icase = parse_bool("i", one("i"))
    from_ = one("from")
    to = one("to")
    lo = parse_bound(from_, upper=False) if from_ else MIN_KEY
    hi = parse_bound(to, upper=True) if to else MAX_KEY_EXCL
    if lo >= hi:
        raise QueryError(f"from ({from_}) is after to ({to})")
    topic = one("topic")
    topic_b = None
    if topic:
        try:
            topic_b = validate_topic(topic)
        except RecordError as e:
            raise QueryError(str(e)) from None
    from oklog.query.terms import term_query

    where = tuple(args.get("where", []))
    if len(where) > MAX_TERMS:
        raise QueryError(f"{len(where)} where conditions; the limit is {MAX_TERMS}")
    return QueryParams(lo, hi, term_query(q, regex, icase, topic_b), topic_b, all_q, without, icase, regex, where)
