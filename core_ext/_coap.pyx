# cython: language_level=3, boundscheck=False, wraparound=False
"""CoAP messages parsed and answered in C (RFC 7252 §3): `parse`, `data_request` and
`response` as `_coap_py` (the specification) has them, the same results or the same errors.

Every CoAP frame's request goes through `data_request`, and the others through
`parse`: the header, token and options are read from the bytes without the
interpreter per byte; only the returned objects (token, option values, payload:
slices of the datagram) are made. Every frame's answer is written by `response`
into one bytes object. Input other than `bytes`, and answers with a Content-Format
other than COSE_Mac0's or numbers out of range, go to the reference.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from core_ext._coap_py import COSE_CF_OPTION, DATA_PATH_OPTION
from gateway.protocol.coap import CoapFormatError, parse as _parse_py, response as _response_py
from gateway.protocol.numbers import (CF_COSE_MAC0, COAP_MAX_TOKEN, COAP_NON, COAP_OPT_CONTENT_FORMAT,
                                      COAP_PAYLOAD_MARKER, COAP_POST, COAP_VERSION, MAX_MESSAGE)

cdef int _VERSION = COAP_VERSION
cdef int _MAX_TOKEN = COAP_MAX_TOKEN
cdef int _MARKER = COAP_PAYLOAD_MARKER
_NIBBLE = "reserved option nibble 15 or truncated extension"
cdef int _POST = COAP_POST
cdef int _NON = COAP_NON
cdef Py_ssize_t _MAX_MESSAGE = MAX_MESSAGE
cdef int _CF_COSE = CF_COSE_MAC0
cdef bytes _PATH = DATA_PATH_OPTION
cdef bytes _CF = COSE_CF_OPTION
# Content-Format COSE_Mac0 as an answer's only option: delta 12, length 1, the value
cdef unsigned char _CF_FIRST = COAP_OPT_CONTENT_FORMAT << 4 | 1
if len(_PATH) != 2 or len(_CF) != 2 or COAP_OPT_CONTENT_FORMAT >= 13:
    raise ImportError("core_ext._coap reads and writes the data request's options as two bytes each")


cdef inline Py_ssize_t _extended(Py_ssize_t v, const unsigned char* d, Py_ssize_t n, Py_ssize_t* i) except -1:
    """An option's delta or length nibble `v` with its extension at d[i[0]] (RFC 7252 §3.1),
    as coap._extended does; i[0] moves past the extension."""
    cdef Py_ssize_t j = i[0]
    if v < 13:
        return v
    if v == 13 and j < n:
        i[0] = j + 1
        return d[j] + 13
    if v == 14 and j + 1 < n:
        i[0] = j + 2
        return (d[j] << 8 | d[j + 1]) + 269
    raise CoapFormatError(_NIBBLE)


def parse(data):
    """(type, code, message id, token, {option: [values]}, payload); CoapFormatError if malformed."""
    if type(data) is not bytes:
        return _parse_py(data)
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, length, delta
    cdef long long number = 0
    cdef int first, b
    if n < 4:
        raise CoapFormatError("shorter than a CoAP header")
    first = d[0]
    if first >> 6 != _VERSION:
        raise CoapFormatError(f"CoAP version {first >> 6}")
    if first & 15 > _MAX_TOKEN:
        raise CoapFormatError(f"token longer than {_MAX_TOKEN} bytes")
    i = 4 + (first & 15)
    if i > n:
        raise CoapFormatError("truncated token")
    token = data[4:i]
    cdef dict options = {}
    while i < n:
        b = d[i]
        i += 1
        if b == _MARKER:
            if i == n:
                raise CoapFormatError("payload marker without payload")
            return (first >> 4) & 3, d[1], d[2] << 8 | d[3], token, options, data[i:]
        delta = _extended(b >> 4, d, n, &i)
        length = _extended(b & 15, d, n, &i)
        number += delta
        if i + length > n:
            raise CoapFormatError("truncated option")
        values = options.get(number)
        if values is None:
            options[number] = [data[i:i + length]]
        else:
            (<list>values).append(data[i:i + length])
        i += length
    return (first >> 4) & 3, d[1], d[2] << 8 | d[3], token, options, b""


def data_request(data):
    """(type, message id, token, payload) of a node's data request in the nodes' layout, else None."""
    if type(data) is not bytes:
        return None
    cdef const unsigned char* d = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef const unsigned char* path = <const unsigned char*>PyBytes_AS_STRING(_PATH)
    cdef const unsigned char* cf = <const unsigned char*>PyBytes_AS_STRING(_CF)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, t
    cdef int first, mtype
    if n < 4:
        return None
    first = d[0]
    mtype = (first >> 4) & 3
    t = first & 15
    if first >> 6 != _VERSION or t > _MAX_TOKEN or d[1] != _POST or mtype > _NON:
        return None
    i = 4 + t
    if i + 2 > n or d[i] != path[0] or d[i + 1] != path[1]:
        return None
    i += 2
    if i + 2 <= n and d[i] == cf[0] and d[i + 1] == cf[1]:
        i += 2
    if i >= n or d[i] != _MARKER or n - i - 1 < 1 or n - i - 1 > _MAX_MESSAGE:
        return None
    return mtype, d[2] << 8 | d[3], data[4:4 + t], data[i + 1:]


def response(mtype, code, mid, token, payload=b"", cf=None):
    """A response (piggybacked in an ACK for a CON request, a NON for a NON)."""
    if (type(token) is not bytes or type(payload) is not bytes or type(mtype) is not int or type(code) is not int
            or type(mid) is not int or not (cf is None or (type(cf) is int and cf == _CF_COSE))
            or not (0 <= mtype < 4 and 0 <= code < 256 and 0 <= mid < 65536)
            or PyBytes_GET_SIZE(token) > _MAX_TOKEN):
        return _response_py(mtype, code, mid, token, payload, cf)  # its answer, or its error
    cdef Py_ssize_t t = PyBytes_GET_SIZE(token), p = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t o = 0 if cf is None else 2
    cdef Py_ssize_t n = 4 + t + o + (1 + p if p else 0)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* w = <unsigned char*>PyBytes_AS_STRING(out)
    cdef int m = mid
    w[0] = _VERSION << 6 | (<int>mtype) << 4 | t
    w[1] = <int>code
    w[2] = m >> 8
    w[3] = m & 255
    memcpy(w + 4, PyBytes_AS_STRING(token), t)
    if o:
        w[4 + t] = _CF_FIRST
        w[5 + t] = _CF_COSE
    if p:
        w[4 + t + o] = _MARKER
        memcpy(w + 5 + t + o, PyBytes_AS_STRING(payload), p)
    return out
