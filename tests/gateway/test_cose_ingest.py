import secrets

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from gateway.errors import AuthError, CoseError, PayloadError, ReplayError
from gateway.runtime.ingest import Ingest, ReplayWindow, ack_message
from gateway.protocol import cose
from gateway.runtime.registry import Registry

KEY = bytes(range(32))


def pack(node="pump3", t=1_700_000_000, values=(21.5, 22.0)):
    recs = [{-2: f"{node}/", -3: t, 0: "temp", 2: values[0]}]
    recs += [{0: "temp", 6: i + 1, 2: v} for i, v in enumerate(values[1:])]
    return cbor2.dumps(recs)


@pytest.fixture
def ingest():
    reg = Registry()
    reg.add("pump3", KEY)
    return Ingest(reg)


def test_accepts_and_decodes(ingest):
    acc = ingest.check(cose.mac0(KEY, b"pump3", pack(), seq=7))
    assert (acc.node, acc.seq, acc.count) == ("pump3", 7, 2)
    sids, ts, vs, _ = ingest.parser.take()
    assert [(ingest.parser.names[s], t, v) for s, t, v in zip(sids, ts, vs)] == [
        ("pump3/temp", 1_700_000_000.0, 21.5), ("pump3/temp", 1_700_000_001.0, 22.0)]


def test_bad_mac(ingest):
    msg = bytearray(cose.mac0(KEY, b"pump3", pack(), seq=1))
    msg[-1] ^= 0xFF
    with pytest.raises(AuthError):
        ingest.check(bytes(msg))


def test_wrong_key_and_unknown_node(ingest):
    with pytest.raises(AuthError):
        ingest.check(cose.mac0(secrets.token_bytes(32), b"pump3", pack(), seq=1))
    with pytest.raises(AuthError, match="unknown"):
        ingest.check(cose.mac0(KEY, b"ghost", pack(), seq=1))


@pytest.mark.parametrize("msg", [b"", b"\xff\xff", cbor2.dumps([1, 2]), cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b""])),
                                 cbor2.dumps(cbor2.CBORTag(17, [cbor2.dumps({1: 5, 4: b"x"}), {}, b"", b"12345678"]))])
def test_not_cose(ingest, msg):
    with pytest.raises(CoseError):
        ingest.check(msg)


def test_replay(ingest):
    msg = cose.mac0(KEY, b"pump3", pack(), seq=3)
    ingest.check(msg)
    with pytest.raises(ReplayError):
        ingest.check(msg)


def test_malformed_cbor_inside_valid_mac_uses_up_the_number(ingest):
    with pytest.raises(PayloadError) as info:
        ingest.check(cose.mac0(KEY, b"pump3", b"\x9f\x01", seq=9))
    assert info.value.seq == 9 and info.value.key == KEY
    with pytest.raises(ReplayError):
        ingest.check(cose.mac0(KEY, b"pump3", pack(), seq=9))


def test_window_semantics():
    w = ReplayWindow()
    for seq in (0, 5, 3, 70):
        assert not w.seen(seq)
        w.mark(seq)
        assert w.seen(seq)
    # top is 70: 7..69 are inside the window and unseen; 6 and below are too old to tell
    assert not w.seen(7) and not w.seen(69)
    assert w.seen(6) and w.seen(5) and w.seen(0)
    w.mark(40)
    assert w.seen(40) and not w.seen(41)
    assert ReplayWindow(*w.state()).state() == w.state()
    w.mark(1000)
    assert w.state() == (1000, 1)


def test_ack_verifies_with_node_key():
    ack = ack_message(KEY, 42, 0)
    m = cose.parse_mac0(ack)
    assert m.kid == b"gw"
    assert cbor2.loads(m.verify(KEY)) == [1, 42, 0]


def test_piv_encoding():
    assert cose.encode_piv(0) == b"\x00"
    assert cose.encode_piv(300) == b"\x01\x2c"


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_are_typed_errors(data):
    """Random bytes are neither a COSE_Mac0 (tag 17, an array of four, an 8-byte tag) nor a
    batch (a map with a known "v"): each reader says so with its typed error."""
    from gateway.runtime.uplink import batch
    with pytest.raises(CoseError):
        cose.parse_mac0(data)
    with pytest.raises(batch.BatchError):
        batch.decode(data)


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.integers(-8, 9) | st.text(max_size=2), c,
                                                                        max_size=4), max_leaves=12))
