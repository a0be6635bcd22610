# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A node's frame from bytes to readings, compiled. Same API, results and errors as
`_verify_py` (the specification: read its docstring).

The nodes' layout of COSE_Mac0 (tag 17, empty unprotected map, protected {1: 4,
4: kid, 6: piv}: `cose.mac0`) is read in C, from offsets into the message; any
other layout, and every malformed message, goes through `cose.parse_mac0`, whose
errors are the reference's. The MAC structure is built in one buffer and hashed
with hashlib's SHA-256 (OpenSSL's, or CPython's own in a gateway without TLS:
gateway/runtime/tls.py): for the keys whose `cose.MacKey` is kept, from the key's
padded blocks hashed once (two copies and two updates); past them as RFC 2104
writes HMAC, two SHA-256 calls over the padded key and the data, which costs about
half as much again and no memory per key, where a one-shot `hmac.digest` costs
about two and a half times as much (bench/core_verify.py). The tag is compared in
constant time. The replay windows are C integers. The acks (`ack`) are written
and MACed the same way.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memcmp

import hashlib as _hashlib

from core_ext._ingest_py import IngestError
from core_ext._verify_py import MAC_KEYS
from gateway.errors import AuthError, PayloadError, ReplayError
from gateway.protocol import cose as _cose
from gateway.protocol.numbers import (COSE_ALG_HMAC_256_64, COSE_HDR_ALG, COSE_HDR_KID, COSE_HDR_PARTIAL_IV,
                                      COSE_TAG_MAC0, GATEWAY_KID, HMAC_256_64_TAG_BYTES, MAC0_CONTEXT, MSG_ACK,
                                      PIV_MAX_BYTES, REPLAY_WINDOW)

cdef enum:
    TAG_BYTES = 8
if HMAC_256_64_TAG_BYTES != TAG_BYTES or not 1 <= REPLAY_WINDOW <= 64 or PIV_MAX_BYTES > 7:
    raise ImportError("core_ext._verify is built for 8-byte tags, windows of at most 64 and partial IVs "
                      "of at most 7 bytes")

# the message's fixed bytes (RFC 9052 §6.2 as cose.mac0 writes it), as C constants
cdef unsigned char _MAC0_0 = 0xC0 | COSE_TAG_MAC0  # tag 17 (one byte: 17 < 24)
cdef unsigned char _MAC0_1 = 0x84  # an array of 4
cdef unsigned char _EMPTY_MAP = 0xA0
cdef unsigned char _TAG_HEAD = 0x40 | TAG_BYTES
cdef unsigned char _PIV_LABEL = COSE_HDR_PARTIAL_IV
cdef unsigned char _PROTECTED_HEAD[4]
_PROTECTED_HEAD[:] = [0xA3, COSE_HDR_ALG, COSE_ALG_HMAC_256_64, COSE_HDR_KID]
cdef int _PIV_MAX = PIV_MAX_BYTES
# the MAC structure's start: ["MAC0", (protected), (external_aad), (payload)]
cdef bytes _STRUCTURE_HEAD = bytes([0x84, 0x60 | len(MAC0_CONTEXT)]) + MAC0_CONTEXT.encode()
cdef int _W = REPLAY_WINDOW
cdef uint64_t _MASK = <uint64_t>0xFFFFFFFFFFFFFFFF if REPLAY_WINDOW == 64 else ((<uint64_t>1 << REPLAY_WINDOW) - 1)

cdef object _MacKey = _cose.MacKey
cdef object _parse_mac0 = _cose.parse_mac0
cdef object _sha256 = _hashlib.sha256  # OpenSSL's, or CPython's own where the gateway leaves OpenSSL out
# the gateway's acks: protected {1: 4, 4: "gw"} (cose.mac0 without a partial IV)
cdef bytes _ACK_PROTECTED = bytes([0xA2, COSE_HDR_ALG, COSE_ALG_HMAC_256_64, COSE_HDR_KID,
                                   0x40 | len(GATEWAY_KID)]) + GATEWAY_KID
cdef int _MSG_ACK = MSG_ACK
if len(GATEWAY_KID) >= 24 or not 0 <= MSG_ACK < 24:
    raise ImportError("core_ext._verify writes acks with a kid under 24 bytes and a message type under 24")


