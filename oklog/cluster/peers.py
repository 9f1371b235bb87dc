"""Other members as the consumer sees them: ingest sources and store targets
reached over their HTTP API (httpx on trio)."""

from __future__ import annotations

import httpx

CONSUMER_TIMEOUT = httpx.Timeout(30.0, connect=3.0)


class PeerError(Exception):
    pass


class RemoteIngest:
    def __init__(self, client: httpx.AsyncClient, api_addr: str, name: str) -> None:
        self.client = client
        self.base = f"http://{api_addr}"
        self.name = name

    async def next(self) -> str | None:
        r = await self.client.get(self.base + "/ingest/next", timeout=CONSUMER_TIMEOUT)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise PeerError(f"next: {r.status_code} {r.text.strip()}")
        return r.text.strip()

    async def read(self, seg_id: str) -> bytes:
        r = await self.client.get(self.base + "/ingest/read", params={"id": seg_id}, timeout=CONSUMER_TIMEOUT)
        if r.status_code != 200:
            raise PeerError(f"read {seg_id}: {r.status_code} {r.text.strip()}")
        return r.content

    async def commit(self, seg_id: str) -> None:
        await self._post("/ingest/commit", seg_id)

    async def failed(self, seg_id: str) -> None:
        await self._post("/ingest/failed", seg_id)

    async def _post(self, path: str, seg_id: str) -> None:
        r = await self.client.post(self.base + path, params={"id": seg_id}, timeout=CONSUMER_TIMEOUT)
        if r.status_code != 200:
            raise PeerError(f"{path} {seg_id}: {r.status_code} {r.text.strip()}")


class RemoteStore:
    def __init__(self, client: httpx.AsyncClient, api_addr: str, name: str) -> None:
        self.client = client
        self.base = f"http://{api_addr}"
        self.name = name

    async def replicate(self, data: bytes) -> None:
        r = await self.client.post(self.base + "/store/replicate", content=data, timeout=CONSUMER_TIMEOUT)
        if r.status_code != 200:
            raise PeerError(f"replicate: {r.status_code} {r.text.strip()}")
