"""SWIM-style gossip membership as a pure state machine.

No sockets, no trio, no clock: the caller passes the current time (any monotonic
clock, in seconds) into every call and sends the messages the calls return. The
trio driver lives in :mod:`oklog.cluster.transport`; the wire format in
:mod:`oklog.cluster.codec`.

What the machine does (after Das, Gupta & Motivala, "SWIM", 2002, with the
refinements HashiCorp memberlist made popular):

- **Failure detection.** Every ``probe_interval`` it pings one member, taken
  round-robin from a shuffled list. No ack within ``ping_timeout`` → it asks
  ``indirect_probes`` other members to ping the target for it (``PingReq``). No
  ack by the end of the probe period → the target becomes *suspect*.
- **Suspicion** (with Lifeguard's refinements, Dadgar et al., 2018). A suspect
  that does not refute in time becomes *dead*. The wait is at least
  ``suspicion_timeout * max(1, log10 n)``; a suspicion only one member holds waits
  ``suspicion_max_mult`` times that, shortened on a log scale by each independent
  suspecter (a suspect rumour names its first-hand suspecter, ``Update.by``) up to
  ``suspicion_confirmations``. A ping to a suspect carries its suspicion (buddy
  system). A member refutes by announcing itself *alive* with a higher
  incarnation number; only the member itself ever raises its incarnation.
- **Local health.** A score (0..``health_max``) multiplies our own probe interval
  and ping timeout: up when we must refute a suspicion of ourselves or when a
  verdict falls due while our timer ran late, down on each acked probe. A verdict
  (a probe's end, a suspicion's expiry) judged more than a ping timeout late waits
  one more ping timeout: we were not running, and replies may be waiting unread.
- **Dissemination.** State changes ride on every outgoing message (ping, ack,
  ...), at most ``max_piggyback`` per message, each retransmitted about
  ``retransmit_mult * ln(n + 1)`` times, fewest-sent first (newest first among
  equals).
- **Joining.** ``join(seeds)`` sends ``Join`` (the sender's full state) to each
  seed, retried until a ``Sync`` (the receiver's full state) comes back. The same
  exchange runs every ``sync_interval`` (scaled up beyond 32 members, as
  memberlist's push-pull) with a random peer (push-pull
  anti-entropy), with seeds not currently in the view, and with one dead member,
  which heals partitions and brings back members that restarted.
- **Leaving.** ``leave()`` announces the *left* state (distinct from dead) with a
  higher incarnation; the machine then stays silent.
- **Forgetting.** Dead and left members stay in the view for ``dead_retention``
  seconds (so operators see them) and are then dropped.
- **Coming back.** A member that hears it is suspect, dead or left (e.g. after
  SIGSTOP/SIGCONT, or a restart with the same id) refutes with a higher
  incarnation. A member that hears from a peer it holds as suspect/dead/left
  tells that peer so, and a member that hears from a peer it does not know asks
  it to ``Join``, so a paused or restarted node always finds its way back.

Precedence of rumours about one member (``supersedes``): a higher incarnation
always wins; at equal incarnation ``left`` > ``dead`` > ``suspect`` > ``alive``.
The incarnation changes only when the member refutes, leaves or restarts.
Member ``meta`` (API addresses, load figures) has its own counter,
``meta_version``, raised by the owner on every change: at equal incarnation and
state the higher meta version replaces the meta (and nothing else).

Bounds that keep refutation possible. Incarnations on the wire are at most
``MAX_INCARNATION``; a rumour heard second-hand is accepted only up to
``HEARSAY_MAX``, far below it. Above that, only a member's own word about
itself counts (the message's sender is the member and the datagram comes from
the member's gossip address). So a forged rumour ("left", or "alive" at other
addresses) at the highest acceptable incarnation is still refuted by the member
announcing ``HEARSAY_MAX + 1`` itself. A receiver that hears a sender claim a
newer incarnation than the one it holds without the matching update asks that
sender for its state, so such a refutation reaches every member first-hand.

``last_heard`` (per member) is the time of the last message whose sender was
that member, as opposed to ``since``, the time of its last state change.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Address = tuple[str, int]
State = Literal["alive", "suspect", "dead", "left"]

ALIVE: State = "alive"
SUSPECT: State = "suspect"
DEAD: State = "dead"
LEFT: State = "left"
STATES: tuple[State, ...] = (ALIVE, SUSPECT, DEAD, LEFT)
ROLES = ("ingest", "store", "ingeststore")

# Exact in every JSON reader; far beyond any real count of refutations.
MAX_INCARNATION = 2**53
# Second-hand rumours above this are refused: leaves room to refute any we accept.
HEARSAY_MAX = 2**52

# At equal incarnation, the state further right wins.
_RANK: dict[str, int] = {ALIVE: 0, SUSPECT: 1, DEAD: 2, LEFT: 3}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Update:
    """Everything one member's gossip says about one member: a rumour."""

    id: str
    role: str
    addr: Address
    state: State
    incarnation: int
    meta: Mapping[str, Any] = field(default_factory=dict)
    meta_version: int = 0
    # For a suspicion: the member that suspected first-hand (its probe failed), so
    # receivers can count independent confirmations. Empty when unknown.
    by: str = ""


