# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""SenML-CBOR payloads straight into columns, compiled. Same API, results and error
offsets as `_ingest_py` (the specification: read its docstring).

One pass over the bytes with a C reader; each record's fields go to C locals;
series names (base name + name, at most 255 bytes) are looked up in a C hash
table over an arena of name bytes, so a reading costs no Python object. A Python
str is made once per new series, for `names`. Readings of one payload are staged
and appended only when the whole payload is valid.
"""
from cpython cimport array
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport isfinite, rint, NAN
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t, uint8_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memcmp, memset

import array as _array
import struct as _struct

from cpython.ref cimport PyObject
from cpython.object cimport Py_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8

from core_ext._cbor cimport (K_NONE, K_NUM, K_TEXT, K_BYTES, K_BOOL, K_NULL, K_OTHER, K_BREAK, Item, Reader,
                             cbor_head, cbor_item, cbor_fail)
from core_ext._ingest_py import (IngestError, RELATIVE_TIME_LIMIT, frame_body as _frame_body_py, frame_ns,
                                 spread as _spread_py)
from gateway.protocol.numbers import (SENML_BN, SENML_BS, SENML_BT, SENML_BV, SENML_N, SENML_S, SENML_T, SENML_V,
                                      SENML_VB, SENML_VD, SENML_VS)

cdef array.array _Q = _array.array("q")
cdef array.array _D = _array.array("d")

DEF MAX_NAME = 255

ctypedef struct Staged:
    uint32_t name_off   # into the stage's name buffer
    uint32_t name_len
    double t
    double v
    Py_ssize_t at
    int kind            # K_NUM, or K_TEXT/K_BOOL/K_BYTES for other values
    const unsigned char* vp
    Py_ssize_t vn


ctypedef struct Field:
    bint present
    int kind
    double d
    const unsigned char* p
    Py_ssize_t n

# record labels we read; others are walked and ignored
cdef enum:
    F_BN = 0
    F_BT = 1
    F_BV = 2
    F_BS = 3
    F_N = 4
    F_V = 5
    F_S = 6
    F_VS = 7
    F_VB = 8
    F_VD = 9
    F_T = 10
    NFIELDS = 11

ctypedef struct Rec:
    Field f[NFIELDS]
    const unsigned char* mu_p   # first must-understand label (text ending in "_")
    Py_ssize_t mu_n
    bint mu


cdef inline bint _name_char(unsigned char c) noexcept nogil:
    return (b'a' <= c <= b'z') or (b'A' <= c <= b'Z') or (b'0' <= c <= b'9') or c == b'-' or c == b':' \
        or c == b'.' or c == b'/' or c == b'_'


cdef inline bint _valid_name(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n <= 0 or n > 128:
        return False
    if not ((b'a' <= s[0] <= b'z') or (b'A' <= s[0] <= b'Z') or (b'0' <= s[0] <= b'9')):
        return False
    for i in range(1, n):
        if not _name_char(s[i]):
            return False
    return True


cdef inline uint64_t _fnv(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 1469598103934665603ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ s[i]) * 1099511628211ULL
    return h


cdef class Parser:
    cdef readonly Py_ssize_t max_series
    cdef readonly Py_ssize_t max_records
    cdef public list names
    cdef public list other
    # columns
    cdef int64_t* _sid
    cdef double* _t
    cdef double* _v
    cdef Py_ssize_t _n, _cap
    # series table: open addressing over (hash, offset, length) into an arena of name bytes
    cdef uint64_t* _hh
    cdef int64_t* _hsid
    cdef Py_ssize_t _hcap
    cdef unsigned char* _arena
    cdef Py_ssize_t _arena_n, _arena_cap
    cdef uint32_t* _noff
    cdef uint32_t* _nlen
    cdef Py_ssize_t _ncap
    # per-payload stage
    cdef Staged* _st
    cdef unsigned char* _names   # staged full names
    # reader state
    cdef Reader _r                 # the CBOR reader over the payload being parsed
    cdef Py_ssize_t _err_at
    cdef object _err_msg

    def __cinit__(self):
        self._sid = NULL; self._t = NULL; self._v = NULL; self._hh = NULL; self._hsid = NULL
        self._arena = NULL; self._noff = NULL; self._nlen = NULL; self._st = NULL; self._names = NULL

    def __init__(self, Py_ssize_t max_series=100_000, Py_ssize_t max_records=512):
        if max_series < 1 or max_records < 1:
            raise ValueError("max_series and max_records must be at least 1")
        self.max_series = max_series
        self.max_records = max_records
        self.names = []
        self.other = []
        self._n = 0
        self._cap = 0
        self._grow_columns(1024)
        self._hcap = 64
        self._hh = <uint64_t*>malloc(self._hcap * sizeof(uint64_t))
        self._hsid = <int64_t*>malloc(self._hcap * sizeof(int64_t))
        self._arena_cap = 4096
        self._arena = <unsigned char*>malloc(self._arena_cap)
        self._arena_n = 0
        self._ncap = 64
        self._noff = <uint32_t*>malloc(self._ncap * sizeof(uint32_t))
        self._nlen = <uint32_t*>malloc(self._ncap * sizeof(uint32_t))
        self._st = <Staged*>malloc(max_records * sizeof(Staged))
        self._names = <unsigned char*>malloc(max_records * (MAX_NAME + 1))
        if not (self._hh and self._hsid and self._arena and self._noff and self._nlen and self._st and self._names):
            raise MemoryError()
        memset(self._hsid, 0xFF, self._hcap * sizeof(int64_t))

    def __dealloc__(self):
        free(self._sid); free(self._t); free(self._v); free(self._hh); free(self._hsid)
        free(self._arena); free(self._noff); free(self._nlen); free(self._st); free(self._names)

    def __len__(self):
        return self._n

    cdef int _grow_columns(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._cap if self._cap else 1024
        while cap < need:
            cap *= 2
        if cap == self._cap:
            return 0
        cdef int64_t* s = <int64_t*>realloc(self._sid, cap * sizeof(int64_t))
        if s == NULL:
            raise MemoryError()
        self._sid = s
        cdef double* t = <double*>realloc(self._t, cap * sizeof(double))
        if t == NULL:
            raise MemoryError()
        self._t = t
        cdef double* v = <double*>realloc(self._v, cap * sizeof(double))
        if v == NULL:
            raise MemoryError()
        self._v = v
        self._cap = cap
        return 0

    # -- series table -------------------------------------------------------------------

    cdef Py_ssize_t _find(self, const unsigned char* s, Py_ssize_t n, uint64_t h) noexcept nogil:
        """Slot of this name, or of the empty slot where it would go."""
        cdef uint64_t mask = self._hcap - 1
        cdef uint64_t j = h & mask
        cdef int64_t sid
        while True:
            sid = self._hsid[j]
            if sid < 0:
                return j
            if self._hh[j] == h and self._nlen[sid] == n and memcmp(self._arena + self._noff[sid], s, n) == 0:
                return j
            j = (j + 1) & mask

    cdef int64_t _lookup(self, const unsigned char* s, Py_ssize_t n) noexcept nogil:
        cdef uint64_t h = _fnv(s, n)
        return self._hsid[self._find(s, n, h)]

    cdef int64_t _add_series(self, const unsigned char* s, Py_ssize_t n, Py_ssize_t at) except -2:
        cdef uint64_t h = _fnv(s, n)
        cdef Py_ssize_t j = self._find(s, n, h)
        cdef int64_t sid = self._hsid[j]
        if sid >= 0:
            return sid
        sid = len(self.names)
        if sid >= self.max_series:
            raise IngestError(at, f"more than max_series={self.max_series} series")
        if self._arena_n + n > self._arena_cap:
            while self._arena_n + n > self._arena_cap:
                self._arena_cap *= 2
            self._arena = <unsigned char*>realloc(self._arena, self._arena_cap)
            if self._arena == NULL:
                raise MemoryError()
        if sid >= self._ncap:
            self._ncap *= 2
            self._noff = <uint32_t*>realloc(self._noff, self._ncap * sizeof(uint32_t))
            self._nlen = <uint32_t*>realloc(self._nlen, self._ncap * sizeof(uint32_t))
            if self._noff == NULL or self._nlen == NULL:
                raise MemoryError()
        memcpy(self._arena + self._arena_n, s, n)
        self._noff[sid] = self._arena_n
        self._nlen[sid] = n
        self._arena_n += n
        self.names.append(PyBytes_FromStringAndSize(<const char*>s, n).decode("ascii"))
        self._hh[j] = h
        self._hsid[j] = sid
        if 2 * (sid + 1) > self._hcap:
            self._rehash()
        return sid

    cdef int _rehash(self) except -1:
        cdef Py_ssize_t old = self._hcap, i, j
        cdef uint64_t* oh = self._hh
        cdef int64_t* os = self._hsid
        cdef uint64_t mask
        self._hcap = old * 2
        self._hh = <uint64_t*>malloc(self._hcap * sizeof(uint64_t))
        self._hsid = <int64_t*>malloc(self._hcap * sizeof(int64_t))
        if self._hh == NULL or self._hsid == NULL:
            raise MemoryError()
        memset(self._hsid, 0xFF, self._hcap * sizeof(int64_t))
        mask = self._hcap - 1
        for i in range(old):
            if os[i] >= 0:
                j = oh[i] & mask
                while self._hsid[j] >= 0:
                    j = (j + 1) & mask
                self._hh[j] = oh[i]
                self._hsid[j] = os[i]
        free(oh)
        free(os)
        return 0

    def series_id(self, name):
        """The id of a series, interned on first use."""
        cdef bytes b = name.encode()
        return self._add_series(<const unsigned char*>b, len(b), 0)

    def take(self):
        """(sids, times, values, other) gathered so far; the parser starts empty again."""
        cdef Py_ssize_t n = self._n
        cdef array.array s = array.clone(_Q, n, False)
        cdef array.array t = array.clone(_D, n, False)
        cdef array.array v = array.clone(_D, n, False)
        if n:
            memcpy(s.data.as_voidptr, self._sid, n * sizeof(int64_t))
            memcpy(t.data.as_voidptr, self._t, n * sizeof(double))
            memcpy(v.data.as_voidptr, self._v, n * sizeof(double))
        other = self.other
        self.other = []
        self._n = 0
        return s, t, v, other

    cdef int _fail(self, Py_ssize_t at, msg) except -1:
        raise IngestError(at, msg)

    # -- SenML ----------------------------------------------------------------------------

    def parse(self, payload, double now):
        """Append one pack's readings; returns how many numeric readings it held."""
        cdef const unsigned char[::1] view
        if type(payload) is bytes:  # the gateway's case: no memoryview to make (a fifth of a small frame's parse)
            self._r.len = PyBytes_GET_SIZE(payload)
            self._r.d = <const unsigned char*>PyBytes_AS_STRING(payload)
        else:
            view = _bytes_view(payload)
            self._r.len = view.shape[0]
            self._r.d = &view[0] if self._r.len else <const unsigned char*>b""
        self._r.p = 0
        self._r.depth = 0
        self._r.error = <PyObject*>IngestError
        return self._parse(now)

    cdef int _record(self, Rec* r, Py_ssize_t rat) except -1:
        """Read one record (a map) into `r`; anything else is walked and reported as not a map."""
        cdef int major, info, fi
        cdef uint64_t arg, k = 0
        cdef bint indef
        cdef Py_ssize_t at
        cdef Item key, val
        cdef int64_t label
        memset(r, 0, sizeof(Rec))
        if self._r.p >= self._r.len or (self._r.d[self._r.p] >> 5) != 5:
            cbor_item(&self._r, &val)  # the reference parses the whole item before it looks at its type
            if val.kind == K_BREAK:
                return 1
            return 2
        cbor_head(&self._r, &major, &info, &arg, &indef, &at)
        self._r.depth += 1
        while indef or k < arg:
            cbor_item(&self._r, &key)
            if key.kind == K_BREAK:
                if not indef:
                    self._fail(self._r.p - 1, "break inside a definite-length map")
                break
            if key.kind == K_OTHER and key.n == -1:
                self._fail(key.at, "map key must be an integer or a string")
            cbor_item(&self._r, &val)
            if val.kind == K_BREAK:
                self._fail(self._r.p - 1, "break where a map value belongs")
            k += 1
            if key.kind == K_TEXT:
                if key.n and key.p[key.n - 1] == b'_' and not r.mu:
                    r.mu = True
                    r.mu_p = key.p
                    r.mu_n = key.n
                continue
            if key.kind != K_NUM or not key.is_int or key.d < _LABEL_LOW or key.d > _LABEL_HIGH:
                continue
            label = <int64_t>key.d
            fi = _FIELD_OF[label - _LABEL_LOW]
            if fi < 0:
                continue
            r.f[fi].present = True
            r.f[fi].kind = val.kind
            r.f[fi].d = val.d
            r.f[fi].p = val.p
            r.f[fi].n = val.n
        self._r.depth -= 1
        return 0

    cdef Py_ssize_t _parse(self, double now) except -1:
        cdef int major, info, kind, nkinds
        cdef uint64_t count, nrec = 0
        cdef bint indef, has_bv = False, has_bs = False
        cdef Py_ssize_t at, rat, nst = 0, nnum = 0, i, bnn = 0, nn, nlen, names_before
        cdef double bt = 0.0, bv = 0.0, bs = 0.0, t
        cdef const unsigned char* bnp = NULL
        cdef const unsigned char* np
        cdef Rec rec
        cdef Field* f
        cdef Staged* st
        cdef unsigned char* name
        cdef int64_t sid
        cbor_head(&self._r, &major, &info, &count, &indef, &at)
        if major != 4:
            self._fail(at, "a SenML pack must be an array of records")
        while indef or nrec < count:
            rat = self._r.p
            kind = self._record(&rec, rat)
            if kind == 1:  # a break
                if not indef:
                    self._fail(self._r.p - 1, "break inside a definite-length array")
                break
            nrec += 1
            if nrec > <uint64_t>self.max_records:
                self._fail(rat, f"more than max_records={self.max_records} records")
            if kind == 2:
                self._fail(rat, f"record {nrec - 1} is not a map")
            f = rec.f
            # semantic checks, in the reference's order
            if rec.mu:
                self._fail(rat, f"record {nrec - 1} has a must-understand label "
                                f"{PyBytes_FromStringAndSize(<const char*>rec.mu_p, rec.mu_n).decode()!r}")
            if f[F_BN].present:
                if f[F_BN].kind != K_TEXT:
                    self._fail(rat, f"record {nrec - 1}: bn must be text")
                bnp = f[F_BN].p
                bnn = f[F_BN].n
            if f[F_BT].present:
                bt = self._number(&f[F_BT], rat, "bt")
            if f[F_BV].present:
                bv = self._number(&f[F_BV], rat, "bv")
                has_bv = True
            if f[F_BS].present:
                bs = self._number(&f[F_BS], rat, "bs")
                has_bs = True
            nkinds = f[F_V].present + f[F_VS].present + f[F_VB].present + f[F_VD].present + f[F_S].present
            if nkinds == 0:
                if not has_bv and not has_bs:
                    if f[F_N].present or f[F_T].present:
                        self._fail(rat, f"record {nrec - 1} has no value")
                    continue
            elif nkinds > 1 and not (nkinds == 2 and f[F_V].present and f[F_S].present):
                self._fail(rat, f"record {nrec - 1} has several values")
            np = NULL
            nn = 0
            if f[F_N].present:
                if f[F_N].kind != K_TEXT:
                    self._fail(rat, f"record {nrec - 1}: n must be text")
                np = f[F_N].p
                nn = f[F_N].n
            nlen = bnn + nn
            name = self._names + nst * (MAX_NAME + 1)
            if nlen <= 128:
                if bnn:
                    memcpy(name, bnp, bnn)
                if nn:
                    memcpy(name + bnn, np, nn)
            if nlen > 128 or not _valid_name(name, nlen):
                full = (PyBytes_FromStringAndSize(<const char*>bnp, bnn) if bnn else b"") + \
                    (PyBytes_FromStringAndSize(<const char*>np, nn) if nn else b"")
                self._fail(rat, f"record {nrec - 1}: invalid name {full!r}")
            t = bt + (self._number(&f[F_T], rat, "t") if f[F_T].present else 0.0)
            if not isfinite(t):
                self._fail(rat, f"record {nrec - 1}: time is not finite")
            if t < 268435456.0:  # 2**28: relative to now (RFC 8428 §4.5.3)
                t += now
            st = &self._st[nst]
            st.name_off = <uint32_t>(nst * (MAX_NAME + 1))
            st.name_len = <uint32_t>nlen
            st.t = t
            st.at = rat
            if f[F_V].present or (nkinds == 0 and has_bv):
                st.kind = K_NUM
                st.v = self._resolve(&f[F_V], has_bv, bv, rat, "v")
                nnum += 1
            elif f[F_S].present or (nkinds == 0 and has_bs):
                st.kind = K_NUM
                st.v = self._resolve(&f[F_S], has_bs, bs, rat, "s")
                nnum += 1
            elif f[F_VS].present:
                if f[F_VS].kind != K_TEXT:
                    self._fail(rat, f"record {nrec - 1}: vs must be str")
                st.kind = K_TEXT
                st.vp = f[F_VS].p
                st.vn = f[F_VS].n
            elif f[F_VB].present:
                if f[F_VB].kind != K_BOOL:
                    self._fail(rat, f"record {nrec - 1}: vb must be bool")
                st.kind = K_BOOL
                st.v = f[F_VB].d
            else:
                if f[F_VD].kind != K_BYTES:
                    self._fail(rat, f"record {nrec - 1}: vd must be bytes")
                st.kind = K_BYTES
                st.vp = f[F_VD].p
                st.vn = f[F_VD].n
            nst += 1
        if self._r.p != self._r.len:
            self._fail(self._r.p, "bytes after the end of the pack")
        if nst == 0:
            self._fail(0, "the pack holds no reading")
        # all checks passed: intern names (rolled back if the table fills), then append
        names_before = len(self.names)
        try:
            for i in range(nst):
                st = &self._st[i]
                sid = self._lookup(self._names + st.name_off, st.name_len)
                if sid < 0:
                    sid = self._add_series(self._names + st.name_off, st.name_len, st.at)
                st.name_off = <uint32_t>sid  # the field now holds the series id
        except IngestError:
            self._forget_series(names_before)
            raise
        if self._n + nnum > self._cap:
            self._grow_columns(self._n + nnum)
        for i in range(nst):
            st = &self._st[i]
            if st.kind == K_NUM:
                self._sid[self._n] = st.name_off
                self._t[self._n] = st.t
                self._v[self._n] = st.v
                self._n += 1
            elif st.kind == K_TEXT:
                self.other.append((st.name_off, st.t, PyBytes_FromStringAndSize(<const char*>st.vp, st.vn).decode()))
            elif st.kind == K_BOOL:
                self.other.append((st.name_off, st.t, st.v != 0))
            else:
                self.other.append((st.name_off, st.t, PyBytes_FromStringAndSize(<const char*>st.vp, st.vn)))
        return nnum

    cdef double _resolve(self, Field* f, bint has_base, double base, Py_ssize_t at, str what) except? -1.5:
        """Base value plus the record's value (RFC 8428 §4.1), as the reference's _resolve."""
        if not f.present:
            return base
        if has_base:
            return base + self._number(f, at, what)
        return self._number(f, at, what)

    cdef double _number(self, Field* f, Py_ssize_t at, str what) except? -1.5:
        if f.kind != K_NUM:
            self._fail(at, f"{what} must be a number")
        return f.d

    cdef int _forget_series(self, Py_ssize_t keep) except -1:
        cdef Py_ssize_t sid
        cdef uint64_t mask = self._hcap - 1, j, h
        if len(self.names) == keep:
            return 0
        del self.names[keep:]
        self._arena_n = self._noff[keep]
        memset(self._hsid, 0xFF, self._hcap * sizeof(int64_t))
        for sid in range(keep):
            h = _fnv(self._arena + self._noff[sid], self._nlen[sid])
            j = h & mask
            while self._hsid[j] >= 0:
                j = (j + 1) & mask
            self._hh[j] = h
            self._hsid[j] = sid
        return 0


