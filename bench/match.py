"""The dispatcher's assignment solver against scipy.optimize.linear_sum_assignment.

    python bench/match.py [--sizes 100 1000 3000]

Same random dense matrices, in one process: time of `core_ext.match.assign` and of
scipy's solver (best of 3), the ratio (target <= 1x at 1000x1000), and a check
that the totals are the same. Also a 1000x1000 matrix with 90 % forbidden pairs
(inf), which scipy cannot take when no full matching exists, so only ours runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from bench.timing import best_time  # noqa: E402
from core_ext import implementations  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    args = ap.parse_args()
    impl = implementations("match").get("cython")
    if impl is None:
        sys.exit("the compiled core is not built: pip install -e .")
    rng = np.random.default_rng(7)
    for n in args.sizes:
        cost = rng.random((n, n)) * 1000
        repeat = 3 if n <= 1000 else 1
        t_ours = best_time(lambda: impl.assign(cost), repeat)
        t_scipy = best_time(lambda: linear_sum_assignment(cost), repeat)
        r, c = impl.assign(cost)
        r0, c0 = linear_sum_assignment(cost)
        same = abs(cost[r, c].sum() - cost[r0, c0].sum()) < 1e-6 * n
        print(f"{n:>5} x {n:<5} ours {t_ours * 1e3:9.1f} ms   scipy {t_scipy * 1e3:9.1f} ms   "
              f"ratio {t_ours / t_scipy:5.2f}x   same total: {same}")
    cost = rng.random((1000, 1000)) * 1000
    cost[rng.random((1000, 1000)) < 0.9] = np.inf
    t = best_time(lambda: impl.assign(cost), 1)
    r, c = impl.assign(cost)
    print(f" 1000 x 1000 with 90 % forbidden: {len(r)} pairs assigned in {t * 1e3:.1f} ms (scipy needs a full matching)")


if __name__ == "__main__":
    main()
