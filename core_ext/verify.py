"""A node's frame from bytes to readings: COSE_Mac0, MAC, replay window, SenML into columns.

See `_verify_py` (the specification) for the API, the order of the checks and the errors.
"""
from . import load
from ._verify_py import MAC_KEYS, ReplayWindow

_impl, IMPLEMENTATION = load("verify")
Verifier = _impl.Verifier
hmac_sha256 = _impl.hmac_sha256
sha256_code = _impl.sha256_code
__all__ = ["IMPLEMENTATION", "MAC_KEYS", "ReplayWindow", "Verifier", "hmac_sha256", "sha256_code"]