# label (-6..8) -> field index, -1 for labels read but not needed (bu, bver, u, ut)
# the field of each SenML label from bs (-6) to vd (8); -1: a label read past
cdef int64_t _LABEL_LOW = SENML_BS, _LABEL_HIGH = SENML_VD  # C globals: the hot loop compares no Python object
cdef int _FIELD_OF[15]
_FIELD_OF[:] = [-1] * 15
for _label, _field in ((SENML_BS, F_BS), (SENML_BV, F_BV), (SENML_BT, F_BT), (SENML_BN, F_BN), (SENML_N, F_N),
                       (SENML_V, F_V), (SENML_VS, F_VS), (SENML_VB, F_VB), (SENML_S, F_S), (SENML_T, F_T),
                       (SENML_VD, F_VD)):
    _FIELD_OF[_label - SENML_BS] = _field


cdef object _bytes_view(object payload):
    return memoryview(payload).cast("B")  # any contiguous buffer, as bytes


def spread(list cols, double[::1] times, double[::1] values):
    """See _ingest_py.spread (the specification): the same appends, without the interpreter
    per reading (the uplink's per-reading loop)."""
    cdef Py_ssize_t i, n = len(cols)
    cdef double t
    cdef int64_t sec
    if times.shape[0] != n or values.shape[0] != n:
        raise ValueError(f"{n} columns for {times.shape[0]} times and {values.shape[0]} values")
    for i in range(n):
        col = cols[i]
        t = times[i]
        if -9.0e9 < t < 9.0e9:
            # as int(t) and round() do: truncation, then the fraction's product rounded half to even
            # (rint, in the default rounding mode); whole nanoseconds fit int64 up to the year 2255
            sec = <int64_t>t
            col[0].append(sec * 1000000000 + <int64_t>rint((t - <double>sec) * 1e9))
            col[1].append(values[i])
        else:  # past int64 nanoseconds, or not finite: the reference's Python integers (or its error)
            _spread_py([col], times[i:i + 1], values[i:i + 1])


