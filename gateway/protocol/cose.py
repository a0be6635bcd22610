"""COSE_Mac0 with HMAC 256/64 (RFC 9052 §6.2, RFC 9053 §3.1), as docs/protocol.md §2 uses it."""
from __future__ import annotations

import hashlib
import hmac

import cbor2

from gateway.errors import AuthError, CoseError
from gateway.protocol.numbers import (
    COSE_ALG_HMAC_256_64,
    COSE_HDR_ALG,
    COSE_HDR_KID,
    COSE_HDR_PARTIAL_IV,
    COSE_TAG_MAC0,
    HMAC_256_64_TAG_BYTES,
    MAC0_CONTEXT,
    PIV_MAX_BYTES,
)


# The CBOR this module writes is built by hand from these pieces, byte for byte what
# cbor2.dumps gives (tests/gateway/test_cose_ingest.py checks): per frame, the MAC_structure
# and the ack are the gateway's hottest CBOR, and cbor2 cost a microsecond or two for them.
_MAC_STRUCTURE_HEAD = bytes([0x84]) + cbor2.dumps(MAC0_CONTEXT)  # [context, protected, external_aad, payload]
_EMPTY_BSTR = b"\x40"
_EMPTY_MAP = b"\xa0"
_MAC0_HEAD = bytes([0xC0 | COSE_TAG_MAC0, 0x84])  # tag 17, an array of 4 (RFC 8949 §3.4)
_TAG_HEAD = bytes([0x40 | HMAC_256_64_TAG_BYTES])


def _bstr(data: bytes) -> bytes:
    """A CBOR byte string's head (RFC 8949 §3: major type 2, the shortest length form)."""
    n = len(data)
    if n < 24:
        return bytes([0x40 | n])
    if n < 0x100:
        return bytes([0x58, n])
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


_SHA256_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))  # RFC 2104 §2, as translation tables
_OPAD = bytes(b ^ 0x5C for b in range(256))


class MacKey:
    """An HMAC-SHA256 key with its padded inner and outer blocks hashed once (RFC 2104 §2).
    A tag then costs two copies of a hash state, about 0.5 µs, where a one-shot HMAC sets
    itself up again each time (1.3 µs here). Holds what the key does: keep it like the key.
    Costs about 600 bytes (two hash states)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, data: bytes) -> bytes:
        """HMAC-SHA256 of data (32 bytes)."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _mac(key: bytes | MacKey, protected: bytes, payload: bytes) -> bytes:
    structure = b"".join((_MAC_STRUCTURE_HEAD, _bstr(protected), protected, _EMPTY_BSTR, _bstr(payload), payload))
    if isinstance(key, MacKey):
        return key.digest(structure)[:HMAC_256_64_TAG_BYTES]
    return hmac.digest(key, structure, "sha256")[:HMAC_256_64_TAG_BYTES]


def encode_piv(seq: int) -> bytes:
    """Sequence number as a partial IV: big-endian, fewest bytes, at least one."""
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


def mac0(key: bytes | MacKey, kid: bytes, payload: bytes, seq: int | None = None) -> bytes:
    """Build a tagged COSE_Mac0 (bytes). `seq` goes into the partial IV when given."""
    # {1: alg, 4: kid[, 6: partial IV]}, in that order
    parts = [bytes([0xA3 if seq is not None else 0xA2, COSE_HDR_ALG, COSE_ALG_HMAC_256_64, COSE_HDR_KID]),
             _bstr(kid), kid]
    if seq is not None:
        piv = encode_piv(seq)
        parts += [bytes([COSE_HDR_PARTIAL_IV]), _bstr(piv), piv]
    protected = b"".join(parts)
    tag = _mac(key, protected, payload)
    return b"".join((_MAC0_HEAD, _bstr(protected), protected, _EMPTY_MAP, _bstr(payload), payload, _TAG_HEAD, tag))


class Mac0:
    """A parsed, not yet verified COSE_Mac0."""

    __slots__ = ("protected", "payload", "tag", "kid", "seq")

    def __init__(self, protected: bytes, payload: bytes, tag: bytes, kid: bytes, seq: int | None):
        self.protected, self.payload, self.tag, self.kid, self.seq = protected, payload, tag, kid, seq

    def verify(self, key: bytes | MacKey) -> bytes:
        """Check the tag with `key`; return the payload or raise AuthError."""
        if not hmac.compare_digest(_mac(key, self.protected, self.payload), self.tag):
            raise AuthError(f"bad MAC from kid {self.kid!r}", node=_kid_name(self.kid), seq=self.seq)
        return self.payload


def _bstr_at(data: bytes, i: int) -> tuple[int, int]:
    """(start, end) of the byte string whose head is at data[i]; IndexError or ValueError if
    there is none (an indefinite or 4-byte length never occurs in a node's frame)."""
    b = data[i]
    if 0x40 <= b < 0x58:
        start, n = i + 1, b - 0x40
    elif b == 0x58:
        start, n = i + 2, data[i + 1]
    elif b == 0x59:
        start, n = i + 3, data[i + 1] << 8 | data[i + 2]
    else:
        raise ValueError(b)
    if start + n > len(data):
        raise ValueError(n)
    return start, start + n


_PROTECTED_HEAD = bytes([0xA3, COSE_HDR_ALG, COSE_ALG_HMAC_256_64, COSE_HDR_KID])  # {1: 4, 4: kid, 6: piv}


def _parse_plain(message: bytes) -> Mac0 | None:
    """The COSE_Mac0 every headrace node sends (mac0() above: tag 17, empty unprotected map,
    protected {1: 4, 4: kid, 6: piv}), read without building CBOR objects; None for any
    other layout, which the general parser then judges. Whatever this accepts, the general
    parser accepts with the same result."""
    if type(message) is not bytes or message[:2] != _MAC0_HEAD:
        return None
    try:
        p0, p1 = _bstr_at(message, 2)
        if message[p1] != _EMPTY_MAP[0]:
            return None
        b0, b1 = _bstr_at(message, p1 + 1)
        if message[b1] != _TAG_HEAD[0] or b1 + 1 + HMAC_256_64_TAG_BYTES != len(message):
            return None
        protected = message[p0:p1]
        if protected[:4] != _PROTECTED_HEAD:
            return None
        k0, k1 = _bstr_at(protected, 4)
        if protected[k1] != COSE_HDR_PARTIAL_IV:
            return None
        v0, v1 = _bstr_at(protected, k1 + 1)
    except (IndexError, ValueError):
        return None
    if v1 != len(protected) or k0 == k1 or not 1 <= v1 - v0 <= PIV_MAX_BYTES:
        return None
    return Mac0(protected, message[b0:b1], message[b1 + 1:], protected[k0:k1], int.from_bytes(protected[v0:v1], "big"))


def parse_mac0(message: bytes) -> Mac0:
    """Parse the structure of a COSE_Mac0; raise CoseError naming what is wrong."""
    plain = _parse_plain(message)
    return plain if plain is not None else _parse_cbor(message)


def _parse_cbor(message: bytes) -> Mac0:
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
    odd = [k for k in header if type(k) not in (int, str)]
    if odd:  # RFC 9052 §3.1: labels are integers or text strings; a true key is not label 1 (alg)
        raise CoseError(f"protected header label {odd[0]!r} is neither an integer nor a text string")
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
