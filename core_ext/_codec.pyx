# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Series codec, compiled: the per-value loops of `_codec_py` in C, and a decoder that
reads a whole lossless stream in C (`_decode`; the bounded-error chunks go through
`_codec_format.read_values`).

Same API and same bytes as the reference (`_codec_py`, the specification); the
format and every choice live in `_codec_format`, shared by both, and the lossless
encoder's layout is also compiled here (`_codec_write.pxi`: the same choices in C,
the bounded-error modes left to `_codec_format`). Bounds checks
are off in the loops below: every index is checked against lengths the code
itself derives, and the differential and fuzz tests feed them corrupt streams.
The loops run without the GIL, on memory of their own call (see `Spare`).
This module holds the kernels `_codec_format` calls and the memory they work in; their
C helpers are cimported: the decoder's driver from `_codec_decode.pxd`, the plan's cost
model and the entropy coder from `_codec_rans.pxd`, the bit-level helpers (the encoder's
symbols and raw bits among them) from `_codec_bits.pxd`.
"""
import sys

import array as _array
from cpython cimport array
from cpython.object cimport PyObject
from libc.math cimport fabs, isfinite, rint, signbit, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from . import _codec_format as fmt
from ._codec_format import CodecError
from ._codec_bits cimport *
from ._codec_rans cimport *
from ._codec_decode cimport *
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

# the decoder's chunk kinds (_codec_decode.pxd) are the format's
assert (K_RAW, K_DECIMAL, K_BITS, K_DICT) == (fmt.K_RAW, fmt.K_DECIMAL, fmt.K_BITS, fmt.K_DICT)

# the sampled plan's runs (fmt.plan_runs), as C constants
cdef enum:
    PLAN_RUNS = 8
    PLAN_RUN = 256
assert (PLAN_RUNS, PLAN_RUN) == (fmt.PLAN_RUNS, fmt.PLAN_RUN)

cdef double EXACT = 9007199254740992.0
cdef uint64_t GCD_MAX = (<uint64_t>1) << 62


cdef CoarseMap COARSE  # the format's coarse symbols, for the plan's cost_of
for _m in range(4):
    for _s in range(fmt.NSYM_FINE):
        COARSE.sym[_m][_s] = fmt.COARSE_SYM[_m][_s]
        COARSE.extra[_m][_s] = fmt.COARSE_EXTRA[_m][_s]


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
    cdef int o, order = 0, m = 0, mo = 0
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
            bits = cost_of(acc[o], &COARSE, &mo)
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
        bits = cost_of(h, &COARSE, &m)
        return bits, order, m, int(lo), 1, histogram(h)
    sampled = fmt.PLAN_RUNS * (fmt.PLAN_RUN - order)
    return least * (n - order) / sampled, order, m, int(lo), int(g), None


cdef plan_full(const int64_t[::1] x):
    """`plan` of a short istream: all three orders measured in full (`plan_orders`)."""
    cdef int64_t h[3][NSYM]
    cdef uint64_t g[3]
    cdef int m[3]
    cdef double bits[3]
    cdef int64_t lo
    cdef int best
    with nogil:
        best = plan_orders(&x[0], x.shape[0], &COARSE, h, g, m, bits, &lo)
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
              &xb[0] if xb.shape[0] else NULL, xb.shape[0], &out_v[0], NULL, CodecError)
    return out


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
    r.error = <PyObject*>CodecError
    table_into(&r, nsym, &fv[0], &cv[0])
    return freq, cum, r.pos


cdef int64_t LOW63 = 0x7FFFFFFFFFFFFFFF


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


cdef object _flip_negatives(const int64_t[::1] b):
    """b with each negative's low 63 bits flipped: float64 bit patterns to ints in the floats'
    order, and, being its own inverse, back."""
    cdef Py_ssize_t i, n = b.shape[0]
    out = new_q(n)
    cdef int64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = b[i] ^ LOW63 if b[i] < 0 else b[i]
    return out


def ordered(values):
    """float64 bit patterns as int64 in the floats' order (-0.0 just below +0.0), NaNs kept."""
    return _flip_negatives(memoryview(as_d(values)).cast("B").cast("q"))


def unordered(ints):
    """The inverse of `ordered`."""
    return _array.array("d", _flip_negatives(as_q(ints)).tobytes())


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
    cdef Py_ssize_t c
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
    """Compress one series (see `_codec_py.encode`). Raises ValueError on bad input.

    A lossless stream is laid out here, in C: `_codec_format.encode`, `write_values`,
    `detect_decimal`, `write_exceptions` and `write_istream` compiled, the same choices and
    bytes (the differential tests compare them). What is rare goes through the format
    module itself: the bounded-error modes, and an istream of a single symbol."""
    if max_error != 0.0:
        return fmt.encode(timestamps, values, max_error, _KERNELS)
    ts, vs = fmt.as_arrays(timestamps, values)
    cdef Py_ssize_t n = len(ts), start
    w = fmt.Writer()
    cdef list parts = w.parts
    parts.append(_HEAD)
    parts.append(_varint(n))
    parts.append(_CHUNK)
    if n:
        _write_istream(w, ts, plan(ts))
    for start in range(0, n, fmt.CHUNK):
        _write_values(w, vs[start:start + fmt.CHUNK], True)
    return b"".join(parts)


include "_codec_write.pxi"  # the lossless encoder's layout: _write_values, _write_istream


def decode(data):
    """(timestamps int64 ns, values float64) from `encode`'s bytes; CodecError if invalid."""
    return _decode(data, fmt, _KERNELS)