cdef inline object _frame_ns(object recv):
    if type(recv) is float:
        return _frame_ns_of(recv)
    return frame_ns(recv)  # an integer: the reference's


_loads = None


ctypedef fused _cell:
    int64_t
    double


cdef inline int _append(object col, _cell x) except -1:
    """col.append(x): written in place, without an int or float object, when col is an array of
    the same type ('q' for int64, 'd' for double)."""
    cdef array.array a
    cdef Py_ssize_t n
    cdef char code = c'q' if _cell is int64_t else c'd'
    if type(col) is array.array and (<array.array>col).ob_descr.typecode == code:
        a = <array.array>col
        n = Py_SIZE(a)
        array.resize_smart(a, n + 1)
        (<_cell*>a.data.as_voidptr)[n] = x
    else:
        col.append(x)
    return 0


cdef inline Py_ssize_t _body_head(const unsigned char* d, Py_ssize_t n, Py_ssize_t p, int major,
                                  uint64_t* arg) noexcept:
    """The argument of a definite-length head of `major` at p, and the offset after it; -1 for
    anything else (the caller leaves that body to cbor2)."""
    cdef unsigned char ib
    cdef int info, size, k
    cdef uint64_t a = 0
    if p >= n:
        return -1
    ib = d[p]
    if ib >> 5 != major:
        return -1
    info = ib & 31
    if info < 24:
        arg[0] = info
        return p + 1
    if info > 27:
        return -1
    size = 1 << (info - 24)
    if p + 1 + size > n:
        return -1
    for k in range(size):
        a = (a << 8) | d[p + 1 + k]
    arg[0] = a
    return p + 1 + size


