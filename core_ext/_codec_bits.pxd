# The bit-level pieces of the series codec (compiled into _codec, which cimports them):
# bucketing, zigzag, exact division, residuals, the raw-bit writer, varints, the rANS
# decoding loop and integration. docs/codec.md describes the format they implement.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    PROB_BITS = 14
    PROB_SCALE = 16384
    RANS_L = 65536
    FINE_M = 3
    NSYM = 496


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil
    int __builtin_ctzll(unsigned long long) nogil


cdef inline int bitlen(uint64_t u) noexcept nogil:
    return 0 if u == 0 else 64 - __builtin_clzll(u)


cdef inline uint32_t bucket(uint64_t u, int m, int* extra) noexcept nogil:
    # branch-free: whether a residual is below 2 << m is a coin toss on real data,
    # and a mispredicted branch costs more than computing both answers
    cdef int b = 64 - __builtin_clzll(u | 1)
    cdef int e = b - 1 - m
    cdef int small = e <= 0
    cdef int es = 0 if small else e
    cdef uint32_t big = (2 << m) + (b - m - 2) * (1 << m) + <uint32_t>((u >> es) & ((1 << m) - 1))
    extra[0] = es
    return <uint32_t>u if small else big


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


cdef inline uint64_t residual_at(const int64_t* x, Py_ssize_t i, int order, uint64_t base) noexcept nogil:
    """Residual i in two's complement: x - base (order 0) or wrapped differences, computed
    where it is needed (a buffer of them would cost a page fault every 512 values)."""
    if order == 0:
        return <uint64_t>x[i] - base
    if order == 1:
        return <uint64_t>x[i + 1] - <uint64_t>x[i]
    return (<uint64_t>x[i + 2] - <uint64_t>x[i + 1]) - (<uint64_t>x[i + 1] - <uint64_t>x[i])


cdef inline bint all_zero(const int64_t* x, Py_ssize_t count, int order, uint64_t base) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        if residual_at(x, i, order, base):
            return False
    return True


cdef inline uint64_t common_divisor(const int64_t* x, Py_ssize_t count, int order, uint64_t base) noexcept nogil:
    cdef uint64_t g = 0, a
    cdef Py_ssize_t i
    for i in range(count):
        a = residual_at(x, i, order, base)
        if order and <int64_t>a < 0:
            a = 0 - a
        g = gcd64(g, a)
        if g == 1:
            break
    return 1 if g == 0 or g > (<uint64_t>1 << 62) else g


cdef struct Divisor:
    int shift        # trailing zero bits of the divisor
    uint64_t inv     # inverse of its odd part modulo 2**64


cdef inline Divisor divisor(uint64_t g) noexcept nogil:
    """Exact division by g as a shift and a multiplication (residuals are multiples of
    g, so the inverse of g's odd part modulo 2**64 gives the quotient; a 64-bit
    division would cost tens of cycles a value, as on a clock of 10**9 ns)."""
    cdef Divisor d
    cdef uint64_t odd, inv
    cdef int k
    d.shift = __builtin_ctzll(g)
    odd = g >> d.shift
    inv = odd
    for k in range(5):
        inv *= 2 - odd * inv
    d.inv = inv
    return d


cdef inline uint64_t unsigned_residual(uint64_t r, int order, Divisor g) noexcept nogil:
    if order == 0:
        return (r >> g.shift) * g.inv
    return zz(<int64_t>((<uint64_t>(<int64_t>r >> g.shift)) * g.inv))


cdef struct BitWriter:
    uint8_t* out
    Py_ssize_t pos
    uint64_t acc
    int nbits


cdef inline void put32(BitWriter* w, uint64_t v, int e) noexcept nogil:
    # fewer than 32 bits wait in the accumulator; 32 go out at once, least significant first
    w.acc |= v << w.nbits
    w.nbits += e
    if w.nbits >= 32:
        w.out[w.pos] = <uint8_t>w.acc
        w.out[w.pos + 1] = <uint8_t>(w.acc >> 8)
        w.out[w.pos + 2] = <uint8_t>(w.acc >> 16)
        w.out[w.pos + 3] = <uint8_t>(w.acc >> 24)
        w.pos += 4
        w.acc >>= 32
        w.nbits -= 32


cdef inline void flush_bits(BitWriter* w) noexcept nogil:
    """The bits still waiting, padded with zeros to a whole byte."""
    while w.nbits > 0:
        w.out[w.pos] = <uint8_t>w.acc
        w.pos += 1
        w.acc >>= 8
        w.nbits -= 8
    w.nbits = 0


