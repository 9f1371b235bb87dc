"""One member as ``/cluster/state`` shows it (the members table). Pure.

Fields of each row (times are Unix seconds):

- ``id``, ``role``, ``gossip_addr`` (``host:port``), ``api_addr`` (or ``null``),
  ``state`` (alive, suspect, dead, left), ``self``;
- ``incarnation``: changes only when the member refutes a rumour about itself,
  leaves or restarts; ``meta_version``: raised by the member on every metadata
  change (addresses, load figures);
- ``last_heard``: when this node last got a message from that member (``null``:
  only heard of through others); the local node's row says now;
- ``state_since``: when this node saw the member's state last change;
- ``uptime_seconds``: since the member started; for a dead or left member it
  stops at the last time it was heard from (``null`` if its start is unknown);
- ``meta``: what the member advertises.
"""

from __future__ import annotations

import math
from typing import Any, cast

from oklog.cluster.swim import DEAD, LEFT, MemberInfo
from oklog.node.state import MemberMeta, MemberRow


def _started(meta: Any) -> float | None:
    v = meta.get("started") if isinstance(meta, dict) else None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def member_row(m: MemberInfo, now: float) -> MemberRow:
    meta = cast(MemberMeta, dict(m.meta))  # checked by the codec when it arrived
    started = _started(meta)
    uptime: float | None = None
    if started is not None:
        end = now
        if m.state in (DEAD, LEFT):
            end = m.last_heard if m.last_heard is not None else m.since
        uptime = round(max(0.0, end - started), 3)
    api: object = meta.get("api_addr")
    return {
        "id": m.id,
        "role": m.role,
        "gossip_addr": f"{m.addr[0]}:{m.addr[1]}",
        "api_addr": api if isinstance(api, str) else None,
        "state": m.state,
        "incarnation": m.incarnation,
        "meta_version": m.meta_version,
        "last_heard": now if m.is_self else m.last_heard,
        "state_since": m.since,
        "self": m.is_self,
        "uptime_seconds": uptime,
        "meta": meta,
    }
