"""Wire format of gossip messages: one JSON object per UDP datagram.

``encode`` keeps a datagram under ``limit`` bytes by dropping trailing updates
(piggy-backed gossip is best effort; anything dropped is sent again later or
arrives through the periodic full-state sync). ``decode`` validates every field
and raises ``CodecError`` for anything malformed, so the state machine only ever
sees well-typed messages.

    {"v": 1, "t": "ping", "s": sender, "i": incarnation, "q": seq, "g": target,
     "a": [host, port], "u": [[id, role, host, port, state, incarnation, meta], ...]}

``q`` is present for ping/ack/pingreq, ``g`` for ping/pingreq, ``a`` for pingreq.
"""

from __future__ import annotations

import json
from typing import Any

from oklog.cluster.swim import (
    ROLES,
    STATES,
    Ack,
    Address,
    Broadcast,
    Join,
    Message,
    Ping,
    PingReq,
    Sync,
    Update,
)

VERSION = 1
MAX_DATAGRAM = 60_000
MAX_ID = 256

_KIND = {
    Ping: "ping",
    Ack: "ack",
    PingReq: "pingreq",
    Join: "join",
    Sync: "sync",
    Broadcast: "bcast",
}


class CodecError(ValueError):
    """A datagram that is not a valid gossip message."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encode(msg: Message, limit: int = MAX_DATAGRAM) -> bytes:
    """Message → datagram of at most ``limit`` bytes (trailing updates dropped to fit)."""
    head: dict[str, Any] = {
        "v": VERSION,
        "t": _KIND[type(msg)],
        "s": msg.sender,
        "i": msg.incarnation,
    }
    if isinstance(msg, (Ping, Ack, PingReq)):
        head["q"] = msg.seq
    if isinstance(msg, (Ping, PingReq)):
        head["g"] = msg.target
    if isinstance(msg, PingReq):
        head["a"] = list(msg.target_addr)
    prefix = _dumps(head)[:-1] + ',"u":['
    budget = limit - len(prefix.encode()) - 2
    rows: list[bytes] = []
    used = 0
    for u in msg.updates:
        row = _dumps([u.id, u.role, u.addr[0], u.addr[1], u.state, u.incarnation, dict(u.meta)])
        b = row.encode()
        cost = len(b) + (1 if rows else 0)
        if used + cost > budget:
            break
        rows.append(b)
        used += cost
    data = prefix.encode() + b",".join(rows) + b"]}"
    if len(data) > limit:
        raise CodecError(f"message header alone exceeds {limit} bytes")
    return data


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_ID:
        raise CodecError(f"bad {what}")
    return v


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**63) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise CodecError(f"bad {what}")
    return v


def _addr(host: Any, port: Any) -> Address:
    return (_str(host, "host"), _int(port, "port", 0, 65535))


def _update(row: Any) -> Update:
    if not isinstance(row, list) or len(row) != 7:
        raise CodecError("bad update")
    uid, role, host, port, state, inc, meta = row
    if role not in ROLES:
        raise CodecError("bad role")
    if state not in STATES:
        raise CodecError("bad state")
    if not isinstance(meta, dict):
        raise CodecError("bad meta")
    return Update(_str(uid, "id"), role, _addr(host, port), state, _int(inc, "incarnation"), meta)


def decode(data: bytes) -> Message:
    """Datagram → message, or ``CodecError``."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CodecError(f"not JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise CodecError("not a gossip message of this version")
    kind = obj.get("t")
    sender = _str(obj.get("s"), "sender")
    inc = _int(obj.get("i"), "incarnation")
    rows = obj.get("u", [])
    if not isinstance(rows, list):
        raise CodecError("bad updates")
    updates = tuple(_update(r) for r in rows)
    if kind == "ping":
        return Ping(sender, inc, _int(obj.get("q"), "seq"), _str(obj.get("g"), "target"), updates)
    if kind == "ack":
        return Ack(sender, inc, _int(obj.get("q"), "seq"), updates)
    if kind == "pingreq":
        a = obj.get("a")
        if not isinstance(a, list) or len(a) != 2:
            raise CodecError("bad target address")
        return PingReq(
            sender,
            inc,
            _int(obj.get("q"), "seq"),
            _str(obj.get("g"), "target"),
            _addr(a[0], a[1]),
            updates,
        )
    if kind == "join":
        return Join(sender, inc, updates)
    if kind == "sync":
        return Sync(sender, inc, updates)
    if kind == "bcast":
        return Broadcast(sender, inc, updates)
    raise CodecError(f"unknown message type {kind!r}")
