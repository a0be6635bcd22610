# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Series codec, compiled: the per-value loops of `_codec_py` in C.

Same API and same bytes as the reference (`_codec_py`, the specification); the
format and every choice live in `_codec_format`, shared by both. Bounds checks
are off in the loops below: every index is checked against lengths the code
itself derives, and the differential and fuzz tests feed them corrupt streams.
"""
import sys

import array as _array
from cpython cimport array
from libc.math cimport fabs, isfinite, log2, rint, signbit, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy, memset

from . import _codec_format as fmt
from ._codec_format import CodecError
from ._codec_bits cimport *
from ._columns cimport as_d, as_q

# numpy is not imported here: the gateway encodes batches with this module, and numpy
# would add some 13 MB to its memory; columns are array.array, numpy only wraps decoded ones
cdef array.array _Q = _array.array("q")
cdef array.array _D = _array.array("d")
cdef array.array _U32 = _array.array("I")


cdef inline array.array new_q(Py_ssize_t n):
    return array.clone(_Q, n, False)


cdef inline array.array new_d(Py_ssize_t n):
    return array.clone(_D, n, False)

__all__ = ["encode", "decode", "CodecError"]

cdef double EXACT = 9007199254740992.0
cdef uint64_t GCD_MAX = (<uint64_t>1) << 62


cdef int64_t COARSE_SYM_C[4][496]
cdef int64_t COARSE_EXTRA_C[4][496]
for _m in range(4):
    for _s in range(fmt.NSYM_FINE):
        COARSE_SYM_C[_m][_s] = fmt.COARSE_SYM[_m][_s]
        COARSE_EXTRA_C[_m][_s] = fmt.COARSE_EXTRA[_m][_s]


cdef double cost_of(const int64_t* fine, int* m_out) noexcept nogil:
    """fmt.istream_cost: the same sum in the same order (coarse symbols ascending;
    the fine-to-coarse map is monotone, so runs of the nonzero fine bins give it)."""
    cdef int nz_sym[496]
    cdef Py_ssize_t s, nz = 0, k
    cdef int64_t extra, total, c, run
    cdef int m, cur, nsy
    cdef double bits, best = INFINITY
    for s in range(496):
        if fine[s]:
            nz_sym[nz] = <int>s
            nz += 1
    total = 0
    for k in range(nz):
        total += fine[nz_sym[k]]
    for m in range(4):
        extra = 0
        nsy = 0
        cur = -1
        for k in range(nz):
            s = nz_sym[k]
            extra += COARSE_EXTRA_C[m][s] * fine[s]
            if COARSE_SYM_C[m][s] != cur:
                cur = <int>COARSE_SYM_C[m][s]
                nsy += 1
        bits = <double>extra + 8.0 * (3 * nsy + 2)
        cur = -1
        run = 0
        for k in range(nz + 1):
            if k == nz or COARSE_SYM_C[m][nz_sym[k]] != cur:
                if run:
                    bits += <double>run * log2(<double>total / <double>run)
                if k == nz:
                    break
                cur = <int>COARSE_SYM_C[m][nz_sym[k]]
                run = 0
            run += fine[nz_sym[k]]
        if bits < best:
            best = bits
            m_out[0] = m
    return best


cdef void _analyze(const int64_t* x, Py_ssize_t n, int order, int64_t* h,
                   int64_t* base, uint64_t* gcd) noexcept nogil:
    cdef Py_ssize_t count = n - order, i
    cdef int extra
    cdef uint64_t g
    cdef int64_t lo = 0
    if order == 0 and n:
        lo = x[0]
        for i in range(n):
            if x[i] < lo:
                lo = x[i]
    base[0] = lo
    cdef int32_t h4[4][NSYM]
    cdef Divisor dg
    g = common_divisor(x, count, order, <uint64_t>lo)
    dg = divisor(g)
    memset(h4, 0, sizeof(h4))
    # four histograms in turn: increments of one counter in a row wait on each other
    for i in range(count):
        h4[i & 3][bucket(unsigned_residual(residual_at(x, i, order, <uint64_t>lo), order, dg), FINE_M, &extra)] += 1
    for i in range(NSYM):
        h[i] = h4[0][i] + h4[1][i] + h4[2][i] + h4[3][i]
    gcd[0] = g


cdef inline uint64_t gcd_step(uint64_t g, uint64_t a, int signed_) noexcept nogil:
    if signed_ and <int64_t>a < 0:
        a = 0 - a
    if a == g or a == 0:
        return g  # a regular clock repeats one difference: spare the division
    return gcd64(g, a)


def plan(ints):
    """(estimated bits, order, bucket width, base, divisor, fine histogram), as
    `_codec_py.plan`: a long istream picks its order on a sample of runs, then
    takes one full pass at that order; a short one measures all three orders
    in two passes."""
    cdef const int64_t[::1] x = as_q(ints)
    if x.shape[0] > fmt.PLAN_FULL:
        return plan_sampled(x)
    return plan_full(x)


cdef plan_sampled(const int64_t[::1] x):
    """Order and bucket width from a sample of runs; the base and divisor from every value;
    the size estimated from the sample. The histogram of the chosen order comes later,
    from the encoder's own pass (`encode_body`), so no full histogram pass is made here."""
    cdef Py_ssize_t n = x.shape[0], s, i
    cdef int64_t h[NSYM]
    cdef int64_t acc[3][NSYM]
    cdef int64_t base, lo
    cdef uint64_t g
    cdef int o, order = 0, m, mo
    cdef double bits, least = INFINITY
    starts = fmt.plan_runs(n)
    for o in range(3):
        memset(acc[o], 0, sizeof(acc[o]))
        for a in starts:
            _analyze(&x[a], fmt.PLAN_RUN, o, h, &base, &g)
            for s in range(NSYM):
                acc[o][s] += h[s]
        bits = cost_of(acc[o], &mo)
        if bits < least:
            order, least, m = o, bits, mo
    lo = 0
    if order == 0:
        lo = x[0]
        for i in range(n):
            if x[i] < lo:
                lo = x[i]
    with nogil:
        g = common_divisor(&x[0], n - order, order, <uint64_t>lo)
        if g == 1 and all_zero(&x[0], n - order, order, <uint64_t>lo):
            g = 0
    if g == 0:
        # every residual 0 (a regular clock, a constant): the histogram is known exactly
        memset(h, 0, sizeof(h))
        h[0] = n - order
        bits = cost_of(h, &m)
        return bits, order, m, int(lo), 1, [h[s] for s in range(NSYM)]
    sampled = fmt.PLAN_RUNS * (fmt.PLAN_RUN - order)
    return least * (n - order) / sampled, order, m, int(lo), int(g), None


