import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

pytestmark = pytest.mark.core("match")


def brute(cost):
    """Max cardinality over allowed pairs, then min cost: by enumeration (small matrices only)."""
    nr, nc = len(cost), len(cost[0]) if cost else 0
    best = (-1, math.inf)
    for k in range(min(nr, nc), -1, -1):
        for rows in itertools.combinations(range(nr), k):
            for cols in itertools.permutations(range(nc), k):
                total = sum(cost[r][c] for r, c in zip(rows, cols))
                if total < math.inf and (k, -total) > (best[0], -best[1]):
                    best = (k, total)
        if best[0] == k:
            return best
    return best


def total(cost, rows, cols):
    return sum(cost[r][c] for r, c in zip(rows, cols))


def test_small_examples(impl):
    assert impl.assign([[4, 1, 3], [2, 0, 5], [3, 2, 2]]) == ([0, 1, 2], [1, 0, 2])
    assert impl.assign([]) == ([], [])
    assert impl.assign([[math.inf, 1], [math.inf, 2]]) == ([0], [1])  # one column is forbidden to all
    rows, cols = impl.assign([[1, 2, 3]])
    assert (rows, cols) == ([0], [0])
    with pytest.raises(ValueError, match="NaN"):
        impl.assign([[1, math.nan]])
    with pytest.raises(ValueError):
        impl.assign([[1, 2], [3]])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.sampled_from(["float", "int"]))
def test_dense_same_total_as_scipy(impls, nr, nc, seed, kind):
    rng = np.random.default_rng(seed)
    cost = rng.random((nr, nc)) * 100 if kind == "float" else rng.integers(0, 5, (nr, nc)).astype(float)
    r0, c0 = linear_sum_assignment(cost)
    for impl in impls.values():
        rows, cols = impl.assign(cost)
        assert list(rows) == sorted(rows) and len(rows) == min(nr, nc)
        assert abs(cost[rows, cols].sum() - cost[r0, c0].sum()) < 1e-9


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1), st.floats(0.0, 0.9))
def test_sparse_max_cardinality_then_min_cost(impls, nr, nc, seed, p_forbidden):
    rng = np.random.default_rng(seed)
    cost = [[math.inf if rng.random() < p_forbidden else float(rng.integers(0, 20)) for _ in range(nc)]
            for _ in range(nr)]
    k, best = brute(cost)
    results = []
    for impl in impls.values():
        rows, cols = impl.assign(cost)
        assert all(cost[r][c] != math.inf for r, c in zip(rows, cols)), "a forbidden pair was chosen"
        assert len(rows) == k and total(cost, rows, cols) == pytest.approx(best if k else 0)
        results.append((list(rows), list(cols)))
    assert all(r == results[0] for r in results), "the implementations disagree"


def test_compiled_equals_reference_on_ties(impls, compiled):
    rng = np.random.default_rng(3)
    for _ in range(50):
        cost = rng.integers(0, 3, (7, 9)).astype(float)
        cost[rng.random((7, 9)) < 0.3] = math.inf
        assert compiled.assign(cost) == impls["python"].assign(cost.tolist())


@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed", "wide"])
def test_compiled_equals_reference_in_every_memory_layout(impls, compiled, layout):
    """A C-ordered matrix with no more rows than columns is solved where it lies, anything else from a
    copy: the same pairs as the reference either way, ties and forbidden pairs included, and the
    same total as scipy's solver (forbidden pairs given to it as a cost above any sum)."""
    rng = np.random.default_rng(11)
    for _ in range(10):
        base = rng.integers(0, 4, (30, 120)).astype(float)
        base[rng.random(base.shape) < 0.4] = math.inf
        cost = {"C": base, "F": np.asfortranarray(base), "strided": base[:, ::2], "transposed": base.T,
                "wide": base[:5]}[layout]
        assert compiled.assign(cost) == impls["python"].assign(cost.tolist())
        rows, cols = compiled.assign(cost)
        finite = np.isfinite(cost)
        r0, c0 = linear_sum_assignment(np.where(finite, cost, 1e6))
        keep = finite[r0, c0]
        assert len(rows) == keep.sum() and cost[rows, cols].sum() == cost[r0[keep], c0[keep]].sum()
