"""Optimal assignment (the linear sum assignment problem): the pure-Python reference.

`assign(cost)` takes a 2-D cost matrix (rows: demands, columns: resources, any
shape), where `inf` marks a forbidden pair, and returns `(rows, cols)`: an
assignment of maximum cardinality over the allowed pairs and, among those, of
minimum total cost. Rows come out in increasing order, like
`scipy.optimize.linear_sum_assignment`, whose total cost it matches.

Method: shortest augmenting paths with dual potentials (Jonker-Volgenant, as
described by Crouse, IEEE TAES 2016), one augmentation per row of the smaller
side not already matched by the initial reduction: when square, a column
reduction and then Jonker-Volgenant's augmenting row reduction; with more
columns than rows, a row reduction. Forbidden pairs get a cost `M` larger than any sum of allowed costs, so a
solution never trades an assignment for a cheaper total; pairs at `M` are
dropped from the result. NaN or -inf in the matrix is a ValueError.
"""
from __future__ import annotations

import math


def _matrix(cost) -> tuple[list[list[float]], int, int]:
    rows = [[float(x) for x in row] for row in cost]
    nr = len(rows)
    nc = len(rows[0]) if nr else 0
    if any(len(r) != nc for r in rows):
        raise ValueError("cost must be a 2-D matrix (rows of equal length)")
    for r in rows:
        for x in r:
            if x != x or x == -math.inf:
                raise ValueError("cost holds NaN or -inf: only finite costs and +inf (forbidden) are allowed")
    return rows, nr, nc


def big_m(rows: list[list[float]]) -> tuple[float, float]:
    """(shift, M): costs are shifted to start at 0; M exceeds any sum of shifted allowed costs."""
    finite = [x for r in rows for x in r if x != math.inf]
    if not finite:
        return 0.0, 1.0
    lo = min(finite)
    total = sum(max((x - lo for x in r if x != math.inf), default=0.0) for r in rows)
    return lo, total + 1.0


def solve(c: list[list[float]], nr: int, nc: int) -> list[int]:
    """col4row for an nr x nc matrix with nr <= nc and every entry finite."""
    u = [0.0] * nr
    v = [0.0] * nc
    col4row = [-1] * nr
    row4col = [-1] * nc
    path = [-1] * nc
    if nr == nc:
        # column reduction (Jonker-Volgenant): v[j] = the column's minimum keeps every reduced
        # cost >= 0; a column's first minimal row takes it if still free. Square only: a
        # rectangular problem needs v <= 0 for the columns left over.
        for j in range(nc):
            best_i = 0
            for i in range(1, nr):
                if c[i][j] < c[best_i][j]:
                    best_i = i
            v[j] = c[best_i][j]
            if col4row[best_i] == -1:
                col4row[best_i] = j
                row4col[j] = best_i
    else:
        # row reduction: u[i] = the row's minimum, with v = 0, keeps every reduced cost >= 0 and
        # the columns left over at v = 0 as a rectangular problem needs; a row's first minimal
        # column is taken if still free. With many more columns than rows most rows are
        # matched here, and each other row's search is short (a free column is near).
        for i in range(nr):
            ci = c[i]
            best_j = 0
            for j in range(1, nc):
                if ci[j] < ci[best_j]:
                    best_j = j
            u[i] = ci[best_j]
            if row4col[best_j] == -1:
                row4col[best_j] = i
                col4row[i] = best_j
    if nr == nc > 1:  # square: on the fleet's wide matrices it costs more scans than it saves
        _augmenting_row_reduction(c, nr, nc, u, v, col4row, row4col)
    for cur in range(nr):
        if col4row[cur] != -1:
            continue
        spc = [math.inf] * nc
        sr = [False] * nr
        sc = [False] * nc
        remaining = list(range(nc - 1, -1, -1))
        nrem = nc
        min_val = 0.0
        i = cur
        sink = -1
        while sink == -1:
            index = -1
            lowest = math.inf
            sr[i] = True
            ci, ui = c[i], u[i]
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
            sc[j] = True
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
            col4row[i], j = j, col4row[i]
            if i == cur:
                break
    return col4row


ARR_PASSES = 2     # passes of the augmenting row reduction over the rows left free
ARR_STEPS = 8      # at most this many steps a pass per row, then the rest is left to the augmentation


def _augmenting_row_reduction(c, nr, nc, u, v, col4row, row4col) -> None:
    """Jonker-Volgenant's augmenting row reduction: each free row takes the column of its least
    reduced cost c - v, lowering that column's v by the gap to its second least so that it is
    the row's least by as much as the second one; the row it took the column from is free
    again and goes next (at once when v was lowered, else in the next pass). v only falls and a
    column once taken stays taken, so a column left over keeps v = 0 (rectangular). Each
    matched row's u is its least reduced cost, the others' stay at or below theirs: every
    reduced cost c - u - v stays >= 0 for the augmentation that follows."""
    free = [i for i in range(nr) if col4row[i] == -1]
    for _ in range(ARR_PASSES):
        k, end, nfree, steps = 0, len(free), 0, 0
        while k < end:
            i = free[k]
            k += 1
            steps += 1
            ci = c[i]
            umin, j1, usub, j2 = ci[0] - v[0], 0, math.inf, -1
            for j in range(1, nc):
                h = ci[j] - v[j]
                if h < usub:
                    if h >= umin:
                        usub, j2 = h, j
                    else:
                        usub, umin, j2, j1 = umin, h, j1, j
            i0 = row4col[j1]
            lowered = v[j1] - (usub - umin)
            lowers = lowered < v[j1]
            if steps < ARR_STEPS * nr:
                if lowers:
                    v[j1] = lowered
                elif i0 != -1:  # a tie: the other least column, free or not
                    j1, i0 = j2, row4col[j2]
                if i0 != -1:
                    if lowers:
                        k -= 1
                        free[k] = i0
                    else:
                        free[nfree] = i0
                        nfree += 1
            elif i0 != -1:
                free[nfree] = i0
                nfree += 1
            if i0 != -1:
                col4row[i0] = -1
            col4row[i], row4col[j1] = j1, i
            u[i] = ci[j1] - v[j1]
        free = free[:nfree]
        if not free:
            return


def assign(cost) -> tuple[list[int], list[int]]:
    """(rows, cols) of an optimal maximum-cardinality assignment; see the module docstring."""
    rows, nr, nc = _matrix(cost)
    if nr == 0 or nc == 0:
        return [], []
    shift, m = big_m(rows)
    transpose = nr > nc
    if transpose:
        rows = [list(col) for col in zip(*rows)]
        nr, nc = nc, nr
    c = [[(x - shift) if x != math.inf else m for x in r] for r in rows]
    col4row = solve(c, nr, nc)
    pairs = [(i, col4row[i]) for i in range(nr) if c[i][col4row[i]] != m]
    if transpose:
        pairs = sorted((j, i) for i, j in pairs)
    return [p[0] for p in pairs], [p[1] for p in pairs]
