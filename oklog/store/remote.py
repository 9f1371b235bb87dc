"""Another member's store as the consumer's replication target: the HTTP client of
``oklog.store.api``'s ``/store/replicate``, the remote half of
``oklog.store.api.LocalStore``."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from oklog.ingest.remote import CONSUMER_TIMEOUT, expect_ok


class RemoteStore:
    local = False

    def __init__(
        self, client: httpx.AsyncClient, api_addr: str, name: str, takes: Callable[[], bool] = lambda: False
    ) -> None:
        self.client = client
        self.base = f"http://{api_addr}"
        self.name = name
        # Asked at each batch: whether the member advertises (gossip meta
        # ``replicate_segfile``) that it takes segment files; members of
        # versions before that take plain records only.
        self._takes = takes

    def takes_encoded(self) -> bool:
        return self._takes()

    async def replicate(self, data: bytes, encoded: bytes | None = None) -> int:
        body = data if encoded is None else encoded
        r = await self.client.post(self.base + "/store/replicate", content=body, timeout=CONSUMER_TIMEOUT)
        expect_ok(r, "replicate")
        return len(body)
