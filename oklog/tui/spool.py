"""Every record of a query result, kept in a temporary file so all of it is reachable.

The query view shows one page (``max_lines`` records) at a time; the result
itself, however large, goes to disk as the node sent it (whole buffers, no step
per record), with an index of where each buffer starts. A page is read back by
record number: the buffers that hold it, split into lines. Saving streams the
file. The file is bounded (``LIMIT`` bytes): past it, records are counted but
not kept, and the view says so.
"""

from __future__ import annotations

import bisect
import os
import tempfile
from collections.abc import Iterator

from oklog.records.framing import Carry

LIMIT = 4 << 30  # bytes kept per result
READ_BLOCK = 1 << 20


class ResultSpool:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        # Positional reads and writes only: a save (in a thread) may read while
        # the query is still appending.
        self.file = tempfile.TemporaryFile(buffering=0)  # lives as long as the result
        self.fd = self.file.fileno()
        self.offsets: list[int] = []  # byte offset of each buffer
        self.firsts: list[int] = []  # number of the first record in each buffer
        self.size = 0
        self.kept = 0  # records in the file
        self.records = 0  # records received, kept or not

    @property
    def truncated(self) -> bool:
        return self.kept < self.records

    def add(self, buf: bytes, n: int) -> None:
        """A buffer of ``n`` whole records."""
        full = self.truncated or self.size + len(buf) > self.limit
        self.records += n
        if not n or full:
            return
        _pwrite_all(self.fd, buf, self.size)
        self.offsets.append(self.size)
        self.firsts.append(self.kept)
        self.size += len(buf)
        self.kept += n

    def read(self, start: int, stop: int) -> list[bytes]:
        """Records ``start`` to ``stop`` (exclusive) of those kept, each without its LF."""
        start, stop = max(0, start), min(stop, self.kept)
        if start >= stop:
            return []
        i = bisect.bisect_right(self.firsts, start) - 1
        j = bisect.bisect_right(self.firsts, stop - 1)  # first buffer past the last record
        end = self.offsets[j] if j < len(self.offsets) else self.size
        data = _pread_all(self.fd, end - self.offsets[i], self.offsets[i])
        lines = data.split(b"\n")
        skip = start - self.firsts[i]
        return lines[skip : skip + (stop - start)]

    def buffers(self, size: int | None = None) -> Iterator[bytes]:
        """The first ``size`` bytes kept (all, by default) as stored, in blocks of
        whole records. Reads through a descriptor of its own, taken now, so the
        result stays readable to the end even if the spool is closed meanwhile
        (a new query)."""
        return _Reader(os.dup(self.fd), self.size if size is None else size)

    def close(self) -> None:
        self.file.close()


class _Reader:
    """Blocks of whole records from a descriptor it owns (closed at the end)."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd, self.end = fd, end
        self.it = self._blocks()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.it)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    def _blocks(self) -> Iterator[bytes]:
        carry = Carry()
        pos = 0
        try:
            while pos < self.end:
                chunk = _pread_all(self.fd, min(READ_BLOCK, self.end - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                if whole := carry.feed(chunk):
                    yield whole
            if carry.rest:
                yield carry.rest
        finally:
            self.close()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _pread_all(fd: int, n: int, offset: int) -> bytes:
    parts = []
    while n > 0:
        b = os.pread(fd, n, offset)
        if not b:
            break
        parts.append(b)
        n, offset = n - len(b), offset + len(b)
    return b"".join(parts)
