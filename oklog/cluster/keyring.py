"""The cluster key: a keyring file, and gossip datagrams sealed with AES-GCM.

Key file (``oklog keygen`` writes one, mode 0600): one key per line, base64 of
16, 24 or 32 random bytes (AES-128/192/256); blank lines and ``#`` comments are
ignored. The first key seals (encrypts and authenticates) every datagram; every
key opens, so a key rotates without downtime:

1. add the new key as a second line on every node (nodes pick changed key files
   up within ``RELOAD_INTERVAL``, no restart);
2. move it to the first line everywhere (each node now sends with the new key,
   every node still opens both);
3. remove the old key everywhere.

Sealed datagram: ``VERSION (1 byte) | nonce (12 random bytes) | ciphertext+tag``,
the version byte authenticated as associated data. A random 96-bit nonce per
datagram stays far from collision risk at gossip rates. Pure apart from reading
the key file.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
NONCE = 12
TAG = 16
OVERHEAD = len(VERSION) + NONCE + TAG
KEY_SIZES = (16, 24, 32)
RELOAD_INTERVAL = 2.0  # seconds between checks of the key file for changes


class KeyFileError(ValueError):
    """A key file that cannot be used (the message says why and where)."""


class SealError(ValueError):
    """A datagram no key of the ring opens (not ours, tampered, or plain text)."""


def new_key(size: int = 32) -> str:
    """A fresh key as a key file line."""
    return base64.b64encode(os.urandom(size)).decode()


def parse_keys(text: str, where: str = "key file") -> list[bytes]:
    keys: list[bytes] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            k = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{where}:{n}: not base64 (run `oklog keygen` for a key)") from None
        if len(k) not in KEY_SIZES:
            raise KeyFileError(f"{where}:{n}: a key is 16, 24 or 32 bytes, this one {len(k)}")
        keys.append(k)
    if not keys:
        raise KeyFileError(f"{where}: no key in it (run `oklog keygen -o {where}`)")
    return keys


@dataclass
class Keyring:
    keys: list[bytes]
    path: Path | None = None
    _stamp: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self._ciphers = [AESGCM(k) for k in self.keys]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        p = Path(path)
        try:
            st = p.stat()
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise KeyFileError(f"cluster key {p}: {e}") from None
        ring = cls(parse_keys(text, str(p)), p)
        ring._stamp = (st.st_mtime_ns, st.st_size)
        return ring

    def reload(self) -> bool:
        """Re-read the key file if it changed. True if the keys changed;
        ``KeyFileError`` (keys unchanged) if the new file is unusable."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except OSError as e:
            raise KeyFileError(f"cluster key {self.path}: {e}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        fresh = Keyring.load(self.path)
        self._stamp = fresh._stamp
        if fresh.keys == self.keys:
            return False
        self.keys, self._ciphers = fresh.keys, fresh._ciphers
        return True

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return VERSION + nonce + self._ciphers[0].encrypt(nonce, data, VERSION)

    def open(self, data: bytes) -> bytes:
        if len(data) < OVERHEAD or data[:1] != VERSION:
            raise SealError("not a sealed datagram")
        nonce, body = data[1 : 1 + NONCE], data[1 + NONCE :]
        for c in self._ciphers:
            try:
                return c.decrypt(nonce, body, VERSION)
            except InvalidTag:
                continue
        raise SealError("no key of the ring opens it")
