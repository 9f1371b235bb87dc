"""Trio driver of the gossip membership: one UDP socket around the pure ``Swim`` machine.

    datagrams ──recv loop──▶ decode ──▶ Swim.receive ──┐
                                                       ├──▶ send channel ──send loop──▶ datagrams
    timer loop (Swim.next_deadline) ──▶ Swim.step ─────┘

With a ``Keyring`` (the cluster key) every datagram is sealed with AES-GCM on
the way out and must open with a key of the ring on the way in; anything else
is counted (``unauthenticated``) and dropped before decoding, so a process
without the key can neither join nor be heard. The key file is re-read when it
changes (key rotation without restarts).

``Gossip.run`` binds (port 0 allowed), reports the advertised address through
``task_status.started`` and runs until cancelled or until ``leave()`` finishes.
Malformed datagrams are counted in ``stats`` and ignored; so are single bad
update rows inside an otherwise valid datagram (``bad_updates``). An unexpected
error while handling a datagram or a timer is logged, counted (``errors``) and
the loops carry on: nothing a peer sends ends the node. State changes are
logged at INFO on the ``oklog.cluster`` logger.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket as stdsocket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import trio

from oklog.cluster.codec import (
    MAX_DATAGRAM,
    CodecError,
    check_meta,
    decode_lenient,
    encode,
    valid_id,
)
from oklog.cluster.keyring import OVERHEAD, RELOAD_INTERVAL, KeyFileError, Keyring, SealError
from oklog.cluster.swim import (
    ALIVE,
    SUSPECT,
    Address,
    MemberInfo,
    Message,
    Outgoing,
    Swim,
    SwimConfig,
)
from oklog.node import state

log = logging.getLogger("oklog.cluster")

DEFAULT_GOSSIP_PORT = 7659
RECV_BUFFER = 65_536
SEND_QUEUE = 1024
RESOLVE_RETRY = 1.0


@dataclass
class GossipStats:
    datagrams_in: int = 0
    datagrams_out: int = 0
    malformed: int = 0
    send_errors: int = 0
    recv_errors: int = 0
    send_dropped: int = 0
    bad_updates: int = 0  # update rows refused at decode (types, ranges, meta)
    refused_updates: int = 0  # second-hand rumours above the incarnation cap
    refutations: int = 0
    errors: int = 0  # unexpected errors while handling a datagram or a timer
    unauthenticated: int = 0  # datagrams no key of the cluster key ring opens
    last_error: str = ""

    def report(self) -> state.GossipStats:
        """These figures as ``/cluster/state`` shows them (``pipeline.gossip``)."""
        return state.GossipStats(
            datagrams_in=self.datagrams_in,
            datagrams_out=self.datagrams_out,
            malformed=self.malformed,
            send_errors=self.send_errors,
            recv_errors=self.recv_errors,
            send_dropped=self.send_dropped,
            bad_updates=self.bad_updates,
            refused_updates=self.refused_updates,
            refutations=self.refutations,
            errors=self.errors,
            unauthenticated=self.unauthenticated,
            last_error=self.last_error,
        )


def parse_peer(text: str, default_port: int = DEFAULT_GOSSIP_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` → (host, port)."""
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif t.count(":") == 1:
        host, port = t.split(":")
    else:
        host, port = t, ""
    if not host:
        raise ValueError(f"bad peer address {text!r} (examples: 10.0.0.2, node2:7659)")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in peer address {text!r}") from None


def guess_host() -> str:
    """The local address other hosts most likely reach us on (no packet is sent)."""
    with stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects a route
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int) -> Address:
    if _is_ip(host):
        return (host, port)
    infos = await trio.socket.getaddrinfo(
        host, port, family=trio.socket.AF_INET, type=trio.socket.SOCK_DGRAM
    )
    return (str(infos[0][4][0]), port)


