"""The TCP ports' token-line check as the syslog-over-TLS listener meets it: a sender
whose first bytes cannot begin a token line (an octet-counted syslog frame, no LF) is
refused at once, not after the 10 s preamble wait; a token line split across reads
still gets in."""

from __future__ import annotations

import trio
import trio.testing

from oklog.net.auth import Auth, Tokens

TOKEN = "ingest-" + "i" * 20


def _auth(tmp_path) -> Auth:
    (tmp_path / "tokens").write_text(f"{TOKEN} ingest shipper\n")
    return Auth(None, Tokens(tmp_path / "tokens"))


async def _admit(auth: Auth, chunks: list[bytes]) -> tuple[bool, object, bytes]:
    """(admit returned while the sender stays open and silent, its result, what the sender got)."""
    client, server = trio.testing.memory_stream_pair()
    result: list[object] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await auth.admit(server))

        nursery.start_soon(run)
        for c in chunks:
            await client.send_all(c)
            await trio.testing.wait_all_tasks_blocked()
        done = bool(result)
        nursery.cancel_scope.cancel()
    got = b""
    if done and not result[0]:  # refused: the node answered and closed
        try:
            while chunk := await client.receive_some(4096):
                got += chunk
        except trio.BrokenResourceError:
            pass
    return done, result[0] if result else None, got


def test_syslog_frame_without_credentials_is_refused_at_once(tmp_path):
    auth = _auth(tmp_path)
    # The clock never moves: waiting for an LF or the timeout would leave admit blocked.
    done, res, got = trio.run(_admit, auth, [b"57 <13>1 2026-01-01T00:00:00Z host app - - - no credentials"],
                              clock=trio.testing.MockClock())
    assert done and res is None
    assert got.startswith(b"ERR 401")
    assert auth.stats.denied == {"missing": 1}


def test_token_line_split_across_reads_gets_in(tmp_path):
    auth = _auth(tmp_path)
    line = f"\x01oklog-token {TOKEN}\n".encode()
    done, res, _ = trio.run(_admit, auth, [line[:5], line[5:20], line[20:] + b"12 <13>1 - x y"],
                            clock=trio.testing.MockClock())
    assert done and res is not None
    assert auth.stats.denied == {} and auth.stats.allowed_token == 1
