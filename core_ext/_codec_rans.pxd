# cython: cdivision=True
# The series codec's entropy coder (compiled into _codec, which cimports it): the plan's
# cost model (fine histograms, and what they would cost at each bucket width), frequency
# normalisation, the rANS encoder, and the decoder's loop with its raw-bit reader and its
# copies per delta order and output. The driver that calls that loop is _codec_decode.pxd;
# docs/codec.md describes the format.
from libc.math cimport log2, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memset

from ._codec_bits cimport *


# --- the plan: what each delta order and bucket width would cost ----------------------

cdef struct CoarseMap:
    # each fine symbol's coarse symbol and raw bits at widths 0..3 (fmt.COARSE_SYM, COARSE_EXTRA)
    int64_t sym[4][NSYM]
    int64_t extra[4][NSYM]


cdef inline double cost_of(const int64_t* fine, const CoarseMap* coarse, int* m_out) noexcept nogil:
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
            extra += coarse.extra[m][s] * fine[s]
            if coarse.sym[m][s] != cur:
                cur = <int>coarse.sym[m][s]
                nsy += 1
        bits = <double>extra + 8.0 * (3 * nsy + 2)
        cur = -1
        run = 0
        for k in range(nz + 1):
            if k == nz or coarse.sym[m][nz_sym[k]] != cur:
                if run:
                    bits += <double>run * log2(<double>total / <double>run)
                if k == nz:
                    break
                cur = <int>coarse.sym[m][nz_sym[k]]
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


cdef inline int plan_orders(const int64_t* x, Py_ssize_t n, const CoarseMap* coarse, int64_t[3][NSYM] h,
                            uint64_t* g, int* m, double* bits, int64_t* lo_out) noexcept nogil:
    """`_codec_py.plan` of a short istream, all three orders measured in two passes: each
    order's divisor (g), fine histogram (h) and estimated bits at its best width (m); the
    minimum in lo_out (order 0's base). Returns the cheapest order."""
    cdef Py_ssize_t i
    cdef int32_t h4[4][3][NSYM]
    cdef Py_ssize_t j
    cdef int order, top = 2 if n > 2 else <int>n, best = 0, extra
    cdef int64_t lo = x[0] if n else 0
    cdef uint64_t hi = <uint64_t>lo, d = 0, prev_d = 0
    cdef int32_t* hp = &h4[0][0][0]
    cdef Divisor dv[3]
    memset(h4, 0, sizeof(h4))
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
        if g[order] == 0 or g[order] > (<uint64_t>1 << 62):
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
        bits[order] = cost_of(h[order], coarse, &m[order])
        if bits[order] < bits[best]:
            best = order
    lo_out[0] = lo
    return best


# --- encoding -------------------------------------------------------------------------

cdef struct SymCount:
    int64_t count
    int64_t sym


cdef inline int cmp_count(const void* a, const void* b) noexcept nogil:
    # by count, largest first, then by symbol: fmt.normalise's order
    cdef int64_t ca = (<SymCount*>a).count, cb = (<SymCount*>b).count
    if ca != cb:
        return -1 if ca > cb else 1
    return ((<SymCount*>a).sym > (<SymCount*>b).sym) - ((<SymCount*>a).sym < (<SymCount*>b).sym)


cdef inline void normalise(const int64_t* hist, Py_ssize_t nsym, uint32_t* f, uint32_t* c) noexcept nogil:
    """fmt.normalise, in C: frequencies (f) summing to PROB_SCALE, and their cumulative
    sums (c). Floor shares, at least 1, the shortfall to the most frequent symbol (or
    taken from symbols in count order while they have more than 1)."""
    cdef SymCount order_[NSYM]
    cdef Py_ssize_t k, i, npresent = 0
    cdef int64_t total = 0, short, step
    memset(f, 0, nsym * sizeof(uint32_t))
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
    total = 0
    for k in range(nsym):
        c[k] = <uint32_t>total
        total += f[k]


cdef extern from *:
    ctypedef unsigned long long uint128 "unsigned __int128"