@dataclass(frozen=True)
class MemberInfo:
    """One row of a node's membership view.

    ``since`` is the time (on the caller's clock) of the last state change as
    seen by this node; ``last_heard`` the time of the last message this node got
    from that member (``None``: never directly, only through others; for the
    local node, the current time); ``is_self`` marks the local node.
    """

    id: str
    role: str
    addr: Address
    state: State
    incarnation: int
    meta: Mapping[str, Any]
    since: float
    is_self: bool = False
    last_heard: float | None = None
    meta_version: int = 0

    def serves(self, role: str) -> bool:
        """True if this member does ``role`` work ("ingeststore" does both)."""
        return self.role == role or (self.role == "ingeststore" and role in ("ingest", "store"))


# Messages. Every one carries the sender's id and incarnation (so a receiver can
# tell a peer it is believed dead) and piggy-backed updates. For Join and Sync
# the updates are the sender's full state (or a chunk of it).


@dataclass(frozen=True)
class _ProbeMessage:
    """The leading fields of a probe and its answer; ``seq`` pairs them."""

    sender: str
    incarnation: int
    seq: int


@dataclass(frozen=True)
class Ping(_ProbeMessage):
    target: str
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Ack(_ProbeMessage):
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class PingReq(_ProbeMessage):
    target: str
    target_addr: Address
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class _UpdatesOnly:
    """The fields of the messages that carry nothing but updates; each kind below
    is its own class (the codec and ``receive`` tell them apart by type)."""

    sender: str
    incarnation: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True)
class Join(_UpdatesOnly):
    """ "Here is my state, send me yours": answered with ``Sync``."""


@dataclass(frozen=True)
class Sync(_UpdatesOnly):
    """A full-state chunk; unlike piggy-backed gossip it may introduce dead members."""


@dataclass(frozen=True)
class Broadcast(_UpdatesOnly):
    """Updates only, no reply expected (leave announcements, corrections)."""


Message = Ping | Ack | PingReq | Join | Sync | Broadcast
Outgoing = list[tuple[Address, Message]]


@dataclass(frozen=True)
class MemberEvent:
    """A state change in the local view; ``None`` means unknown / forgotten."""

    id: str
    old: State | None
    new: State | None


@dataclass(frozen=True)
class SwimConfig:
    probe_interval: float = 0.5
    ping_timeout: float = 0.2
    indirect_probes: int = 3
    suspicion_timeout: float = 3.0
    dead_retention: float = 60.0
    sync_interval: float = 10.0
    join_retry: float = 1.0
    retransmit_mult: float = 3.0
    # Rumours per datagram. The cluster's rate of changes grows with n (members
    # that stall are suspected and refute); at 1,000 members with 10% of them
    # stalling, 16 a datagram left rumours queued for good (make sim).
    max_piggyback: int = 32
    sync_chunk: int = 32
    leave_fanout: int = 16
    # Lifeguard: a suspicion nobody confirms waits ``suspicion_max_mult`` times the
    # minimum; ``suspicion_confirmations`` independent suspecters bring it down to
    # the minimum, ``suspicion_timeout * max(1, log10(n))``.
    suspicion_max_mult: float = 4.0
    suspicion_confirmations: int = 3
    # Lifeguard's local health awareness: probe interval and ping timeout are
    # multiplied by 1 + score (0..health_max).
    health_max: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.ping_timeout < self.probe_interval:
            raise ValueError("need 0 < ping_timeout < probe_interval")
        if self.suspicion_timeout <= 0 or self.dead_retention < 0:
            raise ValueError("suspicion_timeout must be > 0 and dead_retention >= 0")
        if self.suspicion_max_mult < 1 or self.suspicion_confirmations < 0 or self.health_max < 0:
            raise ValueError("need suspicion_max_mult >= 1, suspicion_confirmations >= 0, health_max >= 0")
        if self.max_piggyback < 1 or self.sync_chunk < 1:
            raise ValueError("max_piggyback and sync_chunk must be >= 1")


