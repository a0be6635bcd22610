# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The rule table, compiled. Same API and results, bit for bit, as `_rules_py` (the
specification; read its docstring for the semantics).

Rules and conditions live in C arrays. Three indexes map a series id to its
value/rate conditions, its window conditions and its stale/mirror rules, each in
compressed rows (offsets by series id, dense up to the largest id watched), rebuilt
after the table changes; a reading of a series no rule watches costs one compare.
Transitions are gathered in C arrays and returned as array.array columns. No Python
object is made per reading in `eval`.
"""
from cpython cimport array
from libc.math cimport isfinite, isnan, sqrt, NAN

from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset

from ._columns cimport as_d, as_q

import array as _array

MODE_ALL, MODE_ANY, MODE_STALE, MODE_MIRROR = 0, 1, 2, 3
SIGNAL_VALUE, SIGNAL_RATE, SIGNAL_WINDOW = 0, 1, 2
STATS = ("mean", "min", "max", "twa", "first", "last", "count", "sum", "rms")
CLEARED, RAISED, READING = 0, 1, 2
MAX_SID = (1 << 24) - 1

cdef enum:
    _ALL = 0
    _ANY = 1
    _STALE = 2
    _MIRROR = 3
    _VALUE = 0
    _RATE = 1
    _WINDOW = 2
    _S_MEAN = 0
    _S_MIN = 1
    _S_MAX = 2
    _S_TWA = 3
    _S_FIRST = 4
    _S_LAST = 5
    _S_COUNT = 6
    _S_SUM = 7
    _S_RMS = 8
    _CLEARED = 0
    _RAISED = 1
    _READING = 2

ctypedef struct Rule:
    int mode
    int active
    int64_t n_cond
    int64_t n_on
    double duration
    double after
    double pending    # NaN: the condition does not hold
    double last_seen  # NaN: not armed yet (stale)

ctypedef struct Cond:
    int64_t sid
    int64_t rule
    int signal
    int above
    int stat
    int on
    int has_prev
    double level
    double clear
    double width
    double prev_t
    double prev_v

ctypedef struct Index:
    int64_t* off   # off[sid] .. off[sid + 1] into items; n_off = max sid + 2
    int64_t* items
    Py_ssize_t n_off

ctypedef struct Out:
    int64_t* rule
    double* t
    int64_t* state
    double* value
    Py_ssize_t n, cap

cdef array.array _Q = _array.array("q")
cdef array.array _D = _array.array("d")


cdef int _out_push(Out* o, int64_t rule, double t, int64_t state, double value) except -1:
    cdef Py_ssize_t cap
    if o.n >= o.cap:
        cap = o.cap * 2 if o.cap else 64
        o.rule = <int64_t*>realloc(o.rule, cap * sizeof(int64_t))
        o.t = <double*>realloc(o.t, cap * sizeof(double))
        o.state = <int64_t*>realloc(o.state, cap * sizeof(int64_t))
        o.value = <double*>realloc(o.value, cap * sizeof(double))
        if o.rule == NULL or o.t == NULL or o.state == NULL or o.value == NULL:
            raise MemoryError()
        o.cap = cap
    o.rule[o.n] = rule
    o.t[o.n] = t
    o.state[o.n] = state
    o.value[o.n] = value
    o.n += 1
    return 0


cdef void _out_free(Out* o) noexcept:
    free(o.rule)
    free(o.t)
    free(o.state)
    free(o.value)


cdef tuple _out_columns(Out* o):
    cdef Py_ssize_t n = o.n, i
    cdef array.array r = array.clone(_Q, n, False)
    cdef array.array t = array.clone(_D, n, False)
    cdef array.array s = array.clone(_Q, n, False)
    cdef array.array v = array.clone(_D, n, False)
    for i in range(n):
        r.data.as_longlongs[i] = o.rule[i]
        t.data.as_doubles[i] = o.t[i]
        s.data.as_longlongs[i] = o.state[i]
        v.data.as_doubles[i] = o.value[i]
    return r, t, s, v


cdef void _index_free(Index* x) noexcept:
    free(x.off)
    free(x.items)
    x.off = NULL
    x.items = NULL
    x.n_off = 0


cdef int _index_build(Index* x, const int64_t* keys, const int64_t* vals, Py_ssize_t n) except -1:
    """Compressed rows of (key -> vals) in the order given (a stable counting sort)."""
    cdef Py_ssize_t i, top = -1
    cdef int64_t* fill
    _index_free(x)
    for i in range(n):
        if keys[i] > top:
            top = keys[i]
    x.n_off = top + 2
    x.off = <int64_t*>malloc(x.n_off * sizeof(int64_t))
    x.items = <int64_t*>malloc((n if n else 1) * sizeof(int64_t))
    fill = <int64_t*>malloc(x.n_off * sizeof(int64_t))
    if x.off == NULL or x.items == NULL or fill == NULL:
        free(fill)
        raise MemoryError()
    memset(x.off, 0, x.n_off * sizeof(int64_t))
    for i in range(n):
        x.off[keys[i] + 1] += 1
    for i in range(1, x.n_off):
        x.off[i] += x.off[i - 1]
    for i in range(x.n_off):
        fill[i] = x.off[i]
    for i in range(n):
        x.items[fill[keys[i]]] = vals[i]
        fill[keys[i]] += 1
    free(fill)
    return 0


cdef class RuleTable:
    cdef Rule* _rules
    cdef Py_ssize_t _nr, _rcap
    cdef Cond* _conds
    cdef Py_ssize_t _nc, _ccap
    cdef int64_t* _wrule   # watches (rule, sid), in the order added
    cdef int64_t* _wsid
    cdef Py_ssize_t _nw, _wcap
    cdef set _watched
    cdef Index _vidx       # sid -> value/rate conditions
    cdef Index _widx       # sid -> window conditions
    cdef Index _ridx       # sid -> stale/mirror rules
    cdef bint _dirty
    cdef readonly long long invalid

    def __cinit__(self):
        self._rules = NULL
        self._conds = NULL
        self._wrule = NULL
        self._wsid = NULL
        memset(&self._vidx, 0, sizeof(Index))
        memset(&self._widx, 0, sizeof(Index))
        memset(&self._ridx, 0, sizeof(Index))

    def __init__(self):
        self._nr = self._rcap = self._nc = self._ccap = self._nw = self._wcap = 0
        self._watched = set()
        self._dirty = True
        self.invalid = 0

    def __dealloc__(self):
        free(self._rules)
        free(self._conds)
        free(self._wrule)
        free(self._wsid)
        _index_free(&self._vidx)
        _index_free(&self._widx)
        _index_free(&self._ridx)

    @property
    def n_rules(self):
        return self._nr

    @property
    def n_conditions(self):
        return self._nc

    def add_rule(self, mode, duration=0.0, after=0.0):
        """A new rule; returns its index (see the reference)."""
        cdef int m = int(mode)
        cdef double d = float(duration), a = float(after)
        cdef Rule* r
        if m not in (_ALL, _ANY, _STALE, _MIRROR):
            raise ValueError(f"mode must be MODE_ALL, MODE_ANY, MODE_STALE or MODE_MIRROR, got {mode!r}")
        if not (d >= 0 and isfinite(d)):
            raise ValueError(f"duration must be zero or a positive number of seconds, got {d!r}")
        if m == _STALE and not (a > 0 and isfinite(a)):
            raise ValueError(f"a stale rule needs after > 0 seconds, got {a!r}")
        if self._nr >= self._rcap:
            self._rcap = self._rcap * 2 if self._rcap else 64
            r = <Rule*>realloc(self._rules, self._rcap * sizeof(Rule))
            if r == NULL:
                raise MemoryError()
            self._rules = r
        r = &self._rules[self._nr]
        r.mode = m
        r.active = 0
        r.n_cond = 0
        r.n_on = 0
        r.duration = d
        r.after = a
        r.pending = NAN
        r.last_seen = NAN
        self._nr += 1
        return self._nr - 1

    def add_condition(self, rule, sid, signal, above, level, clear, width=0.0, stat=0):
        """A condition of an all/any rule on series `sid`; returns its index (see the reference)."""
        cdef int64_t ri = int(rule), s = int(sid)
        cdef int sig = int(signal), st = int(stat)
        cdef double lv = float(level), cl = float(clear), w = float(width)
        cdef bint ab = bool(above)
        cdef Cond* c
        if not 0 <= ri < self._nr or self._rules[ri].mode not in (_ALL, _ANY):
            raise ValueError(f"rule {ri} is not an all/any rule of this table")
        if not 0 <= s <= MAX_SID:
            raise ValueError(f"series id must be from 0 to {MAX_SID}, got {s}")
        if sig not in (_VALUE, _RATE, _WINDOW):
            raise ValueError(f"signal must be SIGNAL_VALUE, SIGNAL_RATE or SIGNAL_WINDOW, got {sig}")
        if not (isfinite(lv) and isfinite(cl)):
            raise ValueError(f"level and clear must be finite, got {lv!r}, {cl!r}")
        if (ab and cl > lv) or (not ab and cl < lv):
            raise ValueError(f"clear {cl} is on the wrong side of level {lv} (hysteresis must be >= 0)")
        if sig == _WINDOW:
            if not (w > 0 and isfinite(w)):
                raise ValueError(f"a window condition needs width > 0 seconds, got {w!r}")
            if not 0 <= st < len(STATS):
                raise ValueError(f"stat must be an index into STATS (0 to {len(STATS) - 1}), got {st}")
        if self._nc >= self._ccap:
            self._ccap = self._ccap * 2 if self._ccap else 64
            c = <Cond*>realloc(self._conds, self._ccap * sizeof(Cond))
            if c == NULL:
                raise MemoryError()
            self._conds = c
        c = &self._conds[self._nc]
        c.sid = s
        c.rule = ri
        c.signal = sig
        c.above = ab
        c.stat = st
        c.on = 0
        c.has_prev = 0
        c.level = lv
        c.clear = cl
        c.width = w
        c.prev_t = 0.0
        c.prev_v = 0.0
        self._rules[ri].n_cond += 1
        self._nc += 1
        self._dirty = True
        return self._nc - 1

    def watch(self, rule, sid):
        """Add series `sid` to a stale or mirror rule. False if it was watched already."""
        cdef int64_t ri = int(rule), s = int(sid)
        cdef int64_t* p
        if not 0 <= ri < self._nr or self._rules[ri].mode not in (_STALE, _MIRROR):
            raise ValueError(f"rule {ri} is not a stale or mirror rule of this table")
        if not 0 <= s <= MAX_SID:
            raise ValueError(f"series id must be from 0 to {MAX_SID}, got {s}")
        if (ri, s) in self._watched:
            return False
        if self._nw >= self._wcap:
            self._wcap = self._wcap * 2 if self._wcap else 64
            p = <int64_t*>realloc(self._wrule, self._wcap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self._wrule = p
            p = <int64_t*>realloc(self._wsid, self._wcap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self._wsid = p
        self._watched.add((ri, s))
        self._wrule[self._nw] = ri
        self._wsid[self._nw] = s
        self._nw += 1
        self._dirty = True
        return True

    def active(self, rule):
        """True while the rule is raised."""
        cdef int64_t ri = int(rule)
        if not 0 <= ri < self._nr:
            raise IndexError(f"no rule {ri}")
        return bool(self._rules[ri].active)

    cdef int _build(self) except -1:
        cdef Py_ssize_t i, nv = 0, nw = 0
        cdef int64_t* ks = <int64_t*>malloc((self._nc if self._nc else 1) * sizeof(int64_t))
        cdef int64_t* vs = <int64_t*>malloc((self._nc if self._nc else 1) * sizeof(int64_t))
        cdef int64_t* wk = <int64_t*>malloc((self._nc if self._nc else 1) * sizeof(int64_t))
        cdef int64_t* wv = <int64_t*>malloc((self._nc if self._nc else 1) * sizeof(int64_t))
        try:
            if ks == NULL or vs == NULL or wk == NULL or wv == NULL:
                raise MemoryError()
            for i in range(self._nc):
                if self._conds[i].signal == _WINDOW:
                    wk[nw] = self._conds[i].sid
                    wv[nw] = i
                    nw += 1
                else:
                    ks[nv] = self._conds[i].sid
                    vs[nv] = i
                    nv += 1
            _index_build(&self._vidx, ks, vs, nv)
            _index_build(&self._widx, wk, wv, nw)
            _index_build(&self._ridx, self._wsid, self._wrule, self._nw)
        finally:
            free(ks)
            free(vs)
            free(wk)
            free(wv)
        self._dirty = False
        return 0

    # -- evaluation -----------------------------------------------------------------------

    def eval(self, sids, ts, vs, now):
        """Evaluate readings that arrived at `now`; return the transitions (see the reference)."""
        cdef const int64_t[::1] s = as_q(sids)
        cdef const double[::1] t = as_d(ts)
        cdef const double[::1] v = as_d(vs)
        cdef double nw = float(now)
        cdef Py_ssize_t n = s.shape[0]
        cdef Out out
        if t.shape[0] != n or v.shape[0] != n:
            raise ValueError(f"columns differ in length: {n} ids, {t.shape[0]} times, {v.shape[0]} values")
        if not isfinite(nw):
            raise ValueError(f"now must be finite, got {nw!r}")
        if self._dirty:
            self._build()
        memset(&out, 0, sizeof(Out))
        try:
            if n:
                self._eval(&s[0], &t[0], &v[0], n, nw, &out)
            return _out_columns(&out)
        finally:
            _out_free(&out)

    cdef int _eval(self, const int64_t* s, const double* t, const double* v, Py_ssize_t n, double now,
                   Out* out) except -1:
        # the hot loop: per reading, only the index rows of its own series id
        cdef Py_ssize_t i, k
        cdef int64_t sid
        cdef double ti, vi, sig, last
        cdef Cond* c
        cdef Rule* r
        cdef Index* vx = &self._vidx
        cdef Index* rx = &self._ridx
        for i in range(n):
            sid = s[i]
            ti = t[i]
            vi = v[i]
            if isnan(vi) or not isfinite(ti):
                self.invalid += 1
                continue
            if sid < 0:
                continue
            if sid + 1 < vx.n_off:
                for k in range(vx.off[sid], vx.off[sid + 1]):
                    c = &self._conds[vx.items[k]]
                    if c.signal == _RATE:
                        if not c.has_prev:
                            c.has_prev = 1
                            c.prev_t = ti
                            c.prev_v = vi
                            continue
                        if not ti > c.prev_t:
                            continue
                        sig = (vi - c.prev_v) / (ti - c.prev_t)
                        c.prev_t = ti
                        c.prev_v = vi
                    else:
                        sig = vi
                    self._update(c, sig, ti, out)
            if sid + 1 < rx.n_off:
                for k in range(rx.off[sid], rx.off[sid + 1]):
                    r = &self._rules[rx.items[k]]
                    if r.mode == _MIRROR:
                        _out_push(out, rx.items[k], ti, _READING, vi)
                        continue
                    last = r.last_seen
                    if isnan(last) or now > last:
                        r.last_seen = now
                    if r.active:
                        r.active = 0
                        _out_push(out, rx.items[k], now, _CLEARED, now - last)
        return 0

    cdef inline int _update(self, Cond* c, double s, double t, Out* out) except -1:
        cdef Rule* r
        cdef bint holds
        if isnan(s):
            return 0
        r = &self._rules[c.rule]
        if c.above:
            if not c.on and s > c.level:
                c.on = 1
                r.n_on += 1
            elif c.on and s <= c.clear:
                c.on = 0
                r.n_on -= 1
        else:
            if not c.on and s < c.level:
                c.on = 1
                r.n_on += 1
            elif c.on and s >= c.clear:
                c.on = 0
                r.n_on -= 1
        if r.mode == _ALL:
            holds = r.n_on == r.n_cond
        else:
            holds = r.n_on > 0
        if holds:
            if isnan(r.pending):
                r.pending = t
            if not r.active and t - r.pending >= r.duration:
                r.active = 1
                _out_push(out, c.rule, t, _RAISED, s)
        else:
            r.pending = NAN
            if r.active:
                r.active = 0
                _out_push(out, c.rule, t, _CLEARED, s)
        return 0

    def eval_windows(self, width, cols):
        """Evaluate closed windows of `width` seconds, as the aggregator's columns."""
        cdef double w = float(width)
        cdef const int64_t[::1] sid = as_q(cols["sid"])
        cdef const double[::1] start = as_d(cols["start"])
        cdef const int64_t[::1] count = as_q(cols["count"])
        cdef const double[::1] vmin = as_d(cols["min"])
        cdef const double[::1] vmax = as_d(cols["max"])
        cdef const double[::1] vsum = as_d(cols["sum"])
        cdef const double[::1] sumsq = as_d(cols["sumsq"])
        cdef const double[::1] first = as_d(cols["first"])
        cdef const double[::1] last = as_d(cols["last"])
        cdef const double[::1] twa = as_d(cols["twa"])
        cdef const int64_t[::1] corr = as_q(cols["correction"])
        cdef Py_ssize_t n = sid.shape[0], i, k
        cdef int64_t s
        cdef double t, x
        cdef Cond* c
        cdef Index* wx
        cdef Out out
        if self._dirty:
            self._build()
        wx = &self._widx
        memset(&out, 0, sizeof(Out))
        try:
            for i in range(n):
                if corr[i]:
                    continue
                s = sid[i]
                if s < 0 or s + 1 >= wx.n_off:
                    continue
                t = start[i] + w
                for k in range(wx.off[s], wx.off[s + 1]):
                    c = &self._conds[wx.items[k]]
                    if c.width != w:
                        continue
                    if c.stat == _S_MEAN:
                        x = vsum[i] / <double>count[i]
                    elif c.stat == _S_RMS:
                        x = sqrt(sumsq[i] / <double>count[i])
                    elif c.stat == _S_MIN:
                        x = vmin[i]
                    elif c.stat == _S_MAX:
                        x = vmax[i]
                    elif c.stat == _S_TWA:
                        x = twa[i]
                    elif c.stat == _S_FIRST:
                        x = first[i]
                    elif c.stat == _S_LAST:
                        x = last[i]
                    elif c.stat == _S_COUNT:
                        x = <double>count[i]
                    else:
                        x = vsum[i]
                    self._update(c, x, t, &out)
            return _out_columns(&out)
        finally:
            _out_free(&out)

    def check_stale(self, now):
        """Raise the stale rules silent for their `after` seconds at `now` (the gateway's clock)."""
        cdef double nw = float(now)
        cdef Py_ssize_t i
        cdef Rule* r
        cdef Out out
        if not isfinite(nw):
            raise ValueError(f"now must be finite, got {nw!r}")
        memset(&out, 0, sizeof(Out))
        try:
            for i in range(self._nr):
                r = &self._rules[i]
                if r.mode != _STALE:
                    continue
                if isnan(r.last_seen):
                    r.last_seen = nw
                elif not r.active and nw - r.last_seen >= r.after:
                    r.active = 1
                    _out_push(&out, i, nw, _RAISED, nw - r.last_seen)
            return _out_columns(&out)
        finally:
            _out_free(&out)
