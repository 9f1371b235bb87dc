"""``oklog repair`` and ``oklog rebalance``: cluster-wide store maintenance tools.

repair: walk the time space slice by slice; in each, ask every live store member
for its own records (``/store/_query``, raw), count the holders of every ULID,
and replicate records held by fewer than the replication factor to members that
lack them (``POST /store/replicate``, idempotent). Slices holding too much data
are halved first (``HEAD`` gives sizes without scanning). Safe to interrupt and
run again: every step is a copy.

rebalance: while the largest store is more than ``-ratio`` times the smallest,
take a segment of the largest and move its records, one by one, to members that
lack them (``plan_move``: the smallest first; a record held elsewhere at least
replication-factor times already needs no copy). Only once every record of the
segment is held replication-factor times by members other than the source is
the segment deleted from the source (to its trash): a record is never
under-replicated during the move, and none is held more than the factor times
after it. A segment is skipped, with the reason reported, when moving it would
not even out the sizes or some record has nowhere to go.

Progress (stderr) only moves forward: repair counts slices done weighted by
their share of the data, rebalance counts bytes moved off over-full members
against the bytes that must move; the ETA is the remainder at the rate so far.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO, TypedDict, TypeVar, cast

import httpx

from oklog.addr import parse_addr
from oklog.human import describe_error, format_duration, format_size
from oklog.net.auth import NodeRoutes
from oklog.node.state import MemberRow, NodeState
from oklog.query.answer import replicate_plan
from oklog.records.merge import merge_dedup
from oklog.records.record import ULID_LEN
from oklog.units import DEFAULT_API_PORT

SLICE_BYTES = 64 << 20  # per member, per slice
POST_BYTES = 16 << 20  # records per /store/replicate request (a node bounds request bodies)
BUSY_WAIT = 60.0  # seconds to keep retrying a member that answers 503 (busy)
TIMEOUT = httpx.Timeout(120.0, connect=5.0)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class SegmentRow(TypedDict):
    """One segment of a member's ``GET /store/segments`` (sizes: records' bytes)."""

    name: str
    first: str  # its first ULID
    last: str  # its last ULID
    size: int
    file_size: int  # on disk


class SegmentsAnswer(TypedDict):
    """A member's ``GET /store/segments``."""

    segments: list[SegmentRow]
    bytes: int
    file_bytes: int
    compaction_pending: bool


T = TypeVar("T")
HTTPKwargs = dict[str, Any]  # httpx.Client arguments (oklog.net.auth.tool_http_kwargs)


class ToolError(Exception):
    """A failure the tool reports in one line and stops on."""


@dataclass
class Member:
    id: str
    api: str


@dataclass
class View:
    members: list[Member]  # live store members
    factor: int
    absent: list[str]  # store members not alive, with their state


def cluster_view(client: httpx.Client, node: str) -> View:
    try:
        host, port = parse_addr(node, DEFAULT_API_PORT, default_host="localhost")
    except ValueError as e:
        raise ToolError(f"-store: {e}") from None
    try:
        r = client.get(f"http://{host}:{port}/cluster/state")
        r.raise_for_status()
        st = cast(NodeState, r.json())  # a node's /cluster/state; its rows are read tolerantly below
    except httpx.InvalidURL:
        raise ToolError(f"-store: {node!r} is not an address (HOST:PORT)") from None
    except httpx.HTTPError as e:
        raise ToolError(f"cannot read the cluster state from {host}:{port}: {describe_error(e)}") from None
    except ValueError:
        raise ToolError(f"{host}:{port} did not answer with a cluster state (is it an oklog node?)") from None
    routes = getattr(client.auth, "node_route", None)
    if isinstance(routes, NodeRoutes):  # with the cluster key: members over their TLS port
        routes.learn(cast(list[dict[str, Any]], st["members"]))
    stores = [m for m in st["members"] if m.get("role") in ("store", "ingeststore")]
    return View(
        [Member(m["id"], api) for m in stores if m.get("state") == "alive" and (api := _api_addr(m))],
        int(st.get("replication_factor", 1)),
        # a member that left handed its data off: it holds nothing that counts
        [f"{m['id']} ({m.get('state', 'unknown')})" for m in stores if m.get("state") not in ("alive", "left")],
    )


