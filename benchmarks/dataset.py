"""Reproducible data set: lines sampled with a fixed seed from the loghub corpus.

The corpus files are read from where they are (never copied into the repo). Lines
are stripped of their trailing CR/LF (the corpus has CRLF line endings) and empty
lines are dropped. Sampling is uniform with replacement, driven by
``random.Random(seed)``, so the same seed and size give the same bytes.

While generating, the number of times each corpus line was drawn is kept; the
expected number of matching lines of any term or regex is then computed exactly
from the corpus alone (``expected_count``), with no pass over the data file.
The data file and a ``.json`` sidecar holding those draw counts are reused when
a later run asks for the same seed and size.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
from dataclasses import dataclass, field

CORPUS_GLOB = "/work/shared/corpus/loghub/*.log"
RARE_TERM = "blk_-6952295868487656571"
# Every line of the data set is one of the corpus's 20,000 lines drawn again and
# again (each about once per 20,000 lines), so even RARE_TERM is in every few MiB.
# The needle is what a request id is in real logs: a few lines close in time,
# here NEEDLE_LINES corpus lines with the id appended, 100 lines apart, placed
# halfway through the data set.
NEEDLE_TERM = "request_id=7c1e94a0d3b24f15"
NEEDLE_LINES = 8
TEN_PCT_CANDIDATES = (
    "INFO", "error", "WARN", "Failed", "ERROR", "session", "pam_unix", "block",
    "user", "Exception", "closed", "Receiving", "kernel", "root", "failed",
)
REGEX = r"Failed password for (invalid user )?\w+"
BLOCK_LINES = 50_000
FORMAT_VERSION = 2  # 2: the needle lines

# A record on disk is ``ULID SP TOPIC SP LINE LF``; the fast port stamps topic ``default``.
TOPIC = "default"
RECORD_OVERHEAD = 26 + 1 + len(TOPIC) + 1
ULID_ALPHABET = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def parse_size(text: str) -> int:
    """``100MB``, ``1GB``, ``50M``, ``512KiB``, ``1000`` → bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"bad size {text!r}: use e.g. 50MB, 1GB")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}GiB"


def load_corpus(pattern: str = CORPUS_GLOB) -> list[bytes]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"bench: no corpus files match {pattern}")
    pool: list[bytes] = []
    for path in files:
        with open(path, "rb") as f:
            for line in f.read().split(b"\n"):
                line = line.rstrip(b"\r")
                if line:
                    pool.append(line)
    return pool


def header_safe(term: str) -> bool:
    """True if a substring can only match the producer's line, never the header.

    grep sees whole records (``ULID SP default SP LINE``); oklog matches the line
    only. A term is safe when it holds a character a ULID cannot contain and no
    prefix of it is a suffix of `` default `` (so it cannot straddle the header).
    """
    if not any(c not in ULID_ALPHABET for c in term):
        return False
    tail = f" {TOPIC} "
    if term in tail:
        return False
    return not any(tail.endswith(term[:k]) for k in range(1, len(term) + 1))


@dataclass
class DataSet:
    path: str
    seed: int
    size: int  # requested size
    nbytes: int  # actual bytes (whole lines)
    nlines: int
    pool: list[bytes]
    draws: list[int]  # times each pool line was drawn
    extra: list[bytes] = field(default_factory=list)  # lines not drawn from the pool (the needle's)

    @property
    def store_bytes(self) -> int:
        """Bytes the records take in the store (each line plus its header)."""
        return self.nbytes + RECORD_OVERHEAD * self.nlines

    def expected_count(self, term: str, regex: bool = False) -> int:
        if regex:
            rx = re.compile(term.encode())
            hit = lambda line: rx.search(line) is not None  # noqa: E731
        else:
            t = term.encode()
            hit = lambda line: t in line  # noqa: E731
        drawn = sum(d for line, d in zip(self.pool, self.draws, strict=True) if d and hit(line))
        return drawn + sum(1 for line in self.extra if hit(line))

    def pick_ten_percent(self, candidates=TEN_PCT_CANDIDATES) -> tuple[str, float, dict[str, float]]:
        fracs = {c: self.expected_count(c) / self.nlines for c in candidates if header_safe(c)}
        best = min(fracs, key=lambda c: abs(fracs[c] - 0.10))
        return best, fracs[best], fracs


def needle_lines(pool: list[bytes], seed: int) -> list[bytes]:
    """The needle: NEEDLE_LINES corpus lines (picked by the seed) with the
    request id appended."""
    rng = random.Random(seed * 7919 + 1)
    return [rng.choice(pool) + b" " + NEEDLE_TERM.encode() for _ in range(NEEDLE_LINES)]


def _sidecar(path: str) -> str:
    return path + ".json"


def generate(workdir: str, size: int, seed: int, log=print) -> DataSet:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"data-seed{seed}-{size}.log")
    pool = load_corpus()
    meta_path = _sidecar(path)
    if os.path.exists(path) and os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            ok = (
                meta.get("version") == FORMAT_VERSION
                and meta.get("seed") == seed
                and meta.get("size") == size
                and meta.get("pool_lines") == len(pool)
                and os.path.getsize(path) == meta.get("nbytes")
            )
        except (OSError, ValueError):
            ok = False
        if ok:
            log(f"reusing data set {path} ({human(meta['nbytes'])}, {meta['nlines']} lines)")
            extra = [x.encode("latin-1") for x in meta.get("extra", [])]
            return DataSet(path, seed, size, meta["nbytes"], meta["nlines"], pool, meta["draws"], extra)
    log(f"generating data set {path} ({human(size)}, seed {seed}) ...")
    rng = random.Random(seed)
    n = len(pool)
    draws = [0] * n
    lines_with_lf = [ln + b"\n" for ln in pool]
    nbytes = nlines = 0
    needles = [x + b"\n" for x in needle_lines(pool, seed)]
    extra: list[bytes] = []
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        full = True
        while full and nbytes < size:
            idx = rng.choices(range(n), k=BLOCK_LINES)
            parts = []
            place = not extra and nbytes >= size // 2 and nbytes + sum(map(len, needles)) <= size
            if place:
                nbytes += sum(map(len, needles))
            for i in idx:
                ln = lines_with_lf[i]
                if nbytes + len(ln) > size:
                    full = False
                    break
                parts.append(ln)
                draws[i] += 1
                nbytes += len(ln)
            if place:
                for k, x in enumerate(needles):
                    parts.insert(min(k * 101, len(parts)), x)  # 100 drawn lines between two
                extra = [x[:-1] for x in needles]
            f.write(b"".join(parts))
            nlines += len(parts)
    os.replace(tmp, path)
    meta = {
        "version": FORMAT_VERSION, "seed": seed, "size": size, "nbytes": nbytes,
        "nlines": nlines, "pool_lines": n, "draws": draws, "extra": [x.decode("latin-1") for x in extra],
    }
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f)
    os.replace(meta_path + ".tmp", meta_path)
    log(f"generated {human(nbytes)}, {nlines} lines")
    return DataSet(path, seed, size, nbytes, nlines, pool, draws, extra)
