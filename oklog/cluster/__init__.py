"""Cluster membership: SWIM gossip as a pure state machine (``swim``), its wire
format (``codec``) and its trio UDP driver (``transport.Gossip``)."""

from oklog.cluster.swim import ALIVE, DEAD, LEFT, SUSPECT, MemberInfo, State
from oklog.cluster.transport import Gossip, GossipStats, parse_peer

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "SUSPECT",
    "Gossip",
    "GossipStats",
    "MemberInfo",
    "State",
    "parse_peer",
]