cdef inline Py_ssize_t _frame_head(const unsigned char* d, Py_ssize_t n, Py_ssize_t* name_at, uint64_t* name_len,
                                   uint64_t* seq, double* received) noexcept:
    """A spooled frame body `[node, seq, received, senml]` as frame_body writes it (a text node, an
    unsigned sequence number, a double): where its SenML starts (it runs to the end), or -1 for
    any other shape or length, which cbor2 reads as before."""
    cdef Py_ssize_t p
    cdef uint64_t a, bits = 0
    cdef int k
    if n < 1 or d[0] != 0x84:
        return -1
    p = _body_head(d, n, 1, 3, name_len)
    if p < 0 or name_len[0] > <uint64_t>(n - p):
        return -1
    name_at[0] = p
    p = _body_head(d, n, p + <Py_ssize_t>name_len[0], 0, seq)
    if p < 0 or p + 9 > n or d[p] != 0xfb:
        return -1
    for k in range(8):
        bits = (bits << 8) | d[p + 1 + k]
    memcpy(received, &bits, 8)
    p = _body_head(d, n, p + 9, 2, &a)
    if p < 0 or a != <uint64_t>(n - p):
        return -1
    return p


cdef inline object _frame_ns_of(double t):
    cdef int64_t sec
    if -9.0e9 < t < 9.0e9:  # as in spread
        sec = <int64_t>t
        return sec * 1000000000 + <int64_t>rint((t - <double>sec) * 1e9)
    return frame_ns(t)


