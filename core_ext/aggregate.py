"""Tumbling windows per series: count, min, max, sum, sum of squares, first, last.

See `_aggregate_py.Aggregator` (the specification) for the API.
"""
from . import load

_impl, IMPLEMENTATION = load("aggregate")
Aggregator = _impl.Aggregator
FIELDS = _impl.FIELDS
__all__ = ["Aggregator", "FIELDS", "IMPLEMENTATION"]
