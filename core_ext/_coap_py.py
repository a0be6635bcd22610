"""CoAP messages parsed (RFC 7252 §3): the pure-Python reference of `core_ext._coap`.

The reference is the project's one CoAP parser, `gateway.protocol.coap.parse`:
`parse(data) -> (type, code, message id, token, {option: [values]}, payload)`,
CoapFormatError (saying what is wrong) for a malformed datagram. The compiled
module gives the same tuple, or raises the same error with the same message.
"""
from __future__ import annotations

from gateway.protocol.coap import CoapFormatError, parse

__all__ = ["CoapFormatError", "parse"]