@dataclass
class SwimStats:
    probes: int = 0
    indirect_probes: int = 0
    probe_failures: int = 0
    refutations: int = 0
    joins_sent: int = 0
    syncs_sent: int = 0
    refused_updates: int = 0  # second-hand rumours above HEARSAY_MAX
    unrefutable: int = 0  # rumours about us too high to refute (only forged ones get there)
    confirmations: int = 0  # independent suspicions of a member we already suspected
    deferred: int = 0  # verdicts put off because our own timer ran late


def supersedes(new_state: State, new_inc: int, cur_state: State, cur_inc: int) -> bool:
    """Does a rumour (new_state, new_inc) replace what we hold (cur_state, cur_inc)?"""
    if new_inc != cur_inc:
        return new_inc > cur_inc
    return _RANK[new_state] > _RANK[cur_state]


# --------------------------------------------------------------------------- internals


@dataclass
class _Member:
    id: str
    role: str
    addr: Address
    state: State
    incarnation: int
    meta: dict[str, Any]
    since: float
    meta_version: int = 0
    last_heard: float | None = None
    # While suspect: who suspected it (ordered set), the timeout bounds fixed when
    # the suspicion started, and a one-off extension when we judged it late.
    suspecters: dict[str, None] = field(default_factory=dict)
    sus_min: float = 0.0
    sus_max: float = 0.0
    sus_k: int = 0
    deferred_until: float = 0.0

    def update(self, by: str = "") -> Update:
        return Update(
            self.id,
            self.role,
            self.addr,
            self.state,
            self.incarnation,
            dict(self.meta),
            self.meta_version,
            by if self.state == SUSPECT else "",
        )

    def suspicion_deadline(self) -> float:
        """When this suspicion turns into death (Lifeguard: sooner with more confirmations)."""
        c = max(0, len(self.suspecters) - 1)
        if self.sus_k < 1 or c >= self.sus_k:
            wait = self.sus_min
        else:
            frac = math.log(c + 1) / math.log(self.sus_k + 1)
            wait = max(self.sus_min, self.sus_max - (self.sus_max - self.sus_min) * frac)
        return max(self.since + wait, self.deferred_until)

    def info(self, is_self: bool = False, now: float | None = None) -> MemberInfo:
        return MemberInfo(
            self.id,
            self.role,
            self.addr,
            self.state,
            self.incarnation,
            dict(self.meta),
            self.since,
            is_self,
            now if is_self else self.last_heard,
            self.meta_version,
        )


@dataclass
class _Rumour:
    update: Update
    transmits: int = 0
    order: int = 0  # enqueue sequence: among equally sent rumours the newest goes first


@dataclass
class _Probe:
    target: str
    seq: int
    indirect_at: float
    acked: bool = False
    indirect_sent: bool = False
    deferred: bool = False


@dataclass
class _Relay:
    requester: Address
    seq: int
    expires: float


# --------------------------------------------------------------------------- machine


