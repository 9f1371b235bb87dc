"""``oklog repair`` and ``oklog rebalance``: cluster-wide store maintenance tools.

repair: walk the time space slice by slice; in each, ask every live store member
for its own records (``/store/_query``, raw), count the holders of every ULID,
and replicate records held by fewer than the replication factor to members that
lack them (``POST /store/replicate``, idempotent). Slices holding too much data
are halved first (``HEAD`` gives sizes without scanning). Safe to interrupt and
run again: every step is a copy.

rebalance: while the largest store is more than ``-ratio`` times the smallest,
copy a segment from the largest to the smallest, check that every record of it
is now held by at least the replication factor of members *other than* the
source, and only then delete it from the source (to its trash). A record is
never under-replicated during the move.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field

import httpx

from oklog.addr import parse_addr
from oklog.config import DEFAULT_API_PORT
from oklog.query.engine import merge_dedup
from oklog.record import ULID_LEN

SLICE_BYTES = 64 << 20  # per member, per slice
TIMEOUT = httpx.Timeout(120.0, connect=5.0)


@dataclass
class Member:
    id: str
    api: str


@dataclass
class RepairSummary:
    slices: int = 0
    records: int = 0
    under_replicated: int = 0
    copies: int = 0
    errors: list[str] = field(default_factory=list)


def cluster_view(client: httpx.Client, node: str) -> tuple[list[Member], int]:
    host, port = parse_addr(node, DEFAULT_API_PORT, default_host="localhost")
    st = client.get(f"http://{host}:{port}/cluster/state").json()
    members = [
        Member(m["id"], m["api_addr"])
        for m in st["members"]
        if m.get("state") == "alive" and m.get("role") in ("store", "ingeststore") and m.get("api_addr")
    ]
    return members, int(st.get("replication_factor", 1))


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _size(client: httpx.Client, m: Member, lo: int, hi: int) -> int:
    r = client.head(f"http://{m.api}/store/_query", params={"from": _iso(lo), "to": _iso(hi - 1)})
    r.raise_for_status()
    return int(r.headers.get("X-Oklog-Max-Data-Set-Size", 0))


def _records(client: httpx.Client, m: Member, lo: int, hi: int) -> bytes:
    r = client.get(
        f"http://{m.api}/store/_query", params={"from": _iso(lo), "to": _iso(hi - 1), "format": "raw"}
    )
    r.raise_for_status()
    return r.content


def repair_slice(client, members: list[Member], factor: int, lo: int, hi: int, s: RepairSummary) -> None:
    holders: dict[bytes, list[int]] = {}
    records: dict[bytes, bytes] = {}
    for i, m in enumerate(members):
        data = _records(client, m, lo, hi)
        for rec in data.split(b"\n")[:-1]:
            u = rec[:ULID_LEN]
            holders.setdefault(u, []).append(i)
            records.setdefault(u, rec)
    s.records += len(holders)
    want = min(factor, len(members))
    todo: dict[int, list[bytes]] = {}
    for u, hs in holders.items():
        if len(set(hs)) >= want:
            continue
        s.under_replicated += 1
        missing = [i for i in range(len(members)) if i not in hs]
        for i in random.sample(missing, want - len(set(hs))):
            todo.setdefault(i, []).append(records[u] + b"\n")
    for i, recs in todo.items():
        body = merge_dedup([b"".join(sorted(recs))])
        r = client.post(f"http://{members[i].api}/store/replicate", content=body)
        if r.status_code != 200:
            s.errors.append(f"replicate to {members[i].id}: {r.status_code} {r.text.strip()}")
            continue
        s.copies += len(recs)


def repair(node: str, from_ms: int, to_ms: int, step_ms: int = 0, progress=True, http: dict | None = None) -> RepairSummary:
    """Slices start as the whole range (or ``step_ms`` wide when given) and are
    halved while a member holds more than SLICE_BYTES in one: an empty or sparse
    range costs a few HEAD requests, not one per fixed-width slice."""
    s = RepairSummary()
    with httpx.Client(timeout=TIMEOUT, **(http or {})) as client:  # http: oklog.auth.cli_http_kwargs
        members, factor = cluster_view(client, node)
        if not members:
            raise SystemExit("oklog repair: no live store members")
        step = step_ms if step_ms > 0 else max(to_ms - from_ms, 1)
        slices = [(t, min(t + step, to_ms)) for t in range(from_ms, to_ms, step)]
        bar = _bar(progress, len(slices), "repair")
        while slices:
            lo, hi = slices.pop(0)
            biggest = max(_size(client, m, lo, hi) for m in members)
            if biggest > SLICE_BYTES and hi - lo > 1:
                mid = (lo + hi) // 2
                slices[:0] = [(lo, mid), (mid, hi)]
                bar.total(1)
                continue
            try:
                repair_slice(client, members, factor, lo, hi, s)
            except httpx.HTTPError as e:
                s.errors.append(f"slice {_iso(lo)}: {e}")
            s.slices += 1
            bar.advance()
        bar.close()
    return s


@dataclass
class RebalanceSummary:
    moved_segments: int = 0
    moved_bytes: int = 0
    skipped: int = 0
    sizes_before: dict[str, int] = field(default_factory=dict)
    sizes_after: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _segment_answers(client, members: list[Member]) -> dict[str, dict]:
    """Every member's ``/store/segments`` answer, by member id."""
    return {m.id: client.get(f"http://{m.api}/store/segments").json() for m in members}


