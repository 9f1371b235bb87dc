"""Types of the C helper built from oklog/_fast.c (see that file). ``buf``
is anything with the buffer protocol: bytes, mmap, memoryview."""

from collections.abc import Sequence

def grep(buf: object, start: int, end: int, needle: bytes, mode: int, icase: bool = False, /) -> bytes: ...  # icase: ASCII folded
def format(buf: object, start: int, end: int, mode: int, /) -> bytes: ...  # modes 0-2, 4 time, 5 ulid+time, 6 json
def pick(buf: object, candidates: bytes, keep: bytes, mode: int, /) -> bytes: ...
def split_topics(buf: object, max_topics: int, /) -> list[tuple[bytes, bytes]] | None: ...
def merge(bufs: Sequence[object], mode: int, /) -> bytes: ...
def trigram_bloom(buf: object, start: int, end: int, bits_per: int, /) -> bytes: ...
def bloom_may_contain(bloom: bytes, literal: bytes, /) -> bool: ...
def count(
    buf: object,
    start: int,
    end: int,
    terms: Sequence[bytes],
    nots: Sequence[bytes],
    icase: bool,
    step_ms: int,
    origin_ms: int,
    counts: object | None,
    /,
) -> tuple[int, int]: ...  # (matched, outside): counts a writable int64 array, bucket (ms - origin_ms) // step_ms
def logfmt_eq(buf: object, start: int, end: int, key: bytes, value: bytes, kind: int = 2, /) -> tuple[bytes, bytes]: ...  # (candidates, verdicts: 1 holds, 2 undecided)
def gram_bloom(buf: object, start: int, end: int, bits_per: int, /) -> bytes: ...
def gram_bloom_may_contain(bloom: bytes, literal: bytes, /) -> bool: ...
def zscan(
    buf: object,
    frames: bytes,
    needle: bytes | None,
    mode: int,
    klo: bytes,
    khi: bytes,
    verify: object | None = None,
    /,
) -> tuple[list[bytes], list[int]]: ...  # verify: hs_compile's; only lines holding a hit of it
def hs_compile(pattern: bytes, flags: int, /) -> object | None: ...  # None: no libhs.so.5, or rejected
def zcount(
    buf: object,
    frames: bytes,
    terms: Sequence[bytes],
    nots: Sequence[bytes],
    icase: bool,
    klo: bytes,
    khi: bytes,
    step_ms: int,
    origin_ms: int,
    counts: object | None,
    /,
) -> tuple[int, int, list[int]]: ...  # (matched, outside, bad frame indexes): count over zscan's frames
def zscan_available() -> bool: ...
def syslog_times(msgs: list[bytes], /) -> list[int | bytes | None]: ...  # RFC 5424 ns, RFC 3164 text, or None