class Gossip:
    """Cluster membership of one node over UDP.

    ``seeds`` are ``"host[:port]"`` strings or (host, port) pairs; one reachable
    seed is enough to join. Timings are in seconds.
    """

    def __init__(
        self,
        node_id: str,
        role: str,
        *,
        bind: tuple[str, int] = ("0.0.0.0", DEFAULT_GOSSIP_PORT),
        advertise_host: str | None = None,
        seeds: Iterable[str | tuple[str, int]] = (),
        meta: Mapping[str, Any] | None = None,
        probe_interval: float = 0.5,
        ping_timeout: float | None = None,
        indirect_probes: int = 3,
        suspicion_timeout: float = 3.0,
        dead_retention: float = 60.0,
        sync_interval: float = 10.0,
        join_retry: float = 1.0,
        leave_timeout: float = 0.5,
        rng: random.Random | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        if not valid_id(node_id):
            raise ValueError(
                f"node id {node_id!r}: use 1-256 printable characters without spaces"
            )
        check_meta(meta or {})
        self.id = node_id
        self.role = role
        self.config = SwimConfig(
            probe_interval=probe_interval,
            ping_timeout=ping_timeout if ping_timeout is not None else 0.4 * probe_interval,
            indirect_probes=indirect_probes,
            suspicion_timeout=suspicion_timeout,
            dead_retention=dead_retention,
            sync_interval=sync_interval,
            join_retry=join_retry,
        )
        self.stats = GossipStats()
        self.address: Address | None = None
        self._bind = bind
        self._advertise_host = advertise_host
        self._seeds = [parse_peer(s) if isinstance(s, str) else (s[0], int(s[1])) for s in seeds]
        self._meta: dict[str, Any] = dict(meta or {})
        self._leave_timeout = leave_timeout
        self._rng = rng
        self.keyring = keyring
        self._limit = MAX_DATAGRAM - OVERHEAD if keyring is not None else MAX_DATAGRAM
        self._swim: Swim | None = None
        self._clock_offset = 0.0
        self._send_q, self._send_rx = trio.open_memory_channel[tuple[Address, bytes]](SEND_QUEUE)
        self._scope: trio.CancelScope | None = None

    # ----------------------------------------------------------------- queries

    def members(self) -> list[MemberInfo]:
        """This node's view, self included; ``since`` is wall-clock (``time.time()``)."""
        if self._swim is None:
            return []
        off = self._clock_offset
        return [
            replace(
                m,
                since=m.since + off,
                last_heard=None if m.last_heard is None else m.last_heard + off,
            )
            for m in self._swim.members()
        ]

    def members_by_role(self, role: str, *, include_suspect: bool = False) -> list[MemberInfo]:
        """Alive (optionally also suspect) members doing ``role`` work, self included."""
        states = (ALIVE, SUSPECT) if include_suspect else (ALIVE,)
        return [m for m in self.members() if m.state in states and m.serves(role)]

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        """Replace this node's advertised meta (API addresses, load figures).

        Meta the other members would refuse is not advertised (logged)."""
        try:
            check_meta(meta)
        except ValueError as e:
            log.warning("meta not advertised: %s", e)
            return
        self._meta = dict(meta)
        if self._swim is not None:
            self._swim.set_meta(meta)

    # ----------------------------------------------------------------- running

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, join the seeds, gossip until cancelled or until ``leave()`` is done."""
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind(self._bind)
            host, port = sock.getsockname()[:2]
            if self._advertise_host:
                # Peers take only IP addresses in gossip (see codec): resolve once here.
                host = (await _resolve(self._advertise_host, port))[0]
            elif host in ("0.0.0.0", ""):
                host = guess_host()
            self.address = (host, port)
            self._clock_offset = time.time() - trio.current_time()
            self._swim = Swim(
                self.id,
                self.role,
                self.address,
                meta=self._meta,
                config=self.config,
                rng=self._rng,
            )
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._send_loop, sock)
                nursery.start_soon(self._recv_loop, sock)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._join_seeds)
                if self.keyring is not None:
                    nursery.start_soon(self._reload_keys, self.keyring)
                log.info("gossip %s listening on %s:%d", self.id, host, port)
                task_status.started(self.address)

    async def leave(self) -> None:
        """Announce a graceful leave (twice, for lossy links), wait briefly, stop ``run``."""
        swim = self._swim
        if swim is None or self._scope is None:
            return
        for _ in range(2):
            self._emit(swim.leave(trio.current_time()))
            await trio.sleep(self._leave_timeout / 2)
        self._scope.cancel()

    # ----------------------------------------------------------------- loops

    def _emit(self, out: Outgoing) -> None:
        for addr, msg in out:
            self._send(addr, msg)
        if self._swim is not None:
            self.stats.refused_updates = self._swim.stats.refused_updates
            self.stats.refutations = self._swim.stats.refutations
            for ev in self._swim.take_events():
                log.info("member %s: %s → %s", ev.id, ev.old or "unknown", ev.new or "forgotten")

    def _send(self, addr: Address, msg: Message) -> None:
        try:
            data = encode(msg, self._limit)
            if self.keyring is not None:
                data = self.keyring.seal(data)
        except CodecError as e:
            log.warning("gossip message to %s not sent: %s", addr, e)
            return
        try:
            self._send_q.send_nowait((addr, data))
        except trio.WouldBlock:
            self.stats.send_dropped += 1

    async def _send_loop(self, sock: trio.socket.SocketType) -> None:
        async for addr, data in self._send_rx:
            try:
                await sock.sendto(data, addr)
                self.stats.datagrams_out += 1
            except OSError as e:
                self.stats.send_errors += 1
                log.debug("gossip send to %s failed: %s", addr, e)

    async def _recv_loop(self, sock: trio.socket.SocketType) -> None:
        assert self._swim is not None
        while True:
            try:
                data, src = await sock.recvfrom(RECV_BUFFER)
            except OSError as e:  # e.g. ICMP port unreachable reported on some platforms
                self.stats.recv_errors += 1
                log.debug("gossip receive error: %s", e)
                continue
            self.stats.datagrams_in += 1
            if self.keyring is not None:
                try:
                    data = self.keyring.open(data)
                except SealError as e:
                    self.stats.unauthenticated += 1
                    log.debug("gossip datagram from %s refused: %s", src, e)
                    continue
            try:
                msg, dropped = decode_lenient(data)
            except CodecError as e:
                self.stats.malformed += 1
                log.debug("malformed gossip datagram from %s: %s", src, e)
                continue
            if dropped:
                self.stats.bad_updates += len(dropped)
                log.debug("gossip from %s: %d update(s) dropped: %s", src, len(dropped), dropped[0])
            try:
                self._emit(self._swim.receive(trio.current_time(), (src[0], src[1]), msg))
            except Exception as e:  # noqa: BLE001 - nothing a peer sends may end the node's gossip
                self._failed(f"handling gossip from {src[0]}:{src[1]}", e)

    def _failed(self, what: str, e: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{what}: {type(e).__name__}: {e}"[:500]
        log.exception("%s failed; carrying on", what)

    async def _timer_loop(self) -> None:
        swim = self._swim
        assert swim is not None
        while True:
            now = trio.current_time()
            await trio.sleep_until(min(swim.next_deadline(), now + self.config.probe_interval))
            try:
                self._emit(swim.step(trio.current_time()))
            except Exception as e:  # noqa: BLE001 - a state-machine bug must not stop the timers
                self._failed("gossip timers", e)

    async def _reload_keys(self, ring: Keyring) -> None:
        reported = ""
        while True:
            await trio.sleep(RELOAD_INTERVAL)
            try:
                if ring.reload():
                    log.info("cluster key file %s reloaded: %d key(s)", ring.path, len(ring.keys))
                reported = ""
            except KeyFileError as e:
                if str(e) != reported:  # once per distinct problem, not every interval
                    reported = str(e)
                    log.error("%s; keeping the keys loaded before", e)

    async def _join_seeds(self) -> None:
        """Resolve seed names (retrying failures) and join each as it resolves."""
        swim = self._swim
        assert swim is not None
        pending = list(self._seeds)
        while pending:
            unresolved = []
            for host, port in pending:
                try:
                    addr = await _resolve(host, port)
                except OSError as e:
                    log.warning("cannot resolve gossip peer %s:%d: %s", host, port, e)
                    unresolved.append((host, port))
                    continue
                self._emit(swim.join(trio.current_time(), [addr]))
            pending = unresolved
            if pending:
                await trio.sleep(RESOLVE_RETRY)
