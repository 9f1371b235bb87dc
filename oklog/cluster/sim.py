"""A deterministic cluster simulator around the real ``Swim`` state machine.

N members, each a :class:`oklog.cluster.swim.Swim` (the same object the node's
UDP transport drives), exchange messages over a simulated network on virtual
time. Nothing here copies the protocol: the simulator only plays the part of
:mod:`oklog.cluster.transport` (a timer loop that calls ``step`` at
``min(next_deadline(), now + probe_interval)`` and a receive loop that calls
``receive``) and of the network:

- **loss**: every datagram is dropped with probability ``loss``;
- **latency and jitter**: one-way delay ``latency + U(0, jitter)``;
- **partitions**: directed links that drop everything, set and healed at given times;
- **slow members**: a CPU-starved process is not dead, it is late. A slow member
  stalls at random (Poisson, ``stall_rate`` per second) for ``U(stall_min,
  stall_max)`` seconds; while stalled, its datagrams queue and its timers wait.
  When it runs again its overdue timer fires first and then the queued datagrams
  are handled in arrival order, as a trio process resumed after a stall does
  (the timer task and the receive task become runnable together; the receive
  task handles one datagram per wake-up).

One run crashes one (not slow) member at ``crash_at``, has another change its
meta at ``update_at`` (an update that must reach everyone), and records:

- ``first_detect``: seconds from the crash until the first member holds it suspect;
- ``all_dead``: seconds until every live member holds it dead;
- ``rounds``: protocol periods until every live member holds the update;
- ``false_suspicions`` / ``false_deaths``: times a member marked a *live* member
  (slow ones included) suspect / dead;
- ``msgs`` / ``bytes``: datagrams and encoded bytes (the codec's JSON, before
  the cluster key's seal) sent per live member per second (above 100 members
  the bytes are measured on every 8th datagram and scaled).

Everything random comes from one seed, so a run is reproducible. ``make sim``
(``python -m oklog.cluster.sim``) prints the table for N = 10, 100, 1,000.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oklog.cluster.codec import encode
from oklog.cluster.swim import (
    ALIVE,
    DEAD,
    SUSPECT,
    Address,
    Message,
    Outgoing,
    Swim,
    SwimConfig,
    Sync,
    Update,
)

_BOOT, _TIMER, _MSG, _STALL, _RESUME, _CRASH, _UPDATE, _PARTITION, _HEAL = range(9)


@dataclass(frozen=True)
class Scenario:
    n: int
    loss: float = 0.0
    slow: float = 0.0  # fraction of members that are slow
    latency: float = 0.002
    jitter: float = 0.004
    stall_rate: float = 0.5
    stall_min: float = 0.2
    stall_max: float = 1.5
    seconds: float = 30.0  # virtual seconds after boot
    crash_at: float = 5.0
    update_at: float = 3.0
    measure_from: float = 2.0  # traffic counted from here (after the boot burst)
    partition: tuple[float, float] | None = None  # (start, heal): half the cluster cut off
    seed: int = 1
    config: SwimConfig = field(default_factory=SwimConfig)


@dataclass
class Result:
    scenario: Scenario
    first_detect: float | None = None
    all_dead: float | None = None
    rounds: float | None = None
    false_suspicions: int = 0
    false_deaths: int = 0
    healthy_suspicions: int = 0  # of those, of members that are not slow
    healthy_deaths: int = 0
    falsely_dead: set[str] = field(default_factory=set)
    suspected_episodes: int = 0  # distinct (live member, incarnation) suspected anywhere
    msgs_per_member_s: float = 0.0
    kinds: dict[str, float] = field(default_factory=dict)  # msgs/member/s by message type
    bytes_per_member_s: float = 0.0
    mean_health: float = 0.0  # Lifeguard's local health score at the end, over live members
    converged_after_heal: bool | None = None  # partition runs: everyone alive everywhere at the end
    wall: float = 0.0


class _Node:
    __slots__ = ("swim", "addr", "idx", "slow", "crashed", "stalled", "backlog", "timer_gen")

    def __init__(self, idx: int, swim: Swim, addr: Address, slow: bool) -> None:
        self.idx = idx
        self.swim = swim
        self.addr = addr
        self.slow = slow
        self.crashed = False
        self.stalled = False
        self.backlog: list[tuple[Address, Message]] = []
        self.timer_gen = 0


def _addr(i: int) -> Address:
    return (f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 7659)


class Simulation:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        rng = self.rng
        n = sc.n
        # Member 0 crashes, member 1 announces the update; slow ones from the rest.
        others = list(range(2, n))
        slow = set(rng.sample(others, min(len(others), round(sc.slow * n))))
        self.nodes: list[_Node] = []
        self.by_addr: dict[Address, _Node] = {}
        for i in range(n):
            a = _addr(i)
            sw = Swim(f"m{i}", "ingeststore", a, config=sc.config, rng=random.Random(rng.random()))
            nd = _Node(i, sw, a, i in slow)
            self.nodes.append(nd)
            self.by_addr[a] = nd
        self._slow_ids = {nd.swim.id for nd in self.nodes if nd.slow}
        self.victim = self.nodes[0] if n > 2 else None
        self.origin = self.nodes[1]
        self.blocked: set[tuple[int, int]] = set()
        self.result = Result(sc)
        self._detect_pending = True
        self._dead_seen: set[int] = set()
        self._update_version: int | None = None
        self._update_missing: set[int] = set()
        self._msgs = 0
        # Encoding every datagram costs a third of a large run: above 100 members,
        # bytes are counted on every 8th datagram (a fixed, seeded subset).
        self._sample = 1 if n <= 100 else 8
        self._kinds: dict[str, int] = {}
        self._episodes: set[tuple[str, int]] = set()
        self._bytes = 0
        for nd in self.nodes:
            self._push(rng.uniform(0, sc.config.probe_interval), _BOOT, nd.idx, None)
            if nd.slow:
                self._push(rng.expovariate(sc.stall_rate), _STALL, nd.idx, None)
        if self.victim is not None:
            self._push(sc.crash_at, _CRASH, self.victim.idx, None)
        self._push(sc.update_at, _UPDATE, self.origin.idx, None)
        if sc.partition is not None:
            self._push(sc.partition[0], _PARTITION, 0, None)
            self._push(sc.partition[1], _HEAL, 0, None)

    # ----------------------------------------------------------------- events

    def _push(self, t: float, kind: int, idx: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, idx, payload))

    def run(self) -> Result:
        started = time.perf_counter()
        self.advance(self.sc.seconds)
        self._finish()
        self.result.wall = time.perf_counter() - started
        return self.result

    def advance(self, until: float) -> None:
        """Handle every event up to virtual time ``until`` (a run can be looked at between calls)."""
        handlers: dict[int, Callable[[_Node, Any], None]] = {
            _MSG: self._on_msg, _TIMER: self._on_timer, _BOOT: self._on_boot,
            _STALL: self._on_stall, _RESUME: self._on_resume, _CRASH: self._on_crash,
            _UPDATE: self._on_update, _PARTITION: self._on_partition, _HEAL: self._on_heal,
        }
        while self._heap and self._heap[0][0] <= until:
            t, _, kind, idx, payload = heapq.heappop(self._heap)
            self.now = t
            handlers[kind](self.nodes[idx], payload)

    def _on_msg(self, nd: _Node, payload: tuple[Address, Message]) -> None:
        if nd.crashed:
            return
        if nd.stalled:
            nd.backlog.append(payload)
        else:
            self._receive(nd, payload[0], payload[1])

    def _on_timer(self, nd: _Node, gen: int) -> None:
        if nd.crashed or gen != nd.timer_gen or nd.stalled:
            return  # a stalled member's timer runs when it resumes
        self._step(nd)

    def _on_boot(self, nd: _Node, _: None) -> None:
        self._boot(nd)

    def _on_stall(self, nd: _Node, _: None) -> None:
        if not nd.crashed:
            nd.stalled = True
            resume = self.now + self.rng.uniform(self.sc.stall_min, self.sc.stall_max)
            self._push(resume, _RESUME, nd.idx, None)

    def _on_resume(self, nd: _Node, _: None) -> None:
        nd.stalled = False
        self._step(nd)
        backlog, nd.backlog = nd.backlog, []
        for src, msg in backlog:
            self._receive(nd, src, msg)
        self._push(self.now + self.rng.expovariate(self.sc.stall_rate), _STALL, nd.idx, None)

    def _on_crash(self, nd: _Node, _: None) -> None:
        nd.crashed = True

    def _on_update(self, nd: _Node, _: None) -> None:
        nd.swim.set_meta({"api_addr": "10.255.0.1:7650"})
        self._update_version = nd.swim.member(nd.swim.id).meta_version  # type: ignore[union-attr]  # own row is never None
        self._update_missing = {
            m.idx for m in self.nodes if m is not nd and not m.crashed and m is not self.victim
        }
        self._out(nd, nd.swim.step(self.now))

    def _on_partition(self, _nd: _Node, _: None) -> None:
        half = self.sc.n // 2
        for a in range(half):
            for b in range(half, self.sc.n):
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def _on_heal(self, _nd: _Node, _: None) -> None:
        self.blocked.clear()

    def _boot(self, nd: _Node) -> None:
        # Warm start: every member already knows every other (as after a long
        # run), with no rumours left to spread.
        rows = tuple(
            Update(m.swim.id, "ingeststore", m.addr, ALIVE, 0) for m in self.nodes if m is not nd
        )
        src = self.nodes[(nd.idx + 1) % len(self.nodes)]
        nd.swim.receive(self.now, src.addr, Sync(src.swim.id, 0, rows))
        nd.swim.settle(self.now)
        nd.swim.take_events()
        self._step(nd)

    def _step(self, nd: _Node) -> None:
        sw = nd.swim
        self._out(nd, sw.step(self.now))
        nd.timer_gen += 1
        nxt = min(sw.next_deadline(), self.now + sw.config.probe_interval)
        self._push(max(nxt, self.now + 1e-6), _TIMER, nd.idx, nd.timer_gen)

    def _receive(self, nd: _Node, src: Address, msg: Message) -> None:
        self._out(nd, nd.swim.receive(self.now, src, msg))
        if self._update_version is not None and nd.idx in self._update_missing:
            m = nd.swim.member(self.origin.swim.id)
            if m is not None and m.meta_version >= self._update_version:
                self._update_missing.discard(nd.idx)
                self._update_done()

    def _update_done(self) -> None:
        if not self._update_missing and self.result.rounds is None:
            sc = self.sc
            self.result.rounds = (self.now - sc.update_at) / sc.config.probe_interval

    def _out(self, nd: _Node, out: Outgoing) -> None:
        self._events(nd)
        sc = self.sc
        count = self.now >= sc.measure_from
        rng = self.rng
        for dst, msg in out:
            if count:
                self._msgs += 1
                if self._msgs % self._sample == 0:
                    self._bytes += len(encode(msg)) * self._sample
                k = type(msg).__name__
                self._kinds[k] = self._kinds.get(k, 0) + 1
            peer = self.by_addr.get(dst)
            if peer is None or (nd.idx, peer.idx) in self.blocked:
                continue
            if sc.loss and rng.random() < sc.loss:
                continue
            delay = sc.latency + rng.random() * sc.jitter
            self._push(self.now + delay, _MSG, peer.idx, (nd.addr, msg))

    def _events(self, nd: _Node) -> None:
        r = self.result
        victim = self.victim.swim.id if self.victim is not None else None
        for ev in nd.swim.take_events():
            if ev.id == victim and self.now >= self.sc.crash_at:
                if ev.new in (SUSPECT, DEAD) and self._detect_pending:
                    self._detect_pending = False
                    r.first_detect = self.now - self.sc.crash_at
                if ev.new == DEAD:
                    self._dead_seen.add(nd.idx)
                    if len(self._dead_seen) == self._live_count() and r.all_dead is None:
                        r.all_dead = self.now - self.sc.crash_at
            elif ev.new == SUSPECT:
                r.false_suspicions += 1
                r.healthy_suspicions += ev.id not in self._slow_ids
                m = nd.swim.member(ev.id)
                if m is not None:
                    self._episodes.add((ev.id, m.incarnation))
            elif ev.new == DEAD:
                r.false_deaths += 1
                r.healthy_deaths += ev.id not in self._slow_ids
                r.falsely_dead.add(ev.id)

    def _live_count(self) -> int:
        return sum(1 for m in self.nodes if not m.crashed)

    def _finish(self) -> None:
        sc = self.sc
        r = self.result
        live = [m for m in self.nodes if not m.crashed]
        span = max(1e-9, min(self.now, sc.seconds) - sc.measure_from)
        r.msgs_per_member_s = self._msgs / len(live) / span
        r.bytes_per_member_s = self._bytes / len(live) / span
        r.kinds = {k: v / len(live) / span for k, v in sorted(self._kinds.items())}
        r.suspected_episodes = len(self._episodes)
        r.mean_health = sum(m.swim.health for m in live) / len(live)
        if sc.partition is not None:
            ids = {m.swim.id for m in live}
            r.converged_after_heal = all(
                {row.id for row in m.swim.members() if row.state == "alive"} == ids for m in live
            )


def simulate(sc: Scenario) -> Result:
    return Simulation(sc).run()


# --------------------------------------------------------------------------- table


def table_scenarios(
    seconds_big: float = 20.0, sizes: tuple[int, ...] = (10, 100, 1000),
    losses: tuple[float, ...] = (0.01, 0.05), stall_rate: float = 0.5,
) -> list[Scenario]:
    out = []
    for n in sizes:
        for loss in losses:
            secs = seconds_big if n >= 1000 else 40.0
            out.append(
                Scenario(
                    n=n, loss=loss, slow=0.10, stall_rate=stall_rate, seconds=secs,
                    seed=n + int(loss * 100),
                )
            )
    return out


HEADER = (
    "| N | loss | slow (stalls/s) | first detect (s) | all dead (s) | update rounds | log2 N |"
    " false suspicions (of healthy) | false deaths (of healthy) | msgs/member/s |"
    " bytes/member/s | sim s | wall s |"
)


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "never" if v is None else format(v, spec)


def row(r: Result) -> str:
    sc = r.scenario
    return (
        f"| {sc.n} | {sc.loss:.0%} | {sc.slow:.0%} ({sc.stall_rate:g}) | {_fmt(r.first_detect)} | {_fmt(r.all_dead)} |"
        f" {_fmt(r.rounds)} | {math.log2(sc.n):.1f} | {r.false_suspicions} ({r.healthy_suspicions}) |"
        f" {r.false_deaths} ({r.healthy_deaths}) |"
        f" {r.msgs_per_member_s:.1f} | {r.bytes_per_member_s:,.0f} | {sc.seconds:.0f} | {r.wall:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oklog.cluster.sim", description=__doc__.split("\n")[0])
    p.add_argument("--max-n", type=int, default=1000, help="largest cluster size to run")
    p.add_argument("--seconds-big", type=float, default=20.0, help="virtual seconds at N=1000")
    p.add_argument("--sizes", default="10,100,1000", help="cluster sizes (comma-separated)")
    p.add_argument("--losses", default="0.01,0.05", help="loss rates (comma-separated)")
    p.add_argument("--stall-rate", type=float, default=0.5, help="stalls per second of a slow member")
    p.add_argument("--no-header", action="store_true")
    args = p.parse_args(argv)
    if not args.no_header:
        print(HEADER)
        print("|" + "---|" * (HEADER.count("|") - 1))
    sizes = tuple(int(x) for x in args.sizes.split(","))
    losses = tuple(float(x) for x in args.losses.split(","))
    for sc in table_scenarios(args.seconds_big, sizes, losses, args.stall_rate):
        if sc.n > args.max_n:
            continue
        print(row(simulate(sc)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