class Swim:
    """The membership state machine of one node. See the module docstring."""

    def __init__(
        self,
        id: str,
        role: str,
        addr: Address,
        *,
        meta: Mapping[str, Any] | None = None,
        incarnation: int = 0,
        config: SwimConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self.id = id
        self.config = config or SwimConfig()
        self.stats = SwimStats()
        self._rng = rng or random.Random()
        self._me = _Member(id, role, addr, ALIVE, incarnation, dict(meta or {}), 0.0)
        self._members: dict[str, _Member] = {}
        # Members not alive (their timers matter), in insertion order so runs repeat.
        self._unsettled: dict[str, None] = {}
        self._queue: dict[str, _Rumour] = {}
        self._events: list[MemberEvent] = []
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._relays: dict[int, _Relay] = {}
        self._corrected: dict[str, float] = {}
        self._reasserted: dict[Address, float] = {}
        self._now = 0.0
        self._seq = 0
        self._seeds: list[Address] = []
        self._joined = False
        self._started = False
        self._next_probe = 0.0
        self._next_sync = 0.0
        self._next_join = 0.0
        self._health = 0
        self._enqueued = 0

    # ----------------------------------------------------------------- public

    @property
    def health(self) -> int:
        """Local health score (0 = healthy); timers stretch by 1 + score."""
        return self._health

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def left(self) -> bool:
        return self._me.state == LEFT

    @property
    def joined(self) -> bool:
        """True once some peer answered a Join (or we never needed one)."""
        return self._joined or not self._seeds

    def members(self) -> list[MemberInfo]:
        """The view: every known member including this node, sorted by id."""
        rows = [m.info() for m in self._members.values()]
        rows.append(self._me.info(is_self=True, now=self._now))
        return sorted(rows, key=lambda r: r.id)

    def member(self, id: str) -> MemberInfo | None:
        """One row of the view (``None``: unknown), without building the whole view."""
        if id == self.id:
            return self._me.info(is_self=True, now=self._now)
        m = self._members.get(id)
        return None if m is None else m.info()

    def suspicion_deadline(self, id: str) -> float | None:
        """When a suspect member will be declared dead unless it refutes (``None``: not suspect)."""
        m = self._members.get(id)
        return m.suspicion_deadline() if m is not None and m.state == SUSPECT else None

    def settle(self, now: float) -> None:
        """Treat the view as long established (a simulator's warm start): forget the
        rumours waiting to be piggy-backed, and put the next full-state sync at a
        random point of its interval, as in a cluster that has run for long."""
        self._start(now)
        self._queue.clear()
        self._next_sync = now + self._sync_period() * self._rng.random()

    def take_events(self) -> list[MemberEvent]:
        """State changes since the last call (for logging by the driver)."""
        events, self._events = self._events, []
        return events

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        """Replace this node's meta; the change disseminates with a new meta version
        (the incarnation stays: it means refutation, not "something changed")."""
        if self.left or dict(meta) == self._me.meta:
            return
        self._me.meta = dict(meta)
        self._me.meta_version += 1
        self._enqueue(self._me.update())

    def join(self, now: float, seeds: Iterable[Address]) -> Outgoing:
        """Contact seeds (retried from ``step`` until one answers)."""
        self._start(now)
        new: list[Address] = [(s[0], int(s[1])) for s in seeds]
        new = [s for s in new if s != self._me.addr]
        for s in new:
            if s not in self._seeds:
                self._seeds.append(s)
        if not new or self.left:
            return []
        self._next_join = now + self.config.join_retry
        return [(s, self._join_msg()) for s in self._seeds]

    def leave(self, now: float) -> Outgoing:
        """Announce a graceful leave; afterwards the machine sends nothing more.

        Calling it again returns the announcement again (for a resend)."""
        self._start(now)
        if not self.left:
            self._me.incarnation += 1
            self._me.state = LEFT
            self._me.since = now
            self._events.append(MemberEvent(self.id, ALIVE, LEFT))
        peers = [m for m in self._members.values() if m.state in (ALIVE, SUSPECT)]
        self._rng.shuffle(peers)
        msg = Broadcast(self.id, self._me.incarnation, (self._me.update(),))
        return [(m.addr, msg) for m in peers[: self.config.leave_fanout]]

    def next_deadline(self) -> float:
        """The latest time by which ``step`` should next be called (inf once left)."""
        if self.left:
            return math.inf
        cfg = self.config
        times = [self._next_probe, self._next_sync]
        if self._probe and not self._probe.acked and not self._probe.indirect_sent:
            times.append(self._probe.indirect_at)
        if self._seeds and not self._joined:
            times.append(self._next_join)
        for m in self._unsettled_members():
            if m.state == SUSPECT:
                times.append(m.suspicion_deadline())
            elif m.state in (DEAD, LEFT):
                times.append(m.since + cfg.dead_retention)
        return min(times)

    def step(self, now: float) -> Outgoing:
        """Run the timers: probes, indirect probes, suspicion, retention, sync."""
        self._start(now)
        if self.left:
            return []
        out: Outgoing = []
        out += self._step_probe(now)
        self._step_suspects(now)
        self._step_retention(now)
        for seq in [s for s, r in self._relays.items() if r.expires <= now]:
            del self._relays[seq]
        for sender in [
            s for s, t in self._corrected.items() if now - t >= self.config.probe_interval
        ]:
            del self._corrected[sender]
        for a in [a for a, t in self._reasserted.items() if now - t >= self.config.probe_interval]:
            del self._reasserted[a]
        out += self._step_sync(now)
        return out

    def receive(self, now: float, src: Address, msg: Message) -> Outgoing:
        """Handle one message from ``src`` (the datagram's source address)."""
        self._start(now)
        if msg.sender == self.id:
            return []
        stale_about_me = self._merge(now, src, msg)
        sender = self._members.get(msg.sender)
        if sender is not None:
            sender.last_heard = now
        if self.left:
            return []
        out = self._correct(now, src, msg)
        if stale_about_me and now - self._reasserted.get(src, -math.inf) >= self.config.probe_interval:
            # Someone still believes an older, wrong story about us: tell it first-hand.
            self._reasserted[src] = now
            out.append((src, Broadcast(self.id, self._me.incarnation, (self._me.update(),))))
        out += self._answer(now, src, msg)
        return out

    def _merge(self, now: float, src: Address, msg: Message) -> bool:
        """Merge the message's rumours; True if one about us was an older, wrong story."""
        full = isinstance(msg, (Join, Sync))
        stale_about_me = False
        for u in msg.updates:
            if u.id == self.id:
                stale_about_me |= self._about_me(u)
            else:
                self._apply(u, now, full=full, first_hand=u.id == msg.sender and src == u.addr)
        return stale_about_me

    def _answer(self, now: float, src: Address, msg: Message) -> Outgoing:
        """What the message itself asks of us (its rumours are already merged)."""
        if isinstance(msg, Ping):
            return [(src, self._ack(msg.seq, msg.sender))] if msg.target == self.id else []
        if isinstance(msg, Ack):
            return self._on_ack(msg)
        if isinstance(msg, PingReq):
            if msg.target == self.id:
                return []
            seq = self._next_seq()
            self._relays[seq] = _Relay(src, msg.seq, now + self.config.probe_interval)
            return [(msg.target_addr, self._ping(seq, msg.target))]
        if isinstance(msg, Join):
            self.stats.syncs_sent += 1
            return [(src, m) for m in self._sync_msgs()]
        if isinstance(msg, Sync):
            self._joined = True
        return []

    def _on_ack(self, msg: Ack) -> Outgoing:
        probe = self._probe
        if probe and probe.seq == msg.seq:
            if not probe.acked:
                self._health_change(-1)
            probe.acked = True
        elif msg.seq in self._relays:
            relay = self._relays.pop(msg.seq)
            return [(relay.requester, self._ack(relay.seq, None))]
        return []

    # ----------------------------------------------------------------- timers

    def _start(self, now: float) -> None:
        self._now = max(self._now, now)
        if not self._started:
            self._started = True
            self._me.since = now
            self._next_probe = now
            self._next_sync = now + self.config.sync_interval
            self._next_join = now + self.config.join_retry

    def _step_probe(self, now: float) -> Outgoing:
        cfg = self.config
        out: Outgoing = []
        probe = self._probe
        if probe and not probe.acked and not probe.indirect_sent and now >= probe.indirect_at:
            probe.indirect_sent = True
            target = self._members.get(probe.target)
            if target is not None:
                helpers = [
                    m for m in self._members.values() if m.state == ALIVE and m.id != probe.target
                ]
                for m in self._rng.sample(helpers, min(cfg.indirect_probes, len(helpers))):
                    self.stats.indirect_probes += 1
                    msg = PingReq(
                        self.id,
                        self._me.incarnation,
                        probe.seq,
                        target.id,
                        target.addr,
                        self._piggyback(m.id),
                    )
                    out.append((m.addr, msg))
        if now < self._next_probe:
            return out
        if probe and not probe.acked:
            if not probe.deferred and now - self._next_probe > cfg.ping_timeout:
                # Our timer ran late: this process was not running (a stall, CPU
                # starvation), so the ack may be waiting unread. Read first, judge
                # after one more ping timeout, and count it against our own health.
                probe.deferred = True
                self.stats.deferred += 1
                self._health_change(+1)
                self._next_probe = now + cfg.ping_timeout
                return out
            self._probe_failed(probe, now)
        self._probe = None
        scale = 1 + self._health
        self._next_probe = now + cfg.probe_interval * scale
        target = self._next_target()
        if target is not None:
            self.stats.probes += 1
            seq = self._next_seq()
            self._probe = _Probe(target.id, seq, now + cfg.ping_timeout * scale)
            out.append((target.addr, self._ping(seq, target.id)))
        return out

    def _health_change(self, delta: int) -> None:
        self._health = min(self.config.health_max, max(0, self._health + delta))

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self.stats.probe_failures += 1
        m = self._members.get(probe.target)
        if m is None:
            return
        if m.state == ALIVE:
            self._set_state(m, SUSPECT, now)
            self._start_suspicion(m, self.id)
            self._enqueue(m.update(self.id))
        elif m.state == SUSPECT and self.id not in m.suspecters and len(m.suspecters) <= m.sus_k:
            # Our own failed probe confirms someone else's suspicion.
            m.suspecters[self.id] = None
            self._enqueue(m.update(self.id), keep_count=True)

    def _start_suspicion(self, m: _Member, by: str) -> None:
        cfg = self.config
        n = len(self._members) + 1
        m.suspecters = {by: None} if by else {}
        m.sus_min = cfg.suspicion_timeout * max(1.0, math.log10(n))
        m.sus_max = cfg.suspicion_max_mult * m.sus_min
        k = cfg.suspicion_confirmations
        m.sus_k = 0 if n - 2 < k else k
        m.deferred_until = 0.0

    def _next_target(self) -> _Member | None:
        for _ in range(2):
            while self._probe_order:
                m = self._members.get(self._probe_order.pop())
                if m is not None and m.state in (ALIVE, SUSPECT):
                    return m
            self._probe_order = [
                m.id for m in self._members.values() if m.state in (ALIVE, SUSPECT)
            ]
            self._rng.shuffle(self._probe_order)
        return None

    def _unsettled_members(self) -> list[_Member]:
        return [self._members[i] for i in self._unsettled]

    def _track(self, m: _Member) -> None:
        if m.state == ALIVE:
            self._unsettled.pop(m.id, None)
        else:
            self._unsettled[m.id] = None

    def _step_suspects(self, now: float) -> None:
        for m in self._unsettled_members():
            if m.state != SUSPECT:
                continue
            due = m.suspicion_deadline()
            if now < due:
                continue
            if now - due > self.config.ping_timeout and not m.deferred_until:
                # Judged late (we were not running): a refutation may be waiting unread.
                m.deferred_until = now + self.config.ping_timeout
                self.stats.deferred += 1
                continue
            self._set_state(m, DEAD, now)

    def _step_retention(self, now: float) -> None:
        for m in self._unsettled_members():
            if m.state in (DEAD, LEFT) and now - m.since >= self.config.dead_retention:
                del self._members[m.id]
                del self._unsettled[m.id]
                self._queue.pop(m.id, None)
                self._corrected.pop(m.id, None)
                self._events.append(MemberEvent(m.id, m.state, None))

    def _step_sync(self, now: float) -> Outgoing:
        out: Outgoing = []
        if self._seeds and not self._joined and now >= self._next_join:
            self._next_join = now + self.config.join_retry
            out += [(s, self._join_msg()) for s in self._seeds]
        if now < self._next_sync:
            return out
        # memberlist's push-pull scale: full-state exchanges carry O(n) rows, so
        # beyond 32 members they run less often (log2 n - 4 times the interval).
        self._next_sync = now + self._sync_period()
        live = [m for m in self._members.values() if m.state in (ALIVE, SUSPECT)]
        dead = [m for m in self._members.values() if m.state == DEAD]
        targets: list[Address] = []
        if live:
            targets.append(self._rng.choice(live).addr)
        if dead:
            targets.append(self._rng.choice(dead).addr)
        known = {m.addr for m in live}
        targets += [s for s in self._seeds if s not in known and s not in targets]
        out += [(a, self._join_msg()) for a in targets]
        return out

    def _sync_period(self) -> float:
        n = len(self._members) + 1
        scale = 1 if n <= 32 else math.ceil(math.log2(n) - 5) + 1
        return self.config.sync_interval * scale

    # ----------------------------------------------------------------- merging

    def _apply(self, u: Update, now: float, *, full: bool, first_hand: bool = False) -> None:
        if u.incarnation > HEARSAY_MAX and not first_hand:
            self.stats.refused_updates += 1
            return
        cur = self._members.get(u.id)
        if cur is None:
            self._apply_stranger(u, now, full=full)
        elif supersedes(u.state, u.incarnation, cur.state, cur.incarnation):
            self._apply_newer(cur, u, now)
        else:
            self._apply_not_newer(cur, u)

    def _apply_stranger(self, u: Update, now: float, *, full: bool) -> None:
        # Piggy-backed suspicion or death of a stranger is noise; a full
        # state sync may introduce dead members so the view shows them.
        if u.state != ALIVE and not full:
            return
        m = _Member(u.id, u.role, u.addr, u.state, u.incarnation, dict(u.meta), now, u.meta_version)
        self._members[u.id] = m
        self._track(m)
        if u.state == SUSPECT:
            self._start_suspicion(m, u.by)
        self._events.append(MemberEvent(u.id, None, u.state))
        if u.state in (ALIVE, SUSPECT):
            self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), u.id)
        self._enqueue(m.update())

    def _apply_not_newer(self, cur: _Member, u: Update) -> None:
        """An update that does not supersede ours: a suspicion's confirmation, a
        newer meta at the same incarnation, or nothing new."""
        same_life = u.incarnation == cur.incarnation and u.state == cur.state
        if same_life and u.state == SUSPECT and self._new_suspecter(cur, u.by):
            # An independent confirmation: our wait shrinks; pass it on, as part
            # of the same rumour (its send count stays, so confirmations do not
            # multiply the gossip about one suspicion).
            cur.suspecters[u.by] = None
            self.stats.confirmations += 1
            self._enqueue(cur.update(u.by), keep_count=True)
        elif same_life and u.meta_version > cur.meta_version:
            cur.meta, cur.meta_version = dict(u.meta), u.meta_version
            self._enqueue(cur.update())

    def _new_suspecter(self, cur: _Member, by: str) -> bool:
        """``by`` is another member whose suspicion still counts towards ``cur``'s."""
        fresh = bool(by) and by != self.id and by not in cur.suspecters
        return fresh and len(cur.suspecters) <= cur.sus_k

    def _apply_newer(self, cur: _Member, u: Update, now: float) -> None:
        old, old_inc = cur.state, cur.incarnation
        cur.role, cur.addr, cur.meta = u.role, u.addr, dict(u.meta)
        cur.incarnation, cur.meta_version = u.incarnation, u.meta_version
        if u.state != old:
            cur.state = u.state
            cur.since = now
            self._track(cur)
            self._events.append(MemberEvent(u.id, old, u.state))
        if u.state == SUSPECT:
            if u.state != old or u.incarnation != old_inc:
                self._start_suspicion(cur, u.by)
            elif u.by and u.by not in cur.suspecters and len(cur.suspecters) <= cur.sus_k:
                cur.suspecters[u.by] = None
        self._enqueue(cur.update(u.by))

    def _about_me(self, u: Update) -> bool:
        """Refute what is wrong about us. True if the rumour was an older, wrong
        story (the sender should hear our current state again)."""
        me = self._me
        if me.state == LEFT:
            return False
        same = u.state == ALIVE and u.addr == me.addr and u.role == me.role
        if u.incarnation < me.incarnation:
            return not same
        if u.incarnation == me.incarnation and same:
            if u.meta_version < me.meta_version:
                return True
            if u.meta_version == me.meta_version and dict(u.meta) == me.meta:
                return False
        # Suspected, declared dead/left, given other addresses or meta, or an old
        # life of ours (restart with the same id): refute with a higher incarnation.
        if u.incarnation >= MAX_INCARNATION:
            self.stats.unrefutable += 1
            return False
        me.incarnation = u.incarnation + 1
        self.stats.refutations += 1
        if u.state == SUSPECT or u.state == DEAD:
            # Being suspected is a hint that we are the slow one (Lifeguard).
            self._health_change(+1)
        self._enqueue(me.update())
        return False

    def _set_state(self, m: _Member, state: State, now: float) -> None:
        self._events.append(MemberEvent(m.id, m.state, state))
        m.state = state
        m.since = now
        self._track(m)
        self._enqueue(m.update())

    def _correct(self, now: float, src: Address, msg: Message) -> Outgoing:
        """Tell a sender we hold as not alive (or do not know) about it, once in a
        while; ask a sender that claims a newer incarnation than we hold for its
        state (its refutation may have reached us only second-hand, and been refused)."""
        m = self._members.get(msg.sender)
        newer = m is not None and m.incarnation < msg.incarnation
        if m is not None and m.state == ALIVE and not newer:
            return []
        if m is None and isinstance(msg, (Join, Sync)):
            return []
        last = self._corrected.get(msg.sender)
        if last is not None and now - last < self.config.probe_interval:
            return []
        self._corrected[msg.sender] = now
        if m is None or (newer and m.state == ALIVE and msg.incarnation > HEARSAY_MAX):
            # A stranger talks to us (we forgot it while it was paused), or a member
            # whose latest word only it can give us: ask for its state.
            self.stats.joins_sent += 1
            return [(src, Join(self.id, self._me.incarnation, (self._me.update(),)))]
        if m.state == ALIVE:
            # Alive here at an older incarnation (it refuted a suspicion we never
            # heard): nothing to correct, and its refutation reaches us by gossip.
            # A Join would cost a full-state sync per refutation heard.
            return []
        # We hold it suspect/dead/left: tell it; it answers first-hand if we are wrong.
        return [(src, Broadcast(self.id, self._me.incarnation, (m.update(),)))]

    # ----------------------------------------------------------------- messages

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _ping(self, seq: int, target: str) -> Ping:
        updates = self._piggyback(target)
        m = self._members.get(target)
        if m is not None and m.state == SUSPECT and not any(u.id == target for u in updates):
            # Lifeguard's buddy system: a suspect we probe hears of it at once.
            updates = (m.update(next(iter(m.suspecters), "")),) + updates[: self.config.max_piggyback - 1]
        return Ping(self.id, self._me.incarnation, seq, target, updates)

    def _ack(self, seq: int, dest: str | None) -> Ack:
        return Ack(self.id, self._me.incarnation, seq, self._piggyback(dest))

    def _join_msg(self) -> Join:
        self.stats.joins_sent += 1
        # The first chunk of our state is plenty to introduce ourselves; the
        # rest arrives through the Sync we get back and through gossip.
        return Join(self.id, self._me.incarnation, self._state_chunks()[0])

    def _sync_msgs(self) -> list[Sync]:
        return [Sync(self.id, self._me.incarnation, c) for c in self._state_chunks()]

    def _state_chunks(self) -> list[tuple[Update, ...]]:
        rows = [self._me.update()] + [m.update() for m in self._members.values()]
        n = self.config.sync_chunk
        return [tuple(rows[i : i + n]) for i in range(0, len(rows), n)]

    def _enqueue(self, u: Update, keep_count: bool = False) -> None:
        self._enqueued += 1
        old = self._queue.get(u.id)
        sent = old.transmits if keep_count and old is not None else 0
        self._queue[u.id] = _Rumour(u, sent, self._enqueued)

    def _retransmit_limit(self) -> int:
        n = len(self._members) + 1
        return max(1, math.ceil(self.config.retransmit_mult * math.log(n + 1)))

    def _piggyback(self, dest: str | None) -> tuple[Update, ...]:
        if not self._queue:
            return ()
        limit = self._retransmit_limit()
        rumours = sorted(
            self._queue.values(), key=lambda r: (r.update.id != dest, r.transmits, -r.order)
        )
        chosen = rumours[: self.config.max_piggyback]
        for r in chosen:
            r.transmits += 1
            if r.transmits >= limit:
                del self._queue[r.update.id]
        return tuple(r.update for r in chosen)
