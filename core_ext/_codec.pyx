# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Series codec, compiled: the per-value loops of `_codec_py` in C.

Same API and same bytes as the reference (`_codec_py`, the specification); the
format and every choice live in `_codec_format`, shared by both. Bounds checks
are off in the loops below: every index is checked against lengths the code
itself derives, and the differential and fuzz tests feed them corrupt streams.
"""
import sys

import numpy as np
from libc.math cimport fabs, isfinite, log2, rint, signbit, INFINITY
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from . import _codec_format as fmt
from ._codec_format import CodecError

__all__ = ["encode", "decode", "CodecError"]

DEF PROB_BITS = 14
DEF PROB_SCALE = 16384
DEF RANS_L = 65536
DEF FINE_M = 3
DEF NSYM = 496
cdef uint64_t GCD_MAX = (<uint64_t>1) << 62
cdef double EXACT = 9007199254740992.0


cdef inline int bitlen(uint64_t u) noexcept nogil:
    return 0 if u == 0 else 64 - __builtin_clzll(u)


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef inline uint32_t bucket(uint64_t u, int m, int* extra) noexcept nogil:
    cdef int b
    if u < ((<uint64_t>2) << m):
        extra[0] = 0
        return <uint32_t>u
    b = bitlen(u)
    extra[0] = b - 1 - m
    return (2 << m) + (b - m - 2) * (1 << m) + <uint32_t>((u >> (b - 1 - m)) & ((1 << m) - 1))


cdef inline uint64_t zz(int64_t v) noexcept nogil:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)


cdef inline int64_t unzz(uint64_t u) noexcept nogil:
    return <int64_t>(u >> 1) ^ -<int64_t>(u & 1)


cdef inline uint64_t gcd64(uint64_t a, uint64_t b) noexcept nogil:
    cdef uint64_t t
    while b:
        t = a % b
        a = b
        b = t
    return a


cdef void residuals(const int64_t[::1] x, int order, uint64_t base, uint64_t* out) noexcept nogil:
    """Signed residuals in two's complement: x - base (order 0) or wrapped differences."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef uint64_t prev_d
    if order == 0:
        for i in range(n):
            out[i] = <uint64_t>x[i] - base
    elif order == 1:
        for i in range(1, n):
            out[i - 1] = <uint64_t>x[i] - <uint64_t>x[i - 1]
    else:
        prev_d = <uint64_t>x[1] - <uint64_t>x[0]
        for i in range(2, n):
            out[i - 2] = (<uint64_t>x[i] - <uint64_t>x[i - 1]) - prev_d
            prev_d = <uint64_t>x[i] - <uint64_t>x[i - 1]


cdef uint64_t common_divisor(uint64_t* r, Py_ssize_t count, int order) noexcept nogil:
    cdef uint64_t g = 0, a
    cdef Py_ssize_t i
    for i in range(count):
        a = r[i]
        if order and <int64_t>a < 0:
            a = 0 - a
        g = gcd64(g, a)
        if g == 1:
            break
    return 1 if g == 0 or g > GCD_MAX else g


cdef inline uint64_t unsigned_residual(uint64_t r, int order, uint64_t g) noexcept nogil:
    # a 64-bit division costs tens of cycles: skip it in the common case of no divisor
    if g == 1:
        return r if order == 0 else zz(<int64_t>r)
    if order == 0:
        return r / g
    return zz(<int64_t>r / <int64_t>g)


cdef int64_t COARSE_SYM_C[4][496]
cdef int64_t COARSE_EXTRA_C[4][496]
for _m in range(4):
    for _s in range(fmt.NSYM_FINE):
        COARSE_SYM_C[_m][_s] = fmt.COARSE_SYM[_m][_s]
        COARSE_EXTRA_C[_m][_s] = fmt.COARSE_EXTRA[_m][_s]


