# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Optimal assignment, compiled. Same API and results as `_match_py` (the specification:
read its docstring). Costs go into one C array; the shortest-augmenting-path loop runs
over C doubles and ints only."""
from libc.math cimport INFINITY, isnan
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from core_ext._match_py import _matrix, big_m


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
    for i in range(nr):
        for j in range(nc):
            if isnan(mv[i, j]) or mv[i, j] == -INFINITY:
                raise ValueError("cost holds NaN or -inf: only finite costs and +inf (forbidden) are allowed")
    return _solve_view(mv, nr, nc)


cdef object _solve_lists(list rows, Py_ssize_t nr, Py_ssize_t nc):
    import array
    flat = array.array("d", [x for r in rows for x in r])
    cdef const double[:] f = flat
    return _solve_view(<const double[:nr, :nc]>&f[0], nr, nc)


cdef object _solve_view(const double[:, :] mv, Py_ssize_t nr, Py_ssize_t nc):
    cdef double lo = INFINITY, hi_row, total = 0.0, m, x
    cdef Py_ssize_t i, j, n, k, rr, cc
    cdef bint transpose = nr > nc, any_finite = False
    # shift and M as the reference: M exceeds any sum of shifted allowed costs
    for i in range(nr):
        for j in range(nc):
            x = mv[i, j]
            if x != INFINITY:
                any_finite = True
                if x < lo:
                    lo = x
    if not any_finite:
        lo = 0.0
        m = 1.0
    else:
        for i in range(nr):
            hi_row = 0.0
            for j in range(nc):
                x = mv[i, j]
                if x != INFINITY and x - lo > hi_row:
                    hi_row = x - lo
            total += hi_row
        m = total + 1.0
    rr = nc if transpose else nr
    cc = nr if transpose else nc
    cdef double* c = <double*>malloc(rr * cc * sizeof(double))
    cdef Py_ssize_t* col4row = <Py_ssize_t*>malloc(rr * sizeof(Py_ssize_t))
    if c == NULL or col4row == NULL:
        free(c)
        free(col4row)
        raise MemoryError()
    try:
        for i in range(nr):
            for j in range(nc):
                x = mv[i, j]
                x = (x - lo) if x != INFINITY else m
                if transpose:
                    c[j * cc + i] = x
                else:
                    c[i * cc + j] = x
        with nogil:
            k = _lsap(c, rr, cc, col4row)
        if k < 0:
            raise MemoryError()
        pairs = [(i, col4row[i]) for i in range(rr) if c[i * cc + col4row[i]] != m]
    finally:
        free(c)
        free(col4row)
    if transpose:
        pairs = sorted((j, i) for i, j in pairs)
    return [p[0] for p in pairs], [p[1] for p in pairs]


cdef Py_ssize_t _lsap(double* c, Py_ssize_t nr, Py_ssize_t nc, Py_ssize_t* col4row) noexcept nogil:
    """Shortest augmenting paths (Crouse 2016) on an all-finite nr x nc matrix, nr <= nc."""
    cdef double* u = <double*>malloc(nr * sizeof(double))
    cdef double* v = <double*>malloc(nc * sizeof(double))
    cdef double* spc = <double*>malloc(nc * sizeof(double))
    cdef Py_ssize_t* row4col = <Py_ssize_t*>malloc(nc * sizeof(Py_ssize_t))
    cdef Py_ssize_t* path = <Py_ssize_t*>malloc(nc * sizeof(Py_ssize_t))
    cdef Py_ssize_t* remaining = <Py_ssize_t*>malloc(nc * sizeof(Py_ssize_t))
    cdef char* sr = <char*>malloc(nr)
    cdef char* sc = <char*>malloc(nc)
    cdef Py_ssize_t cur, i, j, it, index, nrem, sink, tmp
    cdef double min_val, lowest, r, ui
    cdef double* ci
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
        # column reduction, as the reference (square only)
        for j in range(nc):
            index = 0
            for i in range(1, nr):
                if c[i * nc + j] < c[index * nc + j]:
                    index = i
            v[j] = c[index * nc + j]
            if col4row[index] == -1:
                col4row[index] = j
                row4col[j] = index
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
            ci = c + i * nc
            ui = u[i]
            for it in range(nrem):
                j = remaining[it]
                r = min_val + ci[j] - ui - v[j]
                if r < spc[j]:
                    path[j] = i
                    spc[j] = r
                if spc[j] < lowest or (spc[j] == lowest and row4col[j] == -1):
                    lowest = spc[j]
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