cdef inline void put_bits(BitWriter* w, uint64_t v, int e) noexcept nogil:
    # at most 32 bits a step keeps the accumulator from overflowing
    if e > 32:
        put32(w, v & (<uint64_t>0xFFFFFFFF), 32)
        v >>= 32
        e -= 32
    put32(w, v, e)


cdef inline Py_ssize_t put_varint(uint8_t* o, Py_ssize_t pos, uint64_t v) noexcept:
    while v >= 0x80:
        o[pos] = <uint8_t>(v & 0x7F) | 0x80
        v >>= 7
        pos += 1
    o[pos] = <uint8_t>v
    return pos + 1


cdef inline int decode_loop(uint32_t* fb, uint16_t* te, const uint8_t* words, Py_ssize_t nwords,
                     const uint8_t* raw, Py_ssize_t nraw, int64_t* dst, Py_ssize_t count,
                     uint64_t* states, Py_ssize_t* word_end) noexcept nogil:
    """The rANS and raw-bit decoding of `count` residuals. Every piece of state is a local,
    so it stays in registers (state behind a pointer would be reloaded after each store
    to dst, which may alias it). Per slot, `fb` holds frequency << 16 | (slot - cumulative)
    and `te` raw-bit count << 8 | the bucket's top bits: one load a step on each chain.
    Returns 0, or 1 (rANS words run out) or 2 (raw bits run out)."""
    cdef uint64_t x0 = states[0], x1 = states[1], acc = 0, low, top, info
    cdef Py_ssize_t pos = 8, rpos = 0, i = 0
    cdef int nbits = 0, e, j, e1, k
    cdef uint32_t slot0, slot1, t0, t1
    cdef uint32_t NONE = 0xFFFFFFFF
    while i < count:
        # two states take turns: their steps do not depend on each other, the CPU overlaps them
        slot0 = x0 & (PROB_SCALE - 1)
        info = fb[slot0]
        x0 = (info >> 16) * (x0 >> PROB_BITS) + (info & 0xFFFF)
        if x0 < RANS_L:
            if pos + 2 > nwords:
                return 1
            x0 = (x0 << 16) | words[pos] | (<uint64_t>words[pos + 1] << 8)
            pos += 2
        t0 = te[slot0]
        if i + 1 < count:
            slot1 = x1 & (PROB_SCALE - 1)
            info = fb[slot1]
            x1 = (info >> 16) * (x1 >> PROB_BITS) + (info & 0xFFFF)
            if x1 < RANS_L:
                if pos + 2 > nwords:
                    return 1
                x1 = (x1 << 16) | words[pos] | (<uint64_t>words[pos + 1] << 8)
                pos += 2
            t1 = te[slot1]
        else:
            t1 = NONE
        for j in range(2):
            if j == 1:
                if t1 == NONE:
                    break
                t0 = t1
            e = t0 >> 8
            top = t0 & 0xFF
            if nbits < e:
                while nbits <= 56 and rpos < nraw:
                    acc |= <uint64_t>raw[rpos] << nbits
                    rpos += 1
                    nbits += 8
            if e <= nbits:
                low = acc & ((<uint64_t>1 << e) - 1)
                acc >>= e
                nbits -= e
            else:
                # more than 56 raw bits: in steps of 32 so the accumulator never overflows
                low = 0
                e1 = 0
                while e1 < e:
                    k = e - e1 if e - e1 <= 32 else 32
                    while nbits < k and rpos < nraw:
                        acc |= <uint64_t>raw[rpos] << nbits
                        rpos += 1
                        nbits += 8
                    if nbits < k:
                        return 2
                    low |= (acc & ((<uint64_t>1 << k) - 1)) << e1
                    acc >>= k
                    nbits -= k
                    e1 += k
            dst[i] = <int64_t>((top << e) | low)
            i += 1
    states[0] = x0
    states[1] = x1
    word_end[0] = pos
    return 0


cdef inline void constant_run(int64_t* o, Py_ssize_t n, int order, uint64_t u, uint64_t g, uint64_t base) noexcept nogil:
    """Every residual u: x = base + u·g (order 0), or the heads in o[:order] continued
    with a constant difference (order 1) or second difference (order 2)."""
    cdef Py_ssize_t i
    cdef uint64_t step, d, cur
    if order == 0:
        for i in range(n):
            o[i] = <int64_t>(base + u * g)
        return
    step = <uint64_t>unzz(u) * g
    cur = <uint64_t>o[order - 1]
    d = <uint64_t>o[1] - <uint64_t>o[0] if order == 2 else 0
    for i in range(order, n):
        if order == 1:
            cur += step
        else:
            d += step
            cur += d
        o[i] = <int64_t>cur


cdef inline void _integrate(int64_t* o, Py_ssize_t n, int order, uint64_t base, uint64_t g) noexcept nogil:
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