cdef plan_full(const int64_t[::1] x):
    cdef Py_ssize_t n = x.shape[0], i
    cdef int64_t h[3][NSYM]
    cdef int32_t h4[4][3][NSYM]
    cdef Py_ssize_t j
    cdef uint64_t g[3]
    cdef int m[3]
    cdef double bits[3]
    cdef int order, top = 2 if n > 2 else <int>n, best = 0, extra
    cdef int64_t lo = x[0] if n else 0
    cdef uint64_t hi = <uint64_t>lo, d = 0, prev_d = 0, dd
    cdef int32_t* hp = &h4[0][0][0]
    cdef Divisor dv[3]
    memset(h4, 0, sizeof(h4))
    with nogil:
        g[0] = g[1] = g[2] = 0
        for i in range(n):
            if x[i] < lo:
                lo = x[i]
            if x[i] > <int64_t>hi:
                hi = <uint64_t>x[i]
            if i >= 1:
                d = <uint64_t>x[i] - <uint64_t>x[i - 1]
                if g[1] != 1:
                    g[1] = gcd_step(g[1], d, 1)
                if i >= 2 and g[2] != 1:
                    g[2] = gcd_step(g[2], d - prev_d, 1)
                prev_d = d
        if hi - <uint64_t>lo < (<uint64_t>1 << 63):
            # no difference wrapped, so the divisor of x - min is that of the differences
            g[0] = g[1]
        else:
            for i in range(n):
                g[0] = gcd_step(g[0], <uint64_t>x[i] - <uint64_t>lo, 0)
                if g[0] == 1:
                    break
        for order in range(3):
            if g[order] == 0 or g[order] > GCD_MAX:
                g[order] = 1
            dv[order] = divisor(g[order])
        # four copies of each histogram, taken in turn: increments of one counter
        # in a row wait on each other, and sensor residuals hit a few counters a lot
        for i in range(n):
            j = (i & 3) * 3 * NSYM
            hp[j + bucket(unsigned_residual(<uint64_t>x[i] - <uint64_t>lo, 0, dv[0]), FINE_M, &extra)] += 1
            if i >= 1:
                d = <uint64_t>x[i] - <uint64_t>x[i - 1]
                hp[j + NSYM + bucket(unsigned_residual(d, 1, dv[1]), FINE_M, &extra)] += 1
                if i >= 2:
                    hp[j + 2 * NSYM + bucket(unsigned_residual(d - prev_d, 2, dv[2]), FINE_M, &extra)] += 1
                prev_d = d
        for order in range(3):
            for i in range(NSYM):
                h[order][i] = h4[0][order][i] + h4[1][order][i] + h4[2][order][i] + h4[3][order][i]
        for order in range(top + 1):
            bits[order] = cost_of(h[order], &m[order])
            if bits[order] < bits[best]:
                best = order
    return bits[best], best, m[best], int(lo) if best == 0 else 0, int(g[best]), [h[best][i] for i in range(NSYM)]


