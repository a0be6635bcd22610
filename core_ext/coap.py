"""CoAP messages parsed and answered, for the gateway's server (gateway/runtime/transports/coap.py).

See `_coap_py` (the specification) for the API and the errors.
"""
from . import load

_impl, IMPLEMENTATION = load("coap")
parse = _impl.parse
data_request = _impl.data_request
response = _impl.response
CoapFormatError = _impl.CoapFormatError
__all__ = ["parse", "data_request", "response", "CoapFormatError", "IMPLEMENTATION"]
