"""Where the compressed store's query speed stops, measured.

Two tables, each against a reference taken in the same run:

1. **The decode floor.** Every block of a kept bench store decompressed and
   scanned on both cores by the query's own C call (``_fast.zscan``, frames
   checked by their CRC-32, a needle no record holds: nothing is cut or sent),
   against GNU grep over the raw copy of the same lines. A query that must
   read every block cannot take less than this floor, so a floor above a row's
   target means the row cannot be met by scanning faster.
2. **Blocks a rare term touches.** For the data set's rare term, the share of
   blocks of each size that hold it (what a per-block filter cannot skip), and
   what standalone zstd frames of that size cost against ``zstd -3`` of the
   same lines (a 16 MiB sample; ULIDs and topics would add to it).
3. **The same, blocks per source.** The alternative a per-stream store would
   take (VictoriaLogs keeps each stream's blocks apart): the data set's lines
   grouped by the corpus file they were drawn from, each group in arrival
   order, then cut into blocks.

Needs a data set and a store from ``python -m benchmarks.bench --keep``:

    python -m benchmarks.limits --workdir bench-data [--mode tcp1] [--runs 5]
        [--api HOST:PORT of a node serving that store, to time its queries too]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import zstandard

import oklog._fast as _fast
from benchmarks.bench import timed
from benchmarks.dataset import CORPUS_GLOB, RARE_TERM
from oklog.records import segfile
from oklog.records.record import ULID_LEN
from oklog.records.segfile import block_cuts

REGEX = r"Failed password for (invalid user )?\w+"
NO_SUCH = b"\x01no record holds this\x02"
SAMPLE = 16 << 20
BLOCK_SIZES = (64 << 10, 256 << 10, 1 << 20, 8 << 20)


def store_blocks(store: str) -> tuple[list[tuple[bytes, bytes]], int]:
    """(segment bytes, one block's frame table) per block, and the records' bytes."""
    units, raw = [], 0
    for path in sorted(glob.glob(os.path.join(store, "*.seg"))):
        with open(path, "rb") as f:
            buf = f.read()
        if not segfile.is_compressed(buf[:4]):
            sys.exit(f"{path}: a plain segment; let the bench's store settle (it compresses every one)")
        idx = segfile.read_index(buf)
        raw += idx.raw_bytes
        units += [(buf, segfile.frame_table([b])) for b in idx.blocks]
    return units, raw


def decode_floor(units: list[tuple[bytes, bytes]]) -> float:
    def scan(part: list[tuple[bytes, bytes]]) -> None:
        for buf, table in part:
            out, bad = _fast.zscan(buf, table, NO_SUCH, 0, b"0" * ULID_LEN, b"~", None)
            assert not out and not bad

    t = time.perf_counter()
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(scan, [units[0::2], units[1::2]]))
    return time.perf_counter() - t


def shell(cmd: str, timeout: float = 600.0) -> Callable[[], float]:
    """The bench's timer (LC_ALL=C, exit status checked) for one command line."""
    return lambda: timed(lambda: cmd, timeout)


def floor_table(data: str, store: str, runs: int, api: str = "", oklog: str = "oklog") -> None:
    units, raw = store_blocks(store)
    if not _fast.zscan_available():
        sys.exit("libzstd not found: the C scan (and this floor) needs it")
    q = "'" + REGEX + "'"
    timers: dict[str, Callable[[], float]] = {
        "decode floor (2 cores)": lambda: decode_floor(units),
        "10% term: grep -F user | cat": shell(f"grep -F user {data} | cat >/dev/null"),
        "regex: grep -E | cat": shell(f"grep -E {q} {data} | cat >/dev/null"),
        "rare term: grep -F -c | cat": shell(f"grep -F -c -- {RARE_TERM} {data} | cat >/dev/null"),
    }
    if api:  # the queries themselves, on a node serving this store
        ask = f"{oklog} query -store {api} -from 87600h"
        timers["10% term: oklog query | cat"] = shell(f"{ask} -q user | cat >/dev/null")
        timers["regex: oklog query | cat"] = shell(f"{ask} -regex -q {q} | cat >/dev/null")
    times: dict[str, list[float]] = {k: [] for k in timers}
    for _ in range(runs):  # interleaved, so drift hits every row alike
        for k, fn in timers.items():
            times[k].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["decode floor (2 cores)"]
    print(f"decode floor: {len(units)} blocks, {raw / 1e9:.2f} GB of records; medians of {runs}")
    for k, v in med.items():
        print(f"  {k:32s} {v:7.3f} s   floor / this {floor / v:5.2f}")


def by_source(text: bytes) -> bytes:
    """``text``'s lines grouped by the corpus file each was drawn from (each
    group in arrival order; lines of no file, such as the needle's, last)."""
    source: dict[bytes, int] = {}
    for n, path in enumerate(sorted(glob.glob(CORPUS_GLOB))):
        with open(path, "rb") as f:
            for line in f.read().replace(b"\r", b"").split(b"\n"):
                source.setdefault(line, n)
    groups: dict[int, list[bytes]] = {}
    for line in text.split(b"\n")[:-1]:
        groups.setdefault(source.get(line, -1), []).append(line)
    return b"".join(b"\n".join(groups[k]) + b"\n" for k in sorted(groups, key=lambda k: (k < 0, k)))


def rare_rows(lines: bytes, sample: bytes, ref: int) -> None:
    term = RARE_TERM.encode()
    for size in BLOCK_SIZES:
        cuts = block_cuts(lines, size)
        held = sum(lines.find(term, i, j) >= 0 for i, j in cuts)
        cost = []
        for level in (9, 19):
            c = zstandard.ZstdCompressor(level=level)
            cost.append(sum(len(c.compress(sample[i:j])) for i, j in block_cuts(sample, size)) / ref)
        print(
            f"  blocks of {size >> 10:5d} KiB: {held / len(cuts):6.1%} of {len(cuts)} hold it;"
            f" frames of that size vs zstd -3: level 9 {cost[0]:.2f}x, level 19 {cost[1]:.2f}x",
            flush=True,
        )


def rare_table(data: str) -> None:
    with open(data, "rb") as f:
        lines = f.read()
    sample = lines[:SAMPLE]
    sample = sample[: sample.rfind(b"\n") + 1]
    ref = len(zstandard.ZstdCompressor(level=3).compress(sample))  # of the lines as they arrived
    print(f"rare term {RARE_TERM!r}: zstd -3 makes a {len(sample) >> 20} MiB sample {len(sample) / ref:.1f}x smaller")
    print(" blocks in arrival order (as stored: by ULID)")
    rare_rows(lines, sample, ref)
    print(" blocks per source (the corpus file each line came from), against the same zstd -3")
    rare_rows(by_source(lines), by_source(sample), ref)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="bench-data", help="the bench's --workdir (kept with --keep)")
    p.add_argument("--mode", default="tcp1", help="whose node's store to read (default tcp1)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--skip-rare", action="store_true", help="the floor only (the rare-term table takes minutes)")
    p.add_argument("--api", default="", help="a node serving that store (host:port): its queries are timed too")
    p.add_argument("--oklog", default=os.path.join(os.path.dirname(sys.executable), "oklog"))
    a = p.parse_args()
    data = sorted(glob.glob(os.path.join(a.workdir, "data-seed*.log")))
    store = os.path.join(a.workdir, f"node-{a.mode}", "store")
    if not data or not os.path.isdir(store):
        sys.exit(f"no data set or no {store}: run python -m benchmarks.bench --keep --workdir {a.workdir} first")
    floor_table(data[-1], store, a.runs, a.api, a.oklog)
    if not a.skip_rare:
        rare_table(data[-1])


if __name__ == "__main__":
    main()
