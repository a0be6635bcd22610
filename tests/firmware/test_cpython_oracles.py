"""The firmware's encoders checked by independent implementations on CPython: cbor2 and pycose."""
import binascii
import io
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


def _decode_both(data):
    """The firmware's decoding of `data` checked against cbor2's: a ValueError from the firmware
    (nothing else), or the very value cbor2 reads from the same bytes."""
    import cbor
    try:
        got = cbor.loads(data)
    except ValueError:
        return None
    # accepted: the bytes must be one well-formed item to cbor2 as well, with the same value
    # (tags aside: cbor2 gives some of them meanings, the node keeps them as Tag)
    if not _has_tag(got):
        fp = io.BytesIO(data)
        want = cbor2.CBORDecoder(fp).decode()
        assert fp.tell() == len(data), f"{data.hex()}: trailing bytes accepted"
        assert _same(got, _plain(want)), (data.hex(), got, want)
    return got


def _has_tag(v):
    import cbor
    if isinstance(v, cbor.Tag):
        return True
    if isinstance(v, dict):
        return any(_has_tag(k) or _has_tag(x) for k, x in v.items())
    return isinstance(v, list) and any(_has_tag(x) for x in v)


def _plain(v):
    if v is cbor2.undefined:
        return None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {_plain(k): _plain(x) for k, x in v.items()}
    return v


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_cbor_decoder_on_random_bytes(firmware_path, data):
    _decode_both(data)


@settings(max_examples=400)
@given(values, st.data())
def test_cbor_decoder_on_damaged_items(firmware_path, value, data):
    """Every proper prefix of one item is an error (CBOR is self-delimiting); a changed byte is an
    error or a value cbor2 agrees with."""
    import cbor
    good = cbor2.dumps(value)
    assert _same(_decode_both(good), value)
    cut = data.draw(st.integers(0, len(good) - 1))
    try:
        cbor.loads(good[:cut])
    except ValueError:
        pass
    else:
        raise AssertionError(f"a {cut}-byte prefix of {good.hex()} decoded")
    at = data.draw(st.integers(0, len(good) - 1))
    damaged = bytearray(good)
    damaged[at] ^= data.draw(st.integers(1, 255))
    _decode_both(bytes(damaged))


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
        # records are grouped by sensor on the wire: compare as sets of (name, ms, value)
        got = sorted((names[s], round(t * 1000), x) for s, t, x in zip(sids, ts, vs))
        assert got == sorted((f"{v['node']}/{n}", v["base_ms"] + dt, val) for n, dt, val in v["readings"])
        # the base time is the double nearest base_ms / 1000 (no float on the node ever held it)
        assert not v["readings"] or min(ts) == v["base_ms"] / 1000


def _independent():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tests" / "vectors" / "make_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_sensor = st.sampled_from(["temp", "vib", "p", "flow_rate"])
_value = st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False, width=64) \
    | st.floats(allow_nan=False, allow_infinity=False, width=16)


@settings(max_examples=400)
@given(st.integers(0, 2**42), st.lists(st.tuples(_sensor, st.integers(0, 10**8), _value), max_size=12),
       st.lists(st.tuples(st.sampled_from(["cmd", "error"]), st.text("abc:-", max_size=8)), max_size=2))
def test_senml_packs_against_the_independent_encoder(firmware_path, base_ms, readings, texts):
    """Times in integer ms written as the double nearest ms / 1000 (built bit by bit, no float),
    records grouped by sensor: the same bytes as cbor2 over the records make_vectors.py builds."""
    import senml
    if not readings and not texts:
        return
    readings.sort(key=lambda r: r[1])  # a frame's readings are in time order
    theirs = _independent().senml("pump3", base_ms, readings, texts)
    assert senml.encode_pack("pump3", readings, base_ms, texts) == theirs


@settings(max_examples=2000)
@given(st.integers(0, 2**47), st.integers(1, 2**23))
def test_ratio_is_the_nearest_double(firmware_path, num, den):
    """put_ratio: the double nearest num / den (CPython's int / int is correctly rounded), in the
    shortest CBOR float that holds it exactly."""
    import senml
    buf = bytearray(16)
    q, r = divmod(num, den)
    n = senml.put_ratio(buf, 0, False, q >> 24, q & 0xFFFFFF, r, den)
    x = num / den
    want = cbor2.dumps(int(x) if r == 0 else x, canonical=True)
    if r and x < 2**-14:
        assert cbor2.loads(bytes(buf[:n])) == x  # below half's normal range: single or double, same value
    else:
        assert bytes(buf[:n]) == want, (num, den)