cdef uint8_t* _scratch = NULL
cdef Py_ssize_t _scratch_size = 0


cdef uint8_t* grow_scratch(Py_ssize_t size) except NULL:
    global _scratch, _scratch_size
    cdef uint8_t* p
    if size > _scratch_size:
        p = <uint8_t*>realloc(_scratch, size)
        if p == NULL:
            raise MemoryError()
        _scratch, _scratch_size = p, size
    return _scratch


def write_table(syms, freqs):
    """A frequency table, as `_codec_py.write_table`."""
    cdef const int64_t[::1] sy = as_q(syms)
    cdef const int64_t[::1] fr = as_q(freqs)
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
    freq = array.clone(_U32, nsym, True)
    cum = array.clone(_U32, nsym, True)
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
    cdef const int64_t[::1] x = as_q(ints)
    cdef const uint32_t[::1] f = freq
    cdef const uint32_t[::1] c = cum
    cdef Py_ssize_t n = x.shape[0], count = n - order, i, nraw
    cdef int64_t b0 = base
    cdef uint8_t* scratch = grow_scratch(12 * (count + 2) + 8)
    for i in range(f.shape[0]):
        if f[i] == PROB_SCALE and <int>i < (2 << m):
            # one symbol with no raw bits (a regular clock, a constant): the states never
            # move and nothing is written
            return (<uint64_t>RANS_L).to_bytes(4, "little") * 2, b""
    nraw = bucketize(&x[0], count, order, <uint64_t>b0, gcd, m, scratch, NULL)
    return (_rans_encode(<uint16_t*>scratch, count, &f[0], &c[0], f.shape[0], scratch + 2 * (count + 2)),
            (<char*>(scratch + 4 * (count + 2)))[:nraw])


cdef Py_ssize_t bucketize(const int64_t* xp, Py_ssize_t count, int order, uint64_t base, uint64_t g, int m,
                          uint8_t* scratch, int64_t* hist) noexcept nogil:
    """The residuals' bucket symbols (uint16, at `scratch`) and their raw bits (packed, at
    scratch + 4·(count + 2)), and the symbols' histogram into `hist` unless NULL; the
    count of raw bytes. `scratch` holds 12·(count + 2) + 8 bytes."""
    cdef uint16_t* sy = <uint16_t*>scratch
    cdef int32_t hist4[4][NSYM]
    cdef Divisor dg = divisor(g)
    cdef BitWriter w
    cdef Py_ssize_t i, k
    cdef uint64_t u
    cdef uint32_t s
    cdef int e
    w.out = scratch + 4 * (count + 2)
    w.pos = 0
    w.acc = 0
    w.nbits = 0
    if hist != NULL:
        memset(hist4, 0, sizeof(hist4))
    for i in range(count):
        u = unsigned_residual(residual_at(xp, i, order, base), order, dg)
        s = bucket(u, m, &e)
        sy[i] = <uint16_t>s
        if hist != NULL:
            hist4[i & 3][s] += 1  # four counters in turn: increments of one in a row wait on each other
        if e:
            put_bits(&w, u & ((<uint64_t>1 << e) - 1), e)
    flush_bits(&w)
    if hist != NULL:
        for k in range(NSYM):
            hist[k] = hist4[0][k] + hist4[1][k] + hist4[2][k] + hist4[3][k]
    return w.pos


