"""Datagrams in batches on a non-blocking UDP socket: one recvmmsg/sendmmsg for many.

See `_udp_py` (the specification) for the API and the errors.
"""
from . import load

_impl, IMPLEMENTATION = load("udp")
Batch = _impl.Batch
__all__ = ["Batch", "IMPLEMENTATION"]
