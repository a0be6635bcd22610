# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Series codec, compiled: the per-value loops of `_codec_py` in C, and a decoder that
reads a whole lossless stream in C (`_decode`; the bounded-error chunks go through
`_codec_format.read_values`).

Same API and same bytes as the reference (`_codec_py`, the specification); the
format and every choice live in `_codec_format`, shared by both. Bounds checks
are off in the loops below: every index is checked against lengths the code
itself derives, and the differential and fuzz tests feed them corrupt streams.
The loops run without the GIL, on memory of their own call (see `Spare`).
The entropy coder is in `_codec_rans.pxd`, the bit-level helpers in `_codec_bits.pxd`.
"""
import sys

import array as _array
from cpython cimport array
from libc.math cimport fabs, isfinite, log2, rint, signbit, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from . import _codec_format as fmt
from ._codec_format import CodecError
from ._codec_bits cimport *
from ._codec_rans cimport *
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

# chunk kinds, as C constants for the decoder's driver (the format's numbers: fmt.K_*)
cdef enum:
    K_RAW = 0
    K_DECIMAL = 1
    K_BITS = 2
    K_DICT = 3
assert (K_RAW, K_DECIMAL, K_BITS, K_DICT) == (fmt.K_RAW, fmt.K_DECIMAL, fmt.K_BITS, fmt.K_DICT)

# the sampled plan's runs (fmt.plan_runs), as C constants
cdef enum:
    PLAN_RUNS = 8
    PLAN_RUN = 256
assert (PLAN_RUNS, PLAN_RUN) == (fmt.PLAN_RUNS, fmt.PLAN_RUN)

cdef double EXACT = 9007199254740992.0
cdef bint LITTLE_ENDIAN = sys.byteorder == "little"
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


cdef inline void _analyze(DeltaOrder* order, const int64_t* x, Py_ssize_t n, int32_t[4][NSYM] h4) noexcept nogil:
    """Adds the fine bucket symbols of one run's residuals at this order, with the run's own
    base and divisor (`_codec_py.analyze`), to h4: four histograms taken in turn, as
    increments of one counter in a row wait on each other."""
    cdef Py_ssize_t i
    cdef int extra
    cdef uint64_t lo = 0, u
    cdef Divisor dg
    if DeltaOrder is Order0:
        lo = <uint64_t>x[0]
        for i in range(n):
            if x[i] < <int64_t>lo:
                lo = <uint64_t>x[i]
        dg = divisor(common_divisor(x, n, 0, lo))
        for i in range(n):
            u = unsigned_residual(<uint64_t>x[i] - lo, 0, dg)
            h4[i & 3][bucket(u, FINE_M, &extra)] += 1
    elif DeltaOrder is Order1:
        dg = divisor(common_divisor(x, n - 1, 1, 0))
        for i in range(n - 1):
            u = unsigned_residual(<uint64_t>x[i + 1] - <uint64_t>x[i], 1, dg)
            h4[i & 3][bucket(u, FINE_M, &extra)] += 1
    else:
        dg = divisor(common_divisor(x, n - 2, 2, 0))
        for i in range(n - 2):
            u = unsigned_residual((<uint64_t>x[i + 2] - <uint64_t>x[i + 1]) - (<uint64_t>x[i + 1] - <uint64_t>x[i]), 2, dg)
            h4[i & 3][bucket(u, FINE_M, &extra)] += 1


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


cdef array.array histogram(const int64_t* h):
    """A fine histogram as the format takes it (a sequence of NSYM counts): an array, not a
    list of 496 Python ints."""
    out = new_q(NSYM)
    memcpy((<array.array>out).data.as_voidptr, h, NSYM * sizeof(int64_t))
    return out


cdef plan_sampled(const int64_t[::1] x):
    """Order and bucket width from a sample of runs; the base and divisor from every value;
    the size estimated from the sample. The histogram of the chosen order comes later,
    from the encoder's own pass (`encode_body`), so no full histogram pass is made here."""
    cdef Py_ssize_t n = x.shape[0], s, i, k
    cdef int64_t h[NSYM]
    cdef int64_t acc[3][NSYM]
    cdef int32_t h4[4][NSYM]
    cdef Py_ssize_t starts[PLAN_RUNS]
    cdef int64_t lo
    cdef uint64_t g
    cdef int o, order = 0, m, mo
    cdef double bits, least = INFINITY
    for k, s in enumerate(fmt.plan_runs(n)):
        starts[k] = s
    with nogil:
        for o in range(3):
            memset(h4, 0, sizeof(h4))
            for k in range(PLAN_RUNS):
                if o == 0:
                    _analyze(<Order0*>NULL, &x[starts[k]], PLAN_RUN, h4)
                elif o == 1:
                    _analyze(<Order1*>NULL, &x[starts[k]], PLAN_RUN, h4)
                else:
                    _analyze(<Order2*>NULL, &x[starts[k]], PLAN_RUN, h4)
            for s in range(NSYM):
                acc[o][s] = h4[0][s] + h4[1][s] + h4[2][s] + h4[3][s]
            bits = cost_of(acc[o], &mo)
            if bits < least:
                order, least, m = o, bits, mo
        lo = 0
        if order == 0:
            lo = x[0]
            for i in range(n):
                if x[i] < lo:
                    lo = x[i]
        g = residual_gcd(&x[0], n - order, order, <uint64_t>lo)  # 0: every residual 0
        if g > GCD_MAX:
            g = 1
    if g == 0:
        # every residual 0 (a regular clock, a constant): the histogram is known exactly
        memset(h, 0, sizeof(h))
        h[0] = n - order
        bits = cost_of(h, &m)
        return bits, order, m, int(lo), 1, histogram(h)
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
    return bits[best], best, m[best], int(lo) if best == 0 else 0, int(g[best]), histogram(h[best])