cdef struct EncSym:
    uint64_t rcp      # ceil(2**64 / f), or 0 for f = 1 (the quotient is then x itself)
    uint64_t bound    # f << (32 - PROB_BITS): a state at or above it sheds 16 bits first
    uint32_t freq
    uint32_t cum


cdef inline uint64_t rans_put(uint64_t x, const EncSym* e, uint16_t* wd, Py_ssize_t* wpos) noexcept nogil:
    cdef uint64_t q
    cdef int shed = x >= e.bound
    # without a branch (whether a state sheds 16 bits is a coin toss): the word is written
    # below the last one either way, and kept only if the state shed it
    wd[wpos[0] - 1] = <uint16_t>(x & 0xFFFF)
    wpos[0] -= shed
    x >>= 16 * shed
    q = <uint64_t>((<uint128>x * e.rcp) >> 64) if e.rcp else x
    return (q << PROB_BITS) + (x - q * e.freq) + e.cum


cdef inline Py_ssize_t rans_encode(const uint16_t* sy, Py_ssize_t count, const uint32_t* f, const uint32_t* c,
                                   Py_ssize_t nsym, uint8_t* out, uint64_t* states) noexcept nogil:
    """rANS over the symbols, backwards so that the decoder reads forwards; two states
    take turns (even and odd symbols) so that a decoder can work on both at once. The
    words end at out's slot count + 2 (uint16); returns the first one's slot, and the
    final states in `states`."""
    cdef uint16_t* wd = <uint16_t*>out
    cdef EncSym es[NSYM]
    cdef Py_ssize_t i, wpos = count + 2
    # the two states in locals, so that they stay in registers
    cdef uint64_t x0 = RANS_L, x1 = RANS_L
    # x / f as a multiplication by ceil(2**64 / f): exact for x < 2**32 and f < 2**15, as
    # here, and several times cheaper than a division on the encoder's critical path
    for i in range(nsym):
        es[i].rcp = 0xFFFFFFFFFFFFFFFFULL // f[i] + 1 if f[i] > 1 else 0
        es[i].bound = <uint64_t>f[i] << (32 - PROB_BITS)
        es[i].freq = f[i]
        es[i].cum = c[i]
    if count and f[sy[0]] != PROB_SCALE:  # else one symbol: the states never move
        i = count - 1
        if not i & 1:
            x0 = rans_put(x0, &es[sy[i]], wd, &wpos)
            i -= 1
        # pairs (odd, even), so that each state has its own line of code
        while i > 0:
            x1 = rans_put(x1, &es[sy[i]], wd, &wpos)
            x0 = rans_put(x0, &es[sy[i - 1]], wd, &wpos)
            i -= 2
    states[0] = x0
    states[1] = x1
    return wpos


# --- decoding -------------------------------------------------------------------------

cdef struct BitReader:
    const uint8_t* raw
    Py_ssize_t nraw
    Py_ssize_t rpos
    uint64_t acc
    int nbits


cdef inline int read_bits(BitReader* r, int e, uint64_t* low) noexcept nogil:
    """The next e (<= 63) raw bits into low; 1 when the raw bits run out."""
    cdef int e1, kk
    cdef Py_ssize_t k
    cdef uint64_t v
    if r.nbits < e:
        if r.rpos + 8 <= r.nraw:
            # refill with one load: the bytes that fit whole are taken; the bits above
            # them are the stream's next ones, ORed in again at the next refill
            r.acc |= load64(r.raw + r.rpos) << r.nbits
            k = (63 - r.nbits) >> 3
            r.rpos += k
            r.nbits += <int>k * 8
        else:
            while r.nbits <= 56 and r.rpos < r.nraw:
                r.acc |= <uint64_t>r.raw[r.rpos] << r.nbits
                r.rpos += 1
                r.nbits += 8
    if e <= r.nbits:
        low[0] = r.acc & ((<uint64_t>1 << e) - 1)
        r.acc >>= e
        r.nbits -= e
        return 0
    # more than 56 raw bits: in steps of 32 so the accumulator never overflows
    v = 0
    e1 = 0
    while e1 < e:
        kk = e - e1 if e - e1 <= 32 else 32
        while r.nbits < kk and r.rpos < r.nraw:
            r.acc |= <uint64_t>r.raw[r.rpos] << r.nbits
            r.rpos += 1
            r.nbits += 8
        if r.nbits < kk:
            return 1
        v |= (r.acc & ((<uint64_t>1 << kk) - 1)) << e1
        r.acc >>= kk
        r.nbits -= kk
        e1 += kk
    low[0] = v
    return 0


