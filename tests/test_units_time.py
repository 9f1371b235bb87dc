"""oklog.units.resolve_time: the one reading of a typed time (CLI, TUI, repair)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from oklog.units import TIME_HINT, resolve_time


def test_no_bound():
    for text in ("", "  ", "now", "NOW", " Now "):
        assert resolve_time(text) is None


def test_duration_is_rfc3339_utc_with_milliseconds():
    assert resolve_time("5m", now=1_700_000_300.0) == "2023-11-14T22:13:20.000Z"
    assert resolve_time("1h30m", now=1_795_473_787.4989) == "2026-11-23T21:13:07.498Z"
    assert resolve_time("0", now=1_700_000_000.9996) == "2023-11-14T22:13:20.999Z"


def test_duration_is_the_same_instant_as_datetime():
    for now in (1_700_000_000.0, 1_795_473_787.4989, 1_795_473_787.0005, 1_600_000_000.123456):
        got = resolve_time("90s", now=now)
        assert got is not None
        want = datetime.fromtimestamp(now - 90, tz=UTC).isoformat(timespec="milliseconds")
        assert datetime.fromisoformat(got) == datetime.fromisoformat(want)


def test_times_and_ulids_pass_through():
    assert resolve_time("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"
    assert resolve_time(" 2026-01-01T00:00:00+02:00 ") == "2026-01-01T00:00:00+02:00"
    assert resolve_time("01M8585ASVB7WMRPJWXYE9YJFD") == "01M8585ASVB7WMRPJWXYE9YJFD"


@pytest.mark.parametrize("text", ["yesterday", "5 minutes", "12:00", "01M8585ASVB7WMRPJWXYE9YJF!"])
def test_anything_else_says_what_would_do(text):
    with pytest.raises(ValueError) as e:
        resolve_time(text)
    assert TIME_HINT in str(e.value) and repr(text) in str(e.value)
