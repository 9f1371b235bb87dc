"""A store member that misbehaves, for tests: it gossips like a real member
(so the cluster asks it for query answers) but its API either never answers
(``hang``: accepts connections and reads nothing), answers every request
with a 500 whose text holds CR LF and other control bytes (``crlf``), or
begins a 200 answer with one record and then drops the connection (``cut``).

Run as ``python fakemember.py MODE SEED_HOST:PORT GOSSIP_PORT API_PORT [KEY_FILE]``;
with a cluster key file it seals its datagrams as a member does (a keyed cluster
drops plain ones) and serves its API as its node port, over the key's TLS, as
members call each other (oklog.cluster.nodetls). It prints ``ready`` once both sockets are bound and runs until killed.
"""

from __future__ import annotations

import sys

import trio

from oklog.cluster.keyring import Keyring
from oklog.cluster.nodetls import NodeTLS
from oklog.cluster.transport import Gossip
from oklog.records.record import encode_ulid, now_ms

EVIL = b"member broke\r\nX-Injected: yes\r\n\r\n\x00\x1b[31mred"


async def serve_api(mode: str, port: int, ring: Keyring | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    tls = NodeTLS(ring, "fake").server_context() if ring is not None else None
    task_status.started()

    async def handle(stream: trio.abc.Stream) -> None:
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                return
        if mode == "hang":
            await trio.sleep_forever()  # hold the connection, never read or answer
        data = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
        if mode == "cut":
            rec = encode_ulid(now_ms() - 1000, 0) + b" default cut short\n"
            out = (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Oklog-Segments-Queried: 1\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(rec), rec)
            )
        else:
            out = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(EVIL)
            out += EVIL
        try:
            await stream.send_all(out)
        except trio.BrokenResourceError:
            pass
        await stream.aclose()

    await trio.serve_listeners(handle, listeners)


async def main(mode: str, seed: str, gossip_port: int, api_port: int, key_file: str = "") -> None:
    ring = Keyring.load(key_file) if key_file else None
    gossip = Gossip(
        f"127.0.0.1:{gossip_port}",
        "store",
        bind=("127.0.0.1", gossip_port),
        advertise_host="127.0.0.1",
        seeds=[seed],
        meta={"api_addr": f"127.0.0.1:{api_port}", "store_bytes": 1 << 20, "store_segments": 1}
        | ({"node_addr": f"127.0.0.1:{api_port}"} if ring is not None else {}),
        keyring=ring,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_api, mode, api_port, ring)
        await nursery.start(gossip.run)
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
