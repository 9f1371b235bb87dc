"""The filesystem abstraction: every disk access of a node goes through here.

``RealFS`` is the disk; ``MemFS`` keeps files in memory so storage tests run the
same cases both ways. Paths are plain strings joined with ``/``. All methods are
synchronous; callers move large or slow calls off the event loop.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class File(Protocol):
    def write(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
    @property
    def size(self) -> int: ...


class FS(Protocol):
    def mkdirs(self, path: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def size(self, path: str) -> int: ...
    def create(self, path: str) -> File: ...
    def append(self, path: str) -> File: ...
    def read(self, path: str, offset: int = 0, length: int = -1) -> bytes: ...
    def map(self, path: str) -> AbstractContextManager[mmap.mmap | bytes]: ...
    def open_map(self, path: str) -> mmap.mmap | bytes: ...
    def write_atomic(self, path: str, data: bytes) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def truncate(self, path: str, size: int) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def stamp(self, path: str) -> tuple[int, int]: ...


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


class _RealFile:
    def __init__(self, path: str, mode: str) -> None:
        self._f = open(path, mode, buffering=0)
        self._size = os.fstat(self._f.fileno()).st_size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._f.write(view)
            if n is None:
                raise OSError("short write")
            view = view[n:]
        self._size += len(data)

    def sync(self) -> None:
        os.fdatasync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    @property
    def size(self) -> int:
        return self._size


class RealFS:
    def mkdirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def stamp(self, path: str) -> tuple[int, int]:
        """(size, modification time in ns): changes whenever the file is written."""
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def create(self, path: str) -> File:
        return _RealFile(path, "xb")

    def append(self, path: str) -> File:
        return _RealFile(path, "ab")

    def read(self, path: str, offset: int = 0, length: int = -1) -> bytes:
        with open(path, "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            return f.read() if length < 0 else f.read(length)

    @contextmanager
    def map(self, path: str) -> Iterator[mmap.mmap | bytes]:
        """A read-only view of the whole file (mmap'd; empty bytes if empty)."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                yield b""
                return
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                m.madvise(mmap.MADV_SEQUENTIAL)
            except (AttributeError, OSError):
                pass
            try:
                # an mmap is read through the buffer protocol like the bytes it stands for
                yield m
            finally:
                try:
                    m.close()
                except BufferError:
                    # A consumer still holds an export; the GC unmaps it later.
                    pass

    def open_map(self, path: str) -> mmap.mmap | bytes:
        """A read-only mapping that outlives the path: renames and unlinks of the
        file don't affect it. Release it with ``close_map``."""
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fdatasync(f.fileno())
        os.replace(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")

    def rename(self, old: str, new: str) -> None:
        os.replace(old, new)

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _MemFile:
    def __init__(self, fs: MemFS, path: str) -> None:
        self._fs = fs
        self._path = path

    def write(self, data: bytes) -> None:
        with self._fs._lock:
            self._fs._files[self._path] += data
            self._fs._bump(self._path)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def size(self) -> int:
        return len(self._fs._files[self._path])


class MemFS:
    """An in-memory filesystem with the same semantics the node relies on."""

    def __init__(self) -> None:
        self._files: dict[str, bytearray] = {}
        self._versions: dict[str, int] = {}
        self._clock = 0
        self._dirs: set[str] = {""}
        self._lock = threading.Lock()

    def _parent(self, path: str) -> str:
        return path.rsplit("/", 1)[0] if "/" in path else ""

    def _need_parent(self, path: str) -> None:
        if self._parent(path) not in self._dirs:
            raise FileNotFoundError(path)

    def mkdirs(self, path: str) -> None:
        parts = path.strip("/").split("/")
        prefix = "/" if path.startswith("/") else ""
        for i in range(len(parts)):
            self._dirs.add(prefix + "/".join(parts[: i + 1]))

    def listdir(self, path: str) -> list[str]:
        path = path.rstrip("/")
        with self._lock:
            names = [p.rsplit("/", 1)[1] for p in self._files if self._parent(p) == path]
            names += [d.rsplit("/", 1)[1] for d in self._dirs if d and self._parent(d) == path]
        return names

    def exists(self, path: str) -> bool:
        return path in self._files or path in self._dirs

    def size(self, path: str) -> int:
        return len(self._get(path))

    def _bump(self, path: str) -> None:
        self._clock += 1
        self._versions[path] = self._clock

    def stamp(self, path: str) -> tuple[int, int]:
        return len(self._get(path)), self._versions.get(path, 0)

    def _get(self, path: str) -> bytearray:
        try:
            return self._files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def create(self, path: str) -> File:
        self._need_parent(path)
        with self._lock:
            if path in self._files:
                raise FileExistsError(path)
            self._files[path] = bytearray()
        return _MemFile(self, path)

    def append(self, path: str) -> File:
        self._need_parent(path)
        with self._lock:
            self._files.setdefault(path, bytearray())
        return _MemFile(self, path)

    def read(self, path: str, offset: int = 0, length: int = -1) -> bytes:
        data = self._get(path)
        end = len(data) if length < 0 else offset + length
        return bytes(data[offset:end])

    @contextmanager
    def map(self, path: str) -> Iterator[bytes]:
        yield bytes(self._get(path))

    def open_map(self, path: str) -> bytes:
        return bytes(self._get(path))

    def write_atomic(self, path: str, data: bytes) -> None:
        self._need_parent(path)
        with self._lock:
            self._files[path] = bytearray(data)
            self._bump(path)

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            self._files[new] = self._get(old)
            del self._files[old]
            self._versions[new] = self._versions.pop(old, 0)

    def remove(self, path: str) -> None:
        with self._lock:
            self._files.pop(path, None)

    def truncate(self, path: str, size: int) -> None:
        with self._lock:
            del self._get(path)[size:]
            self._bump(path)

    def sync_dir(self, path: str) -> None:
        pass


def close_map(buf: object) -> None:
    if isinstance(buf, mmap.mmap):
        try:
            buf.close()
        except BufferError:
            pass  # still exported somewhere; the GC unmaps it later