# Spare buffers, each lent to one call at a time: taken and given back with the GIL held,
# used without it. Reused, a buffer spares a large allocation and its page faults a call;
# lent, it is never shared by two threads.
cdef struct Spare:
    void* p
    Py_ssize_t size


cdef Spare _scratch      # the encoder's symbols, rANS words and raw bits
cdef Spare _hash_table   # the dictionary's hash table
_scratch.p = _hash_table.p = NULL
_scratch.size = _hash_table.size = 0


cdef void* borrow(Spare* spare, Py_ssize_t size) except NULL:
    """size bytes: the spare buffer if it is free and big enough, else a new one."""
    cdef void* p
    if spare.p != NULL and spare.size >= size:
        p = spare.p
        spare.p = NULL
        return p
    p = malloc(size)
    if p == NULL:
        raise MemoryError()
    return p


cdef void give_back(Spare* spare, void* p, Py_ssize_t size) noexcept:
    """p (size bytes, from `borrow`) becomes the spare if it is the bigger one."""
    if spare.p == NULL or spare.size < size:
        free(spare.p)
        spare.p = p
        spare.size = size
    else:
        free(p)


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


def encode_ints(ints, int order, base, gcd, int m, freq, cum):
    """(rANS bytes, raw bits) of the residuals, symbols at bucket width m."""
    cdef const int64_t[::1] x = as_q(ints)
    cdef const uint32_t[::1] f = freq
    cdef const uint32_t[::1] c = cum
    cdef Py_ssize_t n = x.shape[0], count = n - order, i, nraw, wpos, size = 12 * (count + 2) + 8
    cdef uint64_t b0 = <uint64_t><int64_t>base, g = gcd
    cdef uint64_t states[2]
    cdef uint8_t* scratch
    for i in range(f.shape[0]):
        if f[i] == PROB_SCALE and <int>i < (2 << m):
            # one symbol with no raw bits (a regular clock, a constant): the states never
            # move and nothing is written
            return (<uint64_t>RANS_L).to_bytes(4, "little") * 2, b""
    scratch = <uint8_t*>borrow(&_scratch, size)
    try:
        with nogil:
            nraw = bucketize(&x[0], count, order, b0, g, m, scratch, NULL)
            wpos = rans_encode(<uint16_t*>scratch, count, &f[0], &c[0], f.shape[0], scratch + 2 * (count + 2), states)
        return (rans_bytes(states, scratch + 2 * (count + 2), wpos, count),
                (<char*>(scratch + 4 * (count + 2)))[:nraw])
    finally:
        give_back(&_scratch, scratch, size)


