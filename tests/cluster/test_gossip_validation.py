"""Every field of a gossip datagram is checked at decode; bad rows are dropped one by one."""

from __future__ import annotations

import json

import pytest

from oklog.cluster.codec import (
    MAX_META_KEYS,
    CodecError,
    decode,
    decode_lenient,
    encode,
)
from oklog.cluster.swim import ALIVE, MAX_INCARNATION, Broadcast, Update

GOOD_META = {
    "api_addr": "127.0.0.1:7650",
    "fast_addr": "[::1]:7651",
    "durable_addr": "node-2.example:7652",
    "bulk_addr": None,
    "started": 1_764_000_000.25,
    "connections": 3,
    "records_in": 10,
    "store_bytes": 0,
    "store_segments": 1,
    "future_key": "x",
    "flag": False,
    "ratio": -0.5,
}


def row(**kw) -> list:
    r = {
        "id": "n1",
        "role": "store",
        "host": "127.0.0.1",
        "port": 7659,
        "state": "alive",
        "inc": 0,
        "meta": dict(GOOD_META),
    } | kw
    return [r["id"], r["role"], r["host"], r["port"], r["state"], r["inc"], r["meta"]]


def datagram(*rows, **head) -> bytes:
    obj = {"v": 1, "t": "bcast", "s": "n0", "i": 0, "u": list(rows)} | head
    return json.dumps(obj).encode()


def meta_with(**kw) -> dict:
    return GOOD_META | kw


def test_good_row_round_trips_with_meta_version():
    u = Update("n1", "store", ("127.0.0.1", 7659), ALIVE, 5, GOOD_META, 42)
    got = decode(encode(Broadcast("n0", 0, (u,))))
    assert got.updates == (u,)
    assert decode(datagram(row())).updates[0].meta == GOOD_META


BAD_ROWS = {
    "api_addr list": row(meta=meta_with(api_addr=["127.0.0.1:30498"])),
    "api_addr no port": row(meta=meta_with(api_addr="127.0.0.1")),
    "api_addr port 0": row(meta=meta_with(api_addr="127.0.0.1:0")),
    "api_addr port big": row(meta=meta_with(api_addr="127.0.0.1:65536")),
    "api_addr path": row(meta=meta_with(api_addr="127.0.0.1:1/x")),
    "api_addr crlf": row(meta=meta_with(api_addr="a\r\nb:1")),
    "api_addr bad v6": row(meta=meta_with(api_addr="[zz]:1")),
    "api_addr int": row(meta=meta_with(api_addr=7650)),
    "started str": row(meta=meta_with(started="x")),
    "started negative": row(meta=meta_with(started=-1)),
    "started bool": row(meta=meta_with(started=True)),
    "started huge": row(meta=meta_with(started=1e300)),
    "counter negative": row(meta=meta_with(records_in=-1)),
    "counter float": row(meta=meta_with(connections=1.5)),
    "counter over 2^63": row(meta=meta_with(store_bytes=2**63)),
    "unknown nested": row(meta=meta_with(extra={"a": 1})),
    "unknown list": row(meta=meta_with(extra=[1])),
    "unknown long str": row(meta=meta_with(extra="x" * 257)),
    "unknown control chars": row(meta=meta_with(extra="a\x00b")),
    "key charset": row(meta=meta_with(**{"bad key": 1})),
    "key too long": row(meta=meta_with(**{"k" * 65: 1})),
    "too many keys": row(meta={f"k{i}": i for i in range(MAX_META_KEYS + 1)}),
    "meta not object": row(meta=[]),
    "meta version negative": row(meta=meta_with(_mv=-1)),
    "meta version str": row(meta=meta_with(_mv="1")),
    "id empty": row(id=""),
    "id space": row(id="a b"),
    "id newline": row(id="a\nb"),
    "id too long": row(id="x" * 257),
    "id not str": row(id=1),
    "role": row(role="admin"),
    "state": row(state="zombie"),
    "host empty": row(host=""),
    "host junk": row(host="a/b"),
    "host a name": row(host="node-2.example"),
    "host not str": row(host=["127.0.0.1"]),
    "port 0": row(port=0),
    "port str": row(port="7659"),
    "port float": row(port=7659.0),
    "inc negative": row(inc=-1),
    "inc float": row(inc=1.0),
    "inc bool": row(inc=True),
    "inc above max": row(inc=MAX_INCARNATION + 1),
    "inc 2^63": row(inc=2**63),
    "short row": row()[:6],
    "row not list": {"id": "n1"},
}


@pytest.mark.parametrize("bad", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_row_is_dropped_alone(bad):
    data = datagram(row(id="good1"), bad, row(id="good2"))
    with pytest.raises(CodecError):
        decode(data)
    msg, dropped = decode_lenient(data)
    assert [u.id for u in msg.updates] == ["good1", "good2"]
    assert len(dropped) == 1


@pytest.mark.parametrize(
    "text",
    [
        b'{"v":1,"t":"bcast","s":"n0","i":0,"u":[["n1","store","h",1,"alive",0,{"x":NaN}]]}',
        b'{"v":1,"t":"bcast","s":"n0","i":0,"u":[["n1","store","h",1,"alive",0,{"x":Infinity}]]}',
        b'{"v":1,"t":"bcast","s":"n0","i":0,"u":[["n1","store","h",1,"alive",0,{"x":-Infinity}]]}',
        b'{"v":1,"t":"bcast","s":"n0","i":0,"u":[["n1","store","h",1,"alive",0,{"x":1e999}]]}',
        b'{"v":1,"t":"bcast","s":"n0","i":0,"u":[["n1","store","h",1,"alive",0,{"started":1e999}]]}',
    ],
)
def test_nan_and_infinity_are_refused(text):
    with pytest.raises(CodecError):
        decode(text)


@pytest.mark.parametrize(
    "head",
    [
        {"v": True},
        {"v": 1.0},
        {"s": "a b"},
        {"s": ["n0"]},
        {"i": 2**63},
        {"i": MAX_INCARNATION + 1},
        {"i": -1},
        {"t": ["bcast"]},
        {"t": "ping", "q": 1, "g": "x\ny"},
        {"t": "ping", "q": -1, "g": "n1"},
        {"t": "pingreq", "q": 1, "g": "n1", "a": ["127.0.0.1", 0]},
        {"t": "pingreq", "q": 1, "g": "n1", "a": ["", 1]},
        {"u": [row()] * 257},
    ],
)
def test_bad_envelope_refuses_the_datagram(head):
    with pytest.raises(CodecError):
        decode_lenient(datagram(row(), **head))


def test_encode_refuses_nan_in_own_meta():
    u = Update("n1", "store", ("127.0.0.1", 1), ALIVE, 0, {"x": float("nan")})
    with pytest.raises(CodecError):
        encode(Broadcast("n0", 0, (u,)))
