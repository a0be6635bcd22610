# cython: language_level=3
"""A CBOR reader (RFC 8949) over a byte buffer, in C, for the compiled core.

Scalars are decoded into an `Item` (numbers as doubles, strings as pointers into
the buffer); arrays and maps are walked and checked, nested at most
CBOR_MAX_DEPTH deep, and reported as K_OTHER, so a caller reads the structure it
expects with `cbor_head` and skips the rest with `cbor_item`. What the SenML
subset does not use (tags, indefinite-length strings, simple values other than
false, true, null and undefined) is an error. Errors are raised as
`reader.error(offset, message)`, the caller's exception type, so the offsets
and messages are those of the pure-Python reference (core_ext/_ingest_py.py).
The functions are inline: `cimport` this file, nothing is linked.
"""
from cpython.ref cimport PyObject
from libc.math cimport ldexp, NAN, INFINITY
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t
from libc.string cimport memcpy

cdef enum:
    CBOR_MAX_DEPTH = 16

# value kinds of a decoded scalar
cdef enum:
    K_NONE = 0
    K_NUM = 1      # int or float -> d
    K_TEXT = 2     # p, n
    K_BYTES = 3    # p, n
    K_BOOL = 4     # d = 0/1
    K_NULL = 5
    K_OTHER = 6    # a container, undefined or an unusable key
    K_BREAK = 7

ctypedef struct Item:
    int kind
    bint is_int
    double d
    const unsigned char* p
    Py_ssize_t n
    Py_ssize_t at

ctypedef struct Reader:
    const unsigned char* d
    Py_ssize_t len
    Py_ssize_t p          # the next byte to read
    int depth
    PyObject* error       # the exception type raised as error(offset, message)


cdef inline double cbor_half(uint16_t h) noexcept nogil:
    cdef int e = (h >> 10) & 0x1F
    cdef int m = h & 0x3FF
    cdef double v
    if e == 0:
        v = ldexp(m, -24)
    elif e == 31:
        v = INFINITY if m == 0 else NAN
    else:
        v = ldexp(m + 1024, e - 25)
    return -v if h & 0x8000 else v


cdef inline bint utf8_ok(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    cdef int k, j
    cdef uint32_t cp
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k = 1
            cp = c & 0x1F
        elif 0xE0 <= c <= 0xEF:
            k = 2
            cp = c & 0x0F
        elif 0xF0 <= c <= 0xF4:
            k = 3
            cp = c & 0x07
        else:
            return False
        for j in range(1, k + 1):
            if i + j >= n or (s[i + j] & 0xC0) != 0x80:
                return False
            cp = (cp << 6) | (s[i + j] & 0x3F)
        if (k == 2 and (cp < 0x800 or 0xD800 <= cp <= 0xDFFF)) or (k == 3 and (cp < 0x10000 or cp > 0x10FFFF)):
            return False
        i += k + 1
    return True


cdef inline int cbor_fail(Reader* r, Py_ssize_t at, msg) except -1:
    """Raise the reader's error type with the offset of the item at fault and what is wrong."""
    raise (<object>r.error)(at, msg)

cdef inline int cbor_head(Reader* r, int* major, int* info, uint64_t* arg, bint* indef, Py_ssize_t* at) except -1:
    """Read an item's initial byte and argument (RFC 8949 §3); `at` is the item's offset."""
    cdef Py_ssize_t p = r.p
    cdef unsigned char ib
    cdef int nb, i
    cdef uint64_t a = 0
    if p >= r.len:
        cbor_fail(r, p, "truncated: expected a CBOR item")
    ib = r.d[p]
    major[0] = ib >> 5
    info[0] = ib & 31
    at[0] = p
    indef[0] = False
    if info[0] < 24:
        arg[0] = info[0]
        r.p = p + 1
        return 0
    if info[0] > 27:
        if info[0] == 31 and major[0] in (2, 3, 4, 5, 7):
            indef[0] = True
            arg[0] = 0
            r.p = p + 1
            return 0
        cbor_fail(r, p, f"reserved additional information {info[0]}")
    nb = 1 << (info[0] - 24)
    if p + 1 + nb > r.len:
        cbor_fail(r, p, "truncated: the item's argument runs past the end")
    for i in range(nb):
        a = (a << 8) | r.d[p + 1 + i]
    arg[0] = a
    r.p = p + 1 + nb
    return 0

cdef inline int cbor_item(Reader* r, Item* it) except -1:
    """Read one item. Scalars are decoded into `it`; containers are walked (checked)
    and reported as K_OTHER."""
    cdef int major, info
    cdef uint64_t arg, k
    cdef bint indef
    cdef Py_ssize_t at, end
    cdef Item sub
    cdef uint32_t f32
    cdef float fv
    cdef uint64_t u64
    cdef double dv
    cbor_head(r, &major, &info, &arg, &indef, &at)
    it.at = at
    it.is_int = False
    if major == 0:
        it.kind = K_NUM
        it.is_int = True
        it.d = <double>arg
        return 0
    if major == 1:
        it.kind = K_NUM
        it.is_int = True
        if arg < 0x8000000000000000ULL:
            it.d = <double>(-1 - <int64_t>arg)
        elif arg == 0xFFFFFFFFFFFFFFFFULL:
            it.d = -18446744073709551616.0
        else:
            it.d = -(<double>(arg + 1))
        return 0
    if major == 2 or major == 3:
        if indef:
            cbor_fail(r, at, "indefinite-length strings are not supported")
        if arg > <uint64_t>(r.len - r.p):
            cbor_fail(r, at, "truncated: the string runs past the end")
        it.p = r.d + r.p
        it.n = <Py_ssize_t>arg
        r.p += <Py_ssize_t>arg
        if major == 3:
            if not utf8_ok(it.p, it.n):
                cbor_fail(r, at, "text string is not valid UTF-8")
            it.kind = K_TEXT
        else:
            it.kind = K_BYTES
        return 0
    if major == 4 or major == 5:
        r.depth += 1
        if r.depth > CBOR_MAX_DEPTH:
            cbor_fail(r, at, "nested more than 16 levels")
        k = 0
        while indef or k < arg:
            cbor_item(r, &sub)
            if sub.kind == K_BREAK:
                if not indef:
                    cbor_fail(r, r.p - 1, "break inside a definite-length " + ("array" if major == 4 else "map"))
                break
            if major == 5:
                if sub.kind == K_OTHER and sub.n == -1:
                    cbor_fail(r, sub.at, "map key must be an integer or a string")
                cbor_item(r, &sub)
                if sub.kind == K_BREAK:
                    cbor_fail(r, r.p - 1, "break where a map value belongs")
            k += 1
        r.depth -= 1
        it.kind = K_OTHER
        it.n = -1  # marks a container
        return 0
    if major == 6:
        cbor_fail(r, at, f"tag {arg}: SenML uses no CBOR tags")
    it.n = 0
    if info == 20 or info == 21:
        it.kind = K_BOOL
        it.d = info - 20
        return 0
    if info == 22 or info == 23:
        it.kind = K_NULL
        return 0
    if info == 25:
        it.kind = K_NUM
        it.d = cbor_half(<uint16_t>arg)
        return 0
    if info == 26:
        f32 = <uint32_t>arg
        memcpy(&fv, &f32, 4)
        it.kind = K_NUM
        it.d = fv
        return 0
    if info == 27:
        u64 = arg
        memcpy(&dv, &u64, 8)
        it.kind = K_NUM
        it.d = dv
        return 0
    if indef:
        it.kind = K_BREAK
        return 0
    cbor_fail(r, at, f"unsupported simple value {arg}")
