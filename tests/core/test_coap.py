"""core_ext.coap: the compiled CoAP parse gives what gateway.protocol.coap.parse gives (the
same tuple, or CoapFormatError with the same message), on well-formed and on broken datagrams;
the data request's fast path and the answers' writer agree with their references (core_ext._coap_py)."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import _coap_py
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


# -- the data request's fast path and the answers -------------------------------------------


def offered(data):
    """What the server's full path (parse, then its checks of a request) offers the pipeline for
    `data` in the nodes' layout: (type, message id, token, payload), or None for anything else
    (a narrower model than the server's checks, which also pass Uri-Host and the like: whatever
    the fast path takes must be offered by both)."""
    try:
        mtype, code, mid, token, options, payload = spec.parse(data)
    except spec.CoapFormatError:
        return None
    if mtype > 1 or code != 2 or not 1 <= len(payload) <= 1024:
        return None
    if options not in ({11: [b"d"]}, {11: [b"d"], 12: [b"\x11"]}):
        return None
    return mtype, mid, token, payload


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mtype=st.integers(0, 3), code=st.sampled_from([0, 1, 2, 3, 0x44]), mid=st.integers(0, 65535),
       token=st.binary(max_size=9), path=st.sampled_from(["d", "dd", "u", "", "d/x"]),
       cf=st.sampled_from([None, 17, 0, 60]), options=_OPTIONS, payload=st.binary(max_size=1030),
       cut=st.integers(0, 64), flip=st.integers(0, 2000))
def test_data_request_is_what_the_full_path_would_offer(impl, mtype, code, mid, token, path, cf, options, payload,
                                                        cut, flip):
    try:
        whole = spec.request(mid, payload, token, path, cf, mtype, code, options[:1] if flip % 3 == 0 else ())
    except ValueError:  # a token of 9 bytes
        whole = bytes([0x49, code, mid >> 8, mid & 255]) + token + b"\xb1d\xffp"
    for data in (whole, whole[:max(0, len(whole) - cut)], whole + b"\xff",
                 whole[:flip % (len(whole) + 1)] + bytes([flip % 256]) + whole[flip % (len(whole) + 1) + 1:]):
        got = impl.data_request(data)
        assert got == _coap_py.data_request(data)
        if got is not None:  # never something the full path would answer otherwise
            assert got == offered(data)


def test_the_nodes_requests_take_the_fast_path(impl):
    for cf in (17, None):
        for mtype in (0, 1):
            req = spec.request(513, b"\xd1" * 1024, token=b"12345678", cf=cf, mtype=mtype)
            assert impl.data_request(req) == (mtype, 513, b"12345678", b"\xd1" * 1024)
    # as firmware/link_coap.py writes it: a 4-byte token, Uri-Path "d", Content-Format 17
    assert impl.data_request(b"\x44\x02\x01\x02tokn\xb1d\x11\x11\xff\xd1x") == (0, 258, b"tokn", b"\xd1x")
    # what is not a data request in that layout goes the full way: None
    for other in (spec.request(1, b""), spec.request(1, b"x" * 1025), spec.request(1, b"x", path="u/1/m"),
                  spec.request(1, b"x", cf=0), spec.request(1, b"x", options=[(60, b"\x01")]),
                  spec.encode(2, 0, 1), spec.encode(0, 0, 1), spec.request(1, b"x", code=1),
                  spec.request(1, b"x", mtype=2), bytearray(spec.request(1, b"x")), None, b"", b"\x40\x02\x00"):
        assert impl.data_request(other) is None, other


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=40))
def test_data_request_on_any_bytes(impl, data):
    for d in (data, b"\x40\x02\x00\x01\xb1d" + data, b"\x50\x02\x00\x01\xb1d\x11\x11" + data):
        assert impl.data_request(d) == _coap_py.data_request(d)
        if impl.data_request(d) is not None:
            assert impl.data_request(d) == offered(d)


def answer(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the error's type and message are what is compared
        return ("error", type(exc).__name__, str(exc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mtype=st.integers(-1, 4), code=st.sampled_from([0, 0x44, 0xA3, 255, 256]),
       mid=st.sampled_from([0, 1, 65535, 65536, -1]), token=st.binary(max_size=9),
       payload=st.binary(max_size=300), cf=st.sampled_from([None, 17, 0, 60, 1000]))
def test_response_agrees_with_the_specification(impl, mtype, code, mid, token, payload, cf):
    got = answer(impl.response, mtype, code, mid, token, payload, cf)
    assert got == answer(spec.response, mtype, code, mid, token, payload, cf)
    if not isinstance(got, tuple) and 0 <= mtype < 4:
        assert spec.parse(got)[:4] == (mtype, code, mid, token)
