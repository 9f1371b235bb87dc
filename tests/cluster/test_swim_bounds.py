"""The state machine under forged rumours, and what the members table reads from it:
incarnation bounds that leave room to refute, meta versions, last heard."""

from __future__ import annotations

import pytest
from test_swim import SimNet, addr

from oklog.cluster.swim import (
    ALIVE,
    DEAD,
    HEARSAY_MAX,
    LEFT,
    MAX_INCARNATION,
    SUSPECT,
    Broadcast,
    Join,
    Update,
)

EVIL = ("10.0.0.66", 7659)


def forge(net: SimNet, at: int, u: Update, sender: str = "evil") -> None:
    """Deliver one forged datagram to node ``at`` from an address no member uses."""
    sw = net.nodes[addr(at)]
    net.send(addr(at), sw.receive(net.now, EVIL, Broadcast(sender, 0, (u,))))


def real(net: SimNet, at: int, mid: str):
    return net.view(addr(at))[mid]


@pytest.mark.parametrize("inc", [5, HEARSAY_MAX])
@pytest.mark.parametrize(
    "state, where",
    [(LEFT, addr(1)), (DEAD, addr(1)), (SUSPECT, addr(1)), (ALIVE, ("10.0.0.99", 1))],
)
def test_forged_rumour_up_to_the_cap_is_refuted(inc, state, where):
    net = SimNet(4, seed=3)
    net.run_until(lambda: net.converged(4), limit=3.0)
    forged = Update("n1", "ingeststore", where, state, inc, {"api_addr": "10.0.0.99:1"})
    forge(net, 0, forged)
    assert real(net, 0, "n1").incarnation == inc  # accepted: it is within the cap
    # n1 hears of it through gossip and refutes; every view comes back to the truth.
    net.run_until(
        lambda: all(
            (m := real(net, i, "n1")).state == ALIVE
            and m.addr == addr(1)
            and m.meta == {}
            and m.incarnation > inc
            for i in (0, 2, 3)
        ),
        limit=10.0,
    )
    assert net.nodes[addr(1)].stats.refutations >= 1


@pytest.mark.parametrize("inc", [HEARSAY_MAX + 1, MAX_INCARNATION])
def test_second_hand_rumour_above_the_cap_is_refused(inc):
    net = SimNet(3, seed=4)
    net.run_until(lambda: net.converged(3), limit=3.0)
    before = real(net, 0, "n1")
    forge(net, 0, Update("n1", "ingeststore", addr(1), LEFT, inc, {}))
    after = real(net, 0, "n1")
    assert (after.state, after.incarnation) == (before.state, before.incarnation)
    assert net.nodes[addr(0)].stats.refused_updates == 1
    # Even claiming to be n1 does not help when the datagram is not from n1's address.
    forge(net, 0, Update("n1", "ingeststore", addr(1), LEFT, inc, {}), sender="n1")
    assert real(net, 0, "n1").state == ALIVE
    net.run(3.0)
    assert net.state_everywhere("n1") == {ALIVE}


def test_first_hand_claim_above_the_cap_is_accepted():
    net = SimNet(2, seed=5)
    net.run_until(lambda: net.converged(2), limit=3.0)
    n0 = net.nodes[addr(0)]
    u = Update("n1", "ingeststore", addr(1), ALIVE, HEARSAY_MAX + 1, {})
    n0.receive(net.now, addr(1), Join("n1", HEARSAY_MAX + 1, (u,)))
    assert real(net, 0, "n1").incarnation == HEARSAY_MAX + 1


def test_rumour_at_the_wire_maximum_about_self_is_counted_not_refuted():
    net = SimNet(2, seed=6)
    net.run_until(lambda: net.converged(2), limit=3.0)
    n1 = net.nodes[addr(1)]
    n1.receive(net.now, EVIL, Broadcast("evil", 0, (Update("n1", "ingeststore", addr(1), LEFT, MAX_INCARNATION, {}),)))
    assert n1.stats.unrefutable == 1 and n1.incarnation < MAX_INCARNATION


def test_meta_updates_do_not_bump_the_incarnation():
    net = SimNet(3, seed=7)
    net.run_until(lambda: net.converged(3), limit=3.0)
    src = net.nodes[addr(2)]
    for i in range(50):
        src.set_meta({"records_in": i})
        net.run(0.2)
    net.run(2.0)
    for a in (0, 1):
        m = real(net, a, "n2")
        assert (m.incarnation, m.meta, m.meta_version) == (0, {"records_in": 49}, 50)
    assert src.incarnation == 0 and src.stats.refutations == 0


def test_stale_meta_is_ignored_and_forged_meta_refuted():
    net = SimNet(2, seed=8)
    net.run_until(lambda: net.converged(2), limit=3.0)
    n1 = net.nodes[addr(1)]
    n1.set_meta({"api_addr": "10.0.0.1:7650"})
    n1.set_meta({"api_addr": "10.0.0.1:7650", "records_in": 5})
    net.run(1.0)
    stale = Update("n1", "ingeststore", addr(1), ALIVE, 0, {"api_addr": "10.0.0.1:7650"}, 1)
    forge(net, 0, stale)
    assert real(net, 0, "n1").meta_version == 2  # the older version does not replace
    assert n1.incarnation == 0
    forged = Update("n1", "ingeststore", addr(1), ALIVE, 0, {"api_addr": "10.0.0.99:1"}, 999)
    forge(net, 0, forged)
    assert real(net, 0, "n1").meta["api_addr"] == "10.0.0.99:1"
    net.run_until(lambda: real(net, 0, "n1").meta.get("api_addr") == "10.0.0.1:7650", limit=5.0)
    assert n1.incarnation == 1


def test_last_heard_is_the_last_message_not_the_last_state_change():
    net = SimNet(3, seed=9)
    net.run_until(lambda: net.converged(3), limit=3.0)
    joined = real(net, 0, "n2").since
    net.run(5.0)
    m = real(net, 0, "n2")
    assert m.since == joined  # no state change
    assert m.last_heard is not None and net.now - m.last_heard <= 2.0  # probes flow both ways
    me = real(net, 0, "n0")
    assert me.is_self and me.last_heard == net.now
    net.down.add(addr(2))
    net.run_until(lambda: real(net, 0, "n2").state == DEAD, limit=10.0)
    gone = real(net, 0, "n2").last_heard
    net.run(3.0)
    assert real(net, 0, "n2").last_heard == gone  # stops when the member stops talking
    assert gone is not None and gone < real(net, 0, "n2").since
