"""TLS between members, with certificates derived from the cluster key.

Every holder of a cluster key derives the same certificate authority from it,
so members share a trust anchor without exchanging anything: the CA's Ed25519
key is HKDF(key, info ``oklog node tls ca v1``), its certificate has a fixed
subject (named by the key's fingerprint), serial and validity. A node issues
itself a fresh leaf certificate (new Ed25519 key, kept in memory only) signed
by the CA of the ring's first key, at start and whenever the ring changes.

Both ends of a node-to-node connection verify the other (mutual TLS 1.3): the
peer's certificate must chain to the CA of some key of this node's ring, so
during a rotation (ring "old, new" here, "new, old" there) both still connect,
and a process without a key of the ring cannot complete a handshake. Names are
not checked: every key holder can issue a certificate for any name, so what a
certificate proves is "holds the cluster key", which is what membership means
here (the per-request HMAC proof, oklog.net.auth, stays as well).

``RingContext`` is an ``ssl.SSLContext`` whose connections use the context of
the ring's current keys, so the listener and the peers' HTTP client (each built
once) follow key changes without a restart: a connection opened after a key is
removed no longer trusts that key's CA.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oklog.cluster.keyring import Keyring

CA_INFO = b"oklog node tls ca v1"
NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
ALPN = ["http/1.1"]  # the API speaks HTTP/1.1 (hypercorn's h11), as over the public port


class ClusterCA:
    """The certificate authority derived from one cluster key."""

    def __init__(self, key: bytes) -> None:
        seed = HKDF(hashes.SHA256(), 32, salt=None, info=CA_INFO).derive(key)
        self.key = Ed25519PrivateKey.from_private_bytes(seed)
        pub = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.fingerprint = hashlib.sha256(pub).hexdigest()[:16]
        self.name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "oklog cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"oklog cluster CA {self.fingerprint}"),
        ])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(int.from_bytes(hashlib.sha256(b"serial" + pub).digest()[:16], "big") >> 1 or 1)
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, None)  # Ed25519: deterministic, so every holder builds the same bytes
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str) -> tuple[bytes, bytes]:
        """A fresh leaf (certificate PEM, private key PEM) for ``name``, good for both ends."""
        leaf_key = Ed25519PrivateKey.generate()
        cn = "".join(c for c in name if c.isprintable())[:64] or "oklog node"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)  # fixed: members' clocks may differ
            .not_valid_after(NOT_AFTER)  # the key lives in memory only, replaced at every start
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, None)
        )
        key_pem = leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _load_leaf(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl loads a certificate chain from files only: a private file, gone at once.
    fd, path = tempfile.mkstemp(prefix="oklog-node-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem + cert_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


def contexts(keys: list[bytes], name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a ring: trust every key's CA, present a leaf of the first's."""
    cas = [ClusterCA(k) for k in keys]
    cert_pem, key_pem = cas[0].issue(name)
    trust = b"".join(ca.pem for ca in cas).decode()
    out = []
    for proto in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        ctx = ssl.SSLContext(proto)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # any key holder can name itself anything: the chain is the proof
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=trust)
        _load_leaf(ctx, cert_pem, key_pem)
        ctx.set_alpn_protocols(ALPN)
        out.append(ctx)
    return out[0], out[1]


class NodeTLS:
    """The ring's contexts, rebuilt when its keys change."""

    def __init__(self, ring: Keyring, name: str) -> None:
        self.ring = ring
        self.name = name
        self._for: list[bytes] | None = None
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self.rebuilt = 0

    def _current(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        if self.ring.keys is not self._for or self._server is None or self._client is None:
            keys = self.ring.keys
            self._server, self._client = contexts(keys, self.name)
            self._for = keys
            self.rebuilt += 1
        return self._server, self._client

    def server_context(self) -> ssl.SSLContext:
        return RingContext(lambda: self._current()[0], ssl.PROTOCOL_TLS_SERVER)

    def client_context(self) -> ssl.SSLContext:
        return RingContext(lambda: self._current()[1], ssl.PROTOCOL_TLS_CLIENT)


class RingContext(ssl.SSLContext):
    """An ``SSLContext`` whose every new connection uses ``current()``: trio's
    ``SSLStream`` (the listener, httpx's connections) wraps through ``wrap_bio``.
    Settings made on this object itself do not apply (``current()`` has its own)."""

    _current: Callable[[], ssl.SSLContext]

    def __new__(cls, current: Callable[[], ssl.SSLContext], protocol: int) -> RingContext:
        self = super().__new__(cls, protocol)
        self._current = current
        return self

    def __init__(self, current: Callable[[], ssl.SSLContext], protocol: int) -> None:
        pass

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self._current().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._current().wrap_socket(sock, *args, **kwargs)

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:  # httpcore sets ALPN per connection
        pass