def _api_addr(m: MemberRow) -> str:
    api = m.get("api_addr")
    return api if isinstance(api, str) else ""


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def segment_records(data: bytes) -> bytes:
    """A store segment file's records: plain files as they are; a file of zstd
    frames (compressed blocks, an index in a skippable frame) decompressed."""
    if not data.startswith(ZSTD_MAGIC):
        return data
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


# -- progress ---------------------------------------------------------------------------


class Progress:
    """One status line on stderr: a fraction that only moves forward, and an ETA
    from the rate so far. On a terminal the line is rewritten in place; otherwise
    a line is printed at most every ``interval`` seconds, and at the end."""

    def __init__(self, what: str, enabled: bool, stream: TextIO | None = None, interval: float | None = None) -> None:
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.fraction = 0.0
        self.started = time.monotonic()
        self.work_started: float | None = None
        self.work_fraction0 = 0.0
        self._last_print = 0.0
        self._width = 0

    def update(self, fraction: float, detail: str = "", force: bool = False) -> None:
        fraction = min(1.0, max(self.fraction, fraction))
        if fraction > self.fraction and self.work_started is None:
            self.work_started, self.work_fraction0 = time.monotonic(), self.fraction
        self.fraction = fraction
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_print < self.interval:
            return
        self._last_print = now
        self._emit(f"{self.what}: {fraction * 100:3.0f}%  {detail}  ETA {format_duration(self.eta())}")

    def note(self, text: str) -> None:
        """A phase with no measurable progress (waiting on the cluster)."""
        if self.enabled:
            self._emit(f"{self.what}: {self.fraction * 100:3.0f}%  {text}")

    def eta(self) -> float | None:
        if self.fraction >= 1.0:
            return 0.0
        if self.work_started is None:
            return None
        done = self.fraction - self.work_fraction0
        spent = time.monotonic() - self.work_started
        if done <= 0 or spent <= 0:
            return None
        return (1.0 - self.fraction) * spent / done

    def _emit(self, line: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()


# -- repair -----------------------------------------------------------------------------


@dataclass
class RepairSummary:
    slices: int = 0
    records: int = 0
    under_replicated: int = 0
    short_of_members: int = 0  # below the factor, but every live member holds a copy
    copies: int = 0
    copied_bytes: int = 0
    absent: list[str] = field(default_factory=list)  # store members not alive
    errors: list[str] = field(default_factory=list)


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


def post_records(client: httpx.Client, api: str, data: bytes) -> str | None:
    """POST sorted records to ``/store/replicate`` in pieces of at most
    POST_BYTES (whole records); a 503 (the node's budget for bodies in flight
    is spent) is retried after its Retry-After for up to BUSY_WAIT seconds.
    None on success, else what went wrong, in words."""
    pos = 0
    while pos < len(data):
        end = len(data) if len(data) - pos <= POST_BYTES else data.rfind(b"\n", pos, pos + POST_BYTES) + 1
        if end <= pos:  # one record longer than a piece
            end = data.index(b"\n", pos) + 1
        deadline = time.monotonic() + BUSY_WAIT
        while True:
            r = client.post(f"http://{api}/store/replicate", content=data[pos:end])
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            try:
                wait = float(r.headers.get("Retry-After", "1"))
            except ValueError:
                wait = 1.0
            time.sleep(min(max(wait, 0.1), 10.0))
        if r.status_code != 200:
            return f"HTTP {r.status_code} {r.reason_phrase}: {r.text.strip()[:200]}"
        pos = end
    return None


def repair_slice(
    client: httpx.Client, members: list[Member], factor: int, lo: int, hi: int, s: RepairSummary
) -> None:
    holders: dict[bytes, list[int]] = {}
    records: dict[bytes, bytes] = {}
    for i, m in enumerate(members):
        data = _records(client, m, lo, hi)
        for rec in data.split(b"\n")[:-1]:
            u = rec[:ULID_LEN]
            holders.setdefault(u, []).append(i)
            records.setdefault(u, rec)
    # members lacking a record are picked at random: repeated runs spread the copies
    plan = replicate_plan(holders, len(members), factor, random.sample)
    s.records += plan.records
    s.under_replicated += plan.under_replicated
    s.short_of_members += plan.short_of_members
    for i, keys in plan.copies.items():
        recs = [records[u] + b"\n" for u in keys]
        body = merge_dedup([b"".join(sorted(recs))])
        failed = post_records(client, members[i].api, body)
        if failed:
            s.errors.append(f"copying {len(recs)} records to {members[i].id} failed: {failed}")
            continue
        s.copies += len(recs)
        s.copied_bytes += len(body)


def repair(
    node: str, from_ms: int, to_ms: int, step_ms: int = 0, progress: bool = True, http: HTTPKwargs | None = None
) -> RepairSummary:
    """Slices start as the whole range (or ``step_ms`` wide when given) and are
    halved while a member holds more than SLICE_BYTES in one: an empty or sparse
    range costs a few HEAD requests, not one per fixed-width slice. Each slice
    carries its share of the whole (split by the halves' sizes), so progress is
    the sum of the shares done."""
    s = RepairSummary()
    with httpx.Client(timeout=TIMEOUT, **(http or {})) as client:  # http: oklog.net.auth.cli_http_kwargs
        view = cluster_view(client, node)
        members, factor = view.members, view.factor
        s.absent = view.absent
        if not members:
            raise ToolError("no live store members")
        step = step_ms if step_ms > 0 else max(to_ms - from_ms, 1)
        starts = list(range(from_ms, to_ms, step))
        slices = [(t, min(t + step, to_ms), 1.0 / len(starts)) for t in starts]
        bar = Progress("repair", progress)
        try:
            total = sum(_size(client, m, from_ms, to_ms) for m in members)
        except httpx.HTTPError:
            total = 0
        done = 0.0
        while slices:
            lo, hi, share = slices.pop(0)
            try:
                biggest = max(_size(client, m, lo, hi) for m in members)
            except httpx.HTTPError as e:
                s.errors.append(f"slice from {_iso(lo)}: sizing failed: {describe_error(e)}")
                done += share
                continue
            if biggest > SLICE_BYTES and hi - lo > 1:
                mid = (lo + hi) // 2
                try:
                    a = sum(_size(client, m, lo, mid) for m in members)
                    b = sum(_size(client, m, mid, hi) for m in members)
                except httpx.HTTPError:
                    a = b = 1
                wa = share * (a / (a + b)) if a + b else share / 2
                slices[:0] = [(lo, mid, wa), (mid, hi, share - wa)]
                continue
            try:
                repair_slice(client, members, factor, lo, hi, s)
            except httpx.HTTPError as e:
                s.errors.append(f"slice from {_iso(lo)}: {describe_error(e)}")
            s.slices += 1
            done += share
            bar.update(done, _repair_detail(s, done, total))
        bar.update(1.0, _repair_detail(s, 1.0, total), force=True)
        bar.close()
    return s


def _repair_detail(s: RepairSummary, done: float, total: int) -> str:
    data = f"{format_size(done * total)} of {format_size(total)}, " if total else ""
    return f"{data}{s.slices} slices, {s.records} records examined, {s.copies} copies made"


# -- rebalance --------------------------------------------------------------------------


@dataclass
class MovePlan:
    """Where each record of a source segment goes so that, with the segment
    deleted from the source, every record is held exactly ``factor`` times."""

    copies: dict[str, list[bytes]]  # member id -> records (each with its LF), in ULID order
    sizes_after: dict[str, float]  # every member's store size once the move is done
    unplaceable: int = 0  # records that would fall below the factor: no member lacks them
    over_replicated: int = 0  # records held more than the factor times even without the source


def plan_move(
    records: list[bytes], src: str, holders: dict[str, set[bytes]], factor: int,
    sizes: Mapping[str, float], seg_size: int, stored_ratio: float = 1.0,
) -> MovePlan:
    """Pure. ``holders``: the ULIDs each other member holds in the segment's
    range; ``stored_ratio``: bytes on disk per record byte (compressed stores),
    so projected sizes stay in the units the members report."""
    after: dict[str, float] = {m: float(v) for m, v in sizes.items()}
    after[src] -= seg_size
    plan = MovePlan({}, after)
    others = [m for m in sizes if m != src]
    for rec in records:
        u = rec[:ULID_LEN]
        have = [m for m in others if u in holders.get(m, ())]
        need = factor - len(have)
        if need <= 0:
            plan.over_replicated += need < 0
            continue
        free = sorted((m for m in others if m not in have), key=lambda m: (after[m], m))
        if len(free) < need:
            plan.unplaceable += 1
            continue
        for m in free[:need]:
            plan.copies.setdefault(m, []).append(rec)
            after[m] += len(rec) * stored_ratio
    return plan


@dataclass
class Skip:
    member: str
    segment: str
    reason: str


@dataclass
class RebalanceSummary:
    moved_segments: int = 0
    moved_bytes: int = 0  # store bytes removed from the sources
    copied_records: int = 0
    copied_bytes: int = 0  # record bytes written to the targets
    dropped_extra: int = 0  # records dropped from a source that held one copy too many
    to_move: int = 0  # estimate of the bytes that must leave over-full members (moved included)
    skips: list[Skip] = field(default_factory=list)
    stopped: str = ""  # why the last round ended before the ratio held ("" if it holds)
    sizes_before: dict[str, int] = field(default_factory=dict)
    sizes_after: dict[str, int] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)  # store members not alive
    errors: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.skips)


