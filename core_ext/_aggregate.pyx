# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Tumbling-window aggregation, compiled. Same API and results, bit for bit, as
`_aggregate_py` (the specification; read its docstring for the semantics).

Open windows live in C arrays (96 bytes each) indexed by an open-addressing hash
of (series id, window index) with linear probing, at most half full. No Python
object is made per reading in `add_columns`.
"""
from cpython cimport array
from libc.math cimport floor, fabs, isfinite, INFINITY
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memset

import array as _array

FIELDS = ("sid", "start", "count", "min", "max", "sum", "sumsq", "first", "last")

cdef double _IDX_LIMIT = 4611686018427387904.0  # 2**62

ctypedef struct Window:
    int64_t sid
    int64_t idx
    int64_t count
    double vmin
    double vmax
    double vsum
    double sumsq
    double first
    double first_t
    double last
    double last_t
    int64_t used

cdef array.array _Q = _array.array("q")
cdef array.array _D = _array.array("d")


cdef inline uint64_t _hash(int64_t sid, int64_t idx) nogil:
    cdef uint64_t h = <uint64_t>sid * 0x9E3779B97F4A7C15ULL ^ (<uint64_t>idx + 0x632BE59BD9B4E019ULL)
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    return h


cdef inline void _update(Window* w, double t, double v) noexcept nogil:
    w.count += 1
    if v < w.vmin:
        w.vmin = v
    if v > w.vmax:
        w.vmax = v
    w.vsum += v
    w.sumsq += v * v
    if t < w.first_t:
        w.first = v
        w.first_t = t
    if t >= w.last_t:
        w.last = v
        w.last_t = t


cdef int _cmp(const void* a, const void* b) noexcept nogil:
    cdef const Window* x = <const Window*>a
    cdef const Window* y = <const Window*>b
    if x.idx != y.idx:
        return -1 if x.idx < y.idx else 1
    if x.sid != y.sid:
        return -1 if x.sid < y.sid else 1
    return 0


cdef class Aggregator:
    cdef readonly double width
    cdef readonly double lateness
    cdef readonly Py_ssize_t max_open
    cdef readonly long long late
    cdef readonly long long invalid
    cdef double _high
    cdef Window* _slots
    cdef Py_ssize_t _cap      # power of two
    cdef Py_ssize_t _n        # windows open
    # per series id (dense, small ids): the slot of its newest window, +1 (0 = none). Readings
    # of a series mostly fall in its newest window: one compare instead of a hash probe.
    cdef int64_t* _last
    cdef Py_ssize_t _nlast

    def __cinit__(self):
        self._slots = NULL
        self._last = NULL
        self._nlast = 0

    def __init__(self, double width, double lateness=0.0, Py_ssize_t max_open=1_000_000):
        if not (width > 0 and isfinite(width)):
            raise ValueError(f"width must be a positive number of seconds, got {width!r}")
        if not (lateness >= 0 and isfinite(lateness)):
            raise ValueError(f"lateness must be zero or a positive number of seconds, got {lateness!r}")
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open!r}")
        self.width = width
        self.lateness = lateness
        self.max_open = max_open
        self.late = 0
        self.invalid = 0
        self._high = -INFINITY
        self._n = 0
        self._alloc(64)

    def __dealloc__(self):
        free(self._slots)
        free(self._last)

    cdef inline void _forget_last(self) noexcept nogil:
        if self._nlast:
            memset(self._last, 0, self._nlast * sizeof(int64_t))

    cdef int _grow_last(self, int64_t sid) except -1:
        cdef Py_ssize_t n = self._nlast if self._nlast else 1024
        while n <= sid:
            n *= 2
        cdef int64_t* p = <int64_t*>realloc(self._last, n * sizeof(int64_t))
        if p == NULL:
            raise MemoryError()
        memset(p + self._nlast, 0, (n - self._nlast) * sizeof(int64_t))
        self._last = p
        self._nlast = n
        return 0

    cdef int _alloc(self, Py_ssize_t cap) except -1:
        cdef Window* slots = <Window*>malloc(cap * sizeof(Window))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0, cap * sizeof(Window))
        free(self._slots)
        self._slots = slots
        self._cap = cap
        self._forget_last()  # slots moved
        return 0

    cdef int _rehash(self, Py_ssize_t cap, bint keep_all, double watermark, Window* out, Py_ssize_t* nout) except -1:
        """Move the open windows to a table of `cap` slots. Unless keep_all, windows due at
        `watermark` go to `out` instead."""
        cdef Window* old = self._slots
        cdef Py_ssize_t oldcap = self._cap, i
        cdef Window* w
        self._slots = NULL
        try:
            self._alloc(cap)
        except MemoryError:
            self._slots = old
            raise
        self._n = 0
        for i in range(oldcap):
            w = &old[i]
            if not w.used:
                continue
            if not keep_all and (w.idx * self.width + self.width + self.lateness <= watermark):
                out[nout[0]] = w[0]
                nout[0] += 1
            else:
                self._insert_copy(w)
        free(old)
        return 0

    cdef inline void _insert_copy(self, Window* src) noexcept nogil:
        cdef uint64_t mask = self._cap - 1
        cdef uint64_t j = _hash(src.sid, src.idx) & mask
        while self._slots[j].used:
            j = (j + 1) & mask
        self._slots[j] = src[0]
        self._n += 1

    @property
    def open_windows(self):
        return self._n

    cdef inline int _add(self, int64_t sid, double t, double v) except -1:
        """1 accepted, 0 dropped."""
        cdef double q
        cdef int64_t idx
        cdef uint64_t mask, j
        cdef Window* w
        if v != v or not isfinite(t):
            self.invalid += 1
            return 0
        q = t / self.width
        if fabs(q) >= _IDX_LIMIT:
            self.invalid += 1
            return 0
        idx = <int64_t>floor(q)
        if idx * self.width + self.width + self.lateness <= self._high:
            self.late += 1
            return 0
        if 0 <= sid < self._nlast and self._last[sid]:
            w = &self._slots[self._last[sid] - 1]
            if w.used and w.sid == sid and w.idx == idx:
                _update(w, t, v)
                return 1
        mask = self._cap - 1
        j = _hash(sid, idx) & mask
        while True:
            w = &self._slots[j]
            if not w.used:
                break
            if w.sid == sid and w.idx == idx:
                self._remember(sid, j)
                w.count += 1
                if v < w.vmin:
                    w.vmin = v
                if v > w.vmax:
                    w.vmax = v
                w.vsum += v
                w.sumsq += v * v
                if t < w.first_t:
                    w.first = v
                    w.first_t = t
                if t >= w.last_t:
                    w.last = v
                    w.last_t = t
                return 1
            j = (j + 1) & mask
        # a new window
        if self._n >= self.max_open:
            raise OverflowError(f"more than max_open={self.max_open} windows open: close windows more often "
                                "or raise max_open")
        if 2 * (self._n + 1) > self._cap:
            self._rehash(self._cap * 2, True, 0.0, NULL, NULL)
            return self._add(sid, t, v)
        w.used = 1
        w.sid = sid
        w.idx = idx
        w.count = 1
        w.vmin = v
        w.vmax = v
        w.vsum = v
        w.sumsq = v * v
        w.first = v
        w.first_t = t
        w.last = v
        w.last_t = t
        self._n += 1
        self._remember(sid, j)
        return 1

    cdef inline int _remember(self, int64_t sid, uint64_t j) except -1:
        if sid < 0 or sid >= (1 << 24):
            return 0  # sparse or huge ids: no cache, the hash serves
        if sid >= self._nlast:
            self._grow_last(sid)
        self._last[sid] = j + 1
        return 0

    def add(self, sid, t, v):
        """Add one reading. False if it was dropped (late or invalid)."""
        return self._add(sid, t, v) == 1

    def add_columns(self, sids, ts, vs):
        """Add readings from three equal-length columns (int64 ids, float64 times and values).
        Any buffer works (array.array, numpy, memoryview); other sequences are converted."""
        cdef const int64_t[::1] s = _as_q(sids)
        cdef const double[::1] t = _as_d(ts)
        cdef const double[::1] v = _as_d(vs)
        cdef Py_ssize_t i, n = s.shape[0]
        cdef long long accepted = 0
        if t.shape[0] != n or v.shape[0] != n:
            raise ValueError(f"columns differ in length: {n} ids, {t.shape[0]} times, {v.shape[0]} values")
        for i in range(n):
            accepted += self._add(s[i], t[i], v[i])
        return accepted

    def close(self, double watermark):
        """Close every window with start + width + lateness <= watermark; return them as columns."""
        if watermark > self._high:
            self._high = watermark
        return self._close(False, watermark)

    def flush(self):
        """Close every open window."""
        return self._close(True, 0.0)

    cdef dict _close(self, bint everything, double watermark):
        cdef Window* out = <Window*>malloc((self._n if self._n else 1) * sizeof(Window))
        cdef Py_ssize_t nout = 0, i, cap
        if out == NULL:
            raise MemoryError()
        try:
            if everything:
                for i in range(self._cap):
                    if self._slots[i].used:
                        out[nout] = self._slots[i]
                        nout += 1
                self._alloc(64)
                self._n = 0
            else:
                cap = self._cap
                self._rehash(cap, False, watermark, out, &nout)
                while cap > 64 and 8 * self._n < cap:  # shrink after a burst of series
                    cap //= 2
                if cap != self._cap:
                    self._rehash(cap, True, 0.0, NULL, NULL)
            qsort(out, nout, sizeof(Window), _cmp)
            return _columns(out, nout, self.width)
        finally:
            free(out)


cdef dict _columns(Window* out, Py_ssize_t n, double width):
    cdef array.array sid = array.clone(_Q, n, False)
    cdef array.array start = array.clone(_D, n, False)
    cdef array.array count = array.clone(_Q, n, False)
    cdef array.array vmin = array.clone(_D, n, False)
    cdef array.array vmax = array.clone(_D, n, False)
    cdef array.array vsum = array.clone(_D, n, False)
    cdef array.array sumsq = array.clone(_D, n, False)
    cdef array.array first = array.clone(_D, n, False)
    cdef array.array last = array.clone(_D, n, False)
    cdef Py_ssize_t i
    for i in range(n):
        sid.data.as_longlongs[i] = out[i].sid
        start.data.as_doubles[i] = out[i].idx * width
        count.data.as_longlongs[i] = out[i].count
        vmin.data.as_doubles[i] = out[i].vmin
        vmax.data.as_doubles[i] = out[i].vmax
        vsum.data.as_doubles[i] = out[i].vsum
        sumsq.data.as_doubles[i] = out[i].sumsq
        first.data.as_doubles[i] = out[i].first
        last.data.as_doubles[i] = out[i].last
    return {"sid": sid, "start": start, "count": count, "min": vmin, "max": vmax, "sum": vsum,
            "sumsq": sumsq, "first": first, "last": last}


cdef object _as_q(object x):
    try:
        m = memoryview(x)
        if m.ndim == 1 and m.itemsize == 8 and m.format in ("q", "l", "<q", "<l", "=q", "=l") and m.c_contiguous:
            return m.cast("B").cast("q") if m.format != "q" else m
    except TypeError:
        pass
    return _array.array("q", x)


cdef object _as_d(object x):
    try:
        m = memoryview(x)
        if m.ndim == 1 and m.format in ("d", "<d", "=d") and m.c_contiguous:
            return m.cast("B").cast("d") if m.format != "d" else m
    except TypeError:
        pass
    return _array.array("d", x)