cdef double cost_of(const int64_t* fine, int* m_out) noexcept nogil:
    """fmt.istream_cost, the same sum in the same order."""
    cdef int64_t coarse[496]
    cdef int64_t extra, total, c
    cdef Py_ssize_t s, nz
    cdef int m
    cdef double bits, best = INFINITY
    for m in range(4):
        for s in range(496):
            coarse[s] = 0
        extra = 0
        for s in range(496):
            c = fine[s]
            if c:
                coarse[COARSE_SYM_C[m][s]] += c
                extra += COARSE_EXTRA_C[m][s] * c
        total = 0
        nz = 0
        for s in range(496):
            if coarse[s]:
                total += coarse[s]
                nz += 1
        bits = <double>extra + 8.0 * (3 * nz + 2)
        for s in range(496):
            c = coarse[s]
            if c:
                bits += <double>c * log2(<double>total / <double>c)
        if bits < best:
            best = bits
            m_out[0] = m
    return best


cdef void _analyze(const int64_t[::1] x, int order, uint64_t* r, int64_t* h,
                   int64_t* base, uint64_t* gcd) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], count = n - order, i
    cdef int extra
    cdef uint64_t g
    base[0] = 0
    if order == 0 and n:
        base[0] = x[0]
        for i in range(n):
            if x[i] < base[0]:
                base[0] = x[i]
    residuals(x, order, <uint64_t>base[0], r)
    g = common_divisor(r, count, order)
    for i in range(NSYM):
        h[i] = 0
    for i in range(count):
        h[bucket(unsigned_residual(r[i], order, g), FINE_M, &extra)] += 1
    gcd[0] = g


def analyze(ints, int order):
    """(base, divisor, histogram of fine bucket symbols) of the residuals at this order."""
    cdef const int64_t[::1] x = np.ascontiguousarray(ints, np.int64)
    cdef uint64_t[::1] r = np.empty(max(x.shape[0], 1), np.uint64)
    cdef int64_t[::1] h = np.zeros(NSYM, np.int64)
    cdef int64_t base
    cdef uint64_t g
    with nogil:
        _analyze(x, order, &r[0], &h[0], &base, &g)
    return int(base), int(g), list(h)


def plan(ints):
    """(estimated bits, order, bucket width, base, divisor, fine histogram), as `_codec_py.plan`."""
    cdef const int64_t[::1] x = np.ascontiguousarray(ints, np.int64)
    cdef Py_ssize_t n = x.shape[0]
    cdef uint64_t[::1] r = np.empty(max(n, 1), np.uint64)
    cdef int64_t[:, ::1] h = np.zeros((3, NSYM), np.int64)
    cdef int64_t base[3]
    cdef uint64_t g[3]
    cdef int m[3]
    cdef double bits[3]
    cdef int order, top = 2 if n > 2 else <int>n, best = 0
    with nogil:
        for order in range(top + 1):
            _analyze(x, order, &r[0], &h[order, 0], &base[order], &g[order])
            bits[order] = cost_of(&h[order, 0], &m[order])
            if bits[order] < bits[best]:
                best = order
    return bits[best], best, m[best], int(base[best]), int(g[best]), list(h[best])


cdef struct BitWriter:
    uint8_t* out
    Py_ssize_t pos
    uint64_t acc
    int nbits


cdef inline void put32(BitWriter* w, uint64_t v, int e) noexcept nogil:
    w.acc |= v << w.nbits
    w.nbits += e
    while w.nbits >= 8:
        w.out[w.pos] = <uint8_t>(w.acc & 0xFF)
        w.pos += 1
        w.acc >>= 8
        w.nbits -= 8


cdef inline void put_bits(BitWriter* w, uint64_t v, int e) noexcept nogil:
    # at most 32 bits a step keeps the accumulator from overflowing
    if e > 32:
        put32(w, v & (<uint64_t>0xFFFFFFFF), 32)
        v >>= 32
        e -= 32
    put32(w, v, e)


