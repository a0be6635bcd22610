# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Optimal assignment, compiled. Same API and results as `_match_py` (the specification:
read its docstring). A C-ordered float64 matrix with no more rows than columns is solved
where it lies, each cost shifted (or made M) as it is read; anything else goes into one
C array first. The shortest-augmenting-path loop runs over C doubles and ints only."""
from libc.math cimport INFINITY, isnan
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from core_ext._match_py import _matrix


def assign(cost):
    """(rows, cols) of an optimal maximum-cardinality assignment; inf marks a forbidden pair."""
    cdef const double[:, :] mv
    cdef Py_ssize_t nr, nc, i, j
    try:
        mv = cost  # any 2-D float64 buffer (numpy); nested lists take the path below
    except (TypeError, ValueError):
        mv = None
    if mv is None or mv.ndim != 2:
        rows, nr, nc = _matrix(cost)
        if nr == 0 or nc == 0:
            return [], []
        return _solve_lists(rows, nr, nc)
    nr, nc = mv.shape[0], mv.shape[1]
    if nr == 0 or nc == 0:
        return [], []
    return _solve_view(mv, nr, nc)  # checks for NaN and -inf on its first pass


cdef object _solve_lists(list rows, Py_ssize_t nr, Py_ssize_t nc):
    import array
    flat = array.array("d", [x for r in rows for x in r])
    cdef const double[:] f = flat
    return _solve_view(<const double[:nr, :nc]>&f[0], nr, nc)


cdef object _solve_view(const double[:, :] mv, Py_ssize_t nr, Py_ssize_t nc):
    cdef double lo = INFINITY, total = 0.0, m, x, rmax
    cdef Py_ssize_t i, j, k, rr, cc, stride
    cdef bint transpose = nr > nc
    cdef double* rowmax = <double*>malloc(nr * sizeof(double))
    if rowmax == NULL:
        raise MemoryError()
    # one pass for the checks, the shift and M (as the reference: M exceeds any sum of shifted
    # allowed costs). max(x - lo) over a row is max(x) - lo: subtracting rounds monotonically
    try:
        for i in range(nr):
            rmax = -INFINITY
            for j in range(nc):
                x = mv[i, j]
                if x != INFINITY:
                    if isnan(x) or x == -INFINITY:
                        raise ValueError("cost holds NaN or -inf: only finite costs and +inf (forbidden) are allowed")
                    if x < lo:
                        lo = x
                    if x > rmax:
                        rmax = x
            rowmax[i] = rmax
        if lo == INFINITY:  # nothing allowed
            lo = 0.0
            m = 1.0
        else:
            for i in range(nr):
                total += (rowmax[i] - lo) if rowmax[i] != -INFINITY else 0.0
            m = total + 1.0
    finally:
        free(rowmax)
    rr = nc if transpose else nr
    cc = nr if transpose else nc
    cdef Py_ssize_t* col4row = <Py_ssize_t*>malloc(rr * sizeof(Py_ssize_t))
    cdef double* c = NULL
    cdef const double* base
    if col4row == NULL:
        raise MemoryError()
    try:
        if not transpose and mv.strides[1] == sizeof(double) and mv.strides[0] % sizeof(double) == 0:
            # rows of doubles in memory (a numpy array, C order): solved where they are, each
            # cost shifted (or made M) as it is read; no copy of a large matrix to write and read
            base = &mv[0, 0]
            stride = mv.strides[0] // sizeof(double)
            with nogil:
                k = _lsap(base, stride, rr, cc, lo, m, col4row)
            if k < 0:
                raise MemoryError()
            pairs = [(i, col4row[i]) for i in range(rr) if base[i * stride + col4row[i]] != INFINITY]
        else:  # the smaller side as rows (or a strided view): a shifted copy, M in place of inf
            c = <double*>malloc(rr * cc * sizeof(double))
            if c == NULL:
                raise MemoryError()
            for i in range(nr):
                for j in range(nc):
                    x = mv[i, j]
                    x = (x - lo) if x != INFINITY else m
                    if transpose:
                        c[j * cc + i] = x
                    else:
                        c[i * cc + j] = x
            with nogil:  # x - 0.0 is x: the copy is read as it is
                k = _lsap(c, cc, rr, cc, 0.0, m, col4row)
            if k < 0:
                raise MemoryError()
            pairs = [(i, col4row[i]) for i in range(rr) if c[i * cc + col4row[i]] != m]
    finally:
        free(c)
        free(col4row)
    if transpose:
        pairs = sorted((j, i) for i, j in pairs)
    return [p[0] for p in pairs], [p[1] for p in pairs]


cdef inline double _at(const double* row, Py_ssize_t j, double lo, double m) noexcept nogil:
    """A shifted cost: M for a forbidden pair (inf), else the cost less `lo`."""
    cdef double x = row[j]
    return m if x == INFINITY else x - lo


cdef Py_ssize_t _lsap(const double* c, Py_ssize_t stride, Py_ssize_t nr, Py_ssize_t nc, double lo, double m,
                      Py_ssize_t* col4row) noexcept nogil:
    """Shortest augmenting paths (Crouse 2016) on an nr x nc matrix, nr <= nc, row i at
    c + i * stride, each entry read through _at (shifted by lo, inf as m)."""
    cdef double* u = <double*>malloc(nr * sizeof(double))
    cdef double* v = <double*>malloc(nc * sizeof(double))
    cdef double* spc = <double*>malloc(nc * sizeof(double))
    cdef Py_ssize_t* row4col = <Py_ssize_t*>malloc(nc * sizeof(Py_ssize_t))
    cdef Py_ssize_t* path = <Py_ssize_t*>malloc(nc * sizeof(Py_ssize_t))
    cdef Py_ssize_t* remaining = <Py_ssize_t*>malloc(nc * sizeof(Py_ssize_t))
    cdef char* sr = <char*>malloc(nr)
    cdef char* sc = <char*>malloc(nc)
    cdef Py_ssize_t cur, i, j, it, index, nrem, sink, tmp
    cdef double min_val, lowest, r, ui, x, best
    cdef const double* ci
    if not (u and v and spc and row4col and path and remaining and sr and sc):
        free(u); free(v); free(spc); free(row4col); free(path); free(remaining); free(sr); free(sc)
        return -1
    for i in range(nr):
        u[i] = 0.0
        col4row[i] = -1
    for j in range(nc):
        v[j] = 0.0
        row4col[j] = -1
        path[j] = -1
    if nr == nc:
        # column reduction, as the reference (square only): each column's first minimal row,
        # found row by row (memory order; path[] holds the row meanwhile), then taken in
        # column order
        for j in range(nc):
            v[j] = _at(c, j, lo, m)
            path[j] = 0
        for i in range(1, nr):
            ci = c + i * stride
            for j in range(nc):
                x = _at(ci, j, lo, m)
                if x < v[j]:
                    v[j] = x
                    path[j] = i
        for j in range(nc):
            index = path[j]
            path[j] = -1
            if col4row[index] == -1:
                col4row[index] = j
                row4col[j] = index
    else:
        # row reduction, as the reference (more columns than rows)
        for i in range(nr):
            ci = c + i * stride
            index = 0
            best = _at(ci, 0, lo, m)
            for j in range(1, nc):
                x = _at(ci, j, lo, m)
                if x < best:
                    best = x
                    index = j
            u[i] = best
            if row4col[index] == -1:
                row4col[index] = i
                col4row[i] = index
    if nr == nc and nc > 1:  # square only, as the reference
        _arr(c, stride, nr, nc, lo, m, u, v, col4row, row4col, remaining)
    for cur in range(nr):
        if col4row[cur] != -1:
            continue
        for j in range(nc):
            spc[j] = INFINITY
            remaining[j] = nc - 1 - j
        memset(sr, 0, nr)
        memset(sc, 0, nc)
        nrem = nc
        min_val = 0.0
        i = cur
        sink = -1
        while sink == -1:
            index = -1
            lowest = INFINITY
            sr[i] = 1
            ci = c + i * stride
            ui = u[i]
            for it in range(nrem):  # the hot loop: a local for spc[j] (the compiler cannot know
                j = remaining[it]         # the stores through path[] leave it alone)
                r = min_val + _at(ci, j, lo, m) - ui - v[j]
                x = spc[j]
                if r < x:
                    path[j] = i
                    spc[j] = r
                    x = r
                if x < lowest or (x == lowest and row4col[j] == -1):
                    lowest = x
                    index = it
            min_val = lowest
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            sc[j] = 1
            nrem -= 1
            remaining[index] = remaining[nrem]
        u[cur] += min_val
        for i in range(nr):
            if sr[i] and i != cur:
                u[i] += min_val - spc[col4row[i]]
        for j in range(nc):
            if sc[j]:
                v[j] -= min_val - spc[j]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            tmp = col4row[i]
            col4row[i] = j
            j = tmp
            if i == cur:
                break
    free(u); free(v); free(spc); free(row4col); free(path); free(remaining); free(sr); free(sc)
    return 0


cdef enum:
    ARR_PASSES = 2  # as the reference's
    ARR_STEPS = 8


cdef void _arr(const double* c, Py_ssize_t stride, Py_ssize_t nr, Py_ssize_t nc, double lo, double m, double* u,
               double* v, Py_ssize_t* col4row, Py_ssize_t* row4col, Py_ssize_t* free_) noexcept nogil:
    """The augmenting row reduction, as the reference's (read its docstring); free_ holds nc
    entries (nr <= nc)."""
    cdef Py_ssize_t i, j, j1, j2, i0, k, end, nfree = 0, steps, npass
    cdef double umin, usub, h, lowered
    cdef const double* ci
    cdef bint lowers
    for i in range(nr):
        if col4row[i] == -1:
            free_[nfree] = i
            nfree += 1
    for npass in range(ARR_PASSES):
        k = 0
        end = nfree
        nfree = 0
        steps = 0
        while k < end:
            i = free_[k]
            k += 1
            steps += 1
            ci = c + i * stride
            umin = _at(ci, 0, lo, m) - v[0]
            j1 = 0
            usub = INFINITY
            j2 = -1
            for j in range(1, nc):
                h = _at(ci, j, lo, m) - v[j]
                if h < usub:
                    if h >= umin:
                        usub = h
                        j2 = j
                    else:
                        usub = umin
                        umin = h
                        j2 = j1
                        j1 = j
            i0 = row4col[j1]
            lowered = v[j1] - (usub - umin)
            lowers = lowered < v[j1]
            if steps < ARR_STEPS * nr:
                if lowers:
                    v[j1] = lowered
                elif i0 != -1:
                    j1 = j2
                    i0 = row4col[j2]
                if i0 != -1:
                    if lowers:
                        k -= 1
                        free_[k] = i0
                    else:
                        free_[nfree] = i0
                        nfree += 1
            elif i0 != -1:
                free_[nfree] = i0
                nfree += 1
            if i0 != -1:
                col4row[i0] = -1
            col4row[i] = j1
            row4col[j1] = i
            u[i] = _at(ci, j1, lo, m) - v[j1]
        if nfree == 0:
            return
