"""TLS: a node's server contexts (API and TCP ingest) and clients' contexts.

``-tls.cert FILE -tls.key FILE`` turn TLS on for the API and the fast, durable
and bulk ingest ports (plain connections to them fail the handshake);
``-tls.client-ca FILE`` additionally asks clients for a certificate signed by
that CA (on the ingest ports a verified certificate stands in for a token).
Clients, and a node calling its peers, verify with ``-tls.ca FILE`` (or the
system's CAs when not given).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI's clients import this module: trio costs them ~0.1 s of start-up
    import trio
    from hypercorn.config import Config

HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class TLSConfig:
    cert: str = ""
    key: str = ""
    client_ca: str = ""
    ca: str = ""  # what this node trusts when it calls its peers

    @property
    def on(self) -> bool:
        return bool(self.cert)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def configure_hypercorn(self, config: Config) -> None:
        config.certfile = self.cert
        config.keyfile = self.key
        if self.client_ca:
            config.ca_certs = self.client_ca
            config.verify_mode = ssl.CERT_OPTIONAL
        # hypercorn speaks HTTP/1.1 only here: h2 is not negotiated, so httpx,
        # curl and the CLI see the same protocol over TLS as without.
        config.alpn_protocols = ["http/1.1"]


def check_files(cfg: TLSConfig) -> None:
    """Refuse at start (ValueError) when the files cannot make a context."""
    if bool(cfg.cert) != bool(cfg.key):
        raise ValueError("-tls.cert and -tls.key go together")
    if cfg.client_ca and not cfg.cert:
        raise ValueError("-tls.client-ca needs -tls.cert and -tls.key")
    try:
        if cfg.on:
            cfg.server_context()
        if cfg.ca:
            client_context(cfg.ca)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"TLS files: {e}") from None


def client_context(ca: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def accept(stream: trio.abc.Stream, ctx: ssl.SSLContext) -> tuple[trio.SSLStream[trio.abc.Stream], bool] | None:
    """The server side of a handshake: (TLS stream, client certificate verified) or None."""
    import trio

    tls = trio.SSLStream(stream, ctx, server_side=True)
    with trio.move_on_after(HANDSHAKE_TIMEOUT):
        try:
            await tls.do_handshake()
            return tls, tls.getpeercert() is not None and bool(tls.getpeercert())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await close_quietly(stream)
    return None


async def close_quietly(stream: trio.abc.Stream) -> None:
    """Close a connection whose peer may already have gone."""
    import trio

    try:
        await stream.aclose()
    except (trio.BrokenResourceError, OSError):
        pass
