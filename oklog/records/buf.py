"""The byte buffers records are read from: bytes in memory, or a file mapped
read-only (oklog.fs.FS.open_map). Indexing gives an int, slicing gives bytes
(or a memoryview of a memoryview)."""

from __future__ import annotations

import mmap
from typing import Protocol, TypeAlias

Buf: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

# What the record searches (find, rfind, slices as bytes) work on.
Records: TypeAlias = bytes | bytearray | mmap.mmap


class Sliced(Protocol):
    """Anything sliced by offset into bytes: a buffer, or a file read on demand
    (what a segment's index is read from)."""

    def __len__(self) -> int: ...

    def __getitem__(self, sl: slice, /) -> bytes | bytearray | memoryview: ...