cdef struct SymCount:
    int64_t count
    int64_t sym


cdef int cmp_count(const void* a, const void* b) noexcept nogil:
    # by count, largest first, then by symbol: fmt.normalise's order
    cdef int64_t ca = (<SymCount*>a).count, cb = (<SymCount*>b).count
    if ca != cb:
        return -1 if ca > cb else 1
    return ((<SymCount*>a).sym > (<SymCount*>b).sym) - ((<SymCount*>a).sym < (<SymCount*>b).sym)


def encode_body(ints, int order, base, gcd, int m):
    """(frequency table bytes, rANS bytes, raw bits) of the residuals at width m, the
    frequencies taken from this very pass (fmt.normalise, in C): `_codec_py.encode_body`."""
    cdef const int64_t[::1] x = as_q(ints)
    cdef Py_ssize_t n = x.shape[0], count = n - order, i, nsym = (2 << m) + (63 - m) * (1 << m), k, npresent = 0
    cdef int64_t b0 = base
    cdef int64_t hist[NSYM]
    cdef uint32_t f[NSYM]
    cdef uint32_t c[NSYM]
    cdef SymCount order_[NSYM]
    cdef int64_t total = 0, short, step
    cdef uint8_t* scratch = grow_scratch(12 * (count + 2) + 8)
    cdef uint16_t* sy = <uint16_t*>scratch
    cdef Py_ssize_t nraw = bucketize(&x[0], count, order, <uint64_t>b0, gcd, m, scratch, hist)
    extra = (<char*>(scratch + 4 * (count + 2)))[:nraw]
    # fmt.normalise: floor shares, at least 1, the shortfall to the most frequent symbol
    # (or taken from symbols in count order while they have more than 1)
    memset(f, 0, sizeof(f))
    for k in range(nsym):
        total += hist[k]
    short = PROB_SCALE
    for k in range(nsym):
        if hist[k]:
            f[k] = <uint32_t>max(1, hist[k] * PROB_SCALE // total)
            short -= f[k]
            order_[npresent].count = hist[k]
            order_[npresent].sym = k
            npresent += 1
    qsort(order_, npresent, sizeof(SymCount), cmp_count)
    k = 0
    while short != 0:
        i = order_[k % npresent].sym
        if short > 0:
            f[i] += <uint32_t>short
            short = 0
        elif f[i] > 1:
            step = min(<int64_t>f[i] - 1, -short)
            f[i] -= <uint32_t>step
            short += step
        k += 1
    syms = _array.array("q")
    freqs = _array.array("q")
    total = 0
    for k in range(nsym):
        c[k] = <uint32_t>total
        if f[k]:
            syms.append(k)
            freqs.append(f[k])
            total += f[k]
    table = write_table(syms, freqs)
    rans = _rans_encode(sy, count, f, c, nsym, scratch + 2 * (count + 2))
    return table, rans, extra


cdef extern from *:
    ctypedef unsigned long long uint128 "unsigned __int128"


cdef bytes _rans_encode(const uint16_t* sy, Py_ssize_t count, const uint32_t* f, const uint32_t* c,
                        Py_ssize_t nsym, uint8_t* out):
    """rANS over the symbols, backwards so that the decoder reads forwards; two states
    take turns (even and odd symbols) so that a decoder can work on both at once."""
    cdef uint16_t* wd = <uint16_t*>out
    cdef uint64_t st[2]
    cdef uint64_t rcp[NSYM]
    cdef uint64_t state, q
    cdef Py_ssize_t i, wpos = count + 2
    cdef uint32_t s
    # x / f as a multiplication by ceil(2**64 / f): exact for x < 2**32 and f < 2**15, as
    # here, and several times cheaper than a division on the encoder's critical path
    for i in range(nsym):
        rcp[i] = 0xFFFFFFFFFFFFFFFFULL // f[i] + 1 if f[i] > 1 else 0
    st[0] = st[1] = RANS_L
    if count == 0 or f[sy[0]] == PROB_SCALE:
        i = -1  # one symbol: the states never move
    else:
        i = count - 1
    # the two states in locals, so that they stay in registers
    cdef uint64_t x0 = RANS_L, x1 = RANS_L
    while i >= 0:
        s = sy[i]
        state = x1 if i & 1 else x0
        if state >= (<uint64_t>f[s] << (32 - PROB_BITS)):
            wpos -= 1
            wd[wpos] = <uint16_t>(state & 0xFFFF)
            state >>= 16
        q = <uint64_t>((<uint128>state * rcp[s]) >> 64) if f[s] > 1 else state
        state = (q << PROB_BITS) + (state - q * f[s]) + c[s]
        if i & 1:
            x1 = state
        else:
            x0 = state
        i -= 1
    st[0], st[1] = x0, x1
    head = int(st[0]).to_bytes(4, "little") + int(st[1]).to_bytes(4, "little")
    return head + (<char*>(wd + wpos))[:2 * (count + 2 - wpos)]


def decode_ints(Py_ssize_t n, int order, heads, gcd, int m, freq, cum, rans, extra):
    """int64 values back from `encode_ints`' output; CodecError when the blocks are corrupt."""
    cdef const uint32_t[::1] f = freq
    cdef const uint32_t[::1] c = cum
    cdef const uint8_t[::1] rb = rans
    cdef const uint8_t[::1] xb = extra
    cdef Py_ssize_t count = n - order if order else n, i, s, j, nrb = len(rans), word_end = 0
    cdef uint32_t fb[PROB_SCALE]
    cdef uint16_t te[PROB_SCALE]
    cdef uint64_t g = gcd
    cdef uint64_t states[2]
    cdef uint32_t direct = 2 << m, t, tev
    cdef int bad = 0
    # decoding is numpy's side already (decode returns numpy arrays): its allocator is the
    # one that spares page faults on large outputs
    out = fmt._np().empty(n, fmt._np().int64)
    cdef int64_t[::1] out_v = out
    cdef int64_t* o = &out_v[0]
    cdef int64_t* dst
    if nrb < 8 or nrb % 2:
        raise CodecError("rANS block has a bad length")
    for s in range(f.shape[0]):
        if not f[s]:
            continue
        t = <uint32_t>s - direct
        tev = ((((t >> m) + 1) << 8) | ((1 << m) | (t & ((1 << m) - 1)))) if <uint32_t>s >= direct else <uint32_t>s
        for j in range(c[s], c[s] + f[s]):
            fb[j] = (f[s] << 16) | <uint32_t>(j - c[s])
            te[j] = <uint16_t>tev
    for i, v in enumerate(heads):
        o[i] = v
    states[0] = rb[0] | (<uint64_t>rb[1] << 8) | (<uint64_t>rb[2] << 16) | (<uint64_t>rb[3] << 24)
    states[1] = rb[4] | (<uint64_t>rb[5] << 8) | (<uint64_t>rb[6] << 16) | (<uint64_t>rb[7] << 24)
    dst = o if order == 0 else o + order
    cdef const uint8_t* rawp = &xb[0] if len(extra) else NULL
    cdef int done = 0
    cdef uint64_t base0 = <uint64_t><int64_t>heads[0] if order == 0 else 0
    cdef Py_ssize_t nraw = len(extra)
    with nogil:
        if (fb[0] >> 16) == PROB_SCALE and (te[0] >> 8) == 0:
            # one symbol with no raw bits (a regular clock, a constant): rANS leaves
            # the states as they are and reads nothing; the values follow in one pass
            word_end = 8
            constant_run(o, n, order, <uint64_t>(te[0] & 0xFF), g, base0)
            done = 1
        else:
            bad = decode_loop(fb, te, &rb[0], nrb, rawp, nraw, dst, count, states, &word_end)
        if order == 0 and g != 1 and not done:
            for i in range(count):
                dst[i] = <int64_t>(<uint64_t>dst[i] * g)
    if bad == 1:
        raise CodecError("rANS block ends early")
    if bad == 2:
        raise CodecError("raw bits end early")
    if states[0] != RANS_L or states[1] != RANS_L or word_end != nrb:
        raise CodecError("rANS block does not end where it should (corrupt stream)")
    if not done:
        integrate(o, n, order, heads, g)
    return out


cdef void integrate(int64_t* o, Py_ssize_t n, int order, heads, uint64_t g):
    cdef uint64_t base = <uint64_t><int64_t>heads[0] if order == 0 else 0
    with nogil:
        _integrate(o, n, order, base, g)


cdef struct KeyId:
    int64_t key
    int64_t id


cdef int64_t LOW63 = 0x7FFFFFFFFFFFFFFF


cdef int cmp_key(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<KeyId*>a).key, y = (<KeyId*>b).key
    return (x > y) - (x < y)


cdef int64_t* _table_keys = NULL
cdef int32_t* _table_ids = NULL
cdef Py_ssize_t _table_cap = 0


def dictionary(values, Py_ssize_t limit):
    """(distinct values as ordered bit patterns, sorted; index of each value among them),
    or None past `limit` distinct. An open-addressing hash on the bit patterns in one
    pass, its table kept from call to call, so a series with too many values costs little."""
    global _table_keys, _table_ids, _table_cap
    cdef const int64_t[::1] x = memoryview(as_d(values)).cast("B").cast("q")
    cdef Py_ssize_t n = x.shape[0], i, cap = 16, found = 0
    cdef uint64_t h, mask
    cdef int shift = 60
    while cap < 2 * limit + 2:
        cap *= 2
        shift -= 1
    if cap > _table_cap:
        _table_keys = <int64_t*>realloc(_table_keys, cap * sizeof(int64_t))
        _table_ids = <int32_t*>realloc(_table_ids, cap * sizeof(int32_t))
        if _table_keys == NULL or _table_ids == NULL:
            _table_cap = 0
            raise MemoryError()
        _table_cap = cap
    mask = cap - 1
    first = new_q(n)
    distinct = new_q(limit + 1)
    cdef int64_t[::1] fi = first
    cdef int64_t[::1] dk = distinct
    cdef int64_t* tk = _table_keys
    cdef int32_t* ti = _table_ids
    with nogil:
        memset(ti, 0xFF, cap * sizeof(int32_t))  # every slot empty (-1)
        for i in range(n):
            h = (<uint64_t>x[i] * <uint64_t>0x9E3779B97F4A7C15) >> shift
            while ti[h] >= 0 and tk[h] != x[i]:
                h = (h + 1) & mask
            if ti[h] < 0:
                if found >= limit:
                    found = -1
                    break
                tk[h] = x[i]
                ti[h] = <int32_t>found
                dk[found] = x[i]
                found += 1
            fi[i] = ti[h]
    if found < 0:
        return None
    # the distinct values in the floats' order (keys unique, so the sort needs no tie rule)
    cdef KeyId* pairs = <KeyId*>malloc(max(found, 1) * sizeof(KeyId))
    if pairs == NULL:
        raise MemoryError()
    keys = new_q(found)
    cdef int64_t[::1] kv = keys
    cdef Py_ssize_t j
    cdef int64_t b
    try:
        with nogil:
            for j in range(found):
                b = dk[j]
                pairs[j].key = b ^ LOW63 if b < 0 else b
                pairs[j].id = j
            qsort(pairs, found, sizeof(KeyId), cmp_key)
            for j in range(found):
                kv[j] = pairs[j].key
                dk[pairs[j].id] = j  # rank of each first-seen id, in place
            for i in range(n):
                fi[i] = dk[fi[i]]
    finally:
        free(pairs)
    return keys, first


def ordered(values):
    """float64 bit patterns as int64 in the floats' order (-0.0 just below +0.0), NaNs kept."""
    cdef const int64_t[::1] b = memoryview(as_d(values)).cast("B").cast("q")
    cdef Py_ssize_t i, n = b.shape[0]
    out = new_q(n)
    cdef int64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = b[i] ^ LOW63 if b[i] < 0 else b[i]
    return out


def unordered(ints):
    """The inverse of `ordered`."""
    cdef const int64_t[::1] b = as_q(ints)
    cdef Py_ssize_t i, n = b.shape[0]
    out = new_q(n)
    cdef int64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = b[i] ^ LOW63 if b[i] < 0 else b[i]
    return _array.array("d", out.tobytes())


def take(values, positions):
    """values[positions], positions checked."""
    cdef const double[::1] v = as_d(values)
    cdef const int64_t[::1] p = as_q(positions)
    cdef Py_ssize_t i, n = p.shape[0]
    out = new_d(n)
    cdef double[::1] o = out
    for i in range(n):
        if not 0 <= p[i] < v.shape[0]:
            raise IndexError(f"position {p[i]} outside {v.shape[0]} values")
        o[i] = v[p[i]]
    return out


def decimal_counts(values, int sample_size, int max_exponent):
    """(sample size, [how many sampled values come back exactly with e digits, for e in
    0..max_exponent]): the sample is the finite values among sample_size evenly spaced ones."""
    cdef const double[::1] v = as_d(values)
    cdef Py_ssize_t i, n = v.shape[0], taken = 0, j, picks
    cdef double sample[256]
    cdef double p, x, q
    cdef int e
    if sample_size > 256:
        raise ValueError("sample_size above 256")
    picks = min(<Py_ssize_t>sample_size, n)
    for j in range(picks):
        i = j * n // picks
        if isfinite(v[i]):
            sample[taken] = v[i]
            taken += 1
    counts = []
    for e in range(max_exponent + 1):
        p = 10.0 ** e
        c = 0
        for j in range(taken):
            x = sample[j] * p
            if fabs(x) < EXACT:
                q = rint(x)
                if q / p == sample[j] and not (q == 0 and signbit(sample[j])):
                    c += 1
        counts.append(c)
    return taken, counts


def decimal_ints(values, int e):
    """values * 10**e as integers where that is exact; positions where it is not."""
    cdef const double[::1] v = as_d(values)
    cdef double p = 10.0 ** e, x, q
    cdef Py_ssize_t n = v.shape[0], i, ne = 0
    cdef int64_t prev = 0
    ints = new_q(n)
    cdef int64_t[::1] ints_v = ints
    exc = new_q(n)
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
    return ints, exc[:ne]


def decimal_values(ints, int e):
    cdef const int64_t[::1] k = as_q(ints)
    cdef double p = 10.0 ** e
    cdef Py_ssize_t n = k.shape[0], i
    out = fmt._np().empty(n, fmt._np().float64)  # decoding: numpy is loaded (see decode_ints)
    cdef double[::1] out_v = out
    cdef double* o = &out_v[0]
    with nogil:
        for i in range(n):
            o[i] = <double>k[i] / p
    return out


def quant_ints(values, double q, double max_error):
    """round(v / q) where that decodes (k * q) within max_error; positions where not."""
    cdef const double[::1] v = as_d(values)
    cdef double x
    cdef Py_ssize_t n = v.shape[0], i, ne = 0
    cdef int64_t prev = 0, kk
    ints = new_q(n)
    cdef int64_t[::1] ints_v = ints
    exc = new_q(n)
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
    return ints, exc[:ne]


def deadband(values, double max_error):
    """Indices kept: each value that strays more than max_error from the last kept one."""
    cdef const double[::1] v = as_d(values)
    cdef Py_ssize_t n = v.shape[0], i, ni = 0
    idx = new_q(max(n, 1))
    cdef int64_t[::1] idx_v = idx
    cdef int64_t* o = &idx_v[0]
    cdef double held
    if n == 0:
        return new_q(0)
    with nogil:
        o[0] = 0
        ni = 1
        held = v[0]
        for i in range(1, n):
            if not (isfinite(v[i]) and isfinite(held) and fabs(v[i] - held) <= max_error):
                o[ni] = i
                ni += 1
                held = v[i]
    return idx[:ni]


def swinging_door(ts, values, double max_error):
    """Indices kept by a swinging door of half-width max_error (see `_codec_py`)."""
    cdef const double[::1] v = as_d(values)
    cdef const int64_t[::1] t = as_q(ts)
    cdef Py_ssize_t n = v.shape[0], i, ni = 0, a = 0
    idx = new_q(2 * n + 1)
    cdef int64_t[::1] idx_v = idx
    cdef int64_t* o = &idx_v[0]
    cdef double lo = -INFINITY, hi = INFINITY, dt, s, va, x
    if n == 0:
        return new_q(0)
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
    return idx[:ni]


_KERNELS = sys.modules[__name__]


def encode(timestamps, values, *, double max_error=0.0):
    """Compress one series (see `_codec_py.encode`). Raises ValueError on bad input."""
    return fmt.encode(timestamps, values, max_error, _KERNELS)


def decode(data):
    """(timestamps int64 ns, values float64) from `encode`'s bytes; CodecError if invalid."""
    return fmt.decode(data, _KERNELS)
