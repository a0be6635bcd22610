import zlib

import pytest
from hypothesis import given, strategies as st

from gateway.errors import FrameError
from gateway.protocol.framing import MAX_ENCODED, Deframer, decode_frame, encode_frame
from gateway.protocol.numbers import MAX_MESSAGE


@given(st.binary(min_size=1, max_size=MAX_MESSAGE))
def test_round_trip(msg):
    frame = encode_frame(msg)
    assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]
    assert decode_frame(frame[:-1]) == msg


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20), st.integers(1, 64))
def test_deframer_any_chunking(msgs, chunk):
    stream = b"".join(encode_frame(m) for m in msgs)
    d = Deframer()
    out = []
    for i in range(0, len(stream), chunk):
        out += d.feed(stream[i:i + chunk])
    assert out == msgs


def test_bad_crc_is_reported_and_stream_recovers():
    good = encode_frame(b"hello")
    raw = bytearray(b"hello" + zlib.crc32(b"hello").to_bytes(4, "little"))
    raw[0] ^= 1
    from cobs import cobs
    bad = cobs.encode(bytes(raw)) + b"\x00"
    out = Deframer().feed(bad + good)
    assert isinstance(out[0], FrameError) and out[0].reason == "crc"
    assert out[1] == b"hello"


def test_oversize_dropped_without_buffering():
    d = Deframer()
    out = d.feed(b"\x01" * (MAX_ENCODED + 10))
    assert len(out) == 1 and out[0].reason == "oversize"
    assert len(d._buf) == 0
    out = d.feed(b"\x01" * 5000 + b"\x00" + encode_frame(b"ok"))
    assert out == [b"ok"]


def test_oversize_message_refused_by_encoder():
    with pytest.raises(ValueError):
        encode_frame(b"x" * (MAX_MESSAGE + 1))


def test_garbage_never_raises():
    import random
    rng = random.Random(7)
    d = Deframer()
    for _ in range(200):
        for item in d.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))):
            assert isinstance(item, (bytes, FrameError))
