"""The store tier's consumer: an explicit state machine over ingest segments.

    gather ──▶ merge ──▶ replicate ──▶ commit
       ▲                     │ (any target failed)
       │                     ▼
       └──────────────────  failed

gather: take the next flushed segment from ingest members (random order) until
the batch reaches its size or nothing is left; merge: one segment sorted by ULID;
replicate: to N distinct store targets (compressed once into segment files
when a chosen member takes them, plain records to the others); commit the
sources only when all N acknowledged, otherwise mark them failed so they are
consumed again. A crash at any point leaves records over-replicated
(deduplicated at read time), never lost.

A source whose commit (or give-back) fails keeps the segment pending until it
times it out or restarts, then offers it again (to this node or another store
member). The failure is reported as current until a commit to that member
succeeds, or the member answers and no longer holds any segment whose settling
failed (``_recheck``): the commit warning stays while the member really holds
our segment, and clears once it is back and has let go of it, even when another
member consumes the segment again and this one never commits to it again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

import oklog._fast as _fast
from oklog.node import state as node_state
from oklog.records import segfile
from oklog.records.merge import merge_dedup
from oklog.store.log import MAX_TOPIC_SPLIT

log = logging.getLogger("oklog.store.consumer")

IDLE_POLL = 0.25  # seconds between polls when no ingest segment is waiting
MAX_UNSETTLED = 256  # segments remembered per member whose settling failed (oldest dropped)


class IngestSource(Protocol):
    name: str

    async def next(self) -> str | None: ...
    async def read(self, seg_id: str) -> bytes: ...
    async def pending(self, seg_id: str) -> bool:
        """Whether the segment is still handed out (taken, not yet settled)."""
        ...
    async def commit(self, seg_id: str) -> None: ...
    async def failed(self, seg_id: str) -> None: ...


class StoreTarget(Protocol):
    name: str
    local: bool  # this node's own store (no network between)

    def takes_encoded(self) -> bool:
        """Whether it stores a segment file (``segfile.encode``) of the records."""
        ...

    async def replicate(self, data: bytes, encoded: bytes | None = None) -> int:
        """Store ``data`` (sorted records); ``encoded``, when given, is its
        segment file, sent or kept instead. Returns the bytes that crossed the
        network (0 for this node's own store)."""
        ...


@dataclass
class ConsumerStats:
    state: str = "idle"
    batches: int = 0
    segments_consumed: int = 0
    bytes_consumed: int = 0
    replications_ok: int = 0
    replications_failed: int = 0
    commits_failed: int = 0
    cycle_errors: int = 0  # unexpected errors caught at the cycle boundary
    last_error: str = ""
    last_batch_time: float = 0.0
    factor_effective: int = 0
    replicated_bytes: int = 0
    replicated_wire_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> node_state.ConsumerStats:
        """The typed document the node publishes (``pipeline.consumer``)."""
        return node_state.ConsumerStats(
            state=self.state,
            batches=self.batches,
            segments_consumed=self.segments_consumed,
            bytes_consumed=self.bytes_consumed,
            replications_ok=self.replications_ok,
            replications_failed=self.replications_failed,
            commits_failed=self.commits_failed,
            cycle_errors=self.cycle_errors,
            last_error=self.last_error,
            last_batch_time=self.last_batch_time,
            factor_effective=self.factor_effective,
            replicated_bytes=self.replicated_bytes,
            replicated_wire_bytes=self.replicated_wire_bytes,
            warnings=list(self.warnings),
        )


@dataclass
class _Taken:
    source: IngestSource
    seg_id: str
    data: bytes


class Consumer:
    def __init__(
        self,
        sources: Callable[[], Sequence[IngestSource]],
        targets: Callable[[], Sequence[StoreTarget]],
        replication_factor: int,
        batch_size: int,
        batch_age: float,
        limiter: trio.CapacityLimiter | None = None,
        strict: bool = False,
        grace: float = 0.0,
        level: int = segfile.DEFAULT_LEVEL,
    ) -> None:
        # strict: never commit with fewer than `replication_factor` copies (wait
        # instead). A node becomes strict once it has seen enough store members,
        # or from the start when it was given peers: a lone node uses what it has.
        self.strict = strict
        self.grace = grace
        self.sources = sources
        self.targets = targets
        self.factor = replication_factor
        self.batch_size = batch_size
        self.batch_age = batch_age
        self.limiter = limiter
        self.level = level  # zstd level of the segment files sent to targets that take them
        self.stats = ConsumerStats()
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        # Each outcome as it happens: (kind, member, ok, error text); the node's
        # health keeps a window of them, so its warnings describe the present.
        self.on_event: Callable[[str, str, bool, str], None] = lambda *_: None
        # Segments whose commit or give-back failed, by member: still pending
        # there (until it times them out or restarts) as far as this node knows.
        self.unsettled: dict[str, set[str]] = {}

    def wake(self) -> None:
        """Something was flushed: run a cycle now rather than at the next poll.
        Safe to call from any thread."""
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(self._wake.set)
        except trio.RunFinishedError:
            pass

    async def run(self) -> None:
        # After a restart, give gossip a moment to find the other members
        # before deciding how many copies can be made.
        self._token = trio.lowlevel.current_trio_token()
        await trio.sleep(self.grace)
        while True:
            try:
                did = await self.cycle()
            except Exception as e:
                # Whatever went wrong (bad membership data, a bug), the segments taken
                # time out back to flushed on their ingest nodes; the next cycle retries.
                self.stats.cycle_errors += 1
                self.stats.state = "idle"
                self.stats.last_error = f"cycle failed: {type(e).__name__}: {e}"[:500]
                log.exception("consumer cycle failed; carrying on")
                did = False
            if not did:
                with trio.move_on_after(IDLE_POLL):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def cycle(self) -> bool:
        """One gather → merge → replicate → commit|failed; False when idle."""
        n_targets = len(self.targets())
        if n_targets >= self.factor:
            self.strict = self.strict or self.factor > 1
            self.stats.warnings = []  # enough store members again, with or without data
        elif self.strict:
            msg = (
                f"waiting: replication factor {self.factor} but {n_targets} live store "
                f"member(s); records stay in the ingest tier until enough are back"
            )
            self._warn(msg)
            self.stats.state = "waiting"
            return False
        self.stats.state = "gather"
        taken = await self._gather()
        if not taken:
            self.stats.state = "idle"
            return False
        self.stats.state = "merge"
        datas = [t.data for t in taken]
        merged = await trio.to_thread.run_sync(merge_dedup, datas, limiter=self.limiter)
        # The sources' bytes are in ``merged`` now: not held while it replicates
        # (with several segments in a batch that was twice the batch in memory).
        del datas
        for t in taken:
            t.data = b""
        self.stats.state = "replicate"
        ok = await self._replicate(merged)
        self.stats.state = "commit" if ok else "failed"
        await self._settle(taken, ok)
        if ok:
            self.stats.batches += 1
            self.stats.segments_consumed += len(taken)
            self.stats.bytes_consumed += len(merged)
            self.stats.last_batch_time = time.time()
        self.stats.state = "idle"
        return True

    def _warn(self, msg: str) -> None:
        """One current warning, logged when it first appears."""
        if msg not in self.stats.warnings:
            self.stats.warnings = [msg]
            log.warning("%s", msg)

    async def _settle(self, taken: list[_Taken], ok: bool) -> None:
        """Commit the batch's sources (all copies acknowledged), or mark them
        failed so they are consumed again."""
        for t in taken:
            try:
                if ok:
                    await t.source.commit(t.seg_id)
                else:
                    await t.source.failed(t.seg_id)
            except Exception as e:  # noqa: BLE001 - a peer's failure: the ingest node times the segment out instead
                self.stats.commits_failed += 1
                self.stats.last_error = f"{'commit' if ok else 'failed'} {t.seg_id} on {t.source.name}: {e}"
                log.warning("%s", self.stats.last_error)
                self.on_event("commit", t.source.name, False, _why(e))
                self._hold(t.source.name, t.seg_id)
            else:
                self.on_event("commit", t.source.name, True, "")

    def _hold(self, name: str, seg_id: str) -> None:
        held = self.unsettled.setdefault(name, set())
        held.add(seg_id)
        while len(held) > MAX_UNSETTLED:  # bounded: ids are ULIDs, the oldest go first
            held.discard(min(held))

    async def _recheck(self, src: IngestSource) -> None:
        """``src`` answered and has nothing flushed: has it let go of the segments
        whose settling on it failed? It holds each pending until it times it out
        or restarts; then it is consumed again, maybe by another store member, so
        this consumer may never commit to ``src`` again. Once ``src`` holds none
        of them the failure has passed: report it so. While it holds one, the
        failure stands (a nothing-flushed answer alone proves nothing)."""
        held = self.unsettled.get(src.name)
        if not held:
            self.unsettled.pop(src.name, None)  # emptied by taking them again
            return
        for seg_id in sorted(held):
            try:
                if await src.pending(seg_id):
                    return
            except Exception as e:  # noqa: BLE001 - not known now; asked again next cycle
                log.debug("pending %s on %s: %s", seg_id, src.name, e)
                return
            held.discard(seg_id)
        del self.unsettled[src.name]
        self.on_event("commit", src.name, True, "")

    async def _gather(self) -> list[_Taken]:
        taken: list[_Taken] = []
        total = 0
        started = trio.current_time()
        exhausted: set[str] = set()
        while total < self.batch_size and trio.current_time() - started < self.batch_age:
            sources = [s for s in self.sources() if s.name not in exhausted]
            if not sources:
                break
            src = random.choice(sources)
            try:
                seg_id = await src.next()
                if seg_id is None:
                    exhausted.add(src.name)
                    self.on_event("gather", src.name, True, "")
                    await self._recheck(src)
                    continue
                self.unsettled.get(src.name, set()).discard(seg_id)  # offered again: ours anew
                try:
                    data = await src.read(seg_id)
                except Exception:
                    await _quiet(src.failed(seg_id))
                    raise
            except Exception as e:  # noqa: BLE001 - whatever a source fails with, the others are gathered
                exhausted.add(src.name)
                self.stats.last_error = f"gather from {src.name}: {e}"
                log.warning("%s", self.stats.last_error)
                self.on_event("gather", src.name, False, _why(e))
                continue
            self.on_event("gather", src.name, True, "")
            taken.append(_Taken(src, seg_id, data))
            total += len(data)
        return taken

    async def _replicate(self, data: bytes) -> bool:
        targets = list(self.targets())
        want = self.factor
        if len(targets) < want:
            msg = (
                f"replication factor {want} but only {len(targets)} store member(s) known; "
                f"replicating to {len(targets)}"
            )
            self._warn(msg)
            want = len(targets)
        else:
            self.stats.warnings = []
        if want == 0:
            self.stats.last_error = "no store members to replicate to"
            self.stats.replications_failed += 1
            self.on_event("replicate", "", False, self.stats.last_error)
            return False
        self.on_event("replicate", "", True, "")  # there are store members to replicate to
        self.stats.factor_effective = want
        chosen = random.sample(targets, want)
        encoded = await self._encode(data, chosen)
        failures: list[str] = []

        async def one(t: StoreTarget) -> None:
            try:
                wire = await _send(t, data, encoded)
            except Exception as e:  # noqa: BLE001 - any target's failure is this batch's failure, not the node's
                failures.append(f"{t.name}: {e}")
                self.on_event("replicate", t.name, False, _why(e))
            else:
                if wire:
                    self.stats.replicated_bytes += len(data)
                    self.stats.replicated_wire_bytes += wire
                self.on_event("replicate", t.name, True, "")

        async with trio.open_nursery() as nursery:
            for t in chosen:
                nursery.start_soon(one, t)
        if failures:
            self.stats.replications_failed += 1
            self.stats.last_error = "replicate failed: " + "; ".join(failures)
            log.warning("%s", self.stats.last_error)
            return False
        self.stats.replications_ok += 1
        return True

    async def _encode(self, data: bytes, chosen: list[StoreTarget]) -> list[tuple[bytes, bytes]] | None:
        """The batch as segment files, compressed once for every target that
        takes them, when another member does (this node's store alone
        compresses as it always has): (records, file) per topic, as the
        store keeps topics apart, so each file can be kept as it is."""
        if not data or not any(t.takes_encoded() and not t.local for t in chosen):
            return None
        return await trio.to_thread.run_sync(_encode_parts, data, self.level, limiter=self.limiter)


def _encode_parts(data: bytes, level: int) -> list[tuple[bytes, bytes]]:
    parts = _fast.split_topics(data, MAX_TOPIC_SPLIT)
    bodies = [p for _, p in parts] if parts else [data]  # None: one topic; []: too many to keep apart
    return [(b, segfile.encode(b, level)) for b in bodies]


async def _send(t: StoreTarget, data: bytes, encoded: list[tuple[bytes, bytes]] | None) -> int:
    """Replicate the batch to one target: its segment files (one request per
    topic) when it takes them, else the records. Returns the bytes on the wire.
    A part that fails fails the batch; parts stored already are dropped as
    held when the batch is replicated again."""
    if encoded is None or not t.takes_encoded():
        return await t.replicate(data)
    wire = 0
    for part, file in encoded:
        wire += await t.replicate(part, file)
    return wire


def _why(e: Exception) -> str:
    return str(e).strip() or type(e).__name__


async def _quiet(aw: Awaitable[object]) -> None:
    try:
        await aw
    except Exception:  # noqa: BLE001 - best effort: the ingest node times the segment out anyway
        pass