cdef Py_ssize_t bucketize(const int64_t* xp, Py_ssize_t count, int order, uint64_t base, uint64_t g, int m,
                          uint8_t* scratch, int64_t* hist) noexcept nogil:
    """The residuals' bucket symbols (uint16, at `scratch`) and their raw bits (packed, at
    scratch + 4·(count + 2)), and the symbols' histogram into `hist` unless NULL; the
    count of raw bytes. `scratch` holds 12·(count + 2) + 8 bytes."""
    cdef int32_t hist4[4][NSYM]
    cdef Py_ssize_t k, nraw
    memset(hist4, 0, sizeof(hist4))
    # a copy of the loop per delta order (fused types), so that no test of it is left inside
    if order == 0:
        nraw = bucketize_loop(<Order0*>NULL, xp, count, base, g, m, scratch, hist4)
    elif order == 1:
        nraw = bucketize_loop(<Order1*>NULL, xp, count, base, g, m, scratch, hist4)
    else:
        nraw = bucketize_loop(<Order2*>NULL, xp, count, base, g, m, scratch, hist4)
    if hist != NULL:
        for k in range(NSYM):
            hist[k] = hist4[0][k] + hist4[1][k] + hist4[2][k] + hist4[3][k]
    return nraw


cdef inline Py_ssize_t bucketize_loop(DeltaOrder* order, const int64_t* xp, Py_ssize_t count, uint64_t base,
                                      uint64_t g, int m, uint8_t* scratch, int32_t[4][NSYM] hist4) noexcept nogil:
    cdef uint16_t* sy = <uint16_t*>scratch
    cdef uint8_t* out = scratch + 4 * (count + 2)
    cdef Divisor dg = divisor(g)
    cdef Py_ssize_t i, pos = 0
    cdef uint64_t u, r, acc = 0
    cdef uint32_t s
    cdef int e, nbits = 0
    for i in range(count):
        if DeltaOrder is Order0:
            u = unsigned_residual(<uint64_t>xp[i] - base, 0, dg)
        elif DeltaOrder is Order1:
            u = unsigned_residual(<uint64_t>xp[i + 1] - <uint64_t>xp[i], 1, dg)
        else:
            r = (<uint64_t>xp[i + 2] - <uint64_t>xp[i + 1]) - (<uint64_t>xp[i + 1] - <uint64_t>xp[i])
            u = unsigned_residual(r, 2, dg)
        s = bucket(u, m, &e)
        sy[i] = <uint16_t>s
        hist4[i & 3][s] += 1  # four counters in turn: increments of one in a row wait on each other
        # the raw bits: fewer than 8 wait in acc; each value stores all eight bytes of acc
        # and moves on by the whole ones, so there is no branch on how many bits there
        # are (a coin toss on real data); `out` has 8 bytes to spare past the last
        if e > 56:
            acc |= (u & <uint64_t>0xFFFFFFFF) << nbits
            nbits += 32
            store64(out + pos, acc)
            pos += nbits >> 3
            acc >>= nbits & ~7
            nbits &= 7
            u >>= 32
            e -= 32
        acc |= (u & ((<uint64_t>1 << e) - 1)) << nbits
        nbits += e
        store64(out + pos, acc)
        pos += nbits >> 3
        acc >>= nbits & ~7
        nbits &= 7
    if nbits:
        out[pos] = <uint8_t>acc
        pos += 1
    return pos


