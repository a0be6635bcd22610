"""The firmware's encoders checked by independent implementations on CPython: cbor2 and pycose."""
import binascii
import json

import cbor2
from hypothesis import given, settings, strategies as st

from .conftest import ROOT


def test_mac0_verified_by_pycose(firmware_path):
    import cose
    from pycose.keys import SymmetricKey
    from pycose.messages import Mac0Message

    key = bytes(range(32))
    msg = cose.mac0(cose.Mac(key), b"pump3", b"\x81\xa1\x02\x01", 42)
    tag = cbor2.loads(msg)
    assert tag.tag == 17
    prot, unprot, payload, mac = tag.value
    # cbor2 >= 6 decodes maps as frozendict: build the message from its items (see FIELD-NOTES)
    m = Mac0Message.from_cose_obj([prot, dict(unprot), payload, mac], True)
    m.key = SymmetricKey(k=key)
    assert m.verify_tag()
    m.key = SymmetricKey(k=bytes(32))
    assert not m.verify_tag()


scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats() | st.text(max_size=20) \
    | st.binary(max_size=20)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=5) | st.dictionaries(
    st.integers(-30, 30) | st.text(max_size=4), c, max_size=5), max_leaves=20)


@settings(max_examples=400)
@given(values)
def test_cbor_encoder_against_cbor2(firmware_path, value):
    import cbor
    data = cbor.dumps(value)
    back = cbor2.loads(data)
    assert _same(back, value), (value, data.hex())
    assert _same(cbor.loads(data), value)
    # deterministic: keys in the bytewise order of their encodings (RFC 8949 §4.2.1); cbor2's canonical
    # mode sorts length-first (RFC 7049), which agrees when every key encodes in one byte
    if _one_byte_keys(value):
        assert data == cbor2.dumps(value, canonical=True)


def _one_byte_keys(v):
    if isinstance(v, dict):
        return all(isinstance(k, int) and -24 <= k < 24 and _one_byte_keys(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_one_byte_keys(x) for x in v)
    return True


def _same(a, b):
    if isinstance(b, float) and b != b:
        return isinstance(a, float) and a != a
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(b, dict):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, float):
        return isinstance(a, float) and (a == b and str(a)[0] == str(b)[0])
    return a == b and type(a) is type(b)


@given(st.binary(max_size=2000))
def test_cobs_against_the_cobs_package(firmware_path, data):
    import framing
    from cobs import cobs
    assert framing.cobs_encode(data) == cobs.encode(data)
    assert framing.cobs_decode(cobs.encode(data)) == data


@given(st.binary(max_size=300))
def test_cbor_decoder_fuzz(firmware_path, data):
    import cbor
    try:
        cbor.loads(data)
    except ValueError:
        pass


def test_golden_frames_decode_on_the_gateway():
    """One wire format, one set of vectors: the gateway parses what the firmware emits."""
    from gateway.runtime.ingest import Ingest
    from gateway.protocol.framing import Deframer
    from gateway.runtime.registry import Registry

    golden = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())
    key = bytes.fromhex(golden["key"])
    for v in golden["frames"]:
        reg = Registry()
        reg.add(v["node"], key)
        (msg,) = Deframer().feed(binascii.unhexlify(v["frame_hex"]))
        ingest = Ingest(reg)
        acc = ingest.check(msg)
        assert (acc.node, acc.seq, acc.count) == (v["node"], v["seq"], len(v["readings"]))
        sids, ts, vs, _ = ingest.parser.take()
        names = ingest.parser.names
        assert [(names[s], x) for s, x in zip(sids, vs)] == [(f"{v['node']}/{n}", val) for n, _dt, val in v["readings"]]
        assert list(ts) == [v["base_time"] + dt for _n, dt, _v in v["readings"]]
