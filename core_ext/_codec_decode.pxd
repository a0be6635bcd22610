# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# The series codec's decoder driver (compiled into _codec, which cimports it): a whole
# stream read in C, each chunk decoded into its place. These are the reference's steps,
# `fmt.decode` and `fmt.read_values`, without a Python call, an intermediate array or a
# copy between them; the bounded-error kinds go back to `fmt.read_values`, as they need
# numpy anyway. The decoding loop itself is in _codec_rans.pxd; docs/codec.md describes
# the format.
#
# A .pxd has no module state of its own, so _codec passes in the Python objects the driver
# needs: the format module (`fmt`), the kernels `fmt.read_values` calls back (`kernels`),
# and the exception a corrupt stream raises, CodecError (`Src.error`; ints_into's `error`).
from cpython cimport array
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from ._codec_bits cimport *
from ._codec_rans cimport *

# chunk kinds, as C constants (the format's numbers: fmt.K_*; _codec checks they agree)
cdef enum:
    K_RAW = 0
    K_DECIMAL = 1
    K_BITS = 2
    K_DICT = 3


cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define HEADRACE_LITTLE_ENDIAN 0
    #else
    #define HEADRACE_LITTLE_ENDIAN 1
    #endif
    """
    # the byte order load64 assumes (_codec_bits.pxd): K_RAW's float64s are copied as they are
    bint LITTLE_ENDIAN "HEADRACE_LITTLE_ENDIAN"


cdef inline array.array int64s(Py_ssize_t n):
    """n int64 (uninitialised), as an array that frees itself."""
    return array.clone(array.array("q"), n, False)


# --- one istream's values -------------------------------------------------------------

cdef inline int ints_into(Py_ssize_t n, int order, const int64_t* heads, uint64_t g, int m,
                          const uint32_t* f, const uint32_t* c, Py_ssize_t nsym,
                          const uint8_t* rb, Py_ssize_t nrb, const uint8_t* xb, Py_ssize_t nraw,
                          int64_t* o, const Conv* cv, error) except -1:
    """n (> order) int64 values into o from an istream's parts (heads, divisor, table,
    rANS words of even length >= 8, raw bits), each made what cv says (NULL: kept as
    integers); `error` (CodecError) when the blocks are corrupt."""
    cdef Py_ssize_t count = n - order if order else n, i, s, j, word_end = 0
    cdef uint32_t fb[PROB_SCALE]
    cdef uint16_t te[PROB_SCALE]
    cdef uint64_t states[2]
    cdef uint32_t direct = 2 << m, t, tev
    cdef int bad = 0
    cdef int64_t* dst = o if order == 0 else o + order
    cdef uint64_t base0 = <uint64_t>heads[0] if order == 0 else 0
    cdef Conv as_ints = Conv(AS_INT, 0.0, NULL, 0)
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
                cv = &as_ints
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
        raise error("rANS block ends early")
    if bad == 2:
        raise error("raw bits end early")
    if bad == 3:
        raise error("dictionary index out of range")
    if states[0] != RANS_L or states[1] != RANS_L or word_end != nrb:
        raise error("rANS block does not end where it should (corrupt stream)")
    return 0


# --- reading a stream -----------------------------------------------------------------

cdef struct Src:
    const uint8_t* d
    Py_ssize_t size
    Py_ssize_t pos
    PyObject* error      # what a corrupt stream raises (CodecError), held by the caller


cdef inline object corrupt(Src* r, str message, Py_ssize_t offset):
    """The exception to raise for a corrupt stream: CodecError(message, offset)."""
    return (<object>r.error)(message, offset)


cdef inline int need(Src* r, Py_ssize_t k) except -1:
    if k < 0 or r.pos + k > r.size:
        raise corrupt(r, f"stream ends early: {k} more bytes needed", r.pos)
    return 0


cdef inline int u8(Src* r) except -1:
    need(r, 1)
    r.pos += 1
    return r.d[r.pos - 1]


cdef inline uint64_t varint(Src* r, uint64_t limit) except? 0xFFFFFFFFFFFFFFFF:
    """A LEB128 varint below `limit` (0: any uint64), as `fmt.Reader.varint`."""
    cdef uint64_t v = 0, b
    cdef int shift = 0
    while True:
        b = <uint64_t>u8(r)
        if shift == 63 and (b & 0x7F) > 1:
            raise corrupt(r, "varint value out of range (>= 2**64)", r.pos)
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise corrupt(r, "varint longer than 64 bits", r.pos)
    if limit and v >= limit:
        raise corrupt(r, f"value {v} out of range (< {limit})", r.pos)
    return v


cdef inline int table_into(Src* r, Py_ssize_t nsym, uint32_t* fv, uint32_t* cv) except -1:
    """A frequency table (`write_table`) into fv, cv (nsym entries each)."""
    cdef Py_ssize_t count, i
    cdef int64_t s = -1
    cdef uint64_t f, total = 0
    memset(fv, 0, nsym * sizeof(uint32_t))
    memset(cv, 0, nsym * sizeof(uint32_t))
    count = varint(r, nsym + 1)
    if count == 0:
        raise corrupt(r, "empty frequency table", r.pos)
    for i in range(count):
        s += varint(r, nsym) + 1
        f = varint(r, PROB_SCALE) + 1 if count > 1 else PROB_SCALE
        if s >= nsym:
            raise corrupt(r, f"symbol {s} out of range", r.pos)
        fv[s] = <uint32_t>f
        cv[s] = <uint32_t>total
        total += f
    if total != PROB_SCALE:
        raise corrupt(r, "frequencies do not sum to the scale", r.pos)
    return 0


cdef inline const uint8_t* blob(Src* r, Py_ssize_t* size) except? NULL:
    size[0] = <Py_ssize_t>varint(r, r.size + 1)
    need(r, size[0])
    r.pos += size[0]
    return r.d + r.pos - size[0] if size[0] else NULL


cdef inline int istream_into(Src* r, Py_ssize_t n, int64_t* o, const Conv* cv) except -1:
    """n int64 values into o, each made what cv says (NULL: integers): `fmt._read_istream`."""
    cdef int order = u8(r), m = u8(r)
    cdef int64_t heads[2]
    cdef Py_ssize_t i, nh, nrb = 0, nraw = 0
    cdef uint64_t g
    cdef uint32_t f[NSYM]
    cdef uint32_t c[NSYM]
    cdef const uint8_t* rb
    cdef const uint8_t* xb
    if order > 2 or m > FINE_M:
        raise corrupt(r, f"istream order {order} / bucket width {m} unknown", r.pos)
    nh = 1 if order == 0 else min(<Py_ssize_t>order, n)
    for i in range(nh):
        heads[i] = unzz(varint(r, 0))
    g = varint(r, 0)
    if g == 0:
        raise corrupt(r, "divisor 0", r.pos)
    if n <= order:
        for i in range(n):
            o[i] = heads[i]
        if convert(o, n, cv):
            raise corrupt(r, "dictionary index out of range", r.pos)
        return 0
    nsym = (2 << m) + (63 - m) * (1 << m)
    table_into(r, nsym, f, c)
    rb = blob(r, &nrb)
    xb = blob(r, &nraw)
    if nrb < 8 or nrb % 2:
        raise corrupt(r, "rANS block has a bad length", -1)
    return ints_into(n, order, heads, g, m, f, c, nsym, rb, nrb, xb, nraw, o, cv, <object>r.error)


# --- the driver -----------------------------------------------------------------------

cdef inline int values_into(Src* r, Py_ssize_t n, double* out, bytes buf, ts, int depth, fmt, kernels) except -1:
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
            raise corrupt(r, f"decimal exponent {e} out of range", r.pos)
        count = varint(r, n + 1)
        if count:
            positions = int64s(count)
            patterns = int64s(count)
            pv = <const int64_t*>(<array.array>positions).data.as_voidptr
            xv = <const int64_t*>(<array.array>patterns).data.as_voidptr
            istream_into(r, count, <int64_t*>pv, NULL)
            for i in range(count):
                if not 0 <= pv[i] < n:
                    raise corrupt(r, "exception position out of range", r.pos)
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
            raise corrupt(r, "empty dictionary", r.pos)
        uniq = int64s(d)
        cv.kind = AS_ENTRY
        cv.table = <const int64_t*>(<array.array>uniq).data.as_voidptr
        cv.size = d
        values_into(r, d, <double*>cv.table, buf, ts, depth + 1, fmt, kernels)
        istream_into(r, n, o, &cv)
        return 0
    # the bounded-error kinds (and every error the reference reports about a kind)
    rd = fmt.Reader(buf)
    rd.pos = start
    got = fmt._np().ascontiguousarray(fmt.read_values(rd, n, ts, kernels, depth), fmt._np().float64)
    cdef const double[::1] gv = got
    if gv.shape[0] != n:
        raise corrupt(r, "chunk of the wrong length", start)
    if n:
        memcpy(out, &gv[0], 8 * n)
    r.pos = rd.pos
    return 0


cdef inline object _decode(data, fmt, kernels):
    """`fmt.decode`, driven from C (see above); `kernels` are the compiled module's."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise fmt.CodecError(f"expected bytes, got {type(data).__name__}")
    cdef bytes buf = bytes(data)
    cdef object error = fmt.CodecError
    cdef Src r
    cdef Py_ssize_t n, chunk, start, size = len(buf)
    r.d = <const uint8_t*>buf
    r.size = size
    r.pos = 0
    r.error = <PyObject*>error
    if bytes(data[:3]) != fmt.MAGIC:  # as the reference reads it (a memoryview's items)
        raise error("not a headrace series stream (magic HRZ missing)", 0)
    r.pos = 3
    version = u8(&r)
    if version != fmt.VERSION:
        raise error(f"series format version {version} is not supported (this decoder reads {fmt.VERSION})", 3)
    u8(&r)  # flags: informative (1 = lossy)
    n = varint(&r, fmt.MAX_N)
    chunk = varint(&r, fmt.MAX_CHUNK + 1)
    if not chunk:
        raise error("chunk size 0", r.pos)
    # the reference's bound on what a short or hostile stream can make us allocate
    if -(-n // chunk) > size - r.pos or n > fmt.MAX_VALUES_PER_BYTE * size:
        raise error(f"{n} values in chunks of {chunk} cannot fit in {size} bytes", r.pos)
    np = fmt._np()
    ts = np.empty(n, np.int64)
    vs = np.empty(n, np.float64)
    cdef int64_t[::1] tv = ts
    cdef double[::1] vv = vs
    if n:
        istream_into(&r, n, &tv[0], NULL)
    for start in range(0, n, chunk):
        values_into(&r, min(chunk, n - start), &vv[start], buf, ts[start:start + chunk], 0, fmt, kernels)
    if r.pos != size:
        raise error(f"{size - r.pos} bytes after the end of the stream", r.pos)
    return ts, vs
