"""Wire format of gossip messages: one JSON object per UDP datagram.

``encode`` keeps a datagram under ``limit`` bytes by dropping trailing updates
(piggy-backed gossip is best effort; anything dropped is sent again later or
arrives through the periodic full-state sync). ``decode`` validates every field
and raises ``CodecError`` for anything malformed, so the state machine only ever
sees well-typed messages.

    {"v": 1, "t": "ping", "s": sender, "i": incarnation, "q": seq, "g": target,
     "a": [host, port], "u": [[id, role, host, port, state, incarnation, meta], ...]}

``q`` is present for ping/ack/pingreq, ``g`` for ping/pingreq, ``a`` for pingreq.

What "valid" means (a peer's data reaches the node's components only through
here, so every rule is one a component relies on):

- ids (sender, target, member): 1-256 printable characters, no whitespace (they
  end up in logs, HTTP headers and the TUI);
- gossip addresses (members', ping-req targets): an IP address and a port
  1-65535. No DNS names: a node sends to these addresses as it hears them, and
  a name would make every send wait for a resolver the sender chose;
- addresses in meta (``api_addr`` ...): ``host:port`` where host is an IP (v6 in
  brackets) or a DNS name (letters, digits, ``-``, ``_``, dots);
- incarnations and sequence numbers: integers in 0..``MAX_INCARNATION``
  (2^53, exact in every JSON reader). ``swim`` accepts second-hand rumours only
  up to ``swim.HEARSAY_MAX``, well below, so a member can always refute;
- meta: at most ``MAX_META_KEYS`` keys of 1-64 characters from ``[A-Za-z0-9_.-]``;
  the keys in ``META_SCHEMA`` have their own type (``api_addr`` is ``null`` or a
  ``"host:port"`` string, ``started`` a finite Unix time, counters non-negative
  integers); any other key holds a scalar (``null``, bool, integer, finite
  number, string of at most 256 characters). No lists, no objects, no NaN or
  Infinity anywhere in the datagram. The meta key ``_mv`` carries the member's
  metadata version (``Update.meta_version``), so older nodes pass it through as
  plain meta. Likewise ``_by`` in a *suspect* row names the member that
  suspected first-hand (``Update.by``), so receivers count independent
  confirmations (Lifeguard); older nodes keep it as plain meta.
- ``store_lo_ms`` (a store member's oldest record, which queries use to skip
  it): an integer in 0..2^48-1, the milliseconds a ULID can carry;

``decode`` refuses a whole datagram if any part is bad; ``decode_lenient`` (what
the transport uses) refuses only the envelope and drops bad update rows one by
one, returning why, so one bad rumour does not hide the good ones beside it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable
from typing import Any

from oklog.cluster.swim import (
    MAX_INCARNATION,
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
MAX_UPDATES = 256
MAX_META_KEYS = 32
MAX_META_STR = 256
MAX_INT = 2**63 - 1
META_VERSION_KEY = "_mv"
SUSPECTED_BY_KEY = "_by"

_KIND = {
    Ping: "ping",
    Ack: "ack",
    PingReq: "pingreq",
    Join: "join",
    Sync: "sync",
    Broadcast: "bcast",
}

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?\Z"
)
_META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


class CodecError(ValueError):
    """A datagram that is not a valid gossip message."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _wire_meta(u: Update) -> dict[str, Any]:
    meta = dict(u.meta)
    if u.meta_version:
        meta[META_VERSION_KEY] = u.meta_version
    if u.by and u.state == "suspect":
        meta[SUSPECTED_BY_KEY] = u.by
    return meta


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
    for u in msg.updates[:MAX_UPDATES]:
        try:
            row = _dumps([u.id, u.role, u.addr[0], u.addr[1], u.state, u.incarnation, _wire_meta(u)])
        except ValueError as e:  # NaN in our own meta: leave the row out, never send it
            raise CodecError(f"update for {u.id!r} not encodable: {e}") from None
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


# --------------------------------------------------------------------------- field checks


def _id(v: Any, what: str) -> str:
    if (
        not isinstance(v, str)
        or not v
        or len(v) > MAX_ID
        or not v.isprintable()
        or any(c.isspace() for c in v)
    ):
        raise CodecError(f"bad {what}")
    return v


def valid_id(v: Any) -> bool:
    """Is ``v`` acceptable as a member id on the wire?"""
    try:
        _id(v, "id")
    except CodecError:
        return False
    return True


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_INCARNATION) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise CodecError(f"bad {what}")
    return v