def _segment_answers(client: httpx.Client, members: list[Member]) -> dict[str, SegmentsAnswer]:
    """Every member's ``/store/segments`` answer, by member id."""
    out = {}
    for m in members:
        r = client.get(f"http://{m.api}/store/segments")
        r.raise_for_status()
        out[m.id] = cast(SegmentsAnswer, r.json())
    return out


Segments = dict[str, list[SegmentRow]]  # member id -> its segments


def _store_sizes(client: httpx.Client, members: list[Member]) -> Segments:
    return {k: v["segments"] for k, v in _segment_answers(client, members).items()}


def _totals(segs: Segments) -> dict[str, int]:
    return {k: sum(x["size"] for x in v) for k, v in segs.items()}


def _excess(sizes: Mapping[str, float]) -> int:
    """Bytes that must leave over-full members for every member to hold the mean."""
    mean = sum(sizes.values()) / max(len(sizes), 1)
    return int(sum(max(0.0, v - mean) for v in sizes.values()))


def _holders(client: httpx.Client, members: list[Member], source: Member, seg: SegmentRow) -> dict[str, set[bytes]]:
    """The ULIDs each member but the source holds in the segment's range."""
    params = {"from": seg["first"], "to": seg["last"], "format": "raw"}
    out: dict[str, set[bytes]] = {}
    for m in members:
        if m.id == source.id:
            continue
        r = client.get(f"http://{m.api}/store/_query", params=params)
        r.raise_for_status()
        out[m.id] = {rec[:ULID_LEN] for rec in r.content.split(b"\n")[:-1]}
    return out


