"""Throwaway TLS files for ``bench --tls`` and the TLS tests: a CA, a server
certificate for 127.0.0.1 and, when asked for, a client certificate. The one
place these are built (tests import it; the bench does not import tests)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TLSFiles:
    ca: str
    cert: str
    key: str
    client: str = ""  # with make(client=True): CN and DNS SAN shipper.example
    client_key: str = ""

    def node_args(self) -> tuple[str, ...]:
        return ("-tls.cert", self.cert, "-tls.key", self.key, "-tls.ca", self.ca)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


def _write(path: str, data: bytes, private: bool = False) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644), "wb") as f:
        f.write(data)


def make(directory: str, label: str = "oklog bench", client: bool = False) -> TLSFiles:
    """``ca.pem``, ``node.pem``/``node.key`` (and ``client.pem``/``client.key``) in
    ``directory``, valid from an hour ago for two days; ``label`` names the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{label} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(name: str, cn: str, usage: Any, san: Any) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
        _write(paths[0], cert.public_bytes(serialization.Encoding.PEM))
        _write(paths[1], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), private=True)
        return paths

    ca_path = os.path.join(directory, "ca.pem")
    _write(ca_path, ca.public_bytes(serialization.Encoding.PEM))
    cert, key = leaf("node", "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    if not client:
        return TLSFiles(ca_path, cert, key)
    ccert, ckey = leaf("client", "shipper.example", ExtendedKeyUsageOID.CLIENT_AUTH, x509.DNSName("shipper.example"))
    return TLSFiles(ca_path, cert, key, ccert, ckey)
