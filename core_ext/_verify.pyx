# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""A node's frame from bytes to readings, compiled. Same API, results and errors as
`_verify_py` (the specification: read its docstring).

The nodes' layout of COSE_Mac0 (tag 17, empty unprotected map, protected {1: 4,
4: kid, 6: piv}: `cose.mac0`) is read in C, from offsets into the message; any
other layout, and every malformed message, goes through `cose.parse_mac0`, whose
errors are the reference's. The MAC is HMAC-SHA256 in C (FIPS 180-4, RFC 2104,
below), over the MAC structure's pieces where they lie: for the first MAC_KEYS
keys met the hash states after the key's padded inner and outer blocks (its
midstates, 64 bytes) are kept, so a frame's tag costs its structure's blocks and
one more, with no Python object made; past them the midstates are made again for
each tag (two blocks more), and memory stays bounded. hashlib's objects (a copy, an
update and a digest each for the inner and the outer hash) cost about three times
the hashing itself (bench/core_verify.py). The tag is compared in constant time.
The replay windows are C integers. The acks (`ack`) are written and MACed the same
way. `hmac_sha256(key, data)` is the same HMAC on its own, for tests and benches.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp

from core_ext._ingest_py import IngestError
from core_ext._verify_py import MAC_KEYS
from gateway.errors import AuthError, PayloadError, ReplayError
from gateway.protocol import cose as _cose
from gateway.protocol.numbers import (COSE_ALG_HMAC_256_64, COSE_HDR_ALG, COSE_HDR_KID, COSE_HDR_PARTIAL_IV,
                                      COSE_TAG_MAC0, GATEWAY_KID, HMAC_256_64_TAG_BYTES, MAC0_CONTEXT, MSG_ACK,
                                      PIV_MAX_BYTES, REPLAY_WINDOW)

