"""_fast entry points on hostile input: random buffers, offsets, triples and modes.

Bounded seeded loop (OKLOG_FAST_FUZZ iterations, default 300). OKLOG_FAST_SO
points it at another build of the extension (``make fuzz-fast`` uses an ASan one).
"""

import array
import importlib.util
import os
import random
import subprocess
import sys
import zlib
from types import ModuleType

ITERATIONS = int(os.environ.get("OKLOG_FAST_FUZZ", "300"))
EXPECTED = (ValueError, TypeError, OverflowError)


def _load() -> ModuleType:
    path = os.environ.get("OKLOG_FAST_SO")
    if not path:
        from oklog import _fast

        return _fast
    spec = importlib.util.spec_from_file_location("_fast", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fast = _load()


def _buf(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 26, 27, 28, rng.randrange(0, 300), rng.randrange(0, 5000)])
    alphabet = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ \n\x00\xff"
    return bytes(rng.choice(alphabet) for _ in range(n))


def _off(rng: random.Random, n: int) -> int:
    return rng.choice([0, n, n + 1, -1, rng.randrange(-5, n + 5), 2**62, -(2**62)])


def _call(f: object, *args: object) -> object:
    try:
        return f(*args)  # type: ignore[operator]
    except EXPECTED:
        return None


def test_pick_mode2_budget_holds_overlapping_line_start() -> None:
    # (0, 0, n) in mode 2 writes the 27-byte head plus the whole record: n + 27 bytes.
    code = (
        "import array, sys\n"
        "from tests.fast.test_fast_fuzz import fast\n"
        "buf = bytes(range(256)) * 8\n"
        "for _ in range(200):\n"
        "    out = fast.pick(buf[:1000], array.array('q', [0, 0, 1000]).tobytes(), b'\\x01', 2)\n"
        "assert out == buf[:27] + buf[:1000], len(out)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]


def test_fast_entry_points_survive_hostile_input() -> None:
    rng = random.Random(18)
    for _ in range(ITERATIONS):
        buf = _buf(rng)
        n = len(buf)
        mode = rng.choice([-1, 0, 1, 2, 3, 4, 5, 6, 7])
        _call(fast.format, buf, _off(rng, n), _off(rng, n), mode)
        lit = bytes(rng.choice(b"AZ 0\n") for _ in range(rng.randrange(0, 4)))
        _call(fast.grep, buf, _off(rng, n), _off(rng, n), lit, mode)
        k = rng.randrange(0, 6)
        triples = [_off(rng, n) for _ in range(3 * k)]
        if rng.random() < 0.7:  # mostly well-ordered, in bounds, with ls anywhere in [rs, re]
            triples = []
            for _ in range(k):
                rs, ls, re_ = sorted(rng.randrange(0, n + 1) for _ in range(3))
                triples += [rs, ls, re_]
        keep = bytes(rng.choice([0, 1]) for _ in range(k + (rng.random() < 0.1)))
        out = _call(fast.pick, buf, array.array("q", triples).tobytes(), keep, mode)
        if isinstance(out, bytes) and mode in (0, 1, 2) and len(keep) == k:
            want = b""
            for i in range(k):
                rs, ls, re_ = triples[3 * i : 3 * i + 3]
                if keep[i]:
                    head = buf[rs:re_] if mode == 0 else buf[ls:re_]
                    want += buf[rs : min(rs + 27, re_)] + head if mode == 2 else head
            assert out == want
        bufs = [_buf(rng) for _ in range(rng.randrange(0, 4))]
        _call(fast.merge, bufs, mode)
        _call(fast.split_topics, buf, rng.choice([0, 1, 2, 4096, 4097]))
        _call(fast.grep, buf, _off(rng, n), _off(rng, n), lit, mode, True)
        terms = [bytes(rng.choice(b"aZz 0\n") for _ in range(rng.randrange(0, 4))) for _ in range(rng.randrange(0, 3))]
        nots = [bytes(rng.choice(b"aZz 0") for _ in range(rng.randrange(0, 3))) for _ in range(rng.randrange(0, 3))]
        nb = rng.choice([0, 1, 3, 100])
        counts = rng.choice([array.array("q", [0] * nb), bytearray(8 * nb + rng.choice([0, 3])), None, b"x" * 8])
        step = rng.choice([-1, 0, 1, 60_000, 2**62])
        _call(fast.logfmt_eq, buf, _off(rng, n), _off(rng, n), lit, bytes(rng.choice(b"0Z=\" ") for _ in range(rng.randrange(0, 3))))
        _call(fast.count, buf, _off(rng, n), _off(rng, n), terms, nots, rng.random() < 0.5, step, _off(rng, 2**48), counts)
        _zfuzz(rng, buf, terms, nots, step, counts)


def _zfuzz(rng: random.Random, buf: bytes, terms: list[bytes], nots: list[bytes], step: int, counts: object) -> None:
    """zcount and zscan over zstd frames of the random buffer: valid, damaged
    (a flipped byte, a wrong raw length, a wrong CRC) or out of bounds, with
    and without a CRC of the frame's bytes."""
    import zstandard

    if not fast.zscan_available():
        return
    pieces = [buf[: len(buf) // 2], buf[len(buf) // 2 :], b""]
    data = bytearray()
    quads: list[int] = []
    for p in pieces:
        frame = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True).compress(p)
        crc = rng.choice([zlib.crc32(frame), zlib.crc32(frame), -1, zlib.crc32(frame) ^ 4])
        quads += [len(data), len(frame), len(p) + rng.choice([0, 0, 0, -1, 1]), crc]
        data += frame
    if data and rng.random() < 0.3:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    if rng.random() < 0.2:
        quads[rng.randrange(len(quads))] = rng.choice([-1, -2, len(data) + 1, 2**40, _off(rng, len(data))])
    frames = array.array("q", quads).tobytes()[: rng.choice([32 * 3, 32 * 3, 32 * 2, 24 * 3, 33])]
    klo = bytes(rng.choice(b"0Z~") for _ in range(rng.randrange(0, 30)))
    khi = bytes(rng.choice(b"0Z~") for _ in range(rng.randrange(0, 30)))
    icase = rng.random() < 0.5
    _call(fast.zcount, bytes(data), frames, terms, nots, icase, klo, khi, step, _off(rng, 2**48), counts)
    lit = terms[0] if terms else None
    verify = fast.hs_compile(rng.choice([b"[a-z]{2}", b"a.?b", b"\\x00|x"]), 0) if rng.random() < 0.5 else None
    _call(fast.zscan, bytes(data), frames, lit, rng.choice([-1, 0, 1, 2, 3]), klo, khi, verify)