def test_fuzz_structured_cose(obj):
    # none of these is a COSE_Mac0: its tag is an 8-byte string, and no byte string drawn
    # here is longer than 5; so every one is a CoseError, whatever its shape
    with pytest.raises(CoseError):
        cose.parse_mac0(cbor2.dumps(cbor2.CBORTag(17, obj)))


@pytest.mark.parametrize("header", [{True: 4, 4: b"n", 6: b"\x01"}, {1: 4, 4.0: b"n", 6: b"\x01"},
                                    {1: 4, 4: b"n", b"": b"\x00"}, {1: 4, 4: b"n", None: 0}])
def test_protected_header_labels_are_integers_or_text(header):
    # found by fuzz/fuzz_cose.py: the general reader took `true` as label 1 (alg) and 4.0 as
    # the kid's label, and let a byte-string label pass (RFC 9052 §3.1: int or tstr)
    msg = cbor2.dumps(cbor2.CBORTag(17, [cbor2.dumps(header), {}, b"", bytes(8)]))
    with pytest.raises(CoseError, match="neither an integer nor a text string"):
        cose.parse_mac0(msg)
    ok = cbor2.dumps(cbor2.CBORTag(17, [cbor2.dumps({1: 4, 4: b"n", 6: b"\x01", "note": "x"}), {}, b"", bytes(8)]))
    assert cose.parse_mac0(ok).kid == b"n"


def test_the_plain_layout_reader_agrees_with_the_cbor_parser():
    """cose._parse_plain (the fast path for nodes' frames) accepts only what the general
    parser accepts, with the same fields; on anything else it declines (None)."""
    import random

    from gateway.errors import CoseError as _CoseError
    from gateway.protocol.cose import _parse_cbor, _parse_plain

    rnd = random.Random(7)
    accepted = 0
    for i in range(5000):
        payload = bytes(rnd.randrange(256) for _ in range(rnd.choice((0, 1, 23, 24, 200, 255, 256, 300))))
        kid = bytes(rnd.randrange(97, 123) for _ in range(rnd.choice((0, 1, 2, 23, 24, 30))))
        msg = bytearray(cose.mac0(bytes(32), kid, payload, seq=rnd.choice((None, 0, 1, 2**24, 2**40 - 1, 2**40))))
        for _ in range(rnd.choice((0, 0, 1, 2))):  # mutate: flip, cut, or extend
            op = rnd.randrange(3)
            if op == 0 and msg:
                msg[rnd.randrange(len(msg))] = rnd.randrange(256)
            elif op == 1:
                del msg[rnd.randrange(len(msg) + 1):]
            else:
                msg += bytes([rnd.randrange(256)])
        msg = bytes(msg)
        plain = _parse_plain(msg)
        if plain is None:
            continue
        accepted += 1
        try:
            full = _parse_cbor(msg)
        except _CoseError as exc:
            raise AssertionError(f"plain accepted what the parser rejects: {msg.hex()}: {exc}")
        assert [getattr(plain, f) for f in plain.__slots__] == [getattr(full, f) for f in full.__slots__], msg.hex()
    assert accepted > 1000


def test_hand_built_cbor_is_what_cbor2_writes():
    """mac0() and the MAC_structure are built by hand: the same bytes cbor2 gives."""
    import hashlib
    import hmac as _hmac

    for kid in (b"n", b"k" * 23, b"k" * 24, b"k" * 300):
        for payload in (b"", b"\x80", bytes(23), bytes(24), bytes(255), bytes(256), bytes(70000)):
            for seq in (None, 0, 255, 2**32):
                header = {1: 4, 4: kid}
                if seq is not None:
                    header[6] = cose.encode_piv(seq)
                protected = cbor2.dumps(header)
                structure = cbor2.dumps(["MAC0", protected, b"", payload])
                tag = _hmac.new(KEY, structure, hashlib.sha256).digest()[:8]
                want = cbor2.dumps(cbor2.CBORTag(17, [protected, {}, payload, tag]))
                assert cose.mac0(KEY, kid, payload, seq=seq) == want
                assert cose.mac0(cose.MacKey(KEY), kid, payload, seq=seq) == want