SETTLE_ROUNDS = 5


def rebalance(
    node: str, ratio: float = 1.5, max_moves: int = 1000, progress: bool = True, http: HTTPKwargs | None = None
) -> RebalanceSummary:
    s = RebalanceSummary()
    with httpx.Client(timeout=TIMEOUT, **(http or {})) as client:  # http: oklog.net.auth.cli_http_kwargs
        view = cluster_view(client, node)
        members, factor = view.members, view.factor
        s.absent = view.absent
        if len(members) < 2:
            raise ToolError(f"fewer than two live store members ({len(members)}): nothing to balance between")
        by_id = {m.id: m for m in members}
        bar = Progress("rebalance", progress)
        bar.note("waiting for members to finish compaction")
        segs = _settled_sizes(client, members)  # e.g. a repair just before: let its copies compact
        s.sizes_before = _totals(segs)
        s.to_move = _excess(s.sizes_before)
        tried: set[tuple[str, str]] = set()
        used = 0
        for _ in range(SETTLE_ROUNDS):
            attempts = _rebalance_round(
                client, members, by_id, factor, ratio, max_moves - used, segs, tried, s, bar
            )
            used += attempts
            if not attempts or s.errors or used >= max_moves:
                break
            # Receivers compact what they got, so sizes move after the moves:
            # let them settle and look again.
            bar.note("waiting for members to finish compaction")
            segs = _settled_sizes(client, members)
            s.to_move = max(s.to_move, s.moved_bytes + _excess(_totals(segs)))
        sizes = _totals(segs)
        if max(sizes.values()) > ratio * max(min(sizes.values()), 1) and not s.stopped:
            s.stopped = f"sizes still uneven after {SETTLE_ROUNDS} rounds"
        bar.update(1.0 if not s.stopped else bar.fraction, _detail(s, final=True), force=True)
        bar.close()
        s.sizes_after = _totals(_store_sizes(client, members))
    return s


