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
        delta = b >> 4
        length = b & 15
        # the extended delta, then the extended length (RFC 7252 §3.1), as coap._extended
        if delta >= 13:
            if delta == 13 and i < n:
                delta = d[i] + 13
                i += 1
            elif delta == 14 and i + 1 < n:
                delta = (d[i] << 8 | d[i + 1]) + 269
                i += 2
            else:
                raise CoapFormatError(_NIBBLE)
        if length >= 13:
            if length == 13 and i < n:
                length = d[i] + 13
                i += 1
            elif length == 14 and i + 1 < n:
                length = (d[i] << 8 | d[i + 1]) + 269
                i += 2
            else:
                raise CoapFormatError(_NIBBLE)
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
