"""Output formats and topic splitting, in process, against a plain copy of the same bytes.

    .venv/bin/python -m benchmarks.formats [--size 100MB] [--runs 5]

Records are sampled from the loghub corpus (as the main benchmark's data set),
stamped as a node stamps them, and then formatted the way a query result is
(``oklog.query.format``, a record-aligned chunk at a time), split by topic
(``_fast.split_topics``, what a store write does), and copied with
``bytes(memoryview)`` as the reference measured in the same run. Each figure is
the median of ``--runs``; ratios are oklog time / copy time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from benchmarks.dataset import load_corpus, parse_size
from oklog import _fast
from oklog.query import format as F
from oklog.records.record import ULIDSource, stamp_lines


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.formats", description=__doc__.split("\n")[0])
    p.add_argument("--size", default="100MB", help="bytes of log lines (default 100MB)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    ns = p.parse_args(argv)
    pool, rng, size = load_corpus(), random.Random(ns.seed), parse_size(ns.size)
    lines: list[bytes] = []
    total = 0
    while total < size:
        lines += rng.choices(pool, k=10_000)
        total += sum(len(x) + 1 for x in lines[-10_000:])
    src = ULIDSource()
    one = stamp_lines(lines, src.headers(len(lines)))
    topics = [b"web", b"db", b"cron"]
    mixed = b"".join(stamp_lines(lines[k::3], src.headers(len(lines[k::3]), topics[k])) for k in range(3))
    mixed = b"".join(sorted(mixed.splitlines(keepends=True)))  # interleaved in time, as a merged batch
    copy = _median_time(lambda: bytes(memoryview(one)), ns.runs)
    rows = [
        ("copy (reference)", copy),
        ("lines", _median_time(lambda: F.apply_chunked(F.lines_only, one), ns.runs)),
        ("ulid", _median_time(lambda: F.apply_chunked(F.ulid_and_line, one), ns.runs)),
        ("time", _median_time(lambda: F.apply_chunked(F.with_time, one), ns.runs)),
        ("ulid+time", _median_time(lambda: F.apply_chunked(F.FORMATS["ulidtime"], one), ns.runs)),
        ("json", _median_time(lambda: F.apply_chunked(F.as_json, one), ns.runs)),
        ("split_topics, one topic", _median_time(lambda: _fast.split_topics(one, 64), ns.runs)),
        ("split_topics, 3 interleaved", _median_time(lambda: _fast.split_topics(mixed, 64), ns.runs)),
    ]
    mib = len(one) / 2**20
    print(f"{len(lines):,} records, {mib:.0f} MiB stamped; median of {ns.runs} runs")
    print(f"{'what':30} {'s':>8} {'MiB/s':>8} {'x copy':>7}")
    for name, t in rows:
        print(f"{name:30} {t:8.3f} {mib / t:8.0f} {t / copy:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