cdef enum:
    # what the decoder makes of each integer as it writes it: the integer itself, a
    # decimal (integer / 10**e), an ordered bit pattern's float, a dictionary entry
    AS_INT = 0
    AS_DECIMAL = 1
    AS_FLOAT_BITS = 2
    AS_ENTRY = 3


cdef struct Conv:
    int kind
    double p                 # AS_DECIMAL: 10**e
    const int64_t* table     # AS_ENTRY: the dictionary's values (as bit patterns)
    uint64_t size            # AS_ENTRY: its length


cdef inline int convert(int64_t* o, Py_ssize_t n, const Conv* cv) noexcept nogil:
    """The integers o[:n] made what cv says, in place (NULL: left as they are); 1 for an
    index outside the dictionary. For the few values `decode_loop` does not write."""
    cdef Py_ssize_t i
    cdef uint64_t v
    if cv == NULL or cv.kind == AS_INT:
        return 0
    for i in range(n):
        v = <uint64_t>o[i]
        if cv.kind == AS_DECIMAL:
            (<double*>o)[i] = <double><int64_t>v / cv.p
        elif cv.kind == AS_FLOAT_BITS:
            o[i] = <int64_t>(v ^ <uint64_t>0x7FFFFFFFFFFFFFFF) if <int64_t>v < 0 else <int64_t>v
        elif cv.kind == AS_ENTRY:
            if v >= cv.size:
                return 1
            o[i] = cv.table[v]
    return 0


# Tags that pick a copy of the decoding loop at compile time (fused types): what each
# integer becomes (the delta order's tags are in _codec_bits). One copy per pair keeps
# the loop's state in registers; a run-time switch inside it would not.
cdef struct AsInt:
    char unused
cdef struct AsDecimal:
    char unused
cdef struct AsFloatBits:
    char unused
cdef struct AsEntry:
    char unused
ctypedef fused Output:
    AsInt
    AsDecimal
    AsFloatBits
    AsEntry


