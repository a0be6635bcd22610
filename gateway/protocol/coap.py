"""CoAP messages (RFC 7252 §3): the one encoder and parser of the project's CoAP bytes.

The gateway's server (gateway/runtime/transports/coap.py) parses requests and
builds responses with it; tests and benchmarks build their requests with
`request()` rather than by hand. Numbers are named in gateway/protocol/numbers.py.

Block-wise transfers (RFC 7959): `block()` and `parse_block()` encode and decode the
value of a Block1 or Block2 option (block number, more flag, block size); node updates
(gateway/decisions/update.py) slice a release into such blocks.

Caveats: options are returned raw (bytes per occurrence, in order); no observe; the
block codec is the option value only (the server does not run block-wise exchanges yet).
A malformed datagram raises CoapFormatError saying what is wrong.
"""
from __future__ import annotations

import struct

from gateway.protocol.numbers import (
    CF_COSE_MAC0,
    COAP_BLOCK_NUM_MAX,
    COAP_BLOCK_SZX_MAX,
    COAP_CON,
    COAP_DATA_PATH,
    COAP_MAX_TOKEN,
    COAP_OPT_CONTENT_FORMAT,
    COAP_OPT_URI_PATH,
    COAP_PAYLOAD_MARKER,
    COAP_POST,
    COAP_VERSION,
)


UPDATE_PATH = b"u"  # GET /u/<rid>/m|b: a node fetching an update (docs/protocol.md §9)


def is_update_request(options: dict) -> bool:
    """A CoAP request for /u/...: a node fetching an update (answered by gateway/runtime/updates.py;
    here so that the transports test for it without importing the updates' machinery)."""
    path = options.get(COAP_OPT_URI_PATH)
    return bool(path) and path[0] == UPDATE_PATH


class CoapFormatError(ValueError):
    """A datagram that is not a well-formed CoAP message."""


def parse(data: bytes) -> tuple[int, int, int, bytes, dict, bytes]:
    """(type, code, message id, token, {option: [values]}, payload); CoapFormatError if malformed."""
    if len(data) < 4:
        raise CoapFormatError("shorter than a CoAP header")
    first, code, mid = data[0], data[1], int.from_bytes(data[2:4], "big")
    if first >> 6 != COAP_VERSION:
        raise CoapFormatError(f"CoAP version {first >> 6}")
    mtype, tkl = (first >> 4) & 3, first & 15
    if tkl > COAP_MAX_TOKEN:
        raise CoapFormatError(f"token longer than {COAP_MAX_TOKEN} bytes")
    i = 4 + tkl
    if i > len(data):
        raise CoapFormatError("truncated token")
    token = data[4:i]
    options: dict[int, list[bytes]] = {}
    number = 0
    n = len(data)
    while i < n:
        b = data[i]
        i += 1
        if b == COAP_PAYLOAD_MARKER:
            if i == n:
                raise CoapFormatError("payload marker without payload")
            return mtype, code, mid, token, options, data[i:]
        delta, length = b >> 4, b & 15
        delta, i = _extended(delta, data, i)
        length, i = _extended(length, data, i)
        number += delta
        if i + length > n:
            raise CoapFormatError("truncated option")
        options.setdefault(number, []).append(data[i:i + length])
        i += length
    return mtype, code, mid, token, options, b""


def _extended(v: int, data: bytes, i: int) -> tuple[int, int]:
    if v < 13:
        return v, i
    if v == 13 and i < len(data):
        return data[i] + 13, i + 1
    if v == 14 and i + 1 < len(data):
        return int.from_bytes(data[i:i + 2], "big") + 269, i + 2
    raise CoapFormatError("reserved option nibble 15 or truncated extension")


def _nibble(v: int) -> tuple[int, bytes]:
    if v < 13:
        return v, b""
    if v < 269:
        return 13, bytes([v - 13])
    return 14, (v - 269).to_bytes(2, "big")