def spread_frames(Parser parser, frames, dict nodes, dict known, entry, table):
    """See _ingest_py.spread_frames (the specification): the same loop, with each frame's
    readings spread from the parser's own columns (no arrays made a frame) and its key made
    from them directly."""
    global _loads
    if _loads is None:
        from cbor2 import loads
        _loads = loads
    if parser._n:
        raise ValueError(f"spread_frames needs a parser holding no readings ({parser._n} waiting)")
    received, seqs, node_col, pattern_col = table
    cdef list out = []
    cdef list cols
    cdef array.array sids
    cdef Py_ssize_t fi = -1, i, n
    cdef double t, rt = 0.0
    cdef int64_t sec
    cdef const unsigned char* d = NULL
    cdef Py_ssize_t blen = 0, start, name_at = 0
    cdef uint64_t name_len = 0, useq = 0
    for body in frames:
        fi += 1
        start = -1
        if type(body) is bytes:  # the spool's bodies: read here, without cbor2's objects and a copy of the SenML
            d = <const unsigned char*>PyBytes_AS_STRING(body)
            blen = PyBytes_GET_SIZE(body)
            start = _frame_head(d, blen, &name_at, &name_len, &useq, &rt)
            if start >= 0:
                try:
                    node = PyUnicode_DecodeUTF8(<const char*>d + name_at, <Py_ssize_t>name_len, NULL)
                except UnicodeDecodeError:
                    start = -1  # cbor2's error, below
        if start >= 0:
            seq = useq
            ni = nodes.setdefault(node, len(nodes))
            parser._r.d = d + start
            parser._r.len = blen - start
            parser._r.p = 0
            parser._r.depth = 0
            parser._r.error = <PyObject*>IngestError
            parser._parse(rt)
            recv_ns = _frame_ns_of(rt)
        else:
            node, seq, recv, senml = _loads(body)
            ni = nodes.setdefault(node, len(nodes))
            parser.parse(senml, recv)
            recv_ns = _frame_ns(recv)
        n = parser._n
        parser._n = 0  # taken, as take() does; the readings stay in the buffers until the next parse
        oth = parser.other
        if oth:
            parser.other = []
        key = (ni, PyBytes_FromStringAndSize(<char*>parser._sid, n * sizeof(int64_t)))
        found = known.get(key)
        if found is None:
            sids = array.clone(_Q, n, False)
            if n:
                memcpy(sids.data.as_voidptr, parser._sid, n * sizeof(int64_t))
            found = entry(ni, node, sids)
            known[key] = found
        pidx, cols = found
        if len(cols) != n:
            raise ValueError(f"{len(cols)} columns for {n} times and {n} values")
        for i in range(n):
            col = cols[i]
            t = parser._t[i]
            if -9.0e9 < t < 9.0e9:  # as in spread
                sec = <int64_t>t
                _append[int64_t](col[0], sec * 1000000000 + <int64_t>rint((t - <double>sec) * 1e9))
                _append[double](col[1], parser._v[i])
            else:
                _spread_py([col], _array.array("d", [t]), _array.array("d", [parser._v[i]]))
        received.append(recv_ns)
        seqs.append(seq)
        node_col.append(ni)
        pattern_col.append(pidx)
        if oth:
            out.append((fi, node, oth))
    return out


