"""Series codec: lossless (or bounded-error) compression of one time series.

    encode(timestamps, values, *, max_error=0.0) -> bytes
    decode(data) -> (timestamps, values)

See `_codec_py` (the specification) for the contract and docs/codec.md for the format.
"""
from . import load

_impl, IMPLEMENTATION = load("codec")
encode = _impl.encode
decode = _impl.decode
CodecError = _impl.CodecError
__all__ = ["encode", "decode", "CodecError", "IMPLEMENTATION"]
