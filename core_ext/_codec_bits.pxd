# cython: cdivision=True
# The bit-level pieces of the series codec (compiled into _codec, which cimports them):
# bucketing, zigzag, exact division, residuals and their divisor, varints, 8-byte loads
# and stores (for the raw bits), constant runs, the encoder's bucket symbols and raw bits
# (bucketize), and the radix sort that orders the dictionary. The entropy coder is
# _codec_rans.pxd; docs/codec.md describes the format they implement.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

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


cdef inline uint64_t gcd_step(uint64_t g, uint64_t a, int signed_) noexcept nogil:
    if signed_ and <int64_t>a < 0:
        a = 0 - a
    if a == g or a == 0:
        return g  # a regular clock repeats one difference: spare the division
    return gcd64(g, a)


# Tags that pick a copy of a loop per delta order at compile time (fused types): a test
# of the order left inside a loop costs registers and a branch a value.
cdef struct Order0:
    char unused
cdef struct Order1:
    char unused
cdef struct Order2:
    char unused
ctypedef fused DeltaOrder:
    Order0
    Order1
    Order2


cdef inline uint64_t residual_at(const int64_t* x, Py_ssize_t i, int order, uint64_t base) noexcept nogil:
    """Residual i in two's complement: x - base (order 0) or wrapped differences, computed
    where it is needed (a buffer of them would cost a page fault every 512 values)."""
    if order == 0:
        return <uint64_t>x[i] - base
    if order == 1:
        return <uint64_t>x[i + 1] - <uint64_t>x[i]
    return (<uint64_t>x[i + 2] - <uint64_t>x[i + 1]) - (<uint64_t>x[i + 1] - <uint64_t>x[i])


cdef inline uint64_t common_divisor(const int64_t* x, Py_ssize_t count, int order, uint64_t base) noexcept nogil:
    """The divisor an istream stores: that of the residuals, or 1 when they are all 0 or it
    is above 2**62."""
    cdef uint64_t g = residual_gcd(x, count, order, base)
    return 1 if g == 0 or g > (<uint64_t>1 << 62) else g


cdef inline Py_ssize_t zero_residuals(const int64_t* x, Py_ssize_t count, int order, uint64_t base) noexcept nogil:
    """How many residuals from the first are 0, in blocks of 256 (a multiple of 256, or count)."""
    cdef Py_ssize_t i, start = 0, end
    cdef uint64_t any_
    while start < count:
        end = start + 256 if count - start > 256 else count
        any_ = 0
        # one loop per order, without a branch inside: the compiler runs them on vectors
        if order == 0:
            for i in range(start, end):
                any_ |= <uint64_t>x[i] - base
        elif order == 1:
            for i in range(start, end):
                any_ |= <uint64_t>x[i + 1] - <uint64_t>x[i]
        else:
            for i in range(start, end):
                any_ |= (<uint64_t>x[i + 2] - <uint64_t>x[i + 1]) - (<uint64_t>x[i + 1] - <uint64_t>x[i])
        if any_:
            return start
        start = end
    return count


cdef inline uint64_t residual_gcd(const int64_t* x, Py_ssize_t count, int order, uint64_t base) noexcept nogil:
    """The greatest common divisor of the residuals (their absolute values), 0 if all are 0."""
    # a regular clock or a constant: every residual 0, found on vectors
    cdef Py_ssize_t start = zero_residuals(x, count, order, base)
    if order == 0:
        return gcd_from(<Order0*>NULL, x, start, count, base)
    if order == 1:
        return gcd_from(<Order1*>NULL, x, start, count, base)
    return gcd_from(<Order2*>NULL, x, start, count, base)


cdef inline uint64_t gcd_from(DeltaOrder* order, const int64_t* x, Py_ssize_t start, Py_ssize_t count,
                              uint64_t base) noexcept nogil:
    """residual_gcd over residuals start..count (those before are 0)."""
    cdef uint64_t g = 0, a, s, odd, inv = 1, lim = 0, low = 0
    cdef Py_ssize_t i
    cdef int shift = 0, k
    for i in range(start, count):
        if DeltaOrder is Order0:
            a = <uint64_t>x[i] - base
        else:
            if DeltaOrder is Order1:
                a = <uint64_t>x[i + 1] - <uint64_t>x[i]
            else:
                a = (<uint64_t>x[i + 2] - <uint64_t>x[i + 1]) - (<uint64_t>x[i + 1] - <uint64_t>x[i])
            s = <uint64_t>(<int64_t>a >> 63)
            a = (a ^ s) - s  # |a|, without a branch on the sign (a coin toss)
        # most residuals are multiples of the divisor so far: test that with a mask, a
        # multiplication and a compare (odd d divides a iff a·d⁻¹ mod 2**64 <= (2**64-1)/d)
        # and leave the divisions of Euclid to the few that change it. While g is 0 the
        # test passes only a = 0 (low = 0, inv = 1, lim = 0).
        if (a & low) == 0 and (a >> shift) * inv <= lim:
            continue
        g = gcd64(g, a)
        if g == 1:
            break
        shift = __builtin_ctzll(g)
        low = (<uint64_t>1 << shift) - 1
        odd = g >> shift
        inv = odd
        for k in range(5):
            inv *= 2 - odd * inv
        lim = 0xFFFFFFFFFFFFFFFFULL // odd
    return g


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


cdef inline Py_ssize_t put_varint(uint8_t* o, Py_ssize_t pos, uint64_t v) noexcept:
    while v >= 0x80:
        o[pos] = <uint8_t>(v & 0x7F) | 0x80
        v >>= 7
        pos += 1
    o[pos] = <uint8_t>v
    return pos + 1


cdef extern from *:
    """
    #include <string.h>
    static inline unsigned long long headrace_load64(const unsigned char* p) {
        unsigned long long v; memcpy(&v, p, 8);  /* eight bytes, least significant first */
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline void headrace_store64(unsigned char* p, unsigned long long v) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        memcpy(p, &v, 8);  /* eight bytes, least significant first */
    }
    """
    uint64_t load64 "headrace_load64"(const uint8_t* p) noexcept nogil
    void store64 "headrace_store64"(uint8_t* p, uint64_t v) noexcept nogil


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


# --- the encoder's symbols and raw bits -----------------------------------------------

cdef inline Py_ssize_t bucketize(const int64_t* xp, Py_ssize_t count, int order, uint64_t base, uint64_t g, int m,
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


# --- the dictionary's order -----------------------------------------------------------

cdef struct KeyId:
    int64_t key
    int64_t id


cdef inline void sort_keys(KeyId* a, KeyId* tmp, Py_ssize_t n) noexcept nogil:
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