cdef inline Py_ssize_t _head_len(uint64_t n) noexcept:
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


cdef inline unsigned char* _put_head(unsigned char* o, int major, uint64_t n) noexcept:
    """A CBOR head (RFC 8949 §3.1) in its shortest form, as cbor2 writes it; returns the end."""
    cdef int k, size
    if n < 24:
        o[0] = <unsigned char>(major << 5 | n)
        return o + 1
    size = 1 if n < 0x100 else 2 if n < 0x10000 else 4 if n < 0x100000000 else 8
    o[0] = <unsigned char>(major << 5 | (24 + (0 if size == 1 else 1 if size == 2 else 2 if size == 4 else 3)))
    for k in range(size):
        o[size - k] = <unsigned char>(n >> (8 * k))
    return o + 1 + size


def frame_body(node, seq, received, senml):
    """See _ingest_py.frame_body (the specification): the same bytes, written in C for a text
    node, an unsigned 64-bit sequence number, a finite float time and bytes."""
    cdef uint64_t s, bits
    cdef double t
    cdef Py_ssize_t nn, ns, size
    cdef unsigned char* o
    cdef int k
    if (type(node) is not str or type(seq) is not int or type(received) is not float or type(senml) is not bytes
            or seq < 0 or seq > 0xFFFFFFFFFFFFFFFF):
        return _frame_body_py(node, seq, received, senml)
    t = received
    if not isfinite(t):  # cbor2 writes NaN and the infinities in half precision
        return _frame_body_py(node, seq, received, senml)
    try:
        name = (<str>node).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: cbor2's error
        return _frame_body_py(node, seq, received, senml)
    s = seq
    nn = PyBytes_GET_SIZE(name)
    ns = PyBytes_GET_SIZE(senml)
    size = 1 + _head_len(nn) + nn + _head_len(s) + 9 + _head_len(ns) + ns
    out = PyBytes_FromStringAndSize(NULL, size)
    o = <unsigned char*>PyBytes_AS_STRING(out)
    o[0] = 0x84  # an array of 4
    o = _put_head(o + 1, 3, nn)
    memcpy(o, PyBytes_AS_STRING(name), nn)
    o = _put_head(o + nn, 0, s)
    o[0] = 0xfb  # a double, big-endian
    memcpy(&bits, &t, 8)
    for k in range(8):
        o[8 - k] = <unsigned char>(bits >> (8 * k))
    o = _put_head(o + 9, 2, ns)
    memcpy(o, PyBytes_AS_STRING(senml), ns)
    return out
