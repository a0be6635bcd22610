# COSE_Mac0 (RFC 9052) with HMAC 256/64 (RFC 9053): docs/protocol.md §2.
# HMAC-SHA-256: hmac256.py (viper, in a preallocated buffer) where the port compiles native
# code, else hashlib.sha256 (CPython; MicroPython has no hmac module).
import hashlib

from senml import put_head

try:
    import hmac256
except (ImportError, SyntaxError):  # CPython; a MicroPython without a native emitter
    hmac256 = None  # type: ignore[assignment]

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

_COSE_TAG_MAC0 = const(17)
_HDR_ALG = const(1)
HDR_KID = const(4)
_HDR_PIV = const(6)
_ALG_HMAC_256_64 = const(4)
_TAG_LEN = const(8)
_BLOCK = const(64)
_MAC0_PREFIX = const(b"\x84\x64MAC0")  # array(4), text(4) "MAC0"
MAC0_OVERHEAD = const(64)  # a COSE_Mac0's bytes beyond its payload, at most (a kid of 32 bytes)


class Mac:
    """HMAC-SHA-256: hmac256 (nothing allocated per tag) where it imports, else hashlib with
    the key's pads computed once."""

    def __init__(self, key):
        self.tag = bytearray(_TAG_LEN)  # open_ack's scratch
        self._v = hmac256.new(key) if hmac256 is not None else None  # its buffer
        if self._v is not None:
            return
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key + bytes(_BLOCK - len(key))
        self._ipad = bytes([b ^ 0x36 for b in key])
        self._opad = bytes([b ^ 0x5C for b in key])

    def tag_into(self, buf, start, end, out, at):
        """The 8-byte tag, HMAC-SHA-256 of buf[start:end] cut short, at out[at:]. Allocates
        nothing with hmac256; with hashlib its objects, digests and a memoryview."""
        ws = self._v
        if ws is not None:
            hmac256.tag(ws, buf, start, end)
            d = hmac256.DIGEST
            for k in range(_TAG_LEN):
                out[at + k] = ws[d + k]
            return
        d = self.digest(memoryview(buf)[start:end])
        for k in range(_TAG_LEN):
            out[at + k] = d[k]

    def digest(self, *parts):
        ws = self._v
        if ws is not None:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            hmac256.tag(ws, data, 0, len(data))
            return bytes(ws[hmac256.DIGEST:hmac256.DIGEST + 32])
        inner = hashlib.sha256(self._ipad)
        for p in parts:
            inner.update(p)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()


def __getattr__(name):
    # piv, tag_of, mac0, verify_mac0: whole messages at once, allocating (a node's error
    # reports, the check of frames restored at boot, tools and tests); in cose_whole.py, loaded
    # at their first use: a node's frame path seals and opens in place (seal_into, open_ack)
    import cose_whole
    return getattr(cose_whole, name)


# A gateway ack as the gateway writes it: tag 17, array(4), bstr(7) {1: 4, 4: 'gw'}, {}
_ACK_PREFIX = const(b"\xd1\x84\x47\xa2\x01\x04\x04\x42gw\xa0")


def open_ack(mac, buf, h, m):
    """Verify the gateway's COSE_Mac0 at buf[h:h + m] in place (buf[h - 4:h] free; the message
    is spoiled): the payload's (start, end) offsets packed as start << 16 | end, 0 when the MAC is
    bad, -1 when the message is not in the gateway's usual layout (then use verify_mac0).
    Allocates nothing (with hashlib: what Mac.tag_into says)."""
    if m < 21:
        return -1
    for k in range(11):
        if buf[h + k] != _ACK_PREFIX[k]:
            return -1
    p = h + 11
    pb = buf[p]
    if 0x40 <= pb < 0x58:
        q = p + 1
        n = pb - 0x40
    elif pb == 0x58:
        q = p + 2
        n = buf[p + 1]
    elif pb == 0x59:
        q = p + 3
        n = buf[p + 1] << 8 | buf[p + 2]
    else:
        return -1
    end = q + n
    if end + 9 != h + m or buf[end] != 0x48:
        return -1
    # MAC_structure = ["MAC0", protected, h'', payload]: the message from its protected header
    # on, after the MAC0 head (over the tag and the array head) and with h'' for the {}
    for k in range(6):
        buf[h - 4 + k] = _MAC0_PREFIX[k]
    buf[h + 10] = 0x40
    tag = mac.tag
    mac.tag_into(buf, h - 4, end, tag, 0)
    diff = 0
    for k in range(_TAG_LEN):
        diff |= tag[k] ^ buf[end + 1 + k]
    return 0 if diff else q << 16 | end


def seal_into(mac, kid, seq, payload, n, out, at, src=0):
    """The COSE_Mac0 of payload[src:src + n] from `kid` with partial IV `seq`, written at
    out[at:] (out[at - 4:at] is scratch: the MAC is taken in place); its length. The same
    bytes as mac0(); allocates nothing (with hashlib: what Mac.tag_into says). The payload may
    be in out itself, at src >= at + MAC0_OVERHEAD - 9 (it moves forward)."""
    pn = 1
    while seq >> (8 * pn):
        pn += 1
    kn = len(kid)
    plen = 4 + (1 if kn < 24 else 2) + kn + 2 + pn  # {1: 4, 4: kid, 6: piv}
    p = put_head(out, at + 2, 2, plen)
    out[p] = 0xA3
    out[p + 1] = _HDR_ALG
    out[p + 2] = _ALG_HMAC_256_64
    out[p + 3] = HDR_KID
    p = put_head(out, p + 4, 2, kn)
    for i in range(kn):
        out[p + i] = kid[i]
    p += kn
    out[p] = _HDR_PIV
    out[p + 1] = 0x40 | pn
    p += 2
    for i in range(pn):
        out[p + i] = (seq >> (8 * (pn - 1 - i))) & 0xFF
    p += pn
    marker = p
    p = put_head(out, p + 1, 2, n)
    for i in range(n):
        out[p + i] = payload[src + i]
    p += n
    # MAC_structure = ["MAC0", protected, h'', payload] is the message with another head
    # and h'' (0x40) for the unprotected {} (0xA0)
    for k in range(6):
        out[at - 4 + k] = _MAC0_PREFIX[k]
    out[marker] = 0x40
    mac.tag_into(out, at - 4, p, out, p + 1)
    out[at] = 0xD1  # tag 17
    out[at + 1] = 0x84  # array(4)
    out[marker] = 0xA0
    out[p] = 0x48
    return p + 9 - at
