"""CoAP messages parsed and answered (RFC 7252 §3): the pure-Python reference of `core_ext._coap`.

`parse` is the project's one CoAP parser, `gateway.protocol.coap.parse`:
`parse(data) -> (type, code, message id, token, {option: [values]}, payload)`,
CoapFormatError (saying what is wrong) for a malformed datagram. `response` is
`gateway.protocol.coap.response` (a piggybacked or non-confirmable answer's bytes).

`data_request(data) -> (type, message id, token, payload) | None` recognises the
nodes' own request in the layout every node writes (`gateway.protocol.coap.request`
with its defaults, confirmable or not): version 1, a token of at most 8 bytes, code
POST, the options Uri-Path "d" and optionally Content-Format 17 (COSE_Mac0), each
once and nothing else, and a payload of 1 to MAX_MESSAGE bytes. For such a datagram
`parse` and the server's checks of a request (gateway/runtime/transports/coap.py)
would offer the payload to the pipeline unchanged, so the server offers it without
them. Anything else, well-formed or not (other options, another path, an empty or
oversized payload, an ACK, a ping), gives None: the server parses it in full and
answers it as before. The compiled module gives the same results and raises the same
errors, for any input.
"""
from __future__ import annotations

from gateway.protocol.coap import CoapFormatError, parse, response
from gateway.protocol.numbers import (CF_COSE_MAC0, COAP_DATA_PATH, COAP_MAX_TOKEN, COAP_NON, COAP_OPT_CONTENT_FORMAT,
                                      COAP_OPT_URI_PATH, COAP_PAYLOAD_MARKER, COAP_POST, COAP_VERSION, MAX_MESSAGE)

__all__ = ["CoapFormatError", "data_request", "parse", "response"]

# the options of the nodes' request as they are written: Uri-Path "d" first (delta 11), then
# Content-Format 17 (delta 1), each with its length in the same byte
DATA_PATH_OPTION = bytes([COAP_OPT_URI_PATH << 4 | len(COAP_DATA_PATH)]) + COAP_DATA_PATH.encode()
COSE_CF_OPTION = bytes([(COAP_OPT_CONTENT_FORMAT - COAP_OPT_URI_PATH) << 4 | 1, CF_COSE_MAC0])
if COAP_OPT_URI_PATH >= 13 or len(COAP_DATA_PATH) >= 13 or not 0 < CF_COSE_MAC0 < 256:
    raise ImportError("core_ext._coap_py reads the data request's options as one byte each")


def data_request(data) -> tuple[int, int, bytes, bytes] | None:
    """(type, message id, token, payload) of a node's data request in the nodes' layout, else None."""
    if type(data) is not bytes or len(data) < 4:
        return None
    first = data[0]
    mtype, tkl = (first >> 4) & 3, first & 15
    if first >> 6 != COAP_VERSION or tkl > COAP_MAX_TOKEN or data[1] != COAP_POST or mtype > COAP_NON:
        return None
    i = 4 + tkl
    if data[i:i + len(DATA_PATH_OPTION)] != DATA_PATH_OPTION:
        return None
    i += len(DATA_PATH_OPTION)
    if data[i:i + len(COSE_CF_OPTION)] == COSE_CF_OPTION:
        i += len(COSE_CF_OPTION)
    if i >= len(data) or data[i] != COAP_PAYLOAD_MARKER or not 1 <= len(data) - i - 1 <= MAX_MESSAGE:
        return None
    return mtype, int.from_bytes(data[2:4], "big"), data[4:4 + tkl], data[i + 1:]
