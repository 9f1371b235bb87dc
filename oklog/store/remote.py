"""Another member's store as the consumer's replication target: the HTTP client of
``oklog.store.api``'s ``/store/replicate``, the remote half of
``oklog.store.api.LocalStore``."""

from __future__ import annotations

import httpx

from oklog.ingest.remote import CONSUMER_TIMEOUT, expect_ok


class RemoteStore:
    def __init__(self, client: httpx.AsyncClient, api_addr: str, name: str) -> None:
        self.client = client
        self.base = f"http://{api_addr}"
        self.name = name

    async def replicate(self, data: bytes) -> None:
        r = await self.client.post(self.base + "/store/replicate", content=data, timeout=CONSUMER_TIMEOUT)
        expect_ok(r, "replicate")