def _detail(s: RebalanceSummary, final: bool = False) -> str:
    of = "" if final else f" of about {format_size(max(s.to_move, s.moved_bytes))}"
    return f"{format_size(s.moved_bytes)}{of} moved, {s.moved_segments} segments, {s.skipped} skipped"


def _settled_sizes(client: httpx.Client, members: list[Member], timeout: float = 30.0) -> Segments:
    """Segment lists once no member has maintenance work left (receivers compact
    what they got) and two readings a second apart agree."""
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


def _candidates(segs: list[SegmentRow], gap: int, member: str, tried: set[tuple[str, str]]) -> list[SegmentRow]:
    """Segments worth trying: the largest that fits half the gap first (one move
    closes it), then the smaller ones; never one as large as the gap."""
    fits = [x for x in segs if (member, x["name"]) not in tried and x["size"] < gap]
    half = sorted((x for x in fits if x["size"] <= gap / 2), key=lambda x: -x["size"])
    rest = sorted((x for x in fits if x["size"] > gap / 2), key=lambda x: x["size"])
    return half + rest


def _rebalance_round(
    client: httpx.Client, members: list[Member], by_id: dict[str, Member], factor: int, ratio: float, budget: int,
    segs: Segments, tried: set[tuple[str, str]], s: RebalanceSummary, bar: Progress,
) -> int:
    """Move segments off the largest store until the ratio holds, nothing
    movable is left or the budget of attempts is spent; returns the number of
    attempts made.

    Sizes are those of the last settled reading, carried forward by each move's
    plan: a receiver's reported size jumps when it writes what it got (a store
    may write it uncompressed and compress it later), so reading sizes between
    moves would steer the next move by a passing state."""
    attempts = 0
    sizes: dict[str, float] = {k: float(v) for k, v in _totals(segs).items()}
    lists = {k: list(v) for k, v in segs.items()}
    while attempts < budget:
        big = max(sizes, key=lambda k: sizes[k])
        small = min(sizes, key=lambda k: sizes[k])
        if sizes[big] <= ratio * max(sizes[small], 1):
            s.stopped = ""
            break
        gap = int(sizes[big] - sizes[small])
        cands = _candidates(lists[big], gap, big, tried)
        if not cands:
            s.stopped = (
                f"{big} ({format_size(sizes[big])}) holds no untried segment smaller than the "
                f"{format_size(gap)} it is ahead of {small}"
            )
            break
        seg = cands[0]
        tried.add((big, seg["name"]))
        attempts += 1
        try:
            after = _move_segment(client, members, by_id[big], seg, factor, sizes, s)
        except httpx.HTTPError as e:
            s.errors.append(f"moving {seg['name']} off {big}: {describe_error(e)}")
            break
        if s.errors:
            break
        if after is not None:
            sizes = after
            lists[big] = [x for x in lists[big] if x["name"] != seg["name"]]
        # What is left plus what moved; the bar never goes back, so a high
        # guess only slows it.
        s.to_move = max(s.to_move, s.moved_bytes + _excess(sizes))
        bar.update(s.moved_bytes / max(s.to_move, 1), _detail(s))
    else:
        s.stopped = f"tried {budget} segments"
    return attempts


