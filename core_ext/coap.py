"""CoAP messages parsed, for the gateway's server (gateway/runtime/transports/coap.py).

See `_coap_py` (the specification: gateway.protocol.coap.parse) for the API and the errors.
"""
from . import load

_impl, IMPLEMENTATION = load("coap")
parse = _impl.parse
CoapFormatError = _impl.CoapFormatError
__all__ = ["parse", "CoapFormatError", "IMPLEMENTATION"]
