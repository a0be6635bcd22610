# COSE_Mac0 of whole messages at once, allocating (docs/protocol.md §2): a node's error
# reports, the check of the frames it restores at boot, tools and tests. cose.X finds these
# (cose's __getattr__), so a node that never calls them keeps none of their functions on its
# heap; its frame path seals and opens in place (cose.seal_into, cose.open_ack).
import cbor
from cose import HDR_KID

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

# cose's (constants folded there: no names to import)
_COSE_TAG_MAC0 = const(17)
_HDR_ALG = const(1)
_HDR_PIV = const(6)
_ALG_HMAC_256_64 = const(4)
_TAG_LEN = const(8)
_MAC0_PREFIX = const(b"\x84\x64MAC0")  # array(4), text(4) "MAC0"


def piv(seq):
    """Sequence number as a partial IV: big-endian, fewest bytes, at least one."""
    n = 1
    while seq >> (8 * n):
        n += 1
    return bytes([(seq >> (8 * (n - 1 - i))) & 0xFF for i in range(n)])


def _bstr(b):
    out = bytearray()
    cbor.head(2, len(b), out)
    out.extend(b)
    return out


def tag_of(mac, protected, payload):
    """The 8-byte tag over MAC_structure = ["MAC0", protected, h'', payload]."""
    return mac.digest(_MAC0_PREFIX, _bstr(protected), b"\x40", _bstr(payload))[:_TAG_LEN]


def mac0(mac, kid, payload, seq=None):
    """A tagged COSE_Mac0 (bytes). `mac` is a Mac (the node's key), `kid` bytes."""
    header = {_HDR_ALG: _ALG_HMAC_256_64, HDR_KID: kid}
    if seq is not None:
        header[_HDR_PIV] = piv(seq)
    protected = cbor.dumps(header)
    out = bytearray(b"\xd1\x84")  # tag 17, array(4)
    out.extend(_bstr(protected))
    out.append(0xA0)  # unprotected: {}
    out.extend(_bstr(payload))
    out.extend(_bstr(tag_of(mac, protected, payload)))
    return bytes(out)


def verify_mac0(mac, msg):
    """Check a COSE_Mac0; return (protected header dict, payload). ValueError if bad."""
    obj = cbor.loads(msg)
    if not isinstance(obj, cbor.Tag) or obj.tag != _COSE_TAG_MAC0:
        raise ValueError("not a COSE_Mac0")
    items = obj.value
    if not isinstance(items, list) or len(items) != 4:
        raise ValueError("COSE_Mac0 must have 4 items")
    protected, _unprot, payload, tag = items
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(tag, bytes):
        raise ValueError("COSE_Mac0 items of the wrong type")
    header = cbor.loads(protected)
    if not isinstance(header, dict) or header.get(_HDR_ALG) != _ALG_HMAC_256_64:
        raise ValueError("unsupported COSE algorithm")
    expect = tag_of(mac, protected, payload)
    diff = len(expect) ^ len(tag)
    for a, b in zip(expect, tag):
        diff |= a ^ b
    if diff:
        raise ValueError("bad MAC")
    return header, payload
