# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Tumbling-window aggregation, compiled. Same API and results, bit for bit, as
`_aggregate_py` (the specification; read its docstring for the semantics).

Open windows live in a dense C array (136 bytes each, grown by half as needed)
indexed by an open-addressing hash of (series id, window index) with linear
probing, at most half full, of 4-byte slots; about 200-300 bytes per open
window in all. No Python object is made per reading in `add_columns`.
"""
from cpython cimport array
from libc.math cimport floor, fabs, isfinite, INFINITY
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memset

from ._columns cimport as_d, as_q

import array as _array

FIELDS = ("sid", "start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa", "correction")

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
    double area     # sum of value x duration, in time order (for twa)
    double prev_v
    double prev_t
    double t0       # time of the first reading added
    int64_t correction

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
    if t >= w.prev_t:
        w.area += w.prev_v * (t - w.prev_t)
        w.prev_v = v
        w.prev_t = t


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
    cdef readonly str late_policy
    cdef bint _correct
    cdef double _high
    cdef Window* _win         # open windows, dense: _win[0 .. _n)
    cdef Py_ssize_t _n, _wcap
    cdef int32_t* _slot       # hash of (sid, idx) -> index into _win, -1 empty; at most half full
    cdef Py_ssize_t _cap      # power of two
    # per series id (dense, small ids): index of its newest window + 1 (0 = none). Readings
    # of a series mostly fall in its newest window: one compare instead of a hash probe.
    cdef int32_t* _last
    cdef Py_ssize_t _nlast

    def __cinit__(self):
        self._win = NULL
        self._slot = NULL
        self._last = NULL
        self._nlast = 0

    def __init__(self, double width, double lateness=0.0, Py_ssize_t max_open=1_000_000, str late_policy="drop"):
        if not (width > 0 and isfinite(width)):
            raise ValueError(f"width must be a positive number of seconds, got {width!r}")
        if not (lateness >= 0 and isfinite(lateness)):
            raise ValueError(f"lateness must be zero or a positive number of seconds, got {lateness!r}")
        if max_open < 1 or max_open > 1 << 30:
            raise ValueError(f"max_open must be from 1 to 2**30, got {max_open!r}")
        if late_policy not in ("drop", "correct"):
            raise ValueError(f"late_policy must be 'drop' or 'correct', got {late_policy!r}")
        self.late_policy = late_policy
        self._correct = late_policy == "correct"
        self.width = width
        self.lateness = lateness
        self.max_open = max_open
        self.late = 0
        self.invalid = 0
        self._high = -INFINITY
        self._n = 0
        self._wcap = 0
        self._reserve(32)
        self._rehash(64)

    def __dealloc__(self):
        free(self._win)
        free(self._slot)
        free(self._last)

    cdef int _reserve(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self._wcap if self._wcap else 32
        cdef Window* w
        while cap < need:
            cap = cap * 3 // 2 + 1
        if cap != self._wcap:
            w = <Window*>realloc(self._win, cap * sizeof(Window))
            if w == NULL:
                raise MemoryError()
            self._win = w
            self._wcap = cap
        return 0

    cdef int _rehash(self, Py_ssize_t cap) except -1:
        """Rebuild the hash over _win[0 .. _n) with `cap` slots; forget the per-series cache."""
        cdef int32_t* slot = <int32_t*>malloc(cap * sizeof(int32_t))
        cdef Py_ssize_t i
        cdef uint64_t mask = cap - 1, j
        if slot == NULL:
            raise MemoryError()
        memset(slot, 0xFF, cap * sizeof(int32_t))
        for i in range(self._n):
            j = _hash(self._win[i].sid, self._win[i].idx) & mask
            while slot[j] >= 0:
                j = (j + 1) & mask
            slot[j] = <int32_t>i
        free(self._slot)
        self._slot = slot
        self._cap = cap
        if self._nlast:
            memset(self._last, 0, self._nlast * sizeof(int32_t))
        return 0

    cdef int _grow_last(self, int64_t sid) except -1:
        cdef Py_ssize_t n = self._nlast if self._nlast else 1024
        while n <= sid:
            n *= 2
        cdef int32_t* p = <int32_t*>realloc(self._last, n * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        memset(p + self._nlast, 0, (n - self._nlast) * sizeof(int32_t))
        self._last = p
        self._nlast = n
        return 0

    @property
    def open_windows(self):
        return self._n

    cdef inline int _add(self, int64_t sid, double t, double v) except -1:
        """1 accepted, 0 dropped."""
        cdef double q
        cdef int64_t idx
        cdef uint64_t mask, j
        cdef int32_t k
        cdef Window* w
        cdef int64_t correction = 0
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
            if not self._correct:
                return 0
            correction = 1
        if 0 <= sid < self._nlast and self._last[sid]:
            w = &self._win[self._last[sid] - 1]
            if w.sid == sid and w.idx == idx:
                _update(w, t, v)
                return 1
        mask = self._cap - 1
        j = _hash(sid, idx) & mask
        while True:
            k = self._slot[j]
            if k < 0:
                break
            w = &self._win[k]
            if w.sid == sid and w.idx == idx:
                self._remember(sid, k)
                _update(w, t, v)
                return 1
            j = (j + 1) & mask
        # a new window
        if self._n >= self.max_open:
            raise OverflowError(f"more than max_open={self.max_open} windows open: close windows more often "
                                "or raise max_open")
        if self._n >= self._wcap:
            self._reserve(self._n + 1)
        k = <int32_t>self._n
        w = &self._win[k]
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
        w.area = 0.0
        w.prev_v = v
        w.prev_t = t
        w.t0 = t
        w.correction = correction
        self._n += 1
        self._slot[j] = k
        if 2 * self._n > self._cap:
            self._rehash(self._cap * 2)
        self._remember(sid, k)
        return 1

    cdef inline int _remember(self, int64_t sid, int32_t k) except -1:
        if sid < 0 or sid >= (1 << 24):
            return 0  # sparse or huge ids: no cache, the hash serves
        if sid >= self._nlast:
            self._grow_last(sid)
        self._last[sid] = k + 1
        return 0

    def add(self, sid, t, v):
        """Add one reading. False if it was dropped (late or invalid)."""
        return self._add(sid, t, v) == 1

    def add_columns(self, sids, ts, vs):
        """Add readings from three equal-length columns (int64 ids, float64 times and values).
        Any buffer works (array.array, numpy, memoryview); other sequences are converted."""
        cdef const int64_t[::1] s = as_q(sids)
        cdef const double[::1] t = as_d(ts)
        cdef const double[::1] v = as_d(vs)
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
        cdef Py_ssize_t nout = 0, keep = 0, i, cap
        cdef Window* w
        if out == NULL:
            raise MemoryError()
        try:
            for i in range(self._n):
                w = &self._win[i]
                if everything or w.idx * self.width + self.width + self.lateness <= watermark or w.correction:
                    out[nout] = w[0]
                    nout += 1
                else:
                    if keep != i:
                        self._win[keep] = w[0]
                    keep += 1
            self._n = keep
            cap = 64
            while cap < 2 * keep:
                cap *= 2
            if keep < self._wcap // 4 and self._wcap > 64:  # shrink after a burst of series
                self._wcap = 0
                self._reserve(keep + 32)
            self._rehash(cap)
            qsort(out, nout, sizeof(Window), _cmp)
            return _columns(out, nout, self.width)
        finally:
            free(out)


cdef dict _columns(Window* out, Py_ssize_t n, double width):
    cdef array.array sid = array.clone(_Q, n, False)
    cdef array.array starts = array.clone(_D, n, False)
    cdef array.array count = array.clone(_Q, n, False)
    cdef array.array vmin = array.clone(_D, n, False)
    cdef array.array vmax = array.clone(_D, n, False)
    cdef array.array vsum = array.clone(_D, n, False)
    cdef array.array sumsq = array.clone(_D, n, False)
    cdef array.array first = array.clone(_D, n, False)
    cdef array.array last = array.clone(_D, n, False)
    cdef array.array twa = array.clone(_D, n, False)
    cdef array.array corr = array.clone(_Q, n, False)
    cdef Py_ssize_t i
    cdef double end, span
    for i in range(n):
        sid.data.as_longlongs[i] = out[i].sid
        starts.data.as_doubles[i] = out[i].idx * width
        end = out[i].idx * width + width
        span = end - out[i].t0
        twa.data.as_doubles[i] = (out[i].area + out[i].prev_v * (end - out[i].prev_t)) / span if span > 0 \
            else out[i].prev_v
        corr.data.as_longlongs[i] = out[i].correction
        count.data.as_longlongs[i] = out[i].count
        vmin.data.as_doubles[i] = out[i].vmin
        vmax.data.as_doubles[i] = out[i].vmax
        vsum.data.as_doubles[i] = out[i].vsum
        sumsq.data.as_doubles[i] = out[i].sumsq
        first.data.as_doubles[i] = out[i].first
        last.data.as_doubles[i] = out[i].last
    return {"sid": sid, "start": starts, "count": count, "min": vmin, "max": vmax, "sum": vsum,
            "sumsq": sumsq, "first": first, "last": last, "twa": twa, "correction": corr}