cdef inline Py_ssize_t _bstr_at(const unsigned char* d, Py_ssize_t n, Py_ssize_t i, Py_ssize_t* start) noexcept nogil:
    """The end of the byte string whose head is at d[i] (its start in `start`), within the
    first n bytes; -1 if there is none (as cose._bstr_at's IndexError or ValueError)."""
    cdef unsigned char b
    cdef Py_ssize_t s, k
    if i >= n:
        return -1
    b = d[i]
    if 0x40 <= b < 0x58:
        s, k = i + 1, b - 0x40
    elif b == 0x58:
        if i + 1 >= n:
            return -1
        s, k = i + 2, d[i + 1]
    elif b == 0x59:
        if i + 2 >= n:
            return -1
        s, k = i + 3, (<Py_ssize_t>d[i + 1]) << 8 | d[i + 2]
    else:
        return -1
    if s + k > n:
        return -1
    start[0] = s
    return s + k


cdef inline Py_ssize_t _head_len(Py_ssize_t n) noexcept nogil:
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5


cdef inline Py_ssize_t _bstr_head(unsigned char* out, Py_ssize_t n) noexcept nogil:
    """A byte string's head in its shortest form (as cose._bstr), written to out; its length."""
    if n < 24:
        out[0] = 0x40 | n
        return 1
    if n < 0x100:
        out[0] = 0x58
        out[1] = n
        return 2
    if n < 0x10000:
        out[0] = 0x59
        out[1] = n >> 8
        out[2] = n & 0xFF
        return 3
    out[0] = 0x5A
    out[1] = (n >> 24) & 0xFF
    out[2] = (n >> 16) & 0xFF
    out[3] = (n >> 8) & 0xFF
    out[4] = n & 0xFF
    return 5


cdef class _Window:
    """One node's replay window: as _verify_py.ReplayWindow, in C integers."""
    cdef int64_t top
    cdef uint64_t bitmap

    cdef inline bint seen(self, int64_t seq) noexcept:
        cdef int64_t offset
        if seq > self.top:
            return False
        offset = self.top - seq
        return offset >= _W or (self.bitmap >> offset) & 1

    cdef inline void mark(self, int64_t seq) noexcept:
        cdef int64_t shift
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = (((self.bitmap << shift) | 1) & _MASK) if shift < _W else 1
            self.top = seq
        else:
            self.bitmap |= (<uint64_t>1) << (self.top - seq)


cdef _Window _window(int64_t top, uint64_t bitmap):
    cdef _Window w = _Window.__new__(_Window)
    w.top, w.bitmap = top, bitmap
    return w