def _move_segment(
    client: httpx.Client, members: list[Member], src: Member, seg: SegmentRow, factor: int, sizes: dict[str, float],
    s: RebalanceSummary,
) -> dict[str, float] | None:
    """Move one segment's records; the members' projected sizes if it moved,
    None if it was skipped (the reason recorded)."""
    name = seg["name"]
    r = client.get(f"http://{src.api}/store/segment", params={"name": name})
    if r.status_code == 404:
        s.skips.append(Skip(src.id, name, "gone from the source before it could be read (compacted meanwhile)"))
        return None
    r.raise_for_status()
    body = segment_records(r.content)
    records = [rec + b"\n" for rec in body.split(b"\n")[:-1]]
    if not records:
        s.skips.append(Skip(src.id, name, "holds no records"))
        return None
    holders = _holders(client, members, src, seg)
    plan = plan_move(records, src.id, holders, factor, sizes, seg["size"], seg["size"] / max(len(body), 1))
    if plan.unplaceable:
        s.skips.append(Skip(src.id, name, f"{plan.unplaceable} of its records would fall below "
                            f"{factor} copies and every other member holds them already"))
        return None
    grow = {m: plan.sizes_after[m] for m in plan.copies}
    if grow and max(grow.values()) >= sizes[src.id]:
        m = max(grow, key=lambda k: grow[k])
        s.skips.append(Skip(src.id, name, f"moving it would leave {m} at {format_size(grow[m])}, "
                            f"no less than {src.id} holds now ({format_size(sizes[src.id])})"))
        return None
    copied = 0
    for m, recs in plan.copies.items():
        data = b"".join(recs)
        failed = post_records(client, _api(members, m), data)
        if failed:
            s.errors.append(f"copying {len(recs)} records of {name} to {m} failed: {failed}")
            return None
        s.copied_records += len(recs)
        s.copied_bytes += len(data)
        copied += len(recs)
    # Delete the source's copy only once the others hold every record the
    # factor times (a target may have lost the copy, or be shutting down).
    after = _holders(client, members, src, seg)
    short = sum(1 for rec in records if sum(rec[:ULID_LEN] in h for h in after.values()) < factor)
    if short:
        s.skips.append(Skip(src.id, name, f"after copying, {short} records were held fewer than {factor} "
                            f"times elsewhere; the source keeps the segment ({copied} records now have an extra copy)"))
        return None
    d = client.delete(f"http://{src.api}/store/segment", params={"name": name})
    if d.status_code == 404:
        s.skips.append(Skip(src.id, name, f"compacted on the source while moving; its {copied} copied records "
                            "are now held one time too many (until their segment there moves or expires)"))
        return None
    d.raise_for_status()
    s.moved_segments += 1
    s.moved_bytes += seg["size"]
    s.dropped_extra += plan.over_replicated
    return plan.sizes_after


def _api(members: list[Member], member_id: str) -> str:
    return next(m.api for m in members if m.id == member_id)


# -- commands ---------------------------------------------------------------------------


