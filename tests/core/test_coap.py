"""core_ext.coap: the compiled CoAP parse gives what gateway.protocol.coap.parse gives (the
same tuple, or CoapFormatError with the same message), on well-formed and on broken datagrams."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.protocol import coap as spec

pytestmark = pytest.mark.core("coap")


def outcome(parse, data):
    try:
        return parse(data)
    except spec.CoapFormatError as exc:
        return ("error", str(exc))


_OPTIONS = st.lists(st.tuples(st.sampled_from([1, 3, 11, 12, 14, 17, 23, 27, 28, 60, 300, 2000, 65000]),
                              st.binary(max_size=300)), max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mtype=st.integers(0, 3), code=st.integers(0, 255), mid=st.integers(0, 65535), token=st.binary(max_size=8),
       options=_OPTIONS, payload=st.binary(max_size=40), cut=st.integers(0, 64), flip=st.integers(0, 2000))
def test_parse_agrees_with_the_specification(impl, mtype, code, mid, token, options, payload, cut, flip):
    whole = spec.encode(mtype, code, mid, token, options, payload)
    for data in (whole, whole[:max(0, len(whole) - cut)], whole + b"\xff",
                 whole[:flip % (len(whole) + 1)] + bytes([flip % 256]) + whole[flip % (len(whole) + 1) + 1:]):
        assert outcome(impl.parse, data) == outcome(spec.parse, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=40))
def test_parse_agrees_on_any_bytes(impl, data):
    assert outcome(impl.parse, data) == outcome(spec.parse, data)
    assert outcome(impl.parse, bytearray(data)) == outcome(spec.parse, bytearray(data))


def test_a_node_request_and_its_errors(impl):
    req = spec.request(7, b"\xd1payload", token=b"tk")
    assert impl.parse(req) == (0, 2, 7, b"tk", {11: [b"d"], 12: [b"\x11"]}, b"\xd1payload")
    for data, message in ((b"\x40\x02", "shorter than a CoAP header"), (b"\x80\x02\x00\x01", "CoAP version 2"),
                          (b"\x49\x02\x00\x01", "token longer than 8 bytes"), (b"\x44\x02\x00\x01ab", "truncated token"),
                          (b"\x40\x02\x00\x01\xff", "payload marker without payload"),
                          (b"\x40\x02\x00\x01\xf0", "reserved option nibble 15"), (b"\x40\x02\x00\x01\x12a", "truncated option")):
        with pytest.raises(spec.CoapFormatError, match=message):
            impl.parse(data)