cdef extern from *:
    """
    /* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) from midstates: the hash of the key's
       padded inner and outer blocks, kept per key, so a tag costs the data's blocks and one
       more, with no object made. Checked against hashlib on every length up to a few blocks
       (tests/core/test_verify.py). */
    #include <stdint.h>
    #include <string.h>
    typedef struct { uint32_t h[8]; uint64_t n; unsigned char buf[64]; size_t fill; } hr_sha256;
    static const uint32_t hr_sha256_k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    static const uint32_t hr_sha256_iv[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    #define HR_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
    /* one round, the eight working variables named in their turn (no moves between rounds) */
    #define HR_ROUND(a, b, c, d, e, f, g, h, i) \
        t1 = h + (HR_ROTR(e, 6) ^ HR_ROTR(e, 11) ^ HR_ROTR(e, 25)) + (g ^ (e & (f ^ g))) + hr_sha256_k[i] + w[i]; \
        d += t1; \
        h = t1 + (HR_ROTR(a, 2) ^ HR_ROTR(a, 13) ^ HR_ROTR(a, 22)) + ((a & b) | (c & (a | b)));
    static void hr_sha256_block_c(uint32_t *st, const unsigned char *p) {
        uint32_t w[64], a, b, c, d, e, f, g, h, t1;
        int i;
        for (i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
        for (i = 16; i < 64; i++)
            w[i] = w[i - 16] + (HR_ROTR(w[i - 15], 7) ^ HR_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3))
                   + w[i - 7] + (HR_ROTR(w[i - 2], 17) ^ HR_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10));
        a = st[0]; b = st[1]; c = st[2]; d = st[3]; e = st[4]; f = st[5]; g = st[6]; h = st[7];
        for (i = 0; i < 64; i += 8) {
            HR_ROUND(a, b, c, d, e, f, g, h, i)
            HR_ROUND(h, a, b, c, d, e, f, g, i + 1)
            HR_ROUND(g, h, a, b, c, d, e, f, i + 2)
            HR_ROUND(f, g, h, a, b, c, d, e, i + 3)
            HR_ROUND(e, f, g, h, a, b, c, d, i + 4)
            HR_ROUND(d, e, f, g, h, a, b, c, i + 5)
            HR_ROUND(c, d, e, f, g, h, a, b, i + 6)
            HR_ROUND(b, c, d, e, f, g, h, a, i + 7)
        }
        st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e; st[5] += f; st[6] += g; st[7] += h;
    }
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <cpuid.h>
    #include <immintrin.h>
    /* the same block with the x86 SHA extensions (Intel SHA-NI: most x86-64 processors since
       2017), about five times as fast; four rounds a step, the schedule four words a step */
    __attribute__((target("sha,sse4.1")))
    static void hr_sha256_block_ni(uint32_t *st, const unsigned char *p) {
        const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
        __m128i s0, s1, t, m, w[4], abef, cdgh;
        int i;
        t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)st), 0xB1);         /* CDAB */
        s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(st + 4)), 0x1B);  /* EFGH */
        s0 = _mm_alignr_epi8(t, s1, 8);                                            /* ABEF */
        s1 = _mm_blend_epi16(s1, t, 0xF0);                                         /* CDGH */
        abef = s0;
        cdgh = s1;
        for (i = 0; i < 16; i++) {
            if (i < 4) {
                w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
            } else {  /* w[4i..4i+3] from the sixteen words before them */
                t = _mm_sha256msg1_epu32(w[i & 3], w[(i - 3) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(i - 1) & 3], w[(i - 2) & 3], 4));
                w[i & 3] = _mm_sha256msg2_epu32(t, w[(i - 1) & 3]);
            }
            m = _mm_add_epi32(w[i & 3], _mm_loadu_si128((const __m128i *)(hr_sha256_k + 4 * i)));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        t = _mm_shuffle_epi32(s0, 0x1B);                                           /* FEBA */
        s1 = _mm_shuffle_epi32(s1, 0xB1);                                          /* DCHG */
        _mm_storeu_si128((__m128i *)st, _mm_blend_epi16(t, s1, 0xF0));             /* DCBA */
        _mm_storeu_si128((__m128i *)(st + 4), _mm_alignr_epi8(s1, t, 8));          /* HGFE */
    }
    static int hr_sha_ni(void) {  /* CPUID leaf 7: SHA (EBX bit 29); leaf 1: SSE4.1, SSSE3 */
        unsigned int a, b, c, d;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 29))) return 0;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
        return (c & (1u << 19)) && (c & (1u << 9));
    }
    #else
    #define hr_sha256_block_ni hr_sha256_block_c
    static int hr_sha_ni(void) { return 0; }
    #endif
    /* the block function: the SHA extensions' where the processor has them (hr_sha256_use) */
    static void (*hr_sha256_block)(uint32_t *, const unsigned char *) = hr_sha256_block_c;
    static int hr_sha256_use(int how) {  /* 1: the best there is, 0: the portable code, -1: only ask */
        if (how >= 0) hr_sha256_block = how && hr_sha_ni() ? hr_sha256_block_ni : hr_sha256_block_c;
        return hr_sha256_block != hr_sha256_block_c;
    }
    /* from a state of `n` bytes hashed (whole blocks): the IV and 0, or a midstate and 64 */
    static void hr_sha256_start(hr_sha256 *s, const uint32_t *h, uint64_t n) {
        memcpy(s->h, h, sizeof s->h); s->n = n; s->fill = 0;
    }
    static void hr_sha256_update(hr_sha256 *s, const unsigned char *d, size_t n) {
        size_t take;
        s->n += n;
        if (s->fill) {
            take = 64 - s->fill < n ? 64 - s->fill : n;
            memcpy(s->buf + s->fill, d, take); s->fill += take; d += take; n -= take;
            if (s->fill < 64) return;
            hr_sha256_block(s->h, s->buf); s->fill = 0;
        }
        for (; n >= 64; d += 64, n -= 64) hr_sha256_block(s->h, d);
        if (n) { memcpy(s->buf, d, n); s->fill = n; }
    }
    static void hr_sha256_final(hr_sha256 *s, unsigned char *out) {
        uint64_t bits = s->n * 8;
        int i;
        s->buf[s->fill++] = 0x80;
        if (s->fill > 56) {
            memset(s->buf + s->fill, 0, 64 - s->fill); hr_sha256_block(s->h, s->buf); s->fill = 0;
        }
        memset(s->buf + s->fill, 0, 56 - s->fill);
        for (i = 0; i < 8; i++) s->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
        hr_sha256_block(s->h, s->buf);
        for (i = 0; i < 8; i++) {
            out[4 * i] = (unsigned char)(s->h[i] >> 24); out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
            out[4 * i + 2] = (unsigned char)(s->h[i] >> 8); out[4 * i + 3] = (unsigned char)s->h[i];
        }
    }
    /* the HMAC midstates of a key: mid[0..7] after its block XOR ipad, mid[8..15] after XOR opad */
    static void hr_hmac_midstates(const unsigned char *key, size_t n, uint32_t *mid) {
        unsigned char k[64], block[64];
        hr_sha256 s;
        int i;
        memset(k, 0, 64);
        if (n > 64) { hr_sha256_start(&s, hr_sha256_iv, 0); hr_sha256_update(&s, key, n); hr_sha256_final(&s, k); }
        else memcpy(k, key, n);
        for (i = 0; i < 64; i++) block[i] = k[i] ^ 0x36;
        memcpy(mid, hr_sha256_iv, 32); hr_sha256_block(mid, block);
        for (i = 0; i < 64; i++) block[i] = k[i] ^ 0x5c;
        memcpy(mid + 8, hr_sha256_iv, 32); hr_sha256_block(mid + 8, block);
    }
    /* the end of an HMAC: the inner hash's state `s` (started from mid, data given) to the tag */
    static void hr_hmac_final(hr_sha256 *s, const uint32_t *mid, unsigned char *out) {
        unsigned char inner[32];
        hr_sha256_final(s, inner);
        hr_sha256_start(s, mid + 8, 64);
        hr_sha256_update(s, inner, 32);
        hr_sha256_final(s, out);
    }
    """
    ctypedef struct hr_sha256:
        pass
    void hr_sha256_start(hr_sha256* s, const uint32_t* h, uint64_t n) noexcept nogil
    void hr_sha256_update(hr_sha256* s, const unsigned char* d, size_t n) noexcept nogil
    void hr_hmac_midstates(const unsigned char* key, size_t n, uint32_t* mid) noexcept nogil
    void hr_hmac_final(hr_sha256* s, const uint32_t* mid, unsigned char* out) noexcept nogil
    int hr_sha256_use(int how) noexcept nogil