cdef class Verifier:
    cdef public object lookup
    cdef object _parser
    cdef object _parse  # the parser's bound parse method
    cdef dict _windows
    cdef dict _mac_keys

    def __init__(self, lookup, parser, windows=None):
        self.lookup = lookup
        self.parser = parser
        self._mac_keys = {}
        self.restore(windows or {})

    @property
    def parser(self):
        return self._parser

    @parser.setter
    def parser(self, parser):
        self._parser, self._parse = parser, parser.parse

    def mac_key(self, bytes key):
        return self._mac_key(key)

    cdef object _mac_key(self, bytes key):
        mk = self._mac_keys.get(key)
        if mk is None:
            if len(self._mac_keys) >= MAC_KEYS:
                return key  # the plain key: a one-shot HMAC, as fast as making a MacKey for one use
            mk = self._mac_keys[key] = _MacKey(key)
        return mk

    def state(self, str node):
        cdef _Window w = self._windows.get(node)
        return None if w is None else (w.top, w.bitmap)

    def restore(self, dict windows):
        self._windows = {name: _window(s[0], s[1]) for name, s in windows.items()}

    def check(self, message, double now):
        cdef const unsigned char* d = NULL
        cdef Py_ssize_t n, p0 = 0, p1 = 0, b0 = 0, b1 = 0, k0 = 0, k1 = 0, v0 = 0, v1 = 0, i
        cdef int64_t seq = 0
        cdef bint has_seq = True, plain = False
        cdef bytes kid, protected = None, payload, tag = None
        if type(message) is bytes:
            d = <const unsigned char*>PyBytes_AS_STRING(message)
            n = PyBytes_GET_SIZE(message)
            plain = _plain(d, n, &p0, &p1, &b0, &b1, &k0, &k1, &v0, &v1)
        if plain:
            for i in range(v0, v1):
                seq = seq << 8 | d[i]
            kid = PyBytes_FromStringAndSize(<const char*>d + k0, k1 - k0)
        else:
            m = _parse_mac0(message)  # the general reader: its CoseError, or a Mac0 in another layout
            kid, protected, payload, tag = m.kid, m.protected, m.payload, m.tag
            has_seq = m.seq is not None
            if has_seq:
                seq = m.seq
        node = self.lookup(kid)
        if node is None:
            raise AuthError(f"unknown node kid {kid!r}: not in the registry", node=kid.decode("utf-8", "replace"))
        key = node.key
        if plain:
            digest = self._mac(key, d + p0, p1 - p0, d + b0, b1 - b0)
            ok = _same_tag(<const unsigned char*>PyBytes_AS_STRING(digest), d + b1 + 1)
        else:
            digest = self._mac(key, <const unsigned char*>PyBytes_AS_STRING(protected), len(protected),
                               <const unsigned char*>PyBytes_AS_STRING(payload), len(payload))
            ok = _same_tag(<const unsigned char*>PyBytes_AS_STRING(digest),
                           <const unsigned char*>PyBytes_AS_STRING(tag))
        if not ok:
            raise AuthError(f"bad MAC from kid {kid!r}", node=kid.decode("utf-8", "replace"),
                            seq=seq if has_seq else None)
        name = node.name
        if not has_seq:
            raise AuthError(f"node {name}: frame without a sequence number (partial IV)", node=name)
        cdef _Window w = self._windows.get(name)
        if w is None:
            w = self._windows[name] = _window(-1, 0)
        if w.seen(seq):
            raise ReplayError(f"node {name}: sequence number {seq} already seen (window top {w.top})",
                              node=name, seq=seq, key=key)
        w.mark(seq)  # a valid MAC: the number is used up, whatever the payload holds
        if plain:
            payload = PyBytes_FromStringAndSize(<const char*>d + b0, b1 - b0)
        try:
            count = self._parse(payload, now)
        except IngestError as exc:
            raise PayloadError(f"node {name} seq {seq}: invalid SenML {exc}", node=name, seq=seq,
                               key=key) from None
        return name, seq, key, payload, count

    def ack(self, bytes key, seq, status):
        cdef unsigned char body[32]
        cdef Py_ssize_t nb, np = PyBytes_GET_SIZE(_ACK_PROTECTED), at
        if not (0 <= seq < 2 ** 64 and 0 <= status < 2 ** 64):
            raise ValueError(f"ack for seq {seq}, status {status}: each must be an unsigned 64-bit integer")
        body[0] = 0x83  # [MSG_ACK, seq, status]
        nb = 1 + _uint(body + 1, _MSG_ACK)
        nb += _uint(body + nb, seq)
        nb += _uint(body + nb, status)
        digest = self._mac(key, <const unsigned char*>PyBytes_AS_STRING(_ACK_PROTECTED), np, body, nb)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 + 1 + np + 1 + 1 + nb + 1 + TAG_BYTES)
        cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
        o[0], o[1], o[2] = _MAC0_0, _MAC0_1, 0x40 | np
        memcpy(o + 3, PyBytes_AS_STRING(_ACK_PROTECTED), np)
        at = 3 + np
        o[at], o[at + 1] = _EMPTY_MAP, 0x40 | nb
        memcpy(o + at + 2, body, nb)
        at += 2 + nb
        o[at] = _TAG_HEAD
        memcpy(o + at + 1, PyBytes_AS_STRING(digest), TAG_BYTES)
        return out

    cdef bytes _mac(self, key, const unsigned char* prot, Py_ssize_t np, const unsigned char* body, Py_ssize_t nb):
        """HMAC-SHA256 (32 bytes) of the MAC structure of these protected header and payload."""
        cdef Py_ssize_t head = PyBytes_GET_SIZE(_STRUCTURE_HEAD)
        cdef bytes structure = PyBytes_FromStringAndSize(NULL, head + _head_len(np) + np + 1 + _head_len(nb) + nb)
        cdef unsigned char* s = <unsigned char*>PyBytes_AS_STRING(structure)
        cdef Py_ssize_t at = head
        memcpy(s, PyBytes_AS_STRING(_STRUCTURE_HEAD), head)
        at += _bstr_head(s + at, np)
        memcpy(s + at, prot, np)
        at += np
        s[at] = 0x40  # external_aad: empty
        at += 1
        at += _bstr_head(s + at, nb)
        memcpy(s + at, body, nb)
        mk = self._mac_key(key)
        if type(mk) is bytes:
            return _hmac_sha256(mk, structure)
        inner = mk._inner.copy()
        inner.update(structure)
        outer = mk._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