def encode_body(ints, int order, base, gcd, int m):
    """(frequency table bytes, rANS bytes, raw bits) of the residuals at width m, the
    frequencies taken from this very pass (fmt.normalise, in C): `_codec_py.encode_body`."""
    cdef const int64_t[::1] x = as_q(ints)
    cdef Py_ssize_t n = x.shape[0], count = n - order, i, nsym = (2 << m) + (63 - m) * (1 << m), k, npresent = 0
    cdef int64_t b0 = base
    cdef int64_t hist[NSYM]
    cdef uint32_t f[NSYM]
    cdef uint32_t c[NSYM]
    cdef Py_ssize_t size = 12 * (count + 2) + 8, nraw, wpos
    cdef uint64_t g = gcd
    cdef uint64_t states[2]
    cdef uint8_t* scratch = <uint8_t*>borrow(&_scratch, size)
    try:
        with nogil:
            nraw = bucketize(&x[0], count, order, <uint64_t>b0, g, m, scratch, hist)
            normalise(hist, nsym, f, c)
            wpos = rans_encode(<uint16_t*>scratch, count, f, c, nsym, scratch + 2 * (count + 2), states)
        extra = (<char*>(scratch + 4 * (count + 2)))[:nraw]
        rans = rans_bytes(states, scratch + 2 * (count + 2), wpos, count)
    finally:
        give_back(&_scratch, scratch, size)
    syms = _array.array("q")
    freqs = _array.array("q")
    for k in range(nsym):
        if f[k]:
            syms.append(k)
            freqs.append(f[k])
    return write_table(syms, freqs), rans, extra


cdef bytes rans_bytes(const uint64_t* states, const uint8_t* out, Py_ssize_t wpos, Py_ssize_t count):
    """The rANS block: the final states, then the words from slot wpos on."""
    head = int(states[0]).to_bytes(4, "little") + int(states[1]).to_bytes(4, "little")
    return head + (<const char*>(out + 2 * wpos))[:2 * (count + 2 - wpos)]


def decode_ints(Py_ssize_t n, int order, heads, gcd, int m, freq, cum, rans, extra):
    """int64 values back from `encode_ints`' output; CodecError when the blocks are corrupt."""
    cdef const uint32_t[::1] f = freq
    cdef const uint32_t[::1] c = cum
    cdef const uint8_t[::1] rb = rans
    cdef const uint8_t[::1] xb = extra
    cdef int64_t hd[2]
    cdef Py_ssize_t i
    for i in range(min(len(heads), 2)):
        hd[i] = heads[i]
    # decoding is numpy's side already (decode returns numpy arrays): its allocator is the
    # one that spares page faults on large outputs
    out = fmt._np().empty(n, fmt._np().int64)
    cdef int64_t[::1] out_v = out
    if rb.shape[0] < 8 or rb.shape[0] % 2:
        raise CodecError("rANS block has a bad length")
    ints_into(n, order, hd, gcd, m, &f[0], &c[0], f.shape[0], &rb[0], rb.shape[0],
              &xb[0] if xb.shape[0] else NULL, xb.shape[0], &out_v[0], NULL)
    return out


cdef Conv AS_INTS
AS_INTS.kind = AS_INT


