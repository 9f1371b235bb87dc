"""Command-line messages for people: defaults in help, plain errors, no reprs."""

import socket
import subprocess

import pytest
from conftest import OKLOG

REPRS = ("Traceback", "Error(", "b'", 'b"', "[Errno", "gaierror")


def run(args, input=b"", timeout=60):
    r = subprocess.run(OKLOG + args, input=input, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def refused_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def plain(err: str) -> None:
    for bad in REPRS:
        assert bad not in err, err


def test_run_help_shows_listen_addresses_and_paths_with_their_defaults():
    from oklog.cli.commands import run_parser

    ns = run_parser().parse_args([])
    _, out, _ = run(["run", "-h"], timeout=30)
    text = " ".join(out.split())  # argparse wraps lines
    for flag in ("api", "ingest_fast", "ingest_durable", "ingest_bulk", "cluster", "ingest_path", "store_path"):
        assert f"(default: {getattr(ns, flag)})" in text, flag
    assert "(default: 16MiB)" in text and "(default: 168h)" in text  # sizes and durations as typed


def test_run_names_the_listen_address_it_cannot_bind(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, _, err = run(["run", "-api", f"127.0.0.1:{port}", "-cluster", "127.0.0.1:0",
                            "-ingest.fast", "127.0.0.1:0", "-ingest.durable", "127.0.0.1:0",
                            "-ingest.bulk", "127.0.0.1:0", "-ingest.path", str(tmp_path / "i"),
                            "-store.path", str(tmp_path / "s")], timeout=60)
    assert code == 1
    assert f"oklog run: cannot listen on -api 127.0.0.1:{port}: address already in use" in err, err
    plain(err)


@pytest.mark.parametrize("cmd", ["repair", "rebalance"])
def test_maintenance_tools_say_plainly_when_the_node_is_unreachable(cmd):
    addr = refused_addr()
    code, out, err = run([cmd, "-store", addr, "-quiet"])
    assert code == 1 and not out
    assert err.strip() == f"oklog {cmd}: cannot read the cluster state from {addr}: connection refused"
    code, _, err = run([cmd, "-store", "no-such-host.invalid:7650", "-quiet"])
    assert code == 1 and "cannot resolve the host name" in err, err
    plain(err)
    code, _, err = run([cmd, "-store", "host:port", "-quiet"])
    assert code == 1 and err.strip() == f"oklog {cmd}: -store: bad port in address 'host:port'"


def test_repair_rejects_a_bad_time_in_words():
    code, _, err = run(["repair", "-store", refused_addr(), "-from", "yesterday", "-quiet"])
    assert code == 1
    assert "bad time 'yesterday'" in err and "5m" in err, err
    plain(err)


def test_forward_bad_address_and_unresolvable_name():
    code, _, err = run(["forward", "host:port"], input=b"x\n")
    assert code == 2 and err.strip() == "oklog forward: bad port in address 'host:port'"
    code, _, err = run(["forward", "-give-up", "1s", "no-such-host.invalid"], input=b"x\n")
    assert code == 1
    assert err.count("cannot resolve no-such-host.invalid") == 1, err  # once, not per retry
    assert "2 bytes, 1 line, not delivered" in err, err
    plain(err)
