"""Whole records out of bytes that arrive in arbitrary chunks. Pure."""

from __future__ import annotations


class TornRecord(ValueError):
    """More bytes than allowed arrived without a record's end."""


class Carry:
    """Feed chunks, get back the whole records they complete (each ending LF);
    the torn tail is held until its LF arrives. ``limit`` bounds the tail: a
    sender that never ends a record raises ``TornRecord`` instead of growing
    memory. A chunk holding whole records only is passed through uncopied."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.rest = b""

    def feed(self, chunk: bytes) -> bytes:
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            self.rest += chunk
            self._check()
            return b""
        whole = self.rest + chunk[:cut] if self.rest else chunk[:cut]
        self.rest = chunk[cut:]
        self._check()
        return whole

    def _check(self) -> None:
        if self.limit is not None and len(self.rest) > self.limit:
            raise TornRecord(f"sent over {self.limit} bytes without a record's end")
