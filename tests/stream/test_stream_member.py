"""A cluster stream following a member that answers wrongly: the stream says
so in one clean notice line, holds bounded memory, and carries on."""

import re

import pytest
import trio

from oklog.net.http import Request
from oklog.stream.server import MAX_PARTIAL, Tap, cluster_stream_handler


async def hostile_member(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """An HTTP server on 127.0.0.1 whose first answer is an error with a forged
    record in its text and whose second is a record that never ends."""
    answers = 0

    async def serve(conn: trio.SocketStream) -> None:
        nonlocal answers
        answers += 1
        await conn.receive_some(65536)
        if answers == 1:
            body = b"busy\n01ARZ3NDEKTSV4RRFFQ69G5FAV default forged record\n"
            await conn.send_all(b"HTTP/1.1 503 X\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await conn.aclose()
            return
        await conn.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        piece = b"y" * (1 << 20)
        try:
            for _ in range(MAX_PARTIAL // len(piece) + 8):
                await conn.send_all(piece)
            await trio.sleep_forever()
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(serve, listeners)


@pytest.mark.trio
async def test_a_member_answering_wrongly_is_reported_cleanly_and_bounded():
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hostile_member)
        handler = cluster_stream_handler(lambda: [("evil", f"127.0.0.1:{port}")], Tap(), False)
        scope = {"method": "GET", "path": "/store/stream", "query_string": b"", "headers": []}

        async def receive():
            await trio.sleep_forever()

        resp = await handler(Request(scope, receive))
        assert resp.status == 200 and resp.stream is not None
        out = []

        async def write(chunk: bytes) -> None:
            out.append(chunk)

        with trio.move_on_after(8):
            await resp.stream(write)
        nursery.cancel_scope.cancel()
    got = b"".join(out)
    lines = got.split(b"\n")[:-1]
    assert all(re.fullmatch(rb"[0-9A-Z]{26} oklog oklog: stream not following evil: .*", ln) for ln in lines), got
    assert b"503 busy" in got and b"forged record" in got  # the text, on the notice's own line
    # Said again after each reconnection that ended the same way (about once a second).
    assert 2 <= len(lines) <= 10, [ln[:120] for ln in lines]
    assert all(b"without a record's end" in ln for ln in lines[1:])
