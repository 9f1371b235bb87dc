"""``make bench``: oklog against grep/cat references, in the same run.

See benchmarks/README.md for what each figure means. Quick mode:
``make bench BENCH_ARGS=--quick`` (= ``--size 50MB --runs 3``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from benchmarks import tlsfiles
from benchmarks.dataset import (
    NEEDLE_TERM,
    RARE_TERM,
    RECORD_OVERHEAD,
    REGEX,
    DataSet,
    generate,
    header_safe,
    human,
    parse_size,
)
from benchmarks.node import Node, rfc3339
from benchmarks.tlsfiles import TLSFiles

MiB = 1 << 20
SEND_CHUNK = 4 * MiB
POLL = 0.1
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MODES = ("tcp1", "tcp8", "forward")
# `oklog forward` measurements: mode name → forwarder -mode (and the port it uses)
FORWARD_MODES = {"forward": "fast", "durable": "durable", "bulk": "bulk"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loud(msg: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n!! {msg}\n{bar}\n", file=sys.stderr, flush=True)


# -- ULID helpers -------------------------------------------------------------------------


def ulid_ms(ulid: str) -> int:
    ms = 0
    for c in ulid[:10]:
        ms = ms * 32 + CROCKFORD.index(c)
    return ms


def ms_to_ulid_floor(ms: int) -> str:
    out = []
    for _ in range(10):
        out.append(CROCKFORD[ms & 31])
        ms >>= 5
    return "".join(reversed(out)) + "0" * 16


def segment_files(store: str) -> list[str]:
    return sorted(glob.glob(os.path.join(store, "*.seg")))


def count_lines(paths: list[str]) -> int:
    """Records in store segment files (compressed ones read block by block)."""
    from oklog.records import segfile

    n = 0
    for p in paths:
        with open(p, "rb") as f:
            buf = f.read()
        if segfile.is_compressed(buf[:4]):
            n += segfile.read_index(buf).records
        else:
            n += buf.count(b"\n")
    return n


def store_lines(store: str, attempts: int = 5) -> int:
    """Lines in the store's segment files, listed again if compaction removes one meanwhile."""
    for i in range(attempts):
        try:
            return count_lines(segment_files(store))
        except FileNotFoundError:
            if i == attempts - 1:
                raise
            time.sleep(0.5)
    return 0


def wait_settled(store: str, timeout: float, quiet: float = 5.0, node=None) -> tuple[bool, float]:
    """Wait until the store's segment files stop changing (compaction done) for
    ``quiet`` s and, given the node, it reports no compaction pending (a long
    job changes no file until it ends)."""
    t0 = time.monotonic()
    last = segment_files(store)
    changed = t0
    while time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        now = segment_files(store)
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet and not (node is not None and compaction_pending(node)):
            return True, changed - t0
    return False, time.monotonic() - t0


# -- ingest -------------------------------------------------------------------------------


