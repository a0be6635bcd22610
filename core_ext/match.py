"""Optimal assignment of demands to resources: `assign(cost) -> (rows, cols)`.

See `_match_py` (the specification) for the semantics.
"""
from . import load

_impl, IMPLEMENTATION = load("match")
assign = _impl.assign
__all__ = ["assign", "IMPLEMENTATION"]