cdef int ints_into(Py_ssize_t n, int order, const int64_t* heads, uint64_t g, int m,
                   const uint32_t* f, const uint32_t* c, Py_ssize_t nsym,
                   const uint8_t* rb, Py_ssize_t nrb, const uint8_t* xb, Py_ssize_t nraw,
                   int64_t* o, const Conv* cv) except -1:
    """n (> order) int64 values into o from an istream's parts (heads, divisor, table,
    rANS words of even length >= 8, raw bits), each made what cv says (NULL: kept as
    integers); CodecError when the blocks are corrupt."""
    cdef Py_ssize_t count = n - order if order else n, i, s, j, word_end = 0
    cdef uint32_t fb[PROB_SCALE]
    cdef uint16_t te[PROB_SCALE]
    cdef uint64_t states[2]
    cdef uint32_t direct = 2 << m, t, tev
    cdef int bad = 0
    cdef int64_t* dst = o if order == 0 else o + order
    cdef uint64_t base0 = <uint64_t>heads[0] if order == 0 else 0
    with nogil:
        for s in range(nsym):
            if not f[s]:
                continue
            t = <uint32_t>s - direct
            tev = ((((t >> m) + 1) << 8) | ((1 << m) | (t & ((1 << m) - 1)))) if <uint32_t>s >= direct else <uint32_t>s
            for j in range(c[s], c[s] + f[s]):
                fb[j] = (f[s] << 16) | <uint32_t>(j - c[s])
                te[j] = <uint16_t>tev
        for i in range(order):
            o[i] = heads[i]
        states[0] = rb[0] | (<uint64_t>rb[1] << 8) | (<uint64_t>rb[2] << 16) | (<uint64_t>rb[3] << 24)
        states[1] = rb[4] | (<uint64_t>rb[5] << 8) | (<uint64_t>rb[6] << 16) | (<uint64_t>rb[7] << 24)
        if (fb[0] >> 16) == PROB_SCALE and (te[0] >> 8) == 0:
            # one symbol with no raw bits (a regular clock, a constant): rANS leaves
            # the states as they are and reads nothing; the values follow in one pass
            word_end = 8
            constant_run(o, n, order, <uint64_t>(te[0] & 0xFF), g, base0)
            if convert(o, n, cv):
                bad = 3
        else:
            if cv == NULL:
                cv = &AS_INTS
            # a copy of the loop per delta order and conversion, each step inlined: the
            # conversion rides along with the rANS chains, which wait on loads
            if order == 0:
                bad = decode_kind(fb, te, rb, nrb, xb, nraw, dst, count, states, &word_end, 0, g, base0, cv)
            elif order == 1:
                bad = decode_kind(fb, te, rb, nrb, xb, nraw, dst, count, states, &word_end, 1, g, base0, cv)
            else:
                bad = decode_kind(fb, te, rb, nrb, xb, nraw, dst, count, states, &word_end, 2, g, base0, cv)
            if not bad and convert(o, order, cv):  # the heads, read as integers by the loop
                bad = 3
    if bad == 1:
        raise CodecError("rANS block ends early")
    if bad == 2:
        raise CodecError("raw bits end early")
    if bad == 3:
        raise CodecError("dictionary index out of range")
    if states[0] != RANS_L or states[1] != RANS_L or word_end != nrb:
        raise CodecError("rANS block does not end where it should (corrupt stream)")
    return 0


# --- the decoder's driver: a whole stream in C, each chunk decoded into its place --------
# (the reference's steps, `fmt.decode` and `fmt.read_values`, without a Python call, an
# intermediate array or a copy between them; the bounded-error kinds go back to
# `fmt.read_values`, as they need numpy anyway)

cdef struct Src:
    const uint8_t* d
    Py_ssize_t size
    Py_ssize_t pos


cdef inline int need(Src* r, Py_ssize_t k) except -1:
    if k < 0 or r.pos + k > r.size:
        raise CodecError(f"stream ends early: {k} more bytes needed", r.pos)
    return 0


cdef inline int u8(Src* r) except -1:
    need(r, 1)
    r.pos += 1
    return r.d[r.pos - 1]


cdef uint64_t varint(Src* r, uint64_t limit) except? 0xFFFFFFFFFFFFFFFF:
    """A LEB128 varint below `limit` (0: any uint64), as `fmt.Reader.varint`."""
    cdef uint64_t v = 0, b
    cdef int shift = 0
    while True:
        b = <uint64_t>u8(r)
        if shift == 63 and (b & 0x7F) > 1:
            raise CodecError("varint value out of range (>= 2**64)", r.pos)
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise CodecError("varint longer than 64 bits", r.pos)
    if limit and v >= limit:
        raise CodecError(f"value {v} out of range (< {limit})", r.pos)
    return v


