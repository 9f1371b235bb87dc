"""Table-driven tests of the pure SWIM state machine, on a simulated network."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from oklog.cluster.codec import decode, encode
from oklog.cluster.swim import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Ack,
    Address,
    Broadcast,
    Join,
    MemberInfo,
    Message,
    Outgoing,
    Ping,
    PingReq,
    State,
    Swim,
    SwimConfig,
    Sync,
    Update,
    supersedes,
)

CFG = SwimConfig(
    probe_interval=0.5,
    ping_timeout=0.2,
    suspicion_timeout=2.0,
    dead_retention=10.0,
    sync_interval=3.0,
    join_retry=0.5,
)
DT = 0.05


def addr(i: int) -> Address:
    return (f"10.0.0.{i}", 7659)


def node(i: int, **kw) -> Swim:
    kw.setdefault("config", CFG)
    return Swim(f"n{i}", "ingeststore", addr(i), rng=random.Random(i), **kw)


class SimNet:
    """Nodes exchanging messages in memory, through the real codec.

    Delivery is immediate (within the tick); ``loss`` drops messages at random,
    ``down`` nodes neither send nor receive (crashed or SIGSTOPped), ``blocked``
    holds directed links that drop everything.
    """

    def __init__(self, n: int = 0, *, loss: float = 0.0, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.nodes: dict[Address, Swim] = {}
        self.down: set[Address] = set()
        self.blocked: set[tuple[Address, Address]] = set()
        self.sent = 0
        for i in range(n):
            self.add(node(i))
        if n:
            seed_addr = addr(0)
            for a, sw in self.nodes.items():
                if a != seed_addr:
                    self.send(a, sw.join(self.now, [seed_addr]))

    def add(self, sw: Swim) -> Swim:
        self.nodes[_self(sw).addr] = sw
        return sw

    def partition(self, left: Iterable[Address], right: Iterable[Address]) -> None:
        for a in left:
            for b in right:
                self.blocked |= {(a, b), (b, a)}

    def heal(self) -> None:
        self.blocked.clear()

    def send(self, src: Address, out: Outgoing) -> None:
        pending = [(src, dst, msg) for dst, msg in out]
        for _ in range(10_000):
            if not pending:
                return
            s, d, msg = pending.pop(0)
            self.sent += 1
            if s in self.down or d in self.down or (s, d) in self.blocked:
                continue
            if self.loss and self.rng.random() < self.loss:
                continue
            target = self.nodes.get(d)
            if target is None:
                continue
            wire = decode(encode(msg))
            pending += [(d, dd, m) for dd, m in target.receive(self.now, s, wire)]
        raise AssertionError("message storm")

    def tick(self) -> None:
        self.now = round(self.now + DT, 6)
        for a, sw in list(self.nodes.items()):
            if a not in self.down:
                self.send(a, sw.step(self.now))

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / DT)):
            self.tick()

    def run_until(self, cond, limit: float) -> float:
        start = self.now
        while not cond():
            if self.now - start > limit:
                raise AssertionError(f"condition not met within {limit}s")
            self.tick()
        return self.now - start

    def view(self, at: Address) -> dict[str, MemberInfo]:
        return {m.id: m for m in self.nodes[at].members()}

    def state_everywhere(self, mid: str, *, skip: Iterable[Address] = ()) -> set[State | None]:
        skip = set(skip) | self.down
        out: set[State | None] = set()
        for a in self.nodes:
            if a not in skip:
                m = self.view(a).get(mid)
                out.add(m.state if m else None)
        return out

    def converged(self, n: int) -> bool:
        return all(
            len([m for m in self.nodes[a].members() if m.state == ALIVE]) == n
            for a in self.nodes
            if a not in self.down
        )


def _self(sw: Swim) -> MemberInfo:
    return next(m for m in sw.members() if m.is_self)


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    "new, cur, wins",
    [
        ((ALIVE, 1), (ALIVE, 0), True),
        ((ALIVE, 0), (ALIVE, 0), False),
        ((ALIVE, 0), (SUSPECT, 0), False),
        ((ALIVE, 1), (SUSPECT, 0), True),
        ((ALIVE, 1), (DEAD, 0), True),
        ((ALIVE, 0), (DEAD, 0), False),
        ((SUSPECT, 0), (ALIVE, 0), True),
        ((SUSPECT, 0), (ALIVE, 1), False),
        ((SUSPECT, 0), (SUSPECT, 0), False),
        ((SUSPECT, 0), (DEAD, 0), False),
        ((DEAD, 0), (ALIVE, 0), True),
        ((DEAD, 0), (SUSPECT, 0), True),
        ((DEAD, 0), (ALIVE, 1), False),
        ((DEAD, 0), (LEFT, 0), False),
        ((LEFT, 0), (DEAD, 0), True),
        ((LEFT, 0), (ALIVE, 0), True),
        ((ALIVE, 3), (LEFT, 2), True),
    ],
)
def test_supersedes(new, cur, wins):
    assert supersedes(new[0], new[1], cur[0], cur[1]) is wins


# --------------------------------------------------------------------------- message level


def exchange(sws: dict[Address, Swim], now: float, src: Address, out: Outgoing) -> list:
    """Deliver ``out`` (and everything it triggers); return every delivered (src, dst, msg)."""
    log = []
    pending = [(src, d, m) for d, m in out]
    while pending:
        s, d, m = pending.pop(0)
        log.append((s, d, m))
        if d in sws:
            pending += [(d, dd, mm) for dd, mm in sws[d].receive(now, s, m)]
    return log


def test_join_through_seed_syncs_full_state():
    a, b, c = node(0), node(1), node(2)
    sws = {addr(0): a, addr(1): b, addr(2): c}
    exchange(sws, 0.0, addr(1), b.join(0.0, [addr(0)]))
    log = exchange(sws, 0.0, addr(2), c.join(0.0, [addr(0), addr(2)]))
    kinds = [type(m) for _, _, m in log]
    assert kinds[:2] == [Join, Sync]  # the seed answers the join with its full state
    assert {m.id for m in c.members()} == {"n0", "n1", "n2"}
    assert c.joined and b.joined
    assert {m.id for m in a.members()} == {"n0", "n1", "n2"}


def test_join_is_retried_until_a_seed_answers():
    net = SimNet()
    b = net.add(node(1))
    net.down.add(addr(0))
    net.send(addr(1), b.join(net.now, [addr(0)]))
    net.run(2.0)
    assert not b.joined
    net.add(node(0))
    net.down.clear()
    net.run_until(lambda: b.joined, limit=2.0)
    assert net.converged(2)


def test_probe_ack():
    a, b = node(0), node(1)
    sws = {addr(0): a, addr(1): b}
    exchange(sws, 0.0, addr(1), b.join(0.0, [addr(0)]))
    out = a.step(0.0)
    assert [(d, type(m)) for d, m in out] == [(addr(1), Ping)]
    log = exchange(sws, 0.0, addr(0), out)
    assert [type(m) for _, _, m in log] == [Ping, Ack]
    assert a.step(0.5)  # next probe; the previous one was acked
    assert a.stats.probe_failures == 0
    assert {m.id: m.state for m in a.members()}["n1"] == ALIVE


def test_ping_for_another_id_is_not_acked():
    b = node(1)
    assert b.receive(0.0, addr(0), Ping("n0", 0, 1, "someone-else")) == [
        (addr(0), Join("n1", 0, (Update("n1", "ingeststore", addr(1), ALIVE, 0, {}),)))
    ]


def test_indirect_probe_success():
    a, b, c = node(0), node(1), node(2)
    sws = {addr(0): a, addr(1): b, addr(2): c}
    exchange(sws, 0.0, addr(1), b.join(0.0, [addr(0)]))
    exchange(sws, 0.0, addr(2), c.join(0.0, [addr(0)]))
    # Find a probe of b by a; a's direct ping to b is lost.
    now = 0.0
    while True:
        out = a.step(now)
        pings = [(d, m) for d, m in out if isinstance(m, Ping)]
        if pings and pings[0][0] == addr(1):
            break
        exchange(sws, now, addr(0), out)
        now += CFG.probe_interval
    out = a.step(now + CFG.ping_timeout)
    assert [(d, type(m)) for d, m in out] == [(addr(2), PingReq)]
    log = exchange(sws, now + CFG.ping_timeout, addr(0), out)
    # (b may not know c yet and asks it to Join: that exchange is not the point here)
    probe_msgs = [(s, d, type(m)) for s, d, m in log if isinstance(m, (Ping, PingReq, Ack))]
    assert probe_msgs == [
        (addr(0), addr(2), PingReq),
        (addr(2), addr(1), Ping),
        (addr(1), addr(2), Ack),
        (addr(2), addr(0), Ack),
    ]
    a.step(now + CFG.probe_interval)
    assert a.stats.probe_failures == 0
    assert {m.id: m.state for m in a.members()}["n1"] == ALIVE


def test_indirect_probe_keeps_member_alive_behind_a_broken_link():
    net = SimNet(4, seed=1)
    net.run_until(lambda: net.converged(4), limit=3.0)
    net.blocked |= {(addr(0), addr(1)), (addr(1), addr(0))}
    net.run(10.0)
    assert net.state_everywhere("n1") == {ALIVE}
    assert net.nodes[addr(0)].stats.indirect_probes > 0


def test_refutation_of_suspicion_by_incarnation():
    a, b = node(0), node(1)
    sws = {addr(0): a, addr(1): b}
    exchange(sws, 0.0, addr(1), b.join(0.0, [addr(0)]))
    rumour = Update("n1", "ingeststore", addr(1), SUSPECT, 0, {})
    out = b.receive(1.0, addr(0), Broadcast("n0", 0, (rumour,)))
    assert out == []
    assert b.incarnation == 1 and b.stats.refutations == 1
    # a suspects b; b's next message carries the refutation.
    a.receive(1.0, addr(1), Broadcast("n9", 0, (rumour,)))
    assert {m.id: m.state for m in a.members()}["n1"] == SUSPECT
    exchange(sws, 1.0, addr(1), b.step(1.0))
    info = {m.id: m for m in a.members()}["n1"]
    assert (info.state, info.incarnation) == (ALIVE, 1)


# --------------------------------------------------------------------------- simulated clusters


@pytest.mark.parametrize(
    "n, loss, seed, limit",
    [
        (5, 0.0, 1, 3.0),
        (8, 0.0, 2, 3.0),
        (10, 0.1, 3, 6.0),
        (10, 0.25, 4, 10.0),
    ],
)
def test_cluster_converges_and_meta_disseminates(n, loss, seed, limit):
    net = SimNet(n, loss=loss, seed=seed)
    net.run_until(lambda: net.converged(n), limit=limit)
    src = net.nodes[addr(n - 1)]
    src.set_meta({"api_addr": "10.0.0.9:7650", "load": 0.5})

    def everyone_has_meta() -> bool:
        return all(net.view(a)[src.id].meta.get("load") == 0.5 for a in net.nodes)

    took = net.run_until(everyone_has_meta, limit=limit)
    rounds = took / CFG.probe_interval
    assert rounds <= limit / CFG.probe_interval
    # A later meta update wins over the earlier one everywhere.
    src.set_meta({"api_addr": "10.0.0.9:7650", "load": 0.9})
    net.run_until(
        lambda: all(net.view(a)[src.id].meta.get("load") == 0.9 for a in net.nodes),
        limit=limit,
    )
    assert net.state_everywhere(src.id) == {ALIVE}


def test_dissemination_within_a_few_rounds_without_loss():
    net = SimNet(10, seed=7)
    net.run_until(lambda: net.converged(10), limit=3.0)
    net.nodes[addr(3)].set_meta({"load": 1})
    took = net.run_until(
        lambda: all(net.view(a)["n3"].meta == {"load": 1} for a in net.nodes), limit=5.0
    )
    assert took / CFG.probe_interval <= 6  # a handful of probe rounds


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_crash_suspect_then_dead_then_forgotten(loss):
    net = SimNet(6, loss=loss, seed=11)
    net.run_until(lambda: net.converged(6), limit=5.0)
    net.down.add(addr(2))
    net.run_until(lambda: SUSPECT in net.state_everywhere("n2"), limit=5.0)
    net.run_until(lambda: net.state_everywhere("n2") == {DEAD}, limit=10.0)
    # the others stay alive throughout
    for i in (0, 1, 3, 4, 5):
        assert net.state_everywhere(f"n{i}") == {ALIVE}
    net.run_until(lambda: net.state_everywhere("n2") == {None}, limit=CFG.dead_retention + 2)


def test_suspicion_becomes_dead_after_timeout_exactly():
    a = node(0)
    b_alive = Update("n1", "store", addr(1), ALIVE, 0, {})
    a.receive(0.0, addr(1), Join("n1", 0, (b_alive,)))
    a.receive(1.0, addr(2), Broadcast("n2", 0, (Update("n1", "store", addr(1), SUSPECT, 0, {}),)))
    a.step(1.0 + CFG.suspicion_timeout - 0.01)
    assert {m.id: m.state for m in a.members()}["n1"] == SUSPECT
    a.step(1.0 + CFG.suspicion_timeout)
    assert {m.id: m.state for m in a.members()}["n1"] == DEAD
    assert [e.new for e in a.take_events()] == [ALIVE, SUSPECT, DEAD]


def test_graceful_leave_is_left_not_dead():
    net = SimNet(5, seed=5)
    net.run_until(lambda: net.converged(5), limit=3.0)
    leaver = net.nodes[addr(4)]
    net.send(addr(4), leaver.leave(net.now))
    assert leaver.left
    assert leaver.step(net.now + 1) == []
    net.run_until(lambda: net.state_everywhere("n4", skip=[addr(4)]) == {LEFT}, limit=2.0)
    net.run(CFG.suspicion_timeout + 1)
    assert net.state_everywhere("n4", skip=[addr(4)]) == {LEFT}
    net.run_until(
        lambda: net.state_everywhere("n4", skip=[addr(4)]) == {None}, limit=CFG.dead_retention + 2
    )


@pytest.mark.parametrize("new_port", [False, True])
def test_restart_with_same_id_rejoins_after_dead(new_port):
    net = SimNet(5, seed=9)
    net.run_until(lambda: net.converged(5), limit=3.0)
    old = net.nodes[addr(3)]
    old.set_meta({"gen": 1})
    net.run(2.0)
    net.down.add(addr(3))
    net.run_until(lambda: net.state_everywhere("n3") == {DEAD}, limit=10.0)
    dead_inc = net.view(addr(0))["n3"].incarnation
    # kill -9 and start again: same id, fresh state (incarnation 0), maybe a new port
    del net.nodes[addr(3)]
    net.down.discard(addr(3))
    new_addr = ("10.0.0.3", 7000) if new_port else addr(3)
    fresh = net.add(
        Swim("n3", "store", new_addr, meta={"gen": 2}, config=CFG, rng=random.Random(33))
    )
    net.send(new_addr, fresh.join(net.now, [addr(0)]))
    net.run_until(lambda: net.state_everywhere("n3") == {ALIVE}, limit=3.0)
    for a in net.nodes:
        m = net.view(a)["n3"]
        assert m.incarnation > dead_inc
        assert (m.addr, m.role, m.meta) == (new_addr, "store", {"gen": 2})
    assert net.converged(5)


@pytest.mark.parametrize("pause", [5.0, 20.0])
def test_sigstop_sigcont_comes_back(pause):
    """Paused past dead (5 s) or past retention (20 s, forgotten): it must come back."""
    net = SimNet(5, seed=13)
    net.run_until(lambda: net.converged(5), limit=3.0)
    net.down.add(addr(1))
    net.run(pause)
    assert net.state_everywhere("n1") <= {DEAD, None}
    net.down.discard(addr(1))  # SIGCONT: same instance, same state as before the pause
    net.run_until(lambda: net.converged(5), limit=CFG.sync_interval + 3)


def test_partition_heals():
    net = SimNet(6, seed=17)
    net.run_until(lambda: net.converged(6), limit=3.0)
    left, right = [addr(i) for i in range(3)], [addr(i) for i in range(3, 6)]
    net.partition(left, right)
    net.run_until(lambda: net.state_everywhere("n4", skip=right) == {DEAD}, limit=10.0)
    net.run_until(lambda: net.state_everywhere("n0", skip=left) == {DEAD}, limit=10.0)
    net.heal()
    net.run_until(lambda: net.converged(6), limit=2 * CFG.sync_interval + 2)


def test_lone_node_without_seeds_is_quiet():
    a = node(0)
    assert a.joined
    out = []
    for i in range(100):
        out += a.step(i * 0.1)
    assert out == []
    assert [m.id for m in a.members()] == ["n0"]


def test_piggyback_is_capped_and_retransmits_are_bounded():
    a = node(0, config=SwimConfig(max_piggyback=4))
    ups = tuple(Update(f"m{i}", "ingest", (f"10.1.0.{i}", 1), ALIVE, 0, {}) for i in range(20))
    a.receive(0.0, ("10.1.0.0", 1), Sync("m0", 0, ups))
    sizes = []
    for seq in range(200):
        sizes.append(len(a.receive(0.0, ("10.1.0.1", 1), Ping("m1", 0, seq, "n0"))[0][1].updates))
    assert max(sizes) == 4
    assert sizes[-1] == 0  # every rumour was sent its bounded number of times, then dropped


def test_sync_is_chunked():
    a = node(0, config=SwimConfig(sync_chunk=8))
    ups = tuple(Update(f"m{i}", "ingest", (f"10.1.0.{i}", 1), ALIVE, 0, {}) for i in range(20))
    a.receive(0.0, ("10.1.0.0", 1), Sync("m0", 0, ups))
    out = a.receive(
        0.0, ("10.2.0.0", 1), Join("x", 0, (Update("x", "store", ("10.2.0.0", 1), ALIVE, 0, {}),))
    )
    assert [type(m) for _, m in out] == [Sync, Sync, Sync]
    assert sum(len(m.updates) for _, m in out) == 22


def test_members_by_role_semantics():
    info = MemberInfo("a", "ingeststore", addr(0), ALIVE, 0, {}, 0.0)
    assert info.serves("ingest") and info.serves("store")
    assert MemberInfo("b", "store", addr(1), ALIVE, 0, {}, 0.0).serves("store")
    assert not MemberInfo("b", "store", addr(1), ALIVE, 0, {}, 0.0).serves("ingest")


def test_bad_config_rejected():
    with pytest.raises(ValueError):
        SwimConfig(probe_interval=0.5, ping_timeout=0.5)
    with pytest.raises(ValueError):
        Swim("x", "nope", addr(0))


def test_unused_message_types_are_harmless():
    a = node(0)
    msgs: list[Message] = [Ack("z", 0, 99), Broadcast("z", 0), Sync("z", 0)]
    for m in msgs:
        a.receive(0.0, addr(9), m)
    assert [m.id for m in a.members()] == ["n0"]
