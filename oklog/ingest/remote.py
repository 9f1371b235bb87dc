"""Another member's ingest log as the store's consumer sees it: the HTTP client of
``oklog.ingest.api``'s ``/ingest/next|read|pending|commit|failed`` (httpx on trio), the
remote half of ``oklog.ingest.api.LocalIngest``."""

from __future__ import annotations

import httpx

CONSUMER_TIMEOUT = httpx.Timeout(30.0, connect=3.0)


class PeerError(Exception):
    """A member's API answered a consumer's call with an error."""


def expect_ok(r: httpx.Response, what: str) -> None:
    """Raise ``PeerError`` saying ``what`` failed unless ``r`` is a 200."""
    if r.status_code != 200:
        raise PeerError(f"{what}: {r.status_code} {r.text.strip()}")


class RemoteIngest:
    def __init__(self, client: httpx.AsyncClient, api_addr: str, name: str) -> None:
        self.client = client
        self.base = f"http://{api_addr}"
        self.name = name

    async def next(self) -> str | None:
        r = await self.client.get(self.base + "/ingest/next", timeout=CONSUMER_TIMEOUT)
        if r.status_code == 404:
            return None
        expect_ok(r, "next")
        return r.text.strip()

    async def read(self, seg_id: str) -> bytes:
        r = await self.client.get(self.base + "/ingest/read", params={"id": seg_id}, timeout=CONSUMER_TIMEOUT)
        expect_ok(r, f"read {seg_id}")
        return r.content

    async def pending(self, seg_id: str) -> bool:
        r = await self.client.get(self.base + "/ingest/pending", params={"id": seg_id}, timeout=CONSUMER_TIMEOUT)
        if r.status_code == 404:
            return False
        expect_ok(r, f"pending {seg_id}")
        return True

    async def commit(self, seg_id: str) -> None:
        await self._post("/ingest/commit", seg_id)

    async def failed(self, seg_id: str) -> None:
        await self._post("/ingest/failed", seg_id)

    async def _post(self, path: str, seg_id: str) -> None:
        r = await self.client.post(self.base + path, params={"id": seg_id}, timeout=CONSUMER_TIMEOUT)
        expect_ok(r, f"{path} {seg_id}")