TIME_WORDS = "use a duration ago (5m, 168h), an RFC 3339 time or a ULID"


def parse_time(text: str, now: float) -> int:
    from oklog.cli.query import resolve_time

    try:
        v = resolve_time(text, now)
    except ValueError:
        raise ToolError(f"bad time {text!r}: {TIME_WORDS}") from None
    if v is None:
        return int(now * 1000)
    from oklog.query.engine import QueryError
    from oklog.query.params import parse_bound

    try:
        key = parse_bound(v, upper=False)
    except QueryError:
        raise ToolError(f"bad time {text!r}: {TIME_WORDS}") from None
    from oklog.records.record import ulid_ms

    return ulid_ms(key)


def repair_main(ns: argparse.Namespace) -> int:
    now = time.time()
    t0 = time.monotonic()

    def run() -> RepairSummary:
        lo, hi = parse_time(getattr(ns, "from"), now), parse_time(ns.to, now) + 1
        return repair(ns.store, lo, hi, int(ns.step * 1000), progress=not ns.quiet, http=_http(ns))

    s = _run("repair", run)
    if s is None:
        return 1
    print(
        f"repair: {s.slices} slices, {s.records} records examined, {s.under_replicated} under-replicated, "
        f"{s.copies} copies made ({format_size(s.copied_bytes)}), {len(s.errors)} errors, "
        f"{format_duration(time.monotonic() - t0)}"
    )
    if s.short_of_members:
        print(f"  {s.short_of_members} records stay below the replication factor: every live store member "
              "holds one already")
    if s.absent:
        print(f"  not alive: {', '.join(s.absent)}. Records only they held were copied again, so once they "
              "are back those records are held more than replication-factor times.")
    for err in s.errors[:20]:
        print(f"oklog repair: error: {err}", file=sys.stderr)
    if len(s.errors) > 20:
        print(f"oklog repair: ... and {len(s.errors) - 20} more errors", file=sys.stderr)
    return 1 if s.errors else 0


def rebalance_main(ns: argparse.Namespace) -> int:
    t0 = time.monotonic()
    s = _run("rebalance", lambda: rebalance(ns.store, ns.ratio, progress=not ns.quiet, http=_http(ns)))
    if s is None:
        return 1
    print(
        f"rebalance: moved {s.moved_segments} segments ({format_size(s.moved_bytes)}), "
        f"copied {s.copied_records} records ({format_size(s.copied_bytes)}), skipped {s.skipped}, "
        f"{len(s.errors)} errors, {format_duration(time.monotonic() - t0)}"
    )
    for k in s.sizes_before:
        print(f"  {k}: {format_size(s.sizes_before[k])} -> {format_size(s.sizes_after.get(k, 0))}")
    if s.dropped_extra:
        print(f"  {s.dropped_extra} records held one copy too many lost it with their source segment")
    for sk in s.skips:
        print(f"  skipped {sk.segment} on {sk.member}: {sk.reason}")
    if s.stopped:
        print(f"  stopped before the ratio {ns.ratio:g} held: {s.stopped}")
    if s.absent:
        print(f"  not alive: {', '.join(s.absent)}. Copies they hold were not counted: records moved "
              "may be held more than replication-factor times once they are back.")
    for err in s.errors[:20]:
        print(f"oklog rebalance: error: {err}", file=sys.stderr)
    return 1 if s.errors else 0


def _run(tool: str, work: Callable[[], T]) -> T | None:
    """``work()``, or None once a failure it stops on is said in one line on stderr."""
    try:
        return work()
    except ToolError as e:
        print(f"oklog {tool}: {e}", file=sys.stderr)
    except httpx.HTTPError as e:
        print(f"oklog {tool}: {describe_error(e)}", file=sys.stderr)
    return None


def _http(ns: argparse.Namespace) -> HTTPKwargs:
    from oklog.net.auth import tool_http_kwargs

    return tool_http_kwargs(ns)
