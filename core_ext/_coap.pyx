# cython: language_level=3, boundscheck=False, wraparound=False
"""CoAP messages parsed in C (RFC 7252 §3): `parse`, as `_coap_py` (the specification,
gateway.protocol.coap.parse) does, the same tuple or the same CoapFormatError.

Every CoAP frame's request goes through it: the header, token and options are read
from the bytes without the interpreter per byte; only the returned objects (token,
option values, payload: slices of the datagram) are made. Input other than `bytes`
goes to the reference.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from gateway.protocol.coap import CoapFormatError, parse as _parse_py
from gateway.protocol.numbers import COAP_MAX_TOKEN, COAP_PAYLOAD_MARKER, COAP_VERSION

cdef int _VERSION = COAP_VERSION
cdef int _MAX_TOKEN = COAP_MAX_TOKEN
cdef int _MARKER = COAP_PAYLOAD_MARKER
_NIBBLE = "reserved option nibble 15 or truncated extension"


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
