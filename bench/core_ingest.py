"""Ingest + aggregate from payload bytes: compiled core vs cbor2.loads vs the pure reference.

    python bench/core_ingest.py [--frames N]

All in one process on the same realistic frames: SenML packs of 8 readings
(2 sensors x 4 samples, base name and base time, relative times, half floats
like the firmware's), about 110 bytes each, from 100 nodes; windows are closed
as time advances, as in the gateway. Reports frames/s
and readings/s of each, the ratios (targets: >= 1.5x cbor2.loads, >= 15x the
reference), and aggregation alone from columns (target >= 50 M readings/s).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from bench.timing import best_time as best  # noqa: E402
from core_ext import implementations  # noqa: E402


def make_frames(n: int, nodes: int = 100) -> list[bytes]:
    rng = random.Random(5)
    t0 = 1_700_000_000.0
    out = []
    for i in range(n):
        node = f"pump{i % nodes:03d}"
        bt = t0 + i // nodes * 2.0 + 0.125 * (i % 8)
        recs = []
        for k in range(8):
            sensor = ("temp", "vib")[k % 2]
            value = round(rng.gauss(21.0 if k % 2 == 0 else 2.0, 0.5) * 16) / 16
            rec = {0: sensor, 2: value}
            if k == 0:
                rec[-2] = node + "/"
                rec[-3] = bt
            if k // 2:
                rec[6] = (k // 2) * 0.5
            recs.append(rec)
        out.append(cbor2.dumps(recs, canonical=True))  # shortest floats, as the firmware writes
    return out


def pipeline(impl_ingest, impl_agg, frames, chunk=1000):
    parser = impl_ingest.Parser()
    aggs = [impl_agg.Aggregator(w, 2.0, max_open=10_000_000) for w in (1.0, 10.0, 60.0)]
    now = 1_700_000_000.0
    for i in range(0, len(frames), chunk):
        for f in frames[i:i + chunk]:
            parser.parse(f, now)
        sids, ts, vs, _ = parser.take()
        for a in aggs:
            a.add_columns(sids, ts, vs)
            a.close(ts[-1] - 5.0)  # the gateway closes windows as time passes (once a second)
    return parser


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000)
    args = ap.parse_args()
    frames = make_frames(args.frames)
    size = sum(map(len, frames)) / len(frames)
    ing, agg = implementations("ingest"), implementations("aggregate")
    if "cython" not in ing or "cython" not in agg:
        sys.exit("the compiled core is not built: pip install -e . (needs Cython and gcc)")
    n = len(frames)
    t_cbor = best(lambda: [cbor2.loads(f) for f in frames])
    t_fast = best(lambda: pipeline(ing["cython"], agg["cython"], frames))
    small = frames[: n // 20]
    t_ref = best(lambda: pipeline(ing["python"], agg["python"], small), 1) * 20
    p = ing["cython"].Parser()
    for f in frames:
        p.parse(f, 0.0)
    sids, ts, vs, _ = p.take()
    t_parse = best(lambda: [p.parse(f, 0.0) for f in frames] and p.take())

    def agg_only():
        a = agg["cython"].Aggregator(10.0, 2.0, max_open=10_000_000)
        a.add_columns(sids, ts, vs)

    t_agg = best(agg_only)
    print(f"{n:,} frames of 8 readings, {size:.0f} bytes on average, 100 nodes x 2 sensors; windows 1 s, 10 s, 60 s")
    print(f"  cbor2.loads alone               {n / t_cbor:>12,.0f} frames/s")
    print(f"  core ingest + aggregate (3 w.)  {n / t_fast:>12,.0f} frames/s  {8 * n / t_fast / 1e6:7.2f} M readings/s")
    print(f"  core ingest alone               {n / t_parse:>12,.0f} frames/s")
    print(f"  pure reference ingest + agg.    {n / t_ref:>12,.0f} frames/s  (timed on {len(small):,} frames)")
    print(f"  aggregation alone from columns  {len(sids) / t_agg / 1e6:>12.1f} M readings/s (one 10 s width)")
    print(f"  ratio core/cbor2.loads {t_cbor / t_fast:.2f}x (target >= 1.5x); core/reference {t_ref / t_fast:.0f}x "
          f"(target >= 15x); aggregation {len(sids) / t_agg / 1e6:.0f} M/s (target >= 50 M/s)")


if __name__ == "__main__":
    main()
