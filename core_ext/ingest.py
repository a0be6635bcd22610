"""SenML-CBOR payloads straight into (series id, time, value) columns.

See `_ingest_py` (the specification) for the API, the accepted input and the errors.
"""
from . import load
from ._ingest_py import IngestError, RELATIVE_TIME_LIMIT

_impl, IMPLEMENTATION = load("ingest")
Parser = _impl.Parser
spread = _impl.spread
spread_frames = _impl.spread_frames
frame_body = _impl.frame_body
__all__ = ["IngestError", "Parser", "IMPLEMENTATION", "RELATIVE_TIME_LIMIT", "spread", "spread_frames", "frame_body"]
