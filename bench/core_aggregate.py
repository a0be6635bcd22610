"""Aggregation from columns: compiled core vs the pure reference vs a plain dict loop.

    python bench/core_aggregate.py [--readings N] [--series K]

All three run in this process on the same readings (K series, one reading per
series per second, 10 s windows). Prints readings/s and the ratios.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import best_time as timed  # noqa: E402
from core_ext import implementations  # noqa: E402


def dict_baseline(sids, ts, vs, width):
    """What one would write without a core: a dict of lists per (series, window)."""
    w = {}
    for sid, t, v in zip(sids, ts, vs):
        key = (sid, math.floor(t / width))
        s = w.get(key)
        if s is None:
            w[key] = [1, v, v, v, v * v]
        else:
            s[0] += 1
            if v < s[1]:
                s[1] = v
            if v > s[2]:
                s[2] = v
            s[3] += v
            s[4] += v * v
    return len(w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=2_000_000)
    ap.add_argument("--series", type=int, default=1000)
    args = ap.parse_args()
    n, k = args.readings, args.series
    rng = random.Random(1)
    t0 = 1_700_000_000.0
    sids = array("q", (i % k for i in range(n)))
    ts = array("d", (t0 + i // k + rng.random() * 0.01 for i in range(n)))
    vs = array("d", (round(20 + rng.gauss(0, 2), 2) for _ in range(n)))
    impls = implementations("aggregate")

    def run(impl):
        a = impl.Aggregator(10.0, 2.0, max_open=(n // k // 10 + 2) * k)
        a.add_columns(sids, ts, vs)
        a.flush()

    small = 200_000
    res = {"dict loop": n / timed(lambda: dict_baseline(sids, ts, vs, 10.0), 1)}
    ref_sids, ref_ts, ref_vs = sids[:small], ts[:small], vs[:small]

    def run_ref():
        a = impls["python"].Aggregator(10.0, 2.0, max_open=(n // k // 10 + 2) * k)
        a.add_columns(ref_sids, ref_ts, ref_vs)
        a.flush()

    res["pure reference"] = small / timed(run_ref, 1)
    if "cython" in impls:
        res["compiled core"] = n / timed(lambda: run(impls["cython"]))
    print(f"aggregate {n:,} readings, {k} series, 10 s windows (reference timed on {small:,})")
    for name, rate in res.items():
        print(f"  {name:<15} {rate / 1e6:8.2f} M readings/s")
    if "compiled core" in res:
        c = res["compiled core"]
        print(f"  ratio compiled/reference {c / res['pure reference']:.0f}x, compiled/dict loop "
              f"{c / res['dict loop']:.0f}x (target from DESIGN: >= 50 M readings/s from columns)")


if __name__ == "__main__":
    main()
