"""COSE_Mac0 with HMAC 256/64 (RFC 9052 §6.2, RFC 9053 §3.1), as docs/protocol.md §2 uses it."""
from __future__ import annotations

import hashlib
import hmac

import cbor2

from ..errors import AuthError, CoseError
from .numbers import (
    COSE_ALG_HMAC_256_64,
    COSE_HDR_ALG,
    COSE_HDR_KID,
    COSE_HDR_PARTIAL_IV,
    COSE_TAG_MAC0,
    HMAC_256_64_TAG_BYTES,
    MAC0_CONTEXT,
    PIV_MAX_BYTES,
)


def _mac(key: bytes, protected: bytes, payload: bytes) -> bytes:
    structure = cbor2.dumps([MAC0_CONTEXT, protected, b"", payload])
    return hmac.new(key, structure, hashlib.sha256).digest()[:HMAC_256_64_TAG_BYTES]


def encode_piv(seq: int) -> bytes:
    """Sequence number as a partial IV: big-endian, fewest bytes, at least one."""
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


def mac0(key: bytes, kid: bytes, payload: bytes, seq: int | None = None) -> bytes:
    """Build a tagged COSE_Mac0 (bytes). `seq` goes into the partial IV when given."""
    header = {COSE_HDR_ALG: COSE_ALG_HMAC_256_64, COSE_HDR_KID: kid}
    if seq is not None:
        header[COSE_HDR_PARTIAL_IV] = encode_piv(seq)
    protected = cbor2.dumps(header)
    tag = _mac(key, protected, payload)
    return cbor2.dumps(cbor2.CBORTag(COSE_TAG_MAC0, [protected, {}, payload, tag]))


class Mac0:
    """A parsed, not yet verified COSE_Mac0."""

    __slots__ = ("protected", "payload", "tag", "kid", "seq")

    def __init__(self, protected: bytes, payload: bytes, tag: bytes, kid: bytes, seq: int | None):
        self.protected, self.payload, self.tag, self.kid, self.seq = protected, payload, tag, kid, seq

    def verify(self, key: bytes) -> bytes:
        """Check the tag with `key`; return the payload or raise AuthError."""
        if not hmac.compare_digest(_mac(key, self.protected, self.payload), self.tag):
            raise AuthError(f"bad MAC from kid {self.kid!r}", node=_kid_name(self.kid), seq=self.seq)
        return self.payload


def parse_mac0(message: bytes) -> Mac0:
    """Parse the structure of a COSE_Mac0; raise CoseError naming what is wrong."""
    try:
        obj = cbor2.loads(message)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise CoseError(f"not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_TAG_MAC0:
        raise CoseError(f"not a COSE_Mac0 (tag 17): got {type(obj).__name__} {getattr(obj, 'tag', '')}")
    items = obj.value
    if not isinstance(items, (list, tuple)) or len(items) != 4:
        raise CoseError("COSE_Mac0 must be an array of 4 items")
    protected, unprotected, payload, tag = items
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(tag, bytes):
        raise CoseError("COSE_Mac0 protected header, payload and tag must be byte strings")
    if not hasattr(unprotected, "items"):
        raise CoseError("COSE_Mac0 unprotected header must be a map")
    if len(tag) != HMAC_256_64_TAG_BYTES:
        raise CoseError(f"tag must be {HMAC_256_64_TAG_BYTES} bytes, got {len(tag)}")
    try:
        header = cbor2.loads(protected)
    except Exception as exc:
        raise CoseError(f"protected header is not CBOR: {exc}") from None
    if not hasattr(header, "get"):
        raise CoseError("protected header must be a map")
    if header.get(COSE_HDR_ALG) != COSE_ALG_HMAC_256_64:
        raise CoseError(f"unsupported alg {header.get(COSE_HDR_ALG)!r}: only 4 (HMAC 256/64)")
    kid = header.get(COSE_HDR_KID)
    if not isinstance(kid, bytes) or not kid:
        raise CoseError("protected header lacks kid (4) as a byte string")
    piv = header.get(COSE_HDR_PARTIAL_IV)
    seq = None
    if piv is not None:
        if not isinstance(piv, bytes) or not 1 <= len(piv) <= PIV_MAX_BYTES:
            raise CoseError(f"partial IV must be 1..{PIV_MAX_BYTES} bytes")
        seq = int.from_bytes(piv, "big")
    return Mac0(protected, payload, tag, kid, seq)


def _kid_name(kid: bytes) -> str:
    return kid.decode("utf-8", "replace")
