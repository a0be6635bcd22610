import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from gateway.errors import CoseError, PayloadError
from gateway.protocol import cose
from gateway.protocol.senml import decode_pack
from gateway.uplink import batch


def dec(records, now=1_800_000_000.0):
    return [(r.name, r.time, r.value, r.unit) for r in decode_pack(cbor2.dumps(records), now=now)]


def test_rfc8428_base_fields():
    recs = [{-2: "urn:dev:ow:10e2073a01080063:", -3: 1.320067464e9, -4: "%RH", 2: 20.0},
            {6: 60, 2: 24.3}, {0: "temp", 1: "Cel", 6: 120, 2: 23.1}]
    assert dec(recs) == [
        ("urn:dev:ow:10e2073a01080063:", 1.320067464e9, 20.0, "%RH"),
        ("urn:dev:ow:10e2073a01080063:", 1.320067524e9, 24.3, "%RH"),
        ("urn:dev:ow:10e2073a01080063:temp", 1.320067584e9, 23.1, "Cel"),
    ]


def test_base_value_and_sum_and_other_types():
    recs = [{-2: "n/", -3: 1.7e9, -5: 100.0, 0: "a", 2: 1.5}, {0: "b"}, {0: "c", 3: "open"}, {0: "d", 4: True},
            {0: "e", 8: b"\x01\x02"}, {-6: 10.0, 0: "f", 5: 2.5}]
    assert [(n, v) for n, _, v, _ in dec(recs)] == [("n/a", 101.5), ("n/b", 100.0), ("n/c", "open"), ("n/d", True),
                                                    ("n/e", b"\x01\x02"), ("n/f", 12.5)]


def test_relative_time_is_relative_to_now():
    assert dec([{0: "x", 2: 1, 6: -5}], now=1000.0)[0][1] == 995.0


@pytest.mark.parametrize("records, msg", [
    ([], "non-empty"), ({"a": 1}, "non-empty array"), ([1], "not a map"), ([{0: "x"}], "no value"),
    ([{0: "x", 2: "1"}], "must be a number"), ([{0: " bad", 2: 1}], "invalid name"),
    ([{0: "x", 2: 1, 3: "s"}], "several values"), ([{0: "x", 2: 1, "x_": 1}], "must-understand"),
    ([{0: "x", 4: 1}], "boolean"), ([{-3: "t", 0: "x", 2: 1}], "bt must be"),
])
def test_errors(records, msg):
    with pytest.raises(PayloadError, match=msg):
        decode_pack(cbor2.dumps(records))


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_fuzz_parsers_raise_only_typed_errors(data):
    for parse, errors in ((decode_pack, PayloadError), (cose.parse_mac0, CoseError), (batch.decode, batch.BatchError)):
        try:
            parse(data)
        except errors:
            pass


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.integers(-8, 9) | st.text(max_size=2), c, max_size=4),
                    max_leaves=12))
def test_fuzz_structured_cbor(obj):
    try:
        decode_pack(cbor2.dumps(obj))
    except PayloadError:
        pass
    try:
        cose.parse_mac0(cbor2.dumps(cbor2.CBORTag(17, obj)))
    except CoseError:
        pass
