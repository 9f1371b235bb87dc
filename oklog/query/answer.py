"""Pure decisions of a cluster fan-out (no I/O, no clock): what an answer's
status and ``X-Oklog-*`` headers say, and which records go to which member
to bring them up to the replication factor.

``/store/query`` (``coordinator``) and ``/store/hits`` (``hits``) decide their
status here; ``oklog repair`` and the coordinator's read repair decide their
copies with ``replicate_plan``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

ERRORS_MAX = 2000  # characters of X-Oklog-Errors


def sanitize(text: str, limit: int = 300) -> str:
    """Remote text made safe for a header value and one terminal line: control
    bytes (CR, LF, NUL, ...) and non-ASCII become spaces or '?', runs of spaces
    collapse, and the result is cut to ``limit`` characters."""
    out = []
    for ch in text[: limit * 4]:
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            out.append(" ")
        elif o > 0x7E:
            out.append("?")
        else:
            out.append(ch)
    s = " ".join("".join(out).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


@dataclass(frozen=True)
class Absent:
    """A store member that may hold records of the query and is not answering."""

    name: str
    reason: str


def complete_without(missing: int, factor: int, assured: bool) -> bool:
    """Do the members that answered hold every record although ``missing``
    members may hold some? Only when every record is known to be written to
    ``factor`` members (``assured``) and fewer than ``factor`` are missing."""
    return missing == 0 or (assured and missing < factor)


class Answered(Protocol):
    """One member's part of a fan-out as the verdict reads it."""

    @property
    def error(self) -> str: ...  # "" when it answered in full

    @property
    def partial(self) -> bool: ...  # it answered, without the records ``error`` names


def errors_header(missing: Sequence[Absent]) -> str:
    """``name: reason; ...`` safe for a header (a member's error text may hold CR LF)."""
    text = "; ".join(f"{sanitize(m.name, 100)}: {sanitize(m.reason, 300)}" for m in missing)
    return sanitize(text, ERRORS_MAX)


@dataclass(frozen=True)
class Verdict:
    """The status of a fan-out answer and the headers that say why."""

    status: int  # 200 complete, 206 partial, 502 no member answered
    complete: bool  # the members that answered hold every record of the range
    headers: dict[str, str]
    errors: str = ""  # X-Oklog-Errors ("" when nothing is missing)


def verdict(
    answers: Sequence[Answered],
    missing: Sequence[Absent],
    *,
    factor: int,
    assured: bool,
    store_members: int,
    skipped: int,
) -> Verdict:
    """``missing``: every member that may hold records of the range and did not
    answer (those of ``answers`` that failed included). The answer is complete
    unless more members are missing than replication covers (see
    ``complete_without``); it is a 502, never complete, when every member asked
    failed. A member that answered in part (``partial``: a 206 naming damaged or
    quarantined segments) is missing for completeness but has not failed: its
    records are in the answer."""
    failed_all = bool(answers) and all(a.error and not a.partial for a in answers)
    # however many replicas there are, nothing is complete when nobody answered
    complete = complete_without(len(missing), factor, assured) and not failed_all
    headers = {"X-Oklog-Store-Members": str(store_members), "X-Oklog-Nodes-Skipped": str(skipped)}
    errors = ""
    if missing:
        errors = headers["X-Oklog-Errors"] = errors_header(missing)
        headers["X-Oklog-Complete"] = "true" if complete else "false"
    status = 502 if failed_all else 200 if complete else 206
    return Verdict(status, complete, headers, errors)


def first_lacking(lacking: list[int], n: int) -> list[int]:
    """The default choice of ``replicate_plan``: the first ``n`` members that lack a record."""
    return lacking[:n]


@dataclass
class ReplicatePlan:
    """Which records each member is sent (indexes into the members asked)."""

    copies: dict[int, list[bytes]] = field(default_factory=dict)  # member -> keys, in the order seen
    records: int = 0  # distinct keys examined
    under_replicated: int = 0  # keys held fewer than the wanted times
    short_of_members: int = 0  # below the factor, but every member holds one already

    @property
    def copy_count(self) -> int:
        return sum(len(v) for v in self.copies.values())


def replicate_plan(
    holders: Mapping[bytes, Collection[int]],
    members: int,
    factor: int,
    choose: Callable[[list[int], int], list[int]] = first_lacking,
) -> ReplicatePlan:
    """Replicate-missing: ``holders`` maps each key (a ULID) to the members
    (indexes below ``members``) that hold it. A key held fewer than
    ``min(factor, members)`` times is sent to as many of the members lacking
    it as make up the difference, picked by ``choose(lacking, n)``."""
    plan = ReplicatePlan(records=len(holders))
    want = min(factor, members)
    for key, hs in holders.items():
        have = set(hs)
        if len(have) >= want:
            plan.short_of_members += len(have) < factor
            continue
        plan.under_replicated += 1
        lacking = [i for i in range(members) if i not in have]
        for i in choose(lacking, want - len(have)):
            plan.copies.setdefault(i, []).append(key)
    return plan
