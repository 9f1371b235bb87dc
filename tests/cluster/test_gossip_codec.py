"""Gossip wire format: round trips, the datagram size cap, malformed input."""

from __future__ import annotations

import pytest

from oklog.cluster.codec import MAX_DATAGRAM, CodecError, decode, encode
from oklog.cluster.swim import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Ack,
    Broadcast,
    Join,
    Message,
    Ping,
    PingReq,
    Sync,
    Update,
)

UPS = (
    Update("a", "ingest", ("10.0.0.1", 7659), ALIVE, 3, {"api_addr": "10.0.0.1:7650", "load": 1.5}),
    Update("b", "store", ("10.0.0.2", 7659), SUSPECT, 0, {}),
    Update("c", "ingeststore", ("10.0.0.3", 1), DEAD, 7, {"flag": True, "none": None}, 12),
    Update("ü-node", "store", ("::1", 65535), LEFT, 2**40, {"text": "ünïcode ✓"}),
)


@pytest.mark.parametrize(
    "msg",
    [
        Ping("a", 1, 5, "b", UPS),
        Ping("a", 0, 0, "b"),
        Ack("b", 2, 5, UPS[:1]),
        PingReq("a", 1, 9, "c", ("10.0.0.3", 1), UPS),
        Join("d", 0, UPS[:1]),
        Sync("a", 4, UPS),
        Broadcast("a", 4, UPS[3:]),
    ],
)
def test_round_trip(msg: Message):
    assert decode(encode(msg)) == msg


def test_encode_drops_trailing_updates_to_fit():
    big = tuple(
        Update(f"m{i}", "store", ("10.0.0.1", 7659), ALIVE, i, {f"p{k}": "x" * 250 for k in range(4)})
        for i in range(200)
    )
    data = encode(Sync("a", 0, big))
    assert len(data) <= MAX_DATAGRAM
    got = decode(data)
    assert 40 < len(got.updates) < 200
    assert got.updates == big[: len(got.updates)]
    small = encode(Ping("a", 0, 1, "b", big), limit=1500)
    assert len(small) <= 1500 and len(decode(small).updates) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"null",
        b"[]",
        b'{"v": 1, "t": "ping", "s": "a", "i": 0}',  # no seq / target
        b'{"v": 1, "t": "nope", "s": "a", "i": 0}',
        b'{"v": 1, "t": "join", "s": "", "i": 0}',
        b'{"v": 1, "t": "join", "s": "a", "i": true}',
        b'{"v": 1, "t": "join", "s": "a", "i": 0, "u": {}}',
        b'{"v": 1, "t": "join", "s": "a", "i": 0, "u": [["a","x","h",1,"alive",0,{}]]}',
        b'{"v": 1, "t": "join", "s": "a", "i": 0, "u": [["a","store","h",1,"zombie",0,{}]]}',
        b'{"v": 1, "t": "join", "s": "a", "i": 0, "u": [["a","store","h",70000,"alive",0,{}]]}',
        b'{"v": 1, "t": "join", "s": "a", "i": 0, "u": [["a","store","h",1,"alive",0,[]]]}',
        b'{"v": 1, "t": "pingreq", "s": "a", "i": 0, "q": 1, "g": "b", "a": ["h"]}',
    ],
)
def test_malformed_is_codec_error(data: bytes):
    with pytest.raises(CodecError):
        decode(data)