def uint(value: int) -> bytes:
    """An option's uint value in the fewest bytes (RFC 7252 §3.2: 0 is the empty string)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def encode(mtype: int, code: int, mid: int, token: bytes = b"", options=(), payload: bytes = b"") -> bytes:
    """A CoAP message; `options` is [(number, value bytes), ...] in any order (sorted here, stably)."""
    if len(token) > COAP_MAX_TOKEN:
        raise ValueError(f"token longer than {COAP_MAX_TOKEN} bytes")
    out = bytearray([COAP_VERSION << 6 | mtype << 4 | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        d, dx = _nibble(number - last)
        n, nx = _nibble(len(value))
        out += bytes([d << 4 | n]) + dx + nx + value
        last = number
    if payload:
        out += bytes([COAP_PAYLOAD_MARKER]) + payload
    return bytes(out)


def response(mtype: int, code: int, mid: int, token: bytes, payload: bytes = b"", cf: int | None = None) -> bytes:
    """A response (piggybacked in an ACK for a CON request, a NON for a NON)."""
    # encode() with its one option at most written directly: every frame's ack goes through here
    if len(token) > COAP_MAX_TOKEN:
        raise ValueError(f"token longer than {COAP_MAX_TOKEN} bytes")
    head = struct.pack(">BBH", COAP_VERSION << 6 | mtype << 4 | len(token), code, mid)
    option = b"" if cf is None else _CF_OPTIONS.get(cf) or _cf_option(cf)
    return b"".join((head, token, option, _MARKER, payload)) if payload else head + token + option


_MARKER = bytes([COAP_PAYLOAD_MARKER])
_CF_OPTIONS: dict[int, bytes] = {}  # Content-Format -> the option as the first of a message, for the few in use


def _cf_option(cf: int) -> bytes:
    value = uint(cf)
    d, dx = _nibble(COAP_OPT_CONTENT_FORMAT)
    n, nx = _nibble(len(value))
    option = bytes([d << 4 | n]) + dx + nx + value
    if len(_CF_OPTIONS) < 16:
        _CF_OPTIONS[cf] = option
    return option


def request(mid: int, payload: bytes, token: bytes = b"", path: str = COAP_DATA_PATH, cf: int | None = CF_COSE_MAC0,
            mtype: int = COAP_CON, code: int = COAP_POST, options=()) -> bytes:
    """A node's request: by default a confirmable POST /d of a COSE_Mac0 (Content-Format 17)."""
    opts = [(COAP_OPT_URI_PATH, seg.encode()) for seg in path.split("/") if seg]
    if cf is not None:
        opts.append((COAP_OPT_CONTENT_FORMAT, uint(cf)))
    return encode(mtype, code, mid, token, opts + list(options), payload)


def block(num: int, more: bool, size: int) -> bytes:
    """A Block1/Block2 option value (RFC 7959 §2.2): NUM << 4 | M << 3 | SZX, as a uint.
    `size` is the block size in bytes, a power of two from 16 to 1024; ValueError otherwise."""
    szx = size.bit_length() - 5
    if size & (size - 1) or not 0 <= szx <= COAP_BLOCK_SZX_MAX:
        raise ValueError(f"block size {size}: a power of two from 16 to {16 << COAP_BLOCK_SZX_MAX}")
    if not 0 <= num <= COAP_BLOCK_NUM_MAX:
        raise ValueError(f"block number {num}: 0 to {COAP_BLOCK_NUM_MAX}")
    return uint(num << 4 | (8 if more else 0) | szx)


def parse_block(value: bytes) -> tuple[int, bool, int]:
    """(block number, more, block size in bytes) of a Block1/Block2 option value;
    CoapFormatError for a value longer than 3 bytes or the reserved size exponent 7."""
    if len(value) > 3:
        raise CoapFormatError(f"block option of {len(value)} bytes (at most 3)")
    v = int.from_bytes(value, "big")
    szx = v & 7
    if szx > COAP_BLOCK_SZX_MAX:
        raise CoapFormatError("block size exponent 7 is reserved (BERT, RFC 8323)")
    return v >> 4, bool(v & 8), 16 << szx