cdef int table_into(Src* r, Py_ssize_t nsym, uint32_t* fv, uint32_t* cv) except -1:
    """A frequency table (`write_table`) into fv, cv (nsym entries each)."""
    cdef Py_ssize_t count, i
    cdef int64_t s = -1
    cdef uint64_t f, total = 0
    memset(fv, 0, nsym * sizeof(uint32_t))
    memset(cv, 0, nsym * sizeof(uint32_t))
    count = varint(r, nsym + 1)
    if count == 0:
        raise CodecError("empty frequency table", r.pos)
    for i in range(count):
        s += varint(r, nsym) + 1
        f = varint(r, PROB_SCALE) + 1 if count > 1 else PROB_SCALE
        if s >= nsym:
            raise CodecError(f"symbol {s} out of range", r.pos)
        fv[s] = <uint32_t>f
        cv[s] = <uint32_t>total
        total += f
    if total != PROB_SCALE:
        raise CodecError("frequencies do not sum to the scale", r.pos)
    return 0


def read_table(data, Py_ssize_t pos, int nsym):
    """(frequency, cumulative frequency, position after), as `_codec_py.read_table`."""
    cdef const uint8_t[::1] d = data
    cdef Src r
    freq = array.clone(_U32, nsym, True)
    cum = array.clone(_U32, nsym, True)
    cdef uint32_t[::1] fv = freq
    cdef uint32_t[::1] cv = cum
    r.d = &d[0] if d.shape[0] else NULL
    r.size = d.shape[0]
    r.pos = pos
    table_into(&r, nsym, &fv[0], &cv[0])
    return freq, cum, r.pos


cdef const uint8_t* blob(Src* r, Py_ssize_t* size) except? NULL:
    size[0] = <Py_ssize_t>varint(r, r.size + 1)
    need(r, size[0])
    r.pos += size[0]
    return r.d + r.pos - size[0] if size[0] else NULL


cdef int istream_into(Src* r, Py_ssize_t n, int64_t* o, const Conv* cv) except -1:
    """n int64 values into o, each made what cv says (NULL: integers): `fmt._read_istream`."""
    cdef int order = u8(r), m = u8(r)
    cdef int64_t heads[2]
    cdef Py_ssize_t i, nh, nrb, nraw
    cdef uint64_t g
    cdef uint32_t f[NSYM]
    cdef uint32_t c[NSYM]
    cdef const uint8_t* rb
    cdef const uint8_t* xb
    if order > 2 or m > FINE_M:
        raise CodecError(f"istream order {order} / bucket width {m} unknown", r.pos)
    nh = 1 if order == 0 else min(<Py_ssize_t>order, n)
    for i in range(nh):
        heads[i] = unzz(varint(r, 0))
    g = varint(r, 0)
    if g == 0:
        raise CodecError("divisor 0", r.pos)
    if n <= order:
        for i in range(n):
            o[i] = heads[i]
        if convert(o, n, cv):
            raise CodecError("dictionary index out of range", r.pos)
        return 0
    nsym = (2 << m) + (63 - m) * (1 << m)
    table_into(r, nsym, f, c)
    rb = blob(r, &nrb)
    xb = blob(r, &nraw)
    if nrb < 8 or nrb % 2:
        raise CodecError("rANS block has a bad length")
    return ints_into(n, order, heads, g, m, f, c, nsym, rb, nrb, xb, nraw, o, cv)