cdef inline int decode_loop(DeltaOrder* order, Output* kind, const uint32_t* fb, const uint16_t* te,
                            const uint8_t* words, Py_ssize_t nwords, const uint8_t* raw, Py_ssize_t nraw,
                            int64_t* dst, Py_ssize_t count, uint64_t* states, Py_ssize_t* word_end,
                            uint64_t g, uint64_t base, const Conv* cv) noexcept nogil:
    """The rANS and raw-bit decoding of `count` residuals, integrated on the fly: order 0
    writes base + u·g, orders 1 and 2 continue the heads in dst[-order:]. Per slot, `fb`
    holds frequency << 16 | (slot - cumulative) and `te` raw-bit count << 8 | the bucket's
    top bits: one load a step on each chain. The state is in locals, so it stays in
    registers (state behind a pointer would be reloaded after each store to dst).
    Each value is written as `kind` says (see Conv). Returns 0, or 1 (rANS words run
    out), 2 (raw bits run out) or 3 (an index outside the dictionary)."""
    cdef double p = cv.p
    cdef const int64_t* table = cv.table
    cdef uint64_t size = cv.size
    cdef uint64_t x0 = states[0], x1 = states[1], info0, info1, low, u, cur = 0, d = 0
    cdef Py_ssize_t pos = 8, i = 0, j
    cdef uint32_t t0, t1, t, NONE = 0xFFFFFFFF
    cdef BitReader br
    br.raw = raw
    br.nraw = nraw
    br.rpos = 0
    br.acc = 0
    br.nbits = 0
    if DeltaOrder is not Order0:
        cur = <uint64_t>dst[-1]
    if DeltaOrder is Order2:
        d = <uint64_t>dst[-1] - <uint64_t>dst[-2]
    while i < count:
        # the two states take turns (even and odd residuals): their steps do not depend
        # on each other, so the CPU overlaps them
        info0 = fb[x0 & (PROB_SCALE - 1)]
        t0 = te[x0 & (PROB_SCALE - 1)]
        x0 = (info0 >> 16) * (x0 >> PROB_BITS) + (info0 & 0xFFFF)
        if x0 < RANS_L:
            if pos + 2 > nwords:
                return 1
            x0 = (x0 << 16) | words[pos] | (<uint64_t>words[pos + 1] << 8)
            pos += 2
        t1 = NONE
        if i + 1 < count:
            info1 = fb[x1 & (PROB_SCALE - 1)]
            t1 = te[x1 & (PROB_SCALE - 1)]
            x1 = (info1 >> 16) * (x1 >> PROB_BITS) + (info1 & 0xFFFF)
            if x1 < RANS_L:
                if pos + 2 > nwords:
                    return 1
                x1 = (x1 << 16) | words[pos] | (<uint64_t>words[pos + 1] << 8)
                pos += 2
        for j in range(2):
            t = t0 if j == 0 else t1
            if t == NONE:
                break
            if read_bits(&br, t >> 8, &low):
                return 2
            u = ((<uint64_t>(t & 0xFF)) << (t >> 8)) | low
            if DeltaOrder is Order0:
                cur = base + u * g
            elif DeltaOrder is Order1:
                cur += <uint64_t>unzz(u) * g
            else:
                d += <uint64_t>unzz(u) * g
                cur += d
            if Output is AsInt:
                dst[i] = <int64_t>cur
            elif Output is AsDecimal:
                (<double*>dst)[i] = <double><int64_t>cur / p
            elif Output is AsFloatBits:
                dst[i] = <int64_t>(cur ^ <uint64_t>0x7FFFFFFFFFFFFFFF) if <int64_t>cur < 0 else <int64_t>cur
            else:
                if cur >= size:
                    return 3
                dst[i] = table[cur]
            i += 1
    states[0] = x0
    states[1] = x1
    word_end[0] = pos
    return 0


cdef inline int _decode_order(Output* kind, const uint32_t* fb, const uint16_t* te, const uint8_t* rb,
                              Py_ssize_t nrb, const uint8_t* xb, Py_ssize_t nraw, int64_t* dst, Py_ssize_t count,
                              uint64_t* states, Py_ssize_t* word_end, int order, uint64_t g, uint64_t base,
                              const Conv* cv) noexcept nogil:
    """`decode_loop`'s copy for this output (`kind`, a typed NULL) and delta order."""
    if order == 0:
        return decode_loop(<Order0*>NULL, kind, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, g, base, cv)
    elif order == 1:
        return decode_loop(<Order1*>NULL, kind, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, g, base, cv)
    return decode_loop(<Order2*>NULL, kind, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, g, base, cv)


cdef inline int decode_kind(const uint32_t* fb, const uint16_t* te, const uint8_t* rb, Py_ssize_t nrb,
                            const uint8_t* xb, Py_ssize_t nraw, int64_t* dst, Py_ssize_t count,
                            uint64_t* states, Py_ssize_t* word_end, int order, uint64_t g, uint64_t base,
                            const Conv* cv) noexcept nogil:
    """`decode_loop`'s copy for this delta order and output."""
    if cv.kind == AS_INT:
        return _decode_order(<AsInt*>NULL, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, order, g, base, cv)
    elif cv.kind == AS_DECIMAL:
        return _decode_order(<AsDecimal*>NULL, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, order, g,
                             base, cv)
    elif cv.kind == AS_FLOAT_BITS:
        return _decode_order(<AsFloatBits*>NULL, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, order, g,
                             base, cv)
    return _decode_order(<AsEntry*>NULL, fb, te, rb, nrb, xb, nraw, dst, count, states, word_end, order, g, base, cv)
