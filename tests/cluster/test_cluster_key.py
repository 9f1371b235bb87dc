"""The cluster key: keyring files, sealed datagrams, and real nodes that keep out a
process without the key and rotate keys without a restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
from conftest import OKLOG, ROOT, free_port, wait_for
from support import alive, cluster_state, key_file, keyed_nodes, node_id

from oklog.cluster.keyring import OVERHEAD, KeyFileError, Keyring, SealError, new_key, parse_keys

FAST = ["-ingest.segment-flush-age", "0.3s", "-store.segment-target-age", "0.3s",
        "-cluster.suspicion-timeout", "2s"]


# --------------------------------------------------------------------------- keyring


def test_keygen_writes_a_private_key_file_and_never_overwrites(tmp_path):
    path = tmp_path / "cluster.key"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(OKLOG + ["keygen", "-o", str(path)], capture_output=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    assert len(Keyring.load(path).keys[0]) == 32
    again = subprocess.run(OKLOG + ["keygen", "-o", str(path)], capture_output=True, env=env, timeout=30)
    assert again.returncode != 0 and b"exists" in again.stderr
    assert path.read_text() == first
    line = subprocess.run(OKLOG + ["keygen"], capture_output=True, env=env, timeout=30).stdout.decode()
    assert len(parse_keys(line)) == 1


@pytest.mark.parametrize(
    "text, why",
    [("", "no key"), ("# only a comment\n\n", "no key"), ("not base64!\n", "not base64"),
     ("AAAA\n", "16, 24 or 32 bytes")],
)
def test_bad_key_files_say_why(text, why):
    with pytest.raises(KeyFileError, match=why):
        parse_keys(text)


def test_seal_open_and_what_does_not_open():
    k1, k2 = (parse_keys(new_key())[0] for _ in range(2))
    one, other, both = Keyring([k1]), Keyring([k2]), Keyring([k2, k1])
    sealed = one.seal(b'{"v":1}')
    assert len(sealed) == len(b'{"v":1}') + OVERHEAD
    assert one.open(sealed) == b'{"v":1}' and both.open(sealed) == b'{"v":1}'
    assert one.seal(b"x") != one.seal(b"x")  # fresh nonce each time
    for bad in (b'{"v":1}', b"", sealed[:-1], sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:],
                b"\x02" + sealed[1:]):
        with pytest.raises(SealError):
            one.open(bad)
    with pytest.raises(SealError):
        other.open(sealed)


def test_reload_picks_up_a_changed_file_and_keeps_keys_on_a_bad_one(tmp_path):
    path = tmp_path / "k"
    a, b = new_key(), new_key()
    path.write_text(a + "\n")
    ring = Keyring.load(path)
    assert ring.reload() is False
    path.write_text(a + "\n" + b + "\n# rotating\n")
    assert ring.reload() is True and len(ring.keys) == 2
    path.write_text("garbage\n")
    with pytest.raises(KeyFileError):
        ring.reload()
    assert len(ring.keys) == 2 and ring.open(ring.seal(b"x")) == b"x"


# --------------------------------------------------------------------------- real nodes


def test_a_node_without_the_key_can_neither_join_nor_be_heard(node_factory, tmp_path):
    k = key_file(tmp_path / "cluster.key", new_key())
    wrong = key_file(tmp_path / "other.key", new_key())
    a = node_factory("a", FAST + ["-cluster.key", str(k)]).start()
    b = node_factory("b", FAST + ["-cluster.key", str(k), "-peer", node_id(a)]).start()
    wait_for(lambda: alive(a) == alive(b) == {node_id(a), node_id(b)}, 20, what="keyed pair")
    outsiders = [
        node_factory("plain", FAST + ["-insecure", "-peer", node_id(a), "-peer", node_id(b)]).start(),
        node_factory("wrong", FAST + ["-cluster.key", str(wrong), "-peer", node_id(a)]).start(),
    ]
    # A forged plain-text join of a fake store member, the attack of issue 20.
    fake = ["fake-store", "store", "127.0.0.1", free_port(), "alive", 0,
            {"api_addr": f"127.0.0.1:{free_port()}"}]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(json.dumps({"v": 1, "t": "join", "s": "fake-store", "i": 0, "u": [fake]}).encode(),
                 ("127.0.0.1", a.ports["cluster"]))
    wait_for(lambda: cluster_state(a)["pipeline"]["gossip"]["unauthenticated"] >= 3, 15, what="refusals counted")
    time.sleep(3.0)  # several join retries and probe rounds
    for n in (a, b):
        assert {m["id"] for m in cluster_state(n)["members"]} == {node_id(a), node_id(b)}
    for o in outsiders:
        assert {m["id"] for m in cluster_state(o)["members"]} == {node_id(o)}
        assert o.proc.poll() is None
    # The keyed pair works as a cluster.
    a.send_fast(b"sealed gossip record\n")
    wait_for(lambda: b"sealed gossip record" in b.query(q="sealed gossip record").content, 20, what="record")


def test_key_rotation_without_restarts_keeps_the_cluster_whole(node_factory, tmp_path):
    old, new = new_key(), new_key()
    nodes, files = keyed_nodes(node_factory, tmp_path, old, FAST)
    seen_bad: set[str] = set()

    def whole() -> bool:
        for n in nodes:
            for m in cluster_state(n)["members"]:
                if m["state"] != "alive":
                    seen_bad.add(f"{m['id']} {m['state']} at {node_id(n)}")
        return not seen_bad

    # One node at a time, as an operator would: add, promote, retire.
    for step in ([old, new], [new, old], [new]):
        for f in files:
            key_file(f, *step)
            time.sleep(0.7)  # nodes move out of step with each other for a while
            assert whole(), seen_bad
        deadline = time.monotonic() + 3.0  # RELOAD_INTERVAL plus a probe round or two
        while time.monotonic() < deadline:
            assert whole(), seen_bad
            time.sleep(0.2)
    assert all(cluster_state(n)["pipeline"]["gossip"]["unauthenticated"] == 0 for n in nodes)
    # The old key no longer gets in: a node holding only it is refused.
    stale = key_file(tmp_path / "stale.key", old)
    o = node_factory("stale", FAST + ["-cluster.key", str(stale), "-peer", node_id(nodes[0])]).start()
    wait_for(lambda: cluster_state(nodes[0])["pipeline"]["gossip"]["unauthenticated"] >= 1, 15, what="old key refused")
    assert {m["id"] for m in cluster_state(o)["members"]} == {node_id(o)}
    assert whole(), seen_bad