cdef int values_into(Src* r, Py_ssize_t n, double* out, bytes buf, ts, int depth) except -1:
    """One chunk of n values into out: `fmt.read_values`. The integers are made floats as
    the rANS loop writes them (see Conv), not in a pass of their own."""
    cdef Py_ssize_t start = r.pos, i, d, count
    cdef int kind = u8(r), e
    cdef int64_t* o = <int64_t*>out
    cdef const int64_t* pv
    cdef const int64_t* xv
    cdef Conv cv
    if kind == K_RAW:
        need(r, 8 * n)
        if LITTLE_ENDIAN:
            memcpy(out, r.d + r.pos, 8 * n)
        else:
            for i in range(n):
                o[i] = <int64_t>load64(r.d + r.pos + 8 * i)
        r.pos += 8 * n
        return 0
    if kind == K_BITS:
        cv.kind = AS_FLOAT_BITS
        istream_into(r, n, o, &cv)
        return 0
    if kind == K_DECIMAL:
        e = u8(r)
        if e > fmt.MAX_EXPONENT:
            raise CodecError(f"decimal exponent {e} out of range", r.pos)
        count = varint(r, n + 1)
        if count:
            positions = new_q(count)
            patterns = new_q(count)
            pv = <const int64_t*>(<array.array>positions).data.as_voidptr
            xv = <const int64_t*>(<array.array>patterns).data.as_voidptr
            istream_into(r, count, <int64_t*>pv, NULL)
            for i in range(count):
                if not 0 <= pv[i] < n:
                    raise CodecError("exception position out of range", r.pos)
            cv.kind = AS_FLOAT_BITS
            istream_into(r, count, <int64_t*>xv, &cv)
        cv.kind = AS_DECIMAL
        cv.p = 10.0 ** e
        istream_into(r, n, o, &cv)
        for i in range(count):
            o[pv[i]] = xv[i]
        return 0
    if kind == K_DICT and depth == 0:
        d = varint(r, n + 1)
        if d == 0:
            raise CodecError("empty dictionary", r.pos)
        uniq = new_q(d)
        cv.kind = AS_ENTRY
        cv.table = <const int64_t*>(<array.array>uniq).data.as_voidptr
        cv.size = d
        values_into(r, d, <double*>cv.table, buf, ts, depth + 1)
        istream_into(r, n, o, &cv)
        return 0
    # the bounded-error kinds (and every error the reference reports about a kind)
    rd = fmt.Reader(buf)
    rd.pos = start
    got = fmt._np().ascontiguousarray(fmt.read_values(rd, n, ts, _KERNELS, depth), fmt._np().float64)
    cdef const double[::1] gv = got
    if gv.shape[0] != n:
        raise CodecError("chunk of the wrong length", start)
    if n:
        memcpy(out, &gv[0], 8 * n)
    r.pos = rd.pos
    return 0