def _store_sizes(client, members: list[Member]) -> dict[str, list[dict]]:
    return {k: v["segments"] for k, v in _segment_answers(client, members).items()}


def _holders_excluding(client, members, source: Member, seg: dict) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    params = {"from": seg["first"], "to": seg["last"], "format": "raw"}
    for m in members:
        if m.id == source.id:
            continue
        data = client.get(f"http://{m.api}/store/_query", params=params).content
        for u in {rec[:ULID_LEN] for rec in data.split(b"\n")[:-1]}:
            counts[u] = counts.get(u, 0) + 1
    return counts


def rebalance(node: str, ratio: float = 1.5, max_moves: int = 1000, progress=True, http: dict | None = None) -> RebalanceSummary:
    s = RebalanceSummary()
    with httpx.Client(timeout=TIMEOUT, **(http or {})) as client:  # http: oklog.auth.cli_http_kwargs
        members, factor = cluster_view(client, node)
        if len(members) < 2:
            raise SystemExit("oklog rebalance: fewer than two live store members")
        by_id = {m.id: m for m in members}
        segs = _settled_sizes(client, members)  # e.g. a repair just before: let its copies compact
        s.sizes_before = {k: sum(x["size"] for x in v) for k, v in segs.items()}
        tried: set[tuple[str, str]] = set()
        bar = _bar(progress, max_moves, "rebalance")
        for _ in range(SETTLE_ROUNDS):
            segs = _rebalance_round(client, members, by_id, factor, ratio, max_moves, segs, tried, s, bar)
            # Receivers compact what they got (dropping copies they already had),
            # so sizes move after the moves: wait for them to settle and re-check.
            segs = _settled_sizes(client, members)
            sizes = {k: sum(x["size"] for x in v) for k, v in segs.items()}
            if max(sizes.values()) <= ratio * max(min(sizes.values()), 1):
                break
        bar.close()
        segs = _store_sizes(client, members)
        s.sizes_after = {k: sum(x["size"] for x in v) for k, v in segs.items()}
    return s


SETTLE_ROUNDS = 5


def _settled_sizes(client, members, timeout: float = 30.0) -> dict[str, list[dict]]:
    """Segment lists once no member has maintenance work left (receivers compact
    away copies they already had) and two readings a second apart agree."""
    deadline = time.monotonic() + timeout
    prev = None
    while True:
        answers = _segment_answers(client, members)
        now = {k: v["segments"] for k, v in answers.items()}
        busy = any(v.get("compaction_pending") for v in answers.values())
        if (now == prev and not busy) or time.monotonic() > deadline:
            return now
        prev = now
        time.sleep(0.5 if busy else 1.0)