# the processor's SHA extensions when it has them; `sha256_code()` says which code hashes
_SHA256_EXTENSIONS = hr_sha256_use(1)


def sha256_code(use=None):
    """Which code makes the SHA-256 blocks: "sha-ni" (the x86 SHA extensions) or "portable".
    `use="portable"` switches to the portable C (tests check both against hashlib),
    `use="best"` back to the extensions when the processor has them."""
    if use is not None:
        if use not in ("portable", "best"):
            raise ValueError(f"sha256_code(use={use!r}): 'portable' or 'best'")
        hr_sha256_use(use == "best")
    return "sha-ni" if hr_sha256_use(-1) else "portable"


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
    cdef dict _mac_keys  # key -> its HMAC midstates (64 bytes), for the first MAC_KEYS keys met

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
        """As the reference: a `cose.MacKey` for the first MAC_KEYS keys met (whose midstates are
        kept here; it is made for the rare ack with commands), the key itself past them."""
        cdef uint32_t mid[16]
        if key in self._mac_keys or len(self._mac_keys) < MAC_KEYS:
            self._midstates(key, mid)
            return _MacKey(key)
        return key

    cdef int _midstates(self, key, uint32_t* mid) except -1:
        """The key's HMAC midstates into mid: kept for the first MAC_KEYS keys met, made again
        (two SHA-256 blocks) for each tag past them, so memory stays bounded."""
        if type(key) is not bytes:
            key = bytes(key)
        st = self._mac_keys.get(key)
        if st is not None:
            memcpy(mid, PyBytes_AS_STRING(st), 64)
            return 0
        hr_hmac_midstates(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), mid)
        if len(self._mac_keys) < MAC_KEYS:
            self._mac_keys[key] = PyBytes_FromStringAndSize(<const char*>mid, 64)
        return 0

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
        cdef unsigned char digest[32]
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
            self._mac(key, d + p0, p1 - p0, d + b0, b1 - b0, digest)
            ok = _same_tag(digest, d + b1 + 1)
        else:
            self._mac(key, <const unsigned char*>PyBytes_AS_STRING(protected), len(protected),
                      <const unsigned char*>PyBytes_AS_STRING(payload), len(payload), digest)
            ok = _same_tag(digest, <const unsigned char*>PyBytes_AS_STRING(tag))
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
        cdef unsigned char digest[32]
        cdef Py_ssize_t nb, np = PyBytes_GET_SIZE(_ACK_PROTECTED), at
        if not (0 <= seq < 2 ** 64 and 0 <= status < 2 ** 64):
            raise ValueError(f"ack for seq {seq}, status {status}: each must be an unsigned 64-bit integer")
        body[0] = 0x83  # [MSG_ACK, seq, status]
        nb = 1 + _uint(body + 1, _MSG_ACK)
        nb += _uint(body + nb, seq)
        nb += _uint(body + nb, status)
        self._mac(key, <const unsigned char*>PyBytes_AS_STRING(_ACK_PROTECTED), np, body, nb, digest)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 + 1 + np + 1 + 1 + nb + 1 + TAG_BYTES)
        cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
        o[0], o[1], o[2] = _MAC0_0, _MAC0_1, 0x40 | np
        memcpy(o + 3, PyBytes_AS_STRING(_ACK_PROTECTED), np)
        at = 3 + np
        o[at], o[at + 1] = _EMPTY_MAP, 0x40 | nb
        memcpy(o + at + 2, body, nb)
        at += 2 + nb
        o[at] = _TAG_HEAD
        memcpy(o + at + 1, digest, TAG_BYTES)
        return out

    cdef int _mac(self, key, const unsigned char* prot, Py_ssize_t np, const unsigned char* body, Py_ssize_t nb,
                  unsigned char* out) except -1:
        """HMAC-SHA256 (32 bytes, into out) of the MAC structure of these protected header and
        payload, hashed in its pieces as they lie (no buffer of the whole structure)."""
        cdef uint32_t mid[16]
        cdef hr_sha256 s
        cdef unsigned char head[5]
        self._midstates(key, mid)
        hr_sha256_start(&s, mid, 64)
        hr_sha256_update(&s, <const unsigned char*>PyBytes_AS_STRING(_STRUCTURE_HEAD),
                         PyBytes_GET_SIZE(_STRUCTURE_HEAD))
        hr_sha256_update(&s, head, _bstr_head(head, np))
        hr_sha256_update(&s, prot, np)
        head[0] = 0x40  # external_aad: empty
        hr_sha256_update(&s, head, 1)
        hr_sha256_update(&s, head, _bstr_head(head, nb))
        hr_sha256_update(&s, body, nb)
        hr_hmac_final(&s, mid, out)
        return 0


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


def hmac_sha256(key, data):
    """HMAC-SHA256 of data (32 bytes), as `hmac.digest(key, data, "sha256")`: the C code that
    makes every tag."""
    cdef uint32_t mid[16]
    cdef hr_sha256 s
    cdef unsigned char out[32]
    cdef bytes k = bytes(key), b = bytes(data)
    hr_hmac_midstates(<const unsigned char*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), mid)
    hr_sha256_start(&s, mid, 64)
    hr_sha256_update(&s, <const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
    hr_hmac_final(&s, mid, out)
    return PyBytes_FromStringAndSize(<const char*>out, 32)