cdef bytes _hmac_sha256(bytes key, bytes data):
    """HMAC-SHA256 as RFC 2104 §2 writes it: H(K ^ opad, H(K ^ ipad, data)), K the key
    padded to a block (hashed first when longer than one)."""
    cdef const unsigned char* k
    cdef Py_ssize_t kn, n = PyBytes_GET_SIZE(data), i
    cdef unsigned char c
    if PyBytes_GET_SIZE(key) > 64:
        key = _sha256(key).digest()
    k = <const unsigned char*>PyBytes_AS_STRING(key)
    kn = PyBytes_GET_SIZE(key)
    cdef bytes buf = PyBytes_FromStringAndSize(NULL, 64 + n)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(buf)
    for i in range(64):
        c = k[i] if i < kn else 0
        p[i] = c ^ 0x36
    memcpy(p + 64, PyBytes_AS_STRING(data), n)
    inner = _sha256(buf).digest()
    buf = PyBytes_FromStringAndSize(NULL, 64 + 32)
    p = <unsigned char*>PyBytes_AS_STRING(buf)
    for i in range(64):
        c = k[i] if i < kn else 0
        p[i] = c ^ 0x5C
    memcpy(p + 64, PyBytes_AS_STRING(inner), 32)
    return _sha256(buf).digest()


cdef inline Py_ssize_t _uint(unsigned char* out, uint64_t v) noexcept nogil:
    """A CBOR unsigned integer (major type 0) in its shortest form; its length."""
    cdef int n, i
    if v < 24:
        out[0] = <unsigned char>v
        return 1
    if v < 0x100:
        out[0], n = 24, 1
    elif v < 0x10000:
        out[0], n = 25, 2
    elif v < 0x100000000ULL:
        out[0], n = 26, 4
    else:
        out[0], n = 27, 8
    for i in range(n):
        out[n - i] = (v >> (8 * i)) & 0xFF
    return n + 1


cdef inline bint _same_tag(const unsigned char* mac, const unsigned char* tag) noexcept nogil:
    """The first TAG_BYTES of mac equal tag, compared in constant time."""
    cdef unsigned char diff = 0
    cdef int i
    for i in range(TAG_BYTES):
        diff |= mac[i] ^ tag[i]
    return diff == 0


cdef inline bint _plain(const unsigned char* d, Py_ssize_t n, Py_ssize_t* p0, Py_ssize_t* p1, Py_ssize_t* b0,
                        Py_ssize_t* b1, Py_ssize_t* k0, Py_ssize_t* k1, Py_ssize_t* v0,
                        Py_ssize_t* v1) noexcept nogil:
    """The nodes' layout, as cose._parse_plain reads it: the offsets of the protected header,
    payload, kid and partial IV; False for any other layout (the general reader judges it)."""
    if n < 2 or d[0] != _MAC0_0 or d[1] != _MAC0_1:
        return False
    p1[0] = _bstr_at(d, n, 2, p0)
    if p1[0] < 0 or p1[0] >= n or d[p1[0]] != _EMPTY_MAP:
        return False
    b1[0] = _bstr_at(d, n, p1[0] + 1, b0)
    if b1[0] < 0 or b1[0] >= n or d[b1[0]] != _TAG_HEAD or b1[0] + 1 + TAG_BYTES != n:
        return False
    if p1[0] - p0[0] < 4 or memcmp(d + p0[0], _PROTECTED_HEAD, 4) != 0:
        return False
    k1[0] = _bstr_at(d, p1[0], p0[0] + 4, k0)
    if k1[0] < 0 or k1[0] >= p1[0] or d[k1[0]] != _PIV_LABEL:
        return False
    v1[0] = _bstr_at(d, p1[0], k1[0] + 1, v0)
    if v1[0] != p1[0] or k0[0] == k1[0] or not 1 <= v1[0] - v0[0] <= _PIV_MAX:
        return False
    return True