def split_points(path: str, nbytes: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (offset, length) ranges of the file, cut after an LF."""
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, parts):
            pos = max(nbytes * i // parts, cuts[-1])
            f.seek(pos)
            tail = f.read(1 << 20)
            nl = tail.find(b"\n")
            cuts.append(min(nbytes, pos + nl + 1) if nl >= 0 else nbytes)
    cuts.append(nbytes)
    return [(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def send_range(addr: tuple[str, int], path: str, offset: int, length: int, timeout: float, errors: list,
               ctx: ssl.SSLContext | None = None) -> None:
    try:
        with socket.create_connection(addr, timeout=10) as raw, open(path, "rb") as f:
            raw.settimeout(timeout)
            s = ctx.wrap_socket(raw, server_hostname=addr[0]) if ctx is not None else raw
            f.seek(offset)
            left, carry = length, b""
            while left > 0:
                buf = f.read(min(SEND_CHUNK, left))
                if not buf:
                    break
                left -= len(buf)
                buf = carry + buf
                cut = buf.rfind(b"\n") + 1 if left > 0 else len(buf)
                carry = buf[cut:]
                s.sendall(buf[:cut])
            if carry:
                s.sendall(carry)
            if isinstance(s, ssl.SSLSocket):
                s.unwrap()  # close_notify: the node reads it as the end, as the shutdown below
            else:
                s.shutdown(socket.SHUT_WR)
    except OSError as e:
        errors.append(f"{addr}: {e}")


def wait_queryable(node: Node, from_: str, want: int, deadline: float) -> tuple[bool, int]:
    size = 0
    while time.monotonic() < deadline:
        if not node.alive():
            raise RuntimeError(f"node {node.name} died during ingest; see {node.dir}/node.log")
        try:
            size = node.data_set_size(from_)
        except (OSError, RuntimeError):
            size = size
        if size == want:
            return True, size
        time.sleep(POLL)
    return False, size


def ingest(node: Node, ds: DataSet, mode: str, oklog: str, timeout: float, tls: TLSFiles | None = None) -> dict:
    """Send the data set, wait until the node reports exactly its size as queryable.

    Equality, not ``>=``: while compaction renames its output into place before
    removing its inputs, the store briefly reports records twice.
    """
    from_ = rfc3339(node.started_at - 60)
    node.reset_peak()
    cpu0 = proc_cpu_s(node.proc.pid) if node.proc else 0.0
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    t0 = time.perf_counter()
    if mode in FORWARD_MODES:
        port = node.ports[FORWARD_MODES[mode]]
        with open(ds.path, "rb") as stdin:
            fwd = subprocess.Popen(
                [oklog, "forward", "-mode", FORWARD_MODES[mode], *(("-tls.ca", tls.ca) if tls else ()),
                 f"{node.fast[0]}:{port}"],
                stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            try:
                _, err = fwd.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                fwd.kill()
                fwd.communicate()
                raise RuntimeError(f"oklog forward did not finish in {timeout:.0f}s") from None
            if fwd.returncode != 0:
                errors.append(f"oklog forward exited {fwd.returncode}: {err.decode(errors='replace')[-500:]}")
    else:
        conns = int(mode[3:])
        threads = [
            threading.Thread(target=send_range, args=(node.fast, ds.path, off, ln, timeout, errors,
                                                      tls.context() if tls else None))
            for off, ln in split_points(ds.path, ds.nbytes, conns)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            raise RuntimeError(f"{mode}: sending did not finish in {timeout:.0f}s")
    t_sent = time.perf_counter()
    if errors:
        loud(f"{mode}: send errors: {errors}")
    ok, size = wait_queryable(node, from_, ds.store_bytes, deadline)
    t_done = time.perf_counter()
    total = t_done - t0
    res = {
        "mode": mode,
        "tls": tls is not None,
        "connections": 1 if mode in FORWARD_MODES else int(mode[3:]),
        "complete": ok,
        "send_s": t_sent - t0,
        "drain_s": t_done - t_sent,
        "total_s": total,
        "mb_per_s": ds.nbytes / MiB / total,
        "records_per_s": ds.nlines / total,
        "store_bytes": size,
        "expected_store_bytes": ds.store_bytes,
        "peak_rss_mib": node.peak_rss_mib(),
        "errors": errors,
    }
    if not ok:
        loud(f"{mode}: store reports {size} bytes queryable after {timeout:.0f}s, "
             f"expected exactly {ds.store_bytes}")
    settled, settle_s = wait_settled(node.store_path, max(30.0, deadline - time.monotonic()), node=node)
    res["compaction_settle_s"] = settle_s
    res["compaction_settled"] = settled
    if not settled:
        loud(f"{mode}: store segment files still changing after {settle_s:.0f}s")
    res["node_cpu_s"] = (proc_cpu_s(node.proc.pid) if node.proc else 0.0) - cpu0
    stored = store_lines(node.store_path)
    res["store_lines"] = stored
    res["store_file_bytes"] = sum(os.path.getsize(p) for p in segment_files(node.store_path))
    res["store_ratio_raw"] = res["store_file_bytes"] / ds.nbytes
    res["store_segments"] = len(segment_files(node.store_path))
    if stored != ds.nlines:
        loud(f"{mode}: store segment files hold {stored} lines, data set has {ds.nlines}")
    log(
        f"{mode}{' (TLS)' if tls else ''}: {res['mb_per_s']:.1f} MiB/s, {res['records_per_s']:.0f} rec/s, "
        f"send {res['send_s']:.2f}s, last byte→queryable {res['drain_s']:.2f}s, "
        f"peak RSS {res['peak_rss_mib']:.0f} MiB; store settled {settle_s:.1f}s later, "
        f"{res['store_segments']} segments"
    )
    return res


# -- queries ------------------------------------------------------------------------------


def compaction_pending(node) -> bool:
    try:
        status, _, body = node.request("GET", "/store/segments")
        return status != 200 or bool(json.loads(body).get("compaction_pending"))
    except (OSError, ValueError):
        return True


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def zstd3_reference(path: str) -> dict:
    """`zstd -3` of the raw data set (one thread): bytes and CPU seconds."""
    t0 = os.times()
    p = subprocess.run(f"zstd -3 -T1 -c -- {shlex.quote(path)} | wc -c", shell=True, capture_output=True, check=True)
    t1 = os.times()
    return {"bytes": int(p.stdout), "cpu_s": (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)}


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def sh(cmd: list[str], sink: str) -> str:
    """A bash command line: ``cmd`` with output to ``sink`` (a shell redirection)."""
    return f"set -o pipefail; {shlex.join(cmd)} {sink}"


PIPE_SINK = "| cat > /dev/null"


def timed(make_cmd: Callable[[], str], timeout: float, ok_codes=(0,), attempts: int = 3) -> float:
    """Wall time of one run; a reference that lost a file to compaction runs again."""
    env = dict(os.environ, LC_ALL="C")
    for i in range(attempts):
        cmdline = make_cmd()
        t0 = time.perf_counter()
        p = subprocess.run(
            ["bash", "-c", cmdline], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=timeout,
        )
        dt = time.perf_counter() - t0
        if p.returncode in ok_codes:
            return dt
        err = p.stderr.decode(errors="replace")
        if "No such file" not in err or i == attempts - 1:
            raise RuntimeError(f"exit {p.returncode}: {cmdline}\n{err[-800:]}")
        log("a segment file vanished under the reference (compaction); running it again")
    raise AssertionError("unreachable")


def output_lines(cmd: list[str], timeout: float, ok_codes=(0,)) -> int:
    """Run a command, count LF in its stdout without keeping it."""
    env = dict(os.environ, LC_ALL="C")
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        n = 0
        try:
            assert p.stdout is not None
            while chunk := p.stdout.read(4 * MiB):
                n += chunk.count(b"\n")
            err = p.stderr.read() if p.stderr else b""
            rc = p.wait()
        finally:
            timer.cancel()
    if rc not in ok_codes:
        raise RuntimeError(f"exit {rc}: {shlex.join(cmd)}\n{err.decode(errors='replace')[-800:]}")
    return n


def window_count(files: list[str], lo_ulid: str, term: bytes) -> int:
    """Reference count for a time-window query: records with ULID >= lo holding term."""
    lo = lo_ulid.encode()
    n = 0
    for p in files:
        name = os.path.basename(p)
        if name[27:53].encode() < lo:
            continue  # the whole segment ends before the window
        from oklog.records import segfile

        with open(p, "rb") as f:
            data = segfile.decode(f.read())
        for rec in data.splitlines():
            if rec[:26] >= lo and term in rec[RECORD_OVERHEAD:]:
                n += 1
    return n


class QueryBench:
    def __init__(self, node: Node, ds: DataSet, oklog: str, runs: int, timeout: float,
                 tls: TLSFiles | None = None) -> None:
        self.node = node
        self.tls = tls
        self.ds = ds
        self.oklog = oklog
        self.runs = runs
        self.timeout = timeout
        self.from_ = rfc3339(node.started_at - 60)

    def files(self) -> list[str]:
        """What the references read: a raw copy of the same lines (store
        segments are compressed; grep and cat read the data set file)."""
        return [self.ds.path]

    def segments(self) -> list[str]:
        return segment_files(self.node.store_path)

    def oklog_cmd(self, *args: str, from_: str | None = None) -> list[str]:
        tls = ("-tls.ca", self.tls.ca) if self.tls else ()
        return [self.oklog, "query", "-store", self.node.api, *tls, "-from", from_ or self.from_, *args]

    def measure(
        self, name: str, oklog: Callable[[], str], ref: Callable[[], str] | None, ref_desc: str, ref_ok=(0,)
    ) -> dict:
        """Warm up once, then ``runs`` interleaved timings of oklog and the reference."""
        ok_t: list[float] = []
        ref_t: list[float] = []
        timed(oklog, self.timeout)
        if ref:
            timed(ref, self.timeout, ref_ok)
        for _ in range(self.runs):
            ok_t.append(timed(oklog, self.timeout))
            if ref:
                ref_t.append(timed(ref, self.timeout, ref_ok))
        res = {
            "query": name,
            "oklog_cmd": oklog(),
            "oklog_s": statistics.median(ok_t),
            "oklog_runs": ok_t,
            "reference": ref_desc,
            "reference_cmd": ref() if ref else None,
            "reference_s": statistics.median(ref_t) if ref_t else None,
            "reference_runs": ref_t,
        }
        res["ratio"] = res["oklog_s"] / res["reference_s"] if res["reference_s"] else None
        ratio = f", ratio {res['ratio']:.2f}" if res["ratio"] else ""
        ref_txt = f", {ref_desc} {res['reference_s']:.3f}s" if ref_t else ""
        log(f"query {name}: oklog {res['oklog_s']:.3f}s{ref_txt}{ratio}")
        return res

    def measure_cold(self, name: str, oklog: Callable[[], str], ref: Callable[[], str], ref_desc: str, ref_ok=(0,)) -> dict:
        """Like ``measure`` with the page cache dropped before every run (both sides)."""
        ok_t: list[float] = []
        ref_t: list[float] = []
        for _ in range(min(self.runs, 3)):
            drop_caches()
            ok_t.append(timed(oklog, self.timeout))
            drop_caches()
            ref_t.append(timed(ref, self.timeout, ref_ok))
        res = {
            "query": name + ", cold", "oklog_cmd": oklog(), "oklog_s": statistics.median(ok_t), "oklog_runs": ok_t,
            "reference": ref_desc + ", cold", "reference_cmd": ref(), "reference_s": statistics.median(ref_t),
            "reference_runs": ref_t, "cold": True,
        }
        res["ratio"] = res["oklog_s"] / res["reference_s"] if res["reference_s"] else None
        log(f"query {name}, cold: oklog {res['oklog_s']:.3f}s, {ref_desc} {res['reference_s']:.3f}s, ratio {res['ratio']:.2f}")
        return res

    def check(self, res: dict, oklog_args: list[str], grep_count: int, expected: int | None) -> None:
        got = output_lines(oklog_args, self.timeout)
        res["oklog_lines"] = got
        res["reference_lines"] = grep_count
        res["expected_lines"] = expected
        res["correct"] = got == grep_count and (expected is None or got == expected)
        if not res["correct"]:
            loud(
                f"MISMATCH {res['query']}: oklog returned {got} lines, reference counts {grep_count}"
                + (f", data set generation expects {expected}" if expected is not None else "")
            )

    def grep_count(self, flag: str, pattern: str, attempts: int = 3) -> int:
        for i in range(attempts):
            cmd = ["grep", "-h", "-c", flag, "--", pattern, *self.files()]
            p = subprocess.run(cmd, env=dict(os.environ, LC_ALL="C"), capture_output=True, timeout=self.timeout)
            if p.returncode in (0, 1):
                return sum(int(x) for x in p.stdout.split())
            if i == attempts - 1 or b"No such file" not in p.stderr:
                raise RuntimeError(p.stderr.decode(errors="replace"))
        return 0

    def run(self, ten: str) -> list[dict]:
        """Every query kind; one that fails is recorded with its error, the rest still run.

        Output goes into a pipe on both sides: GNU grep (even with -c) stops at
        the first match when its stdout is /dev/null, which would make the
        reference meaningless.
        """
        ds = self.ds
        out: list[dict] = []

        def grep(flag: str, pattern: str, sink: str, extra: tuple[str, ...] = ()) -> Callable[[], str]:
            return lambda: sh(["grep", *extra, flag, "--", pattern, *self.files()], sink)

        def ok(*args: str, from_: str | None = None, sink: str = "> /dev/null") -> Callable[[], str]:
            return lambda: sh(self.oklog_cmd(*args, from_=from_), sink)

        def literal(name: str, term: str) -> Callable[[], dict]:
            def row() -> dict:
                r = self.measure(name, ok("-q", term, sink=PIPE_SINK),
                                 grep("-F", term, PIPE_SINK, ("-c",)), "grep -F -c | cat", ref_ok=(0, 1))
                self.check(r, self.oklog_cmd("-q", term), self.grep_count("-F", term), ds.expected_count(term))
                return r
            return row

        def literal_api(name: str, term: str) -> Callable[[], dict]:
            path = f"/store/query?q={quote(term)}&format=lines&from={quote(self.from_)}"

            def run() -> str:
                if self.tls:
                    return sh(["curl", "-sf", "--cacert", self.tls.ca, f"https://{self.node.api}{path}"], PIPE_SINK)
                return sh(["curl", "-sf", f"http://{self.node.api}{path}"], PIPE_SINK)

            return lambda: self.measure(name, run, grep("-F", term, PIPE_SINK, ("-c",)), "grep -F -c | cat",
                                        ref_ok=(0, 1))

        def ten_pct() -> dict:
            r = self.measure("10% term", ok("-q", ten, sink=PIPE_SINK), grep("-F", ten, PIPE_SINK, ("-h",)),
                             "grep -F | cat", ref_ok=(0, 1))
            self.check(r, self.oklog_cmd("-q", ten), self.grep_count("-F", ten), ds.expected_count(ten))
            return r

        def regex() -> dict:
            r = self.measure("regex", ok("-q", REGEX, "-regex", sink=PIPE_SINK),
                             grep("-E", REGEX, PIPE_SINK, ("-h",)), "grep -E | cat", ref_ok=(0, 1))
            self.check(r, self.oklog_cmd("-q", REGEX, "-regex"), self.grep_count("-E", REGEX),
                       ds.expected_count(REGEX, regex=True))
            return r

        def match_all() -> dict:
            r = self.measure("match-all", ok(sink=PIPE_SINK), lambda: sh(["cat", *self.files()], PIPE_SINK),
                             "cat | cat")
            self.check(r, self.oklog_cmd(), store_lines(self.node.store_path), ds.nlines)
            return r

        def last_pct() -> dict:
            files = self.segments()
            first = ulid_ms(min(os.path.basename(p)[:26] for p in files))
            last = ulid_ms(max(os.path.basename(p)[27:53] for p in files))
            lo_ms = first + int((last - first) * 0.99)
            lo_time = rfc3339(lo_ms / 1000)
            r = self.measure("10% term, last 1% of time", ok("-q", ten, from_=lo_time, sink=PIPE_SINK), None,
                             "same, full range")
            full = next((q for q in out if q["query"] == "10% term" and "error" not in q), None)
            if full:
                r["reference_s"] = full["oklog_s"]
                r["ratio"] = r["oklog_s"] / full["oklog_s"]
                log(f"  last-1% / full-range ratio {r['ratio']:.3f}")
            r["window_ms"] = [lo_ms, last]
            r["from"] = lo_time
            self.check(r, self.oklog_cmd("-q", ten, from_=lo_time),
                       window_count(files, ms_to_ulid_floor(lo_ms), ten.encode()), None)
            if full and full.get("oklog_lines"):
                r["window_fraction"] = r["oklog_lines"] / full["oklog_lines"]
                log(f"  the window holds {r['window_fraction']:.2%} of the full range's matches")
            return r

        def last_pct_api() -> dict:
            """The same window against the full range through the HTTP API: the
            node's work without the CLI's process start-up (~50 ms), which is
            the same for both and dominates a sub-second full-range query."""
            win = next(q for q in out if q["query"] == "10% term, last 1% of time" and "error" not in q)
            base = f"/store/query?q={quote(ten)}&format=lines&from="
            window, full = base + quote(win["from"]), base + quote(self.from_)

            def fetch(path: str) -> Callable[[], float]:
                def run() -> float:
                    t0 = time.perf_counter()
                    status, _, _ = self.node.request("GET", path, timeout=self.timeout)
                    if status != 200:
                        raise RuntimeError(f"GET {path}: {status}")
                    return time.perf_counter() - t0
                return run

            w_run, f_run = fetch(window), fetch(full)
            w_run(), f_run()  # warm
            w_t, f_t = [], []
            for _ in range(self.runs):
                w_t.append(w_run())
                f_t.append(f_run())
            _, wh, _ = self.node.request("HEAD", window)
            _, fh, _ = self.node.request("HEAD", full)
            r = {
                "query": "10% term, last 1%, HTTP API", "oklog_s": statistics.median(w_t), "oklog_runs": w_t,
                "reference": "same, full range, HTTP API", "reference_s": statistics.median(f_t),
                "reference_runs": f_t, "oklog_cmd": f"GET {window}", "reference_cmd": f"GET {full}",
                "bytes_scanned": int(wh.get("x-oklog-max-data-set-size", 0)),
                "bytes_scanned_full": int(fh.get("x-oklog-max-data-set-size", 0)),
            }
            r["ratio"] = r["oklog_s"] / r["reference_s"]
            r["bytes_ratio"] = r["bytes_scanned"] / max(1, r["bytes_scanned_full"])
            log(f"query {r['query']}: {r['oklog_s']:.3f}s vs full {r['reference_s']:.3f}s, ratio {r['ratio']:.3f}; "
                f"bytes scanned {r['bytes_scanned']:,} vs {r['bytes_scanned_full']:,} ({r['bytes_ratio']:.3f})")
            return r

        def stats() -> dict:
            # against the CLI's bare start-up (oklog query -h)
            return self.measure("-stats", ok("-stats"), lambda: sh([self.oklog, "query", "-h"], "> /dev/null"),
                                "oklog query -h (start-up)")

        kinds: list[tuple[str, str, Callable[[], dict]]] = [
            ("rare term", RARE_TERM, literal("rare term", RARE_TERM)),
            ("rare term, HTTP API", RARE_TERM, literal_api("rare term, HTTP API", RARE_TERM)),
            ("needle", NEEDLE_TERM, literal("needle", NEEDLE_TERM)),
            ("needle, HTTP API", NEEDLE_TERM, literal_api("needle, HTTP API", NEEDLE_TERM)),
            ("10% term", ten, ten_pct),
            ("regex", REGEX, regex),
            ("match-all", "", match_all),
            ("10% term, last 1% of time", ten, last_pct),
            ("10% term, last 1%, HTTP API", ten, last_pct_api),
            ("-stats", "", stats),
        ]

        kinds += answer_kinds(self, ten, ok, grep)
        if can_drop_caches():
            kinds += [
                ("rare term, cold", RARE_TERM, lambda: self.measure_cold(
                    "rare term", ok("-q", RARE_TERM, sink=PIPE_SINK), grep("-F", RARE_TERM, PIPE_SINK, ("-c",)),
                    "grep -F -c | cat", ref_ok=(0, 1))),
                ("needle, cold", NEEDLE_TERM, lambda: self.measure_cold(
                    "needle", ok("-q", NEEDLE_TERM, sink=PIPE_SINK), grep("-F", NEEDLE_TERM, PIPE_SINK, ("-c",)),
                    "grep -F -c | cat", ref_ok=(0, 1))),
                ("10% term, cold", ten, lambda: self.measure_cold(
                    "10% term", ok("-q", ten, sink=PIPE_SINK), grep("-F", ten, PIPE_SINK, ("-h",)),
                    "grep -F | cat", ref_ok=(0, 1))),
                ("regex, cold", REGEX, lambda: self.measure_cold(
                    "regex", ok("-q", REGEX, "-regex", sink=PIPE_SINK), grep("-E", REGEX, PIPE_SINK, ("-h",)),
                    "grep -E | cat", ref_ok=(0, 1))),
                ("match-all, cold", "", lambda: self.measure_cold(
                    "match-all", ok(sink=PIPE_SINK), lambda: sh(["cat", *self.files()], PIPE_SINK), "cat | cat")),
            ]
        else:
            log("cold-cache rows skipped: dropping the page cache needs root (/proc/sys/vm/drop_caches)")
        for name, pattern, fn in kinds:
            try:
                r = fn()
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError, StopIteration) as e:
                loud(f"query {name} FAILED: {e}")
                r = {"query": name, "error": str(e), "oklog_s": None, "reference_s": None, "ratio": None,
                     "reference": "-"}
            r["pattern"] = pattern
            out.append(r)
            if not self.node.alive():
                loud(f"node died during query {name}; see {self.node.dir}/node.log")
                break
        return out


def _printed(cmd: list[str], timeout: float) -> bytes:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=True).stdout


def answer_kinds(self: QueryBench, ten: str, ok, grep) -> list:
    """Rows for counts, histograms, -where and -i (issue 16), each against grep
    over the same lines, each checked for the same answer."""
    where_re = "(^|[[:space:],;])uid=0([[:space:],;]|$)"

    def agree(r: dict, got: int, want: int) -> dict:
        r["oklog_lines"], r["reference_lines"] = got, want
        r["correct"] = got == want
        if not r["correct"]:
            loud(f"MISMATCH {r['query']}: oklog counts {got}, grep {want}")
        return r

    def count() -> dict:
        r = self.measure("-count, 10% term", ok("-q", ten, "-count", sink=PIPE_SINK),
                         grep("-F", ten, PIPE_SINK, ("-c", "-h")), "grep -F -c | cat", ref_ok=(0, 1))
        return agree(r, int(_printed(self.oklog_cmd("-q", ten, "-count"), self.timeout)), self.grep_count("-F", ten))

    def hist() -> dict:
        r = self.measure("-hist 1m, everything", ok("-hist", "1m", sink=PIPE_SINK),
                         grep("-c", "", PIPE_SINK, ("-h",)), "grep -c '' | cat", ref_ok=(0, 1))
        rows = _printed(self.oklog_cmd("-hist", "1m"), self.timeout).split()
        return agree(r, sum(int(x) for x in rows[1::2]), self.grep_count("-c", ""))

    def where() -> dict:
        r = self.measure("-where uid=0 (logfmt field)", ok("-where", "uid=0", sink=PIPE_SINK),
                         grep("-E", where_re, PIPE_SINK, ("-h",)), "grep -E | cat", ref_ok=(0, 1))
        self.check(r, self.oklog_cmd("-where", "uid=0"), self.grep_count("-E", where_re), None)
        return r

    def icase() -> dict:
        term = ten.swapcase()
        r = self.measure("-i, 10% term", ok("-q", term, "-i", sink=PIPE_SINK),
                         grep("-iF", term, PIPE_SINK, ("-h",)), "grep -iF | cat", ref_ok=(0, 1))
        self.check(r, self.oklog_cmd("-q", term, "-i"), self.grep_count("-iF", term), None)
        return r

    return [("-count, 10% term", ten, count), ("-hist 1m", "", hist), ("-where uid=0", "uid=0", where),
            ("-i, 10% term", ten, icase)]


# -- report -------------------------------------------------------------------------------


def report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if not con.is_terminal:
        con = Console(width=140)
    d = result["dataset"]
    con.print(
        f"[bold]oklog benchmark[/bold]  data set {human(d['bytes'])}, {d['lines']:,} lines, seed {d['seed']}; "
        f"10% term {d['ten_term']!r} ({d['ten_fraction']:.1%}); {result['runs']} runs, median; "
        f"{result['host']['cpus']} CPUs"
    )
    t = Table(title="Ingest (first byte → all records queryable)")
    for col in ("mode", "MiB/s", "records/s", "send s", "last byte→queryable s", "total s", "peak RSS MiB",
                "settle s", "store/raw", "store/zstd-3", "node CPU s", "ok"):
        t.add_column(col, justify="right" if col not in ("mode", "ok") else "left")
    for r in result["ingest"]:
        ok = r["complete"] and r["store_lines"] == d["lines"] and not r["errors"]
        t.add_row(
            r["mode"], f"{r['mb_per_s']:.1f}", f"{r['records_per_s']:,.0f}", f"{r['send_s']:.2f}",
            f"{r['drain_s']:.2f}", f"{r['total_s']:.2f}", f"{r['peak_rss_mib']:.0f}",
            f"{r['compaction_settle_s']:.1f}" if r["compaction_settled"] else "[red]no[/red]",
            f"{r.get('store_ratio_raw', 0):.3f}", f"{r.get('store_ratio_zstd3', 0):.3f}", f"{r.get('node_cpu_s', 0):.1f}",
            "yes" if ok else "[red]NO[/red]",
        )
    con.print(t)
    t = Table(title="Queries (oklog vs grep/cat over a raw copy of the lines; cold rows: page cache dropped)")
    for col in ("query", "lines", "oklog s", "reference", "ref s", "ratio", "correct"):
        t.add_column(col, justify="right" if col in ("lines", "oklog s", "ref s", "ratio") else "left")
    for r in result["queries"]:
        correct = r.get("correct")
        if "error" in r:
            t.add_row(r["query"], "-", "[red]ERROR[/red]", r["reference"], "-", "-", "[red]ERROR[/red]")
            continue
        t.add_row(
            r["query"], f"{r['oklog_lines']:,}" if "oklog_lines" in r else "-", f"{r['oklog_s']:.3f}",
            r["reference"], f"{r['reference_s']:.3f}" if r["reference_s"] else "-",
            f"{r['ratio']:.2f}" if r["ratio"] else "-",
            "-" if correct is None else ("yes" if correct else "[red]MISMATCH[/red]"),
        )
    con.print(t)
    for r in result["queries"]:
        if "error" in r:
            con.print(f"[red]{r['query']} failed:[/red] {r['error'].strip().splitlines()[-1]}", markup=True)
    for e in result.get("errors", []):
        con.print(f"[red]error:[/red] {e}")
    if result.get("node_peak_rss_mib_queries") is not None:
        con.print(f"query node peak RSS during queries: {result['node_peak_rss_mib_queries']:.0f} MiB")
    if "tls_pass" in result:
        tls_comparison(con, result)


def tls_comparison(con, result: dict) -> None:
    """The TLS pass's figures beside the plain pass's (``--tls both``)."""
    from rich.table import Table

    tp = result["tls_pass"]
    t = Table(title="TLS on vs off (same data set, fresh nodes; ratio = TLS / plain)")
    for col in ("measurement", "plain", "TLS", "ratio"):
        t.add_column(col, justify="left" if col == "measurement" else "right")
    plain_ing = {r["mode"]: r for r in result["ingest"]}
    for r in tp["ingest"]:
        p = plain_ing.get(r["mode"])
        if p:
            t.add_row(f"ingest {r['mode']} MiB/s", f"{p['mb_per_s']:.1f}", f"{r['mb_per_s']:.1f}",
                      f"{r['mb_per_s'] / p['mb_per_s']:.2f}")
            t.add_row(f"ingest {r['mode']} node CPU s", f"{p.get('node_cpu_s', 0):.1f}", f"{r.get('node_cpu_s', 0):.1f}",
                      f"{r.get('node_cpu_s', 0) / p['node_cpu_s']:.2f}" if p.get("node_cpu_s") else "-")
    plain_q = {r["query"]: r for r in result["queries"] if "error" not in r}
    for r in tp["queries"]:
        p = plain_q.get(r["query"])
        if p and "error" not in r and p["oklog_s"]:
            t.add_row(f"query {r['query']} s", f"{p['oklog_s']:.3f}", f"{r['oklog_s']:.3f}",
                      f"{r['oklog_s'] / p['oklog_s']:.2f}")
        elif "error" in r:
            t.add_row(f"query {r['query']} s", "-", "[red]ERROR[/red]", "-")
    con.print(t)
    for r in tp["queries"]:
        if "error" in r:
            con.print(f"[red]TLS {r['query']} failed:[/red] {r['error'].strip().splitlines()[-1]}", markup=True)
        elif r.get("correct") is False:
            con.print(f"[red]TLS {r['query']}: MISMATCH[/red]", markup=True)
    for e in tp.get("errors", []):
        con.print(f"[red]TLS error:[/red] {e}")


# -- main ---------------------------------------------------------------------------------


def git_state() -> dict:
    """The commit measured (the working tree may hold uncommitted changes too)."""
    def git(*args: str) -> str:
        try:
            p = subprocess.run(["git", *args], capture_output=True, timeout=10, check=False)
            return p.stdout.decode().strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GB", help="data set size (100MB, 1GB, ...; default 1GB)")
    p.add_argument("--seed", type=int, default=1, help="sampling seed (default 1)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per query (median; default 5)")
    p.add_argument("--quick", action="store_true", help="alias for --size 50MB --runs 3")
    p.add_argument("--workdir", default="bench-data", help="data set and node directories (default bench-data/)")
    p.add_argument("--json", default=None, help="result JSON path (default WORKDIR/results.json)")
    p.add_argument("--modes", default=",".join(MODES),
                   help="ingest measurements, comma separated from tcp1,tcp8,forward,durable,bulk (or tcpN); "
                        "the first one's node answers the queries (default tcp1,tcp8,forward)")
    p.add_argument("--no-queries", action="store_true", help="ingest measurements only")
    p.add_argument("--ingest-timeout", type=float, default=None,
                   help="seconds per ingest measurement (default 120 + 2 per MiB)")
    p.add_argument("--query-timeout", type=float, default=600.0, help="seconds per query command (default 600)")
    p.add_argument("--oklog", default=os.path.join(os.path.dirname(sys.executable), "oklog"),
                   help="oklog executable (default: the one next to this Python)")
    p.add_argument("--keep", action="store_true", help="keep node directories afterwards")
    p.add_argument("--tls", default="off", choices=("off", "on", "both"),
                   help="TLS on every node port (a throwaway CA and certificate; clients verify it): on = TLS only, "
                        "both = every measurement without and then with TLS, side by side (default off)")
    p.add_argument("--node-args", default="", help="extra `oklog run` flags for the nodes, e.g. \"-store.compression-level 1\"")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.size, ns.runs = "50MB", 3
    try:
        ns.size_bytes = parse_size(ns.size)
    except ValueError as e:
        p.error(str(e))
    ns.mode_list = [m.strip() for m in ns.modes.split(",") if m.strip()]
    for m in ns.mode_list:
        if m not in FORWARD_MODES and not (m.startswith("tcp") and m[3:].isdigit() and int(m[3:]) > 0):
            p.error(f"unknown mode {m!r}")
    if not ns.mode_list:
        p.error("no ingest mode")
    if ns.runs < 1:
        p.error("--runs must be at least 1")
    return ns


def run_modes(ns: argparse.Namespace, ds: DataSet, ten: str, timeout: float, result: dict,
              tls: TLSFiles | None) -> bool:
    """Every ingest mode on a fresh node (the first one's node answers the queries),
    with TLS on every port when ``tls``; rows go into ``result``. True if one failed."""
    failed = False
    suffix = "-tls" if tls else ""
    extra = tuple(shlex.split(ns.node_args)) + (tls.node_args() if tls else ())
    for i, mode in enumerate(ns.mode_list):
        node = Node(ns.oklog, ns.workdir, f"node-{mode}{suffix}", log=log, extra_args=extra,
                    ssl_context=tls.context() if tls else None)
        try:
            node.start()
            result["ingest"].append(ingest(node, ds, mode, ns.oklog, timeout, tls))
            ing = result["ingest"][-1]
            ing["store_ratio_zstd3"] = ing["store_file_bytes"] / result["zstd3"]["bytes"]
            log(f"{mode}: store {ing['store_file_bytes']:,} bytes on disk: {1 / ing['store_ratio_raw']:.2f}x smaller "
                f"than raw, {ing['store_ratio_zstd3']:.3f}x zstd -3; node CPU {ing['node_cpu_s']:.1f} s "
                f"(ingest, compression, compaction)")
            if i == 0 and not ns.no_queries:
                node.reset_peak()
                qb = QueryBench(node, ds, ns.oklog, ns.runs, ns.query_timeout, tls)
                result["queries"] = qb.run(ten)
                result["node_peak_rss_mib_queries"] = node.peak_rss_mib()
                result["node_vmhwm_mib"] = node.hwm_mib()
            # A benchmark run is also a soak test: nothing may have been quarantined.
            status, _, body = node.request("GET", "/cluster/state")
            quarantined = json.loads(body)["pipeline"]["store"]["quarantined"] if status == 200 else ["(no state)"]
            result["ingest"][-1]["quarantined"] = quarantined
            if status == 200:
                comp = json.loads(body)["pipeline"].get("compaction", {})
                result["ingest"][-1]["compaction"] = {k: v for k, v in comp.items() if isinstance(v, int)}
                log(f"{mode}: compaction " + ", ".join(f"{k} {v}" for k, v in result["ingest"][-1]["compaction"].items()))
            if quarantined:
                loud(f"{mode}: the node quarantined segments: {quarantined}")
                failed = True
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            loud(f"{mode}: {e}")
            result.setdefault("errors", []).append(f"{mode}: {e}")
            failed = True
        finally:
            node.stop()
            if not ns.keep:
                node.cleanup()
    return failed


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if not os.access(ns.oklog, os.X_OK):
        print(f"bench: {ns.oklog} is not executable (make install?)", file=sys.stderr)
        return 2
    ds = generate(ns.workdir, ns.size_bytes, ns.seed, log=log)
    ten, frac, fracs = ds.pick_ten_percent()
    log("candidate fractions: " + ", ".join(f"{k} {v:.1%}" for k, v in sorted(fracs.items(), key=lambda kv: kv[1])))
    log(f"10% term: {ten!r} matches {frac:.2%} of lines; rare term {RARE_TERM!r}: "
        f"{ds.expected_count(RARE_TERM)} lines; needle {NEEDLE_TERM!r}: {ds.expected_count(NEEDLE_TERM)} lines; "
        f"regex {REGEX!r}: {ds.expected_count(REGEX, True) / ds.nlines:.2%}")
    assert header_safe(ten) and header_safe(RARE_TERM) and header_safe(NEEDLE_TERM)
    timeout = ns.ingest_timeout or 120 + 2 * ds.nbytes / MiB
    result: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "platform": sys.platform},
        "git": git_state(),
        "runs": ns.runs,
        "dataset": {
            "path": ds.path, "seed": ds.seed, "size": ds.size, "bytes": ds.nbytes, "lines": ds.nlines,
            "store_bytes": ds.store_bytes, "ten_term": ten, "ten_fraction": frac, "candidates": fracs,
            "rare_term": RARE_TERM, "rare_lines": ds.expected_count(RARE_TERM), "regex": REGEX,
            "needle_term": NEEDLE_TERM, "needle_lines": ds.expected_count(NEEDLE_TERM),
            "regex_fraction": ds.expected_count(REGEX, True) / ds.nlines,
        },
        "ingest": [],
        "queries": [],
    }
    failed = False
    result["zstd3"] = zstd3_reference(ds.path)
    log(f"zstd -3 of the data set: {result['zstd3']['bytes']:,} bytes ({ds.nbytes / result['zstd3']['bytes']:.2f}x), "
        f"{result['zstd3']['cpu_s']:.1f} CPU s")
    tls = tlsfiles.make(os.path.join(ns.workdir, "tls")) if ns.tls != "off" else None
    result["tls"] = ns.tls
    if ns.tls in ("off", "both"):
        failed |= run_modes(ns, ds, ten, timeout, result, None)
    if ns.tls == "on":
        failed |= run_modes(ns, ds, ten, timeout, result, tls)
    elif ns.tls == "both":
        tls_pass: dict = {"ingest": [], "queries": [], "zstd3": result["zstd3"]}
        failed |= run_modes(ns, ds, ten, timeout, tls_pass, tls)
        result["tls_pass"] = {k: v for k, v in tls_pass.items() if k != "zstd3"}
    json_path = ns.json or os.path.join(ns.workdir, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    report(result)
    print(f"results: {json_path}")
    passes = [result] + ([result["tls_pass"]] if "tls_pass" in result else [])
    bad = any(
        any(r.get("correct") is False or "error" in r for r in p["queries"])
        or any(not r["complete"] or r["store_lines"] != ds.nlines for r in p["ingest"])
        for p in passes
    )
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())