def _rebalance_round(client, members, by_id, factor, ratio, max_moves, segs, tried, s, bar):
    """Move segments from the largest store to the smallest until the ratio
    holds or nothing movable is left; returns the last seen segment lists."""
    for _ in range(max_moves):
        sizes = {k: sum(x["size"] for x in v) for k, v in segs.items()}
        big = max(sizes, key=lambda k: sizes[k])
        small = min(sizes, key=lambda k: sizes[k])
        if sizes[big] <= ratio * max(sizes[small], 1):
            break
        gap = sizes[big] - sizes[small]
        candidates = [
            x for x in sorted(segs[big], key=lambda x: -x["size"])
            if x["size"] <= gap / 2 + 1 and (big, x["name"]) not in tried
        ]
        if not candidates:
            break
        seg = candidates[0]
        tried.add((big, seg["name"]))
        src, dst = by_id[big], by_id[small]
        r = client.get(f"http://{src.api}/store/segment", params={"name": seg["name"]})
        if r.status_code != 200:
            s.skipped += 1
            segs = _store_sizes(client, members)
            continue
        body = r.content
        w = client.post(f"http://{dst.api}/store/replicate", content=body)
        if w.status_code != 200:
            s.errors.append(f"replicate to {dst.id}: {w.status_code} {w.text.strip()}")
            break
        need = {rec[:ULID_LEN] for rec in body.split(b"\n")[:-1]}
        counts = _holders_excluding(client, members, src, seg)
        if all(counts.get(u, 0) >= factor for u in need):
            d = client.delete(f"http://{src.api}/store/segment", params={"name": seg["name"]})
            if d.status_code == 200:
                s.moved_segments += 1
                s.moved_bytes += seg["size"]
        else:
            s.skipped += 1  # copied (harmless), but the source keeps its copy
        segs = _store_sizes(client, members)
        bar.advance()
    return segs


class _bar:
    def __init__(self, enabled: bool, total: int, what: str) -> None:
        self._p = None
        if enabled and sys.stderr.isatty():
            from rich.progress import Progress

            self._p = Progress(transient=False)
            self._p.start()
            self._t = self._p.add_task(what, total=total)

    def total(self, extra: int) -> None:
        if self._p is not None:
            task = self._p.tasks[0]
            self._p.update(self._t, total=(task.total or 0) + extra)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._t)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def parse_time(text: str, now: float) -> int:
    from oklog.querycli import resolve_time

    v = resolve_time(text, now)
    if v is None:
        return int(now * 1000)
    from oklog.query.params import parse_bound

    key = parse_bound(v, upper=False)
    from oklog.record import ulid_ms

    return ulid_ms(key)


def repair_main(ns) -> int:
    now = time.time()
    lo, hi = parse_time(getattr(ns, "from"), now), parse_time(ns.to, now) + 1
    t0 = time.monotonic()
    s = repair(ns.store, lo, hi, int(ns.step * 1000), progress=not ns.quiet, http=_http(ns))
    print(
        f"repair: {s.slices} slices, {s.records} records examined, {s.under_replicated} under-replicated, "
        f"{s.copies} copies made, {len(s.errors)} errors, {time.monotonic() - t0:.1f}s"
    )
    for e in s.errors[:20]:
        print(f"  error: {e}", file=sys.stderr)
    return 1 if s.errors else 0


def rebalance_main(ns) -> int:
    t0 = time.monotonic()
    s = rebalance(ns.store, ns.ratio, progress=not ns.quiet, http=_http(ns))
    print(
        f"rebalance: moved {s.moved_segments} segments ({s.moved_bytes} bytes), skipped {s.skipped}, "
        f"{len(s.errors)} errors, {time.monotonic() - t0:.1f}s"
    )
    for k in s.sizes_before:
        print(f"  {k}: {s.sizes_before[k]} -> {s.sizes_after.get(k)} bytes")
    for e in s.errors[:20]:
        print(f"  error: {e}", file=sys.stderr)
    return 1 if s.errors else 0


def _http(ns) -> dict:
    from oklog.auth import cli_http_kwargs

    return cli_http_kwargs(ns)