cdef object _decode(data):
    """`fmt.decode`, driven from C (see above)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    cdef bytes buf = bytes(data)
    cdef Src r
    cdef Py_ssize_t n, chunk, start, size = len(buf)
    r.d = <const uint8_t*>buf
    r.size = size
    r.pos = 0
    if bytes(data[:3]) != fmt.MAGIC:  # as the reference reads it (a memoryview's items)
        raise CodecError("not a headrace series stream (magic HRZ missing)", 0)
    r.pos = 3
    version = u8(&r)
    if version != fmt.VERSION:
        raise CodecError(f"series format version {version} is not supported (this decoder reads {fmt.VERSION})", 3)
    u8(&r)  # flags: informative (1 = lossy)
    n = varint(&r, fmt.MAX_N)
    chunk = varint(&r, fmt.MAX_CHUNK + 1)
    if not chunk:
        raise CodecError("chunk size 0", r.pos)
    # the reference's bound on what a short or hostile stream can make us allocate
    if -(-n // chunk) > size - r.pos or n > fmt.MAX_VALUES_PER_BYTE * size:
        raise CodecError(f"{n} values in chunks of {chunk} cannot fit in {size} bytes", r.pos)
    np = fmt._np()
    ts = np.empty(n, np.int64)
    vs = np.empty(n, np.float64)
    cdef int64_t[::1] tv = ts
    cdef double[::1] vv = vs
    if n:
        istream_into(&r, n, &tv[0], NULL)
    for start in range(0, n, chunk):
        values_into(&r, min(chunk, n - start), &vv[start], buf, ts[start:start + chunk], 0)
    if r.pos != size:
        raise CodecError(f"{size - r.pos} bytes after the end of the stream", r.pos)
    return ts, vs


cdef struct KeyId:
    int64_t key
    int64_t id


cdef int64_t LOW63 = 0x7FFFFFFFFFFFFFFF


cdef void sort_keys(KeyId* a, KeyId* tmp, Py_ssize_t n) noexcept nogil:
    """a by key (signed), with tmp (n entries) as room: a radix sort of the keys' bytes,
    least significant first, skipping the bytes all keys share (the high ones, for a
    sensor's range of values); several times faster than qsort's calls to a comparison."""
    cdef Py_ssize_t cnt[8][256]
    cdef Py_ssize_t i, acc, c
    cdef uint64_t k, first
    cdef int d, b
    cdef KeyId* src = a
    cdef KeyId* dst = tmp
    cdef KeyId* t
    if n < 2:
        return
    memset(cnt, 0, sizeof(cnt))
    for i in range(n):
        k = <uint64_t>a[i].key ^ (<uint64_t>1 << 63)
        for d in range(8):
            cnt[d][(k >> (8 * d)) & 0xFF] += 1
    first = <uint64_t>a[0].key ^ (<uint64_t>1 << 63)
    for d in range(8):
        if cnt[d][(first >> (8 * d)) & 0xFF] == n:
            continue
        acc = 0
        for b in range(256):
            c = cnt[d][b]
            cnt[d][b] = acc
            acc += c
        for i in range(n):
            b = ((<uint64_t>src[i].key ^ (<uint64_t>1 << 63)) >> (8 * d)) & 0xFF
            dst[cnt[d][b]] = src[i]
            cnt[d][b] += 1
        t = src
        src = dst
        dst = t
    if src != a:
        memcpy(a, src, n * sizeof(KeyId))


def dictionary(values, Py_ssize_t limit):
    """(distinct values as ordered bit patterns, sorted; index of each value among them),
    or None past `limit` distinct. An open-addressing hash on the bit patterns in one
    pass, so a series with too many values costs little; the table is at most half full,
    which keeps the probes short."""
    cdef const int64_t[::1] x = memoryview(as_d(values)).cast("B").cast("q")
    cdef Py_ssize_t n = x.shape[0], i, j, cap = 16, found = 0
    cdef uint64_t h, mask
    cdef int shift = 60
    while cap < 2 * limit + 2:
        cap *= 2
        shift -= 1
    mask = cap - 1
    first = new_q(n)
    distinct = new_q(limit + 1)
    cdef int64_t[::1] fi = first
    cdef int64_t[::1] dk = distinct
    cdef Py_ssize_t room_size = cap * (sizeof(int64_t) + sizeof(int32_t))
    cdef void* room = borrow(&_hash_table, room_size)
    cdef int64_t* tk = <int64_t*>room
    cdef int32_t* ti = <int32_t*>(tk + cap)
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
    give_back(&_hash_table, room, room_size)
    if found < 0:
        return None
    # the distinct values in the floats' order (keys unique, so the sort needs no tie rule)
    cdef KeyId* pairs = <KeyId*>malloc(2 * max(found, 1) * sizeof(KeyId))
    if pairs == NULL:
        raise MemoryError()
    keys = new_q(found)
    cdef int64_t[::1] kv = keys
    cdef int64_t b
    try:
        with nogil:
            for j in range(found):
                b = dk[j]
                pairs[j].key = b ^ LOW63 if b < 0 else b
                pairs[j].id = j
            sort_keys(pairs, pairs + found, found)
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
    return _decode(data)