def write_table(syms, freqs):
    """A frequency table, as `_codec_py.write_table`."""
    cdef const int64_t[::1] sy = np.ascontiguousarray(syms, np.int64)
    cdef const int64_t[::1] fr = np.ascontiguousarray(freqs, np.int64)
    cdef Py_ssize_t n = sy.shape[0], i
    cdef int64_t prev = -1
    out = bytearray(10 * (2 * n + 1))
    cdef uint8_t[::1] o = out
    cdef Py_ssize_t pos = put_varint(&o[0], 0, n)
    for i in range(n):
        pos = put_varint(&o[0], pos, sy[i] - prev - 1)
        if n > 1:
            pos = put_varint(&o[0], pos, fr[i] - 1)
        prev = sy[i]
    return bytes(out[:pos])


cdef inline Py_ssize_t put_varint(uint8_t* o, Py_ssize_t pos, uint64_t v) noexcept:
    while v >= 0x80:
        o[pos] = <uint8_t>(v & 0x7F) | 0x80
        v >>= 7
        pos += 1
    o[pos] = <uint8_t>v
    return pos + 1


cdef inline uint64_t get_varint(const uint8_t[::1] d, Py_ssize_t* pos, uint64_t limit) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if pos[0] >= d.shape[0]:
            raise CodecError("stream ends early: 1 more bytes needed", pos[0])
        b = d[pos[0]]
        pos[0] += 1
        v |= <uint64_t>(b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise CodecError("varint longer than 64 bits", pos[0])
    if v >= limit:
        raise CodecError(f"value {v} out of range (< {limit})", pos[0])
    return v


def read_table(data, Py_ssize_t pos, int nsym):
    """(frequency, cumulative frequency, position after), as `_codec_py.read_table`."""
    cdef const uint8_t[::1] d = data
    cdef Py_ssize_t count, i
    cdef int64_t s = -1
    cdef uint64_t f, total = 0
    freq = np.zeros(nsym, np.uint32)
    cum = np.zeros(nsym, np.uint32)
    cdef uint32_t[::1] fv = freq
    cdef uint32_t[::1] cv = cum
    count = get_varint(d, &pos, nsym + 1)
    if count == 0:
        raise CodecError("empty frequency table", pos)
    for i in range(count):
        s += get_varint(d, &pos, nsym) + 1
        f = get_varint(d, &pos, PROB_SCALE) + 1 if count > 1 else PROB_SCALE
        if s >= nsym:
            raise CodecError(f"symbol {s} out of range", pos)
        fv[s] = <uint32_t>f
        cv[s] = <uint32_t>total
        total += f
    if total != PROB_SCALE:
        raise CodecError("frequencies do not sum to the scale", pos)
    return freq, cum, pos


def encode_ints(ints, int order, base, gcd, int m, freq, cum):
    """(rANS bytes, raw bits) of the residuals, symbols at bucket width m."""
    cdef const int64_t[::1] x = np.ascontiguousarray(ints, np.int64)
    cdef const uint32_t[::1] f = freq
    cdef const uint32_t[::1] c = cum
    cdef Py_ssize_t n = x.shape[0], count = n - order, i, wpos
    cdef uint64_t g = gcd, u, state
    cdef int64_t b0 = base
    cdef int e
    cdef uint32_t s
    rbuf = np.empty(max(count, 1), np.uint64)
    cdef uint64_t[::1] rbuf_v = rbuf
    syms = np.empty(max(count, 1), np.uint16)
    cdef uint16_t[::1] syms_v = syms
    extra = np.empty(8 * max(count, 1) + 8, np.uint8)
    cdef uint8_t[::1] extra_v = extra
    words = np.empty(max(count, 1) + 2, np.uint16)
    cdef uint16_t[::1] words_v = words
    cdef uint64_t* r = &rbuf_v[0]
    cdef uint16_t* sy = &syms_v[0]
    cdef uint16_t* wd = &words_v[0]
    cdef BitWriter w
    w.out = &extra_v[0]
    w.pos = 0
    w.acc = 0
    w.nbits = 0
    with nogil:
        residuals(x, order, <uint64_t>b0, r)
        for i in range(count):
            u = unsigned_residual(r[i], order, g)
            s = bucket(u, m, &e)
            sy[i] = <uint16_t>s
            if e:
                put_bits(&w, u & ((<uint64_t>1 << e) - 1), e)
        if w.nbits:
            w.out[w.pos] = <uint8_t>w.acc
            w.pos += 1
        # rANS runs backwards so that the decoder reads forwards
        state = RANS_L
        wpos = count + 2
        for i in range(count - 1, -1, -1):
            s = sy[i]
            if state >= (<uint64_t>f[s] << (32 - PROB_BITS)):
                wpos -= 1
                wd[wpos] = <uint16_t>(state & 0xFFFF)
                state >>= 16
            # state < 2**32 here, so the division can be 32-bit (much cheaper than 64)
            state = ((<uint64_t>(<uint32_t>state / f[s])) << PROB_BITS) + (<uint32_t>state % f[s]) + c[s]
    head = int(state).to_bytes(4, "little")
    return head + words[wpos:count + 2].astype("<u2").tobytes(), extra[:w.pos].tobytes()


def decode_ints(Py_ssize_t n, int order, heads, gcd, int m, freq, cum, rans, extra):
    """int64 values back from `encode_ints`' output; CodecError when the blocks are corrupt."""
    cdef const uint32_t[::1] f = freq
    cdef const uint32_t[::1] c = cum
    cdef const uint8_t[::1] rb = rans
    cdef const uint8_t[::1] xb = extra
    cdef Py_ssize_t count = n - order if order else n, i, pos = 4, nrb = len(rans), xpos = 0, nxb = len(extra)
    cdef uint16_t slot_sym[PROB_SCALE]
    cdef Py_ssize_t s, j
    cdef uint64_t state, u, g = gcd, acc = 0, low
    cdef uint32_t slot, sym, direct = 2 << m, t
    cdef int nbits = 0, e, bad = 0, e1
    out = np.empty(n, np.int64)
    cdef int64_t[::1] out_v = out
    cdef int64_t* o = &out_v[0]
    if nrb < 4 or nrb % 2:
        raise CodecError("rANS block has a bad length")
    for s in range(f.shape[0]):
        for j in range(c[s], c[s] + f[s]):
            slot_sym[j] = <uint16_t>s
    for i, v in enumerate(heads):
        o[i] = v
    state = rb[0] | (<uint64_t>rb[1] << 8) | (<uint64_t>rb[2] << 16) | (<uint64_t>rb[3] << 24)
    # one symbol with no raw bits (a regular clock, a constant): rANS leaves the state
    # as it is and reads nothing, so the values can be written straight away
    sym = slot_sym[0]
    if f[sym] == PROB_SCALE and sym < direct:
        u = sym
        for i in range(count):
            o[i if order == 0 else order + i] = <int64_t>(u * g if order == 0 else u)
        count = 0
    with nogil:
        for i in range(count):
            slot = state & (PROB_SCALE - 1)
            sym = slot_sym[slot]
            state = f[sym] * (state >> PROB_BITS) + slot - c[sym]
            if state < RANS_L:
                if pos + 2 > nrb:
                    bad = 1
                    break
                state = (state << 16) | rb[pos] | (<uint64_t>rb[pos + 1] << 8)
                pos += 2
            if sym < direct:
                u = sym
            else:
                t = sym - direct
                e = (t >> m) + 1
                if nbits < e:
                    while nbits <= 56 and xpos < nxb:
                        acc |= <uint64_t>xb[xpos] << nbits
                        xpos += 1
                        nbits += 8
                if e <= nbits:
                    low = acc & ((<uint64_t>1 << e) - 1)
                    acc >>= e
                    nbits -= e
                else:
                    # more than 56 raw bits: two reads, so the accumulator never overflows
                    low = 0
                    e1 = 0
                    while e1 < e:
                        j = e - e1 if e - e1 <= 32 else 32
                        while nbits < j and xpos < nxb:
                            acc |= <uint64_t>xb[xpos] << nbits
                            xpos += 1
                            nbits += 8
                        if nbits < j:
                            bad = 2
                            break
                        low |= (acc & ((<uint64_t>1 << j) - 1)) << e1
                        acc >>= j
                        nbits -= j
                        e1 += j
                    if bad:
                        break
                u = ((<uint64_t>((1 << m) | (t & ((1 << m) - 1)))) << e) | low
            if order == 0:
                o[i] = <int64_t>(u * g)
            else:
                o[order + i] = <int64_t>u
    if bad == 1:
        raise CodecError("rANS block ends early")
    if bad == 2:
        raise CodecError("raw bits end early")
    if state != RANS_L or pos != nrb:
        raise CodecError("rANS block does not end where it should (corrupt stream)")
    integrate(o, n, order, heads, g)
    return out


cdef void _integrate(int64_t* o, Py_ssize_t n, int order, uint64_t base, uint64_t g) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint64_t cur, d
    if order == 0:
        for i in range(n):
            o[i] = <int64_t>(base + <uint64_t>o[i])
    elif order == 1:
        cur = <uint64_t>o[0]
        for i in range(1, n):
            cur += <uint64_t>unzz(<uint64_t>o[i]) * g
            o[i] = <int64_t>cur
    else:
        d = <uint64_t>o[1] - <uint64_t>o[0]
        cur = <uint64_t>o[1]
        for i in range(2, n):
            d += <uint64_t>unzz(<uint64_t>o[i]) * g
            cur += d
            o[i] = <int64_t>cur


cdef void integrate(int64_t* o, Py_ssize_t n, int order, heads, uint64_t g):
    cdef uint64_t base = <uint64_t><int64_t>heads[0] if order == 0 else 0
    with nogil:
        _integrate(o, n, order, base, g)


def decimal_ints(values, int e):
    """values * 10**e as integers where that is exact; positions where it is not."""
    cdef const double[::1] v = np.ascontiguousarray(values, np.float64)
    cdef double p = 10.0 ** e, x, q
    cdef Py_ssize_t n = v.shape[0], i, ne = 0
    cdef int64_t prev = 0
    ints = np.empty(n, np.int64)
    cdef int64_t[::1] ints_v = ints
    exc = np.empty(n, np.int64)
    cdef int64_t[::1] exc_v = exc
    cdef int64_t* k = &ints_v[0]
    cdef int64_t* ex = &exc_v[0]
    with nogil:
        for i in range(n):
            x = v[i] * p
            if fabs(x) < EXACT:
                q = rint(x)
                if q / p == v[i] and not (q == 0 and signbit(v[i])):
                    prev = <int64_t>q
                    k[i] = prev
                    continue
            k[i] = prev
            ex[ne] = i
            ne += 1
    return ints, exc[:ne].copy()


def decimal_values(ints, int e):
    cdef const int64_t[::1] k = np.ascontiguousarray(ints, np.int64)
    cdef double p = 10.0 ** e
    cdef Py_ssize_t n = k.shape[0], i
    out = np.empty(n, np.float64)
    cdef double[::1] out_v = out
    cdef double* o = &out_v[0]
    with nogil:
        for i in range(n):
            o[i] = <double>k[i] / p
    return out


def quant_ints(values, double q, double max_error):
    """round(v / q) where that decodes (k * q) within max_error; positions where not."""
    cdef const double[::1] v = np.ascontiguousarray(values, np.float64)
    cdef double x, kq
    cdef Py_ssize_t n = v.shape[0], i, ne = 0
    cdef int64_t prev = 0, kk
    ints = np.empty(n, np.int64)
    cdef int64_t[::1] ints_v = ints
    exc = np.empty(n, np.int64)
    cdef int64_t[::1] exc_v = exc
    cdef int64_t* k = &ints_v[0]
    cdef int64_t* ex = &exc_v[0]
    with nogil:
        for i in range(n):
            x = v[i] / q
            if fabs(x) < EXACT:
                kk = <int64_t>rint(x)
                if fabs(<double>kk * q - v[i]) <= max_error:
                    prev = kk
                    k[i] = kk
                    continue
            k[i] = prev
            ex[ne] = i
            ne += 1
    return ints, exc[:ne].copy()


def deadband(values, double max_error):
    """Indices kept: each value that strays more than max_error from the last kept one."""
    cdef const double[::1] v = np.ascontiguousarray(values, np.float64)
    cdef Py_ssize_t n = v.shape[0], i, ni = 0
    idx = np.empty(max(n, 1), np.int64)
    cdef int64_t[::1] idx_v = idx
    cdef int64_t* o = &idx_v[0]
    cdef double held
    if n == 0:
        return np.zeros(0, np.int64)
    with nogil:
        o[0] = 0
        ni = 1
        held = v[0]
        for i in range(1, n):
            if not (isfinite(v[i]) and isfinite(held) and fabs(v[i] - held) <= max_error):
                o[ni] = i
                ni += 1
                held = v[i]
    return idx[:ni].copy()


def swinging_door(ts, values, double max_error):
    """Indices kept by a swinging door of half-width max_error (see `_codec_py`)."""
    cdef const double[::1] v = np.ascontiguousarray(values, np.float64)
    cdef const int64_t[::1] t = np.ascontiguousarray(ts, np.int64)
    cdef Py_ssize_t n = v.shape[0], i, ni = 0, a = 0
    idx = np.empty(2 * n + 1, np.int64)
    cdef int64_t[::1] idx_v = idx
    cdef int64_t* o = &idx_v[0]
    cdef double lo = -INFINITY, hi = INFINITY, dt, s, va, x
    if n == 0:
        return np.zeros(0, np.int64)
    with nogil:
        o[0] = 0
        ni = 1
        for i in range(1, n):
            va = v[a]
            dt = <double><int64_t>(<uint64_t>t[i] - <uint64_t>t[a])
            if not (isfinite(v[i]) and isfinite(va) and dt > 0):
                if i - 1 != a:
                    o[ni] = i - 1
                    ni += 1
                o[ni] = i
                ni += 1
                a = i
                lo = -INFINITY
                hi = INFINITY
                continue
            s = (v[i] - va) / dt
            if not (lo <= s and s <= hi):
                o[ni] = i - 1
                ni += 1
                a = i - 1
                va = v[a]
                dt = <double><int64_t>(<uint64_t>t[i] - <uint64_t>t[a])
                lo = -INFINITY
                hi = INFINITY
                if not (isfinite(va) and dt > 0):
                    o[ni] = i
                    ni += 1
                    a = i
                    continue
            x = (v[i] - max_error - va) / dt
            if x > lo:
                lo = x
            x = (v[i] + max_error - va) / dt
            if x < hi:
                hi = x
        if o[ni - 1] != n - 1:
            o[ni] = n - 1
            ni += 1
    return idx[:ni].copy()


_KERNELS = sys.modules[__name__]


def encode(timestamps, values, *, double max_error=0.0):
    """Compress one series (see `_codec_py.encode`). Raises ValueError on bad input."""
    return fmt.encode(timestamps, values, max_error, _KERNELS)


def decode(data):
    """(timestamps int64 ns, values float64) from `encode`'s bytes; CodecError if invalid."""
    return fmt.decode(data, _KERNELS)
