"""The router: path patterns, requests counted by route and status, and a
client closing mid-body while the node answers early."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest
import trio
import trio.testing

from oklog.net.http import UNKNOWN_ROUTE, HTTPError, Request, Response, Router, serve_http

TIMEOUT = 20


def make_router(counts: dict) -> Router:
    async def ok(req: Request) -> Response:
        return Response(200, b"ok\n")

    async def teapot(req: Request) -> Response:
        raise HTTPError(418, "short and stout")

    r = Router()
    r.add("GET|POST", "/ok", ok)
    r.add("GET", "/tea", teapot)
    r.add_pattern("POST", r"/[^/]+/_bulk", ok)
    r.on_response = lambda route, status: counts.__setitem__((route, status), counts.get((route, status), 0) + 1)
    return r


@pytest.mark.trio
async def test_routes_and_counts(nursery):
    counts: dict = {}
    _, port = await nursery.start(serve_http, make_router(counts), "127.0.0.1", 0)
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert (await c.get("/ok")).status_code == 200
            assert (await c.post("/idx-1/_bulk")).status_code == 200
            assert (await c.post("/a/b/_bulk")).status_code == 404  # the pattern must match whole
            assert (await c.get("/idx/_bulk")).status_code == 405
            assert (await c.get("/tea")).status_code == 418
            for path in ("/nope", "/nope/2", "/x" * 50):
                assert (await c.get(path)).status_code == 404
        await trio.testing.wait_all_tasks_blocked()  # counted once the answer is out
    assert counts == {
        ("/ok", 200): 1,
        (r"/[^/]+/_bulk", 200): 1,
        (r"/[^/]+/_bulk", 405): 1,
        ("/tea", 418): 1,
        (UNKNOWN_ROUTE, 404): 4,  # unknown paths are counted, under one label
    }


def abandon(port: int) -> None:
    """POST a big body to an unknown path, stop mid-body and close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        try:
            for _ in range(16):
                s.sendall(b"x" * 65536)
        except OSError:
            pass


@pytest.mark.trio
async def test_client_closing_mid_body_after_early_404_is_quiet(nursery, caplog):
    counts: dict = {}
    _, port = await nursery.start(serve_http, make_router(counts), "127.0.0.1", 0)
    caplog.set_level(logging.ERROR)
    with trio.fail_after(60):
        for _ in range(50):
            await trio.to_thread.run_sync(abandon, port)
        await trio.sleep(0.5)  # the server tasks of the last connections finish
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert (await c.get("/ok")).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors[0].getMessage() + str(errors[0].exc_info)
    assert counts[(UNKNOWN_ROUTE, 404)] == 50