def _host(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > 253:
        raise CodecError("bad host")
    if _HOSTNAME.match(v):
        return v
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise CodecError("bad host") from None
    return v


def _ip(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > 45:
        raise CodecError("bad host")
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise CodecError("bad host (gossip addresses are IP addresses)") from None
    return v


def _addr(host: Any, port: Any) -> Address:
    return (_ip(host), _int(port, "port", 1, 65535))


def _hostport(v: Any) -> str | None:
    """``null`` or ``"host:port"`` / ``"[v6]:port"``."""
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 262:
        raise CodecError("bad address")
    if v.startswith("["):
        host, sep, port = v[1:].partition("]:")
        if not sep:
            raise CodecError("bad address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CodecError("bad address") from None
    else:
        host, sep, port = v.partition(":")
        if not sep:
            raise CodecError("bad address")
        _host(host)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CodecError("bad address")
    return v


def _count(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INT:
        raise CodecError("bad counter")
    return v


def _unix_time(v: Any) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not 0 <= v < 1e11:
        raise CodecError("bad time")
    t: float = v  # int or float, checked above
    return t


MAX_ULID_MS = 2**48 - 1  # the largest time a ULID can carry


def _epoch_ms(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= MAX_ULID_MS:
        raise CodecError("bad time (ms)")
    return v


def _scalar(v: Any) -> Any:
    if v is None or type(v) is bool:
        return v
    if type(v) is int:
        if not -MAX_INT - 1 <= v <= MAX_INT:
            raise CodecError("meta integer out of range")
        return v
    if type(v) is float:
        if not math.isfinite(v):
            raise CodecError("meta number not finite")
        return v
    if type(v) is str:
        if len(v) > MAX_META_STR or not v.isprintable():
            raise CodecError("bad meta string")
        return v
    raise CodecError("meta value not a scalar")


# Meta keys the node reads, with the type each must have. Keys not named here
# pass if they hold a scalar; give a key a checker here as soon as code reads it.
META_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "api_addr": _hostport,
    "node_addr": _hostport,
    "fast_addr": _hostport,
    "durable_addr": _hostport,
    "bulk_addr": _hostport,
    "syslog_addr": _hostport,
    "started": _unix_time,
    "connections": _count,
    "records_in": _count,
    "store_bytes": _count,
    "store_segments": _count,
    "store_lo_ms": _epoch_ms,
    "replicate_segfile": _count,
}


def _meta(v: Any) -> tuple[dict[str, Any], int, str]:
    if not isinstance(v, dict) or len(v) > MAX_META_KEYS + 2:
        raise CodecError("bad meta")
    out: dict[str, Any] = {}
    version = 0
    by = ""
    for k, x in v.items():
        if k == META_VERSION_KEY:
            version = _int(x, "meta version")
            continue
        if k == SUSPECTED_BY_KEY:
            by = _id(x, "suspected by")
            continue
        if not _META_KEY.match(k):
            raise CodecError("bad meta key")
        check = META_SCHEMA.get(k, _scalar)
        try:
            out[k] = check(x)
        except CodecError as e:
            raise CodecError(f"meta {k}: {e}") from None
    if len(out) > MAX_META_KEYS:
        raise CodecError("too many meta keys")
    return out, version, by


def check_meta(meta: Any) -> None:
    """Raise ``ValueError`` saying why other members would refuse this meta."""
    try:
        _meta(dict(meta))
    except CodecError as e:
        raise ValueError(f"gossip meta refused by the codec: {e}") from None


def _update(row: Any) -> Update:
    if not isinstance(row, list) or len(row) != 7:
        raise CodecError("bad update")
    uid, role, host, port, state, inc, meta = row
    if role not in ROLES:
        raise CodecError("bad role")
    if state not in STATES:
        raise CodecError("bad state")
    m, mv, by = _meta(meta)
    return Update(
        _id(uid, "id"), role, _addr(host, port), state, _int(inc, "incarnation"), m, mv,
        by if state == "suspect" else "",
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_DATAGRAM + 5_536:
        raise CodecError("datagram too large")
    try:
        obj = json.loads(data, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CodecError(f"not JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION or type(obj.get("v")) is not int:
        raise CodecError("not a gossip message of this version")
    return obj


def decode_lenient(data: bytes) -> tuple[Message, list[str]]:
    """Datagram → (message, reasons for the update rows dropped), or ``CodecError``
    if the envelope itself is bad."""
    obj = _parse(data)
    rows = obj.get("u", [])
    if not isinstance(rows, list) or len(rows) > MAX_UPDATES:
        raise CodecError("bad updates")
    updates: list[Update] = []
    dropped: list[str] = []
    for r in rows:
        try:
            updates.append(_update(r))
        except CodecError as e:
            dropped.append(str(e))
    return _message(obj, tuple(updates)), dropped


def decode(data: bytes) -> Message:
    """Datagram → message, or ``CodecError`` if anything in it is bad."""
    msg, dropped = decode_lenient(data)
    if dropped:
        raise CodecError(dropped[0])
    return msg


def _message(obj: dict[str, Any], updates: tuple[Update, ...]) -> Message:
    kind = obj.get("t")
    sender = _id(obj.get("s"), "sender")
    inc = _int(obj.get("i"), "incarnation")
    if kind == "ping":
        return Ping(sender, inc, _int(obj.get("q"), "seq"), _id(obj.get("g"), "target"), updates)
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
            _id(obj.get("g"), "target"),
            _addr(a[0], a[1]),
            updates,
        )
    if kind == "join":
        return Join(sender, inc, updates)
    if kind == "sync":
        return Sync(sender, inc, updates)
    if kind == "bcast":
        return Broadcast(sender, inc, updates)
    raise CodecError("unknown message type")
