"""Fleet matching: 100 gateways, 5,000 resources, 1,000 escalated demands.

    python bench/fleet.py [--gateways 100] [--resources 5000] [--demands 1000] [--waves 10]

Each gateway is a real gateway dispatcher with its loans (gateway/decisions/), its
resources spread over its line of the site; each lacks one of three capabilities,
and its demands are for that one, so it escalates them at once. The cloud is the
real fleet mirror and dispatcher (sink/fleet.py) over a site map joining the lines'
zone graphs (100 lines on a grid, linked to their neighbours). Events and commands
are carried in-process (no broker: this measures the matching, not the network).

Reported:
- escalation → assignment: from the cloud applying a demand's `escalation` event to
  the borrower taking the `borrowed` command (the loan granted at the lender between),
  p50 and p99, with the demands arriving in `--waves` equal waves (one cloud tick each);
- the cloud tick (cost matrix on the site map + assignment), per wave and for all the
  demands at once;
- `core_ext.match.assign` against `scipy.optimize.linear_sum_assignment` on the very
  same cost matrix (forbidden pairs given to scipy as a cost M above any sum of allowed
  costs, pairs at M dropped, as our solver does), best of 3, with the totals compared.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from bench.timing import best_time  # noqa: E402
from core_ext.match import IMPLEMENTATION, assign  # noqa: E402
from gateway import config  # noqa: E402
from gateway.decisions.dispatch import Dispatcher  # noqa: E402
from gateway.decisions.downlink import Downlink  # noqa: E402
from gateway.decisions.loans import Loans  # noqa: E402
from gateway.runtime.registry import Registry  # noqa: E402
from sink.fleet import FleetDispatcher, FleetMirror  # noqa: E402
from sink.fleet_map import SiteMap  # noqa: E402

CAPS = ("mechanic", "lift", "electrician")
LINE = 60.0  # metres between lines on the grid


class Clock:
    t = 1_000_000.0

    def __call__(self):
        return self.t


def build(n_gw: int, n_res: int, rng: random.Random, clock: Clock):
    side = math.ceil(math.sqrt(n_gw))
    lines, site = {}, {"gateways": {}, "links": []}
    per = n_res // n_gw
    for g in range(n_gw):
        gid = f"line{g}"
        ox, oy = (g % side) * LINE, (g // side) * LINE
        lacks = CAPS[g % 3]
        resources = [{"id": f"r{k}", "capabilities": [c for c in CAPS if c != lacks][k % 2:k % 2 + 1],
                      "home": [ox + rng.uniform(0, 50), oy + rng.uniform(0, 50)], "speed": rng.choice([1.4, 3.0])}
                     for k in range(per)]
        cfg = config.from_dict({"resources": resources, "dispatch": {"max_open": 100000},
                                "fleet": {"enabled": True, "escalate_after": 0, "remote": [lacks]}})
        events: list = []
        downlink = Downlink(Registry())
        d = Dispatcher(cfg, events.append, downlink, clock=clock)
        Loans(d, events.append, downlink)
        lines[gid] = (d, downlink, events, lacks, (ox, oy), [0])
        site["gateways"][gid] = {"points": {"a": [ox + 10, oy + 25], "b": [ox + 40, oy + 25]}, "edges": [["a", "b"]]}
        if g % side:
            site["links"].append([f"line{g - 1}:b", f"{gid}:a"])
        if g >= side:
            site["links"].append([f"line{g - side}:a", f"{gid}:a"])
    return lines, SiteMap.from_dict(site)


def carry_up(lines, mirror, seen_at, assigned_at):
    """Every new event of every gateway to the mirror; its commands down, until quiet."""
    moved = True
    while moved:
        moved = False
        for gid, (_d, _dl, events, *_rest, sent) in lines.items():
            new, sent[0] = events[sent[0]:], len(events)
            for e in new:
                moved = True
                if e["type"] == "escalation" and e["state"] == "escalated":
                    seen_at[(gid, e["demand"])] = time.perf_counter()
                deliver(lines, mirror.apply(gid, e), assigned_at)


def deliver(lines, commands, assigned_at):
    for gid, cmd in commands:
        lines[gid][1].submit("_fleet", json.dumps(cmd).encode())
        if cmd["cmd"] == "borrowed":
            assigned_at[(gid, cmd["args"]["demand"])] = time.perf_counter()


def scipy_total(cost: np.ndarray):
    finite = cost[np.isfinite(cost)]
    lo = finite.min()
    shifted = np.where(np.isfinite(cost), cost - lo, np.inf)
    m = float(np.where(np.isfinite(shifted), shifted, 0).max(axis=1).sum()) + 1.0
    rows, cols = linear_sum_assignment(np.where(np.isfinite(shifted), shifted, m))
    keep = np.isfinite(cost[rows, cols])
    return int(keep.sum()), float(cost[rows[keep], cols[keep]].sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--resources", type=int, default=5000)
    ap.add_argument("--demands", type=int, default=1000)
    ap.add_argument("--waves", type=int, default=10)
    args = ap.parse_args()
    rng = random.Random(15)
    clock = Clock()
    print(f"fleet: {args.gateways} gateways, {args.resources} resources, {args.demands} demands; core_ext.match "
          f"{IMPLEMENTATION}; {os.cpu_count()} cores (a shared machine: compare ratios, not absolute times)")

    # 1. all the demands at once: the cloud tick, and our solver against scipy on its very matrix
    lines, site = build(args.gateways, args.resources, rng, clock)
    mirror = FleetMirror()
    cloud = FleetDispatcher(mirror, site)
    gids = list(lines)
    for gid in gids:
        lines[gid][0].tick(clock())  # every resource told free
    for i in range(args.demands):
        d, *_rest, lacks, (ox, oy), _sent = lines[gids[i % len(gids)]]
        d.submit(lacks, at=(ox + rng.uniform(0, 50), oy + rng.uniform(0, 50)), priority=rng.randint(1, 10))
    for gid in gids:
        lines[gid][0].tick(clock())
    seen_at, assigned_at = {}, {}
    carry_up(lines, mirror, seen_at, assigned_at)
    demands = sorted((e for e in mirror.escalated.values() if e.asked is None), key=lambda e: (e.gateway, e.demand))
    free = [r for _, r in sorted(mirror.resources.items()) if r.free]
    t0 = time.perf_counter()
    cost = cloud.cost(demands, free, clock())
    t_cost = time.perf_counter() - t0
    ours = best_time(lambda: assign(cost))
    theirs = best_time(lambda: scipy_total(cost))
    rows, cols = assign(cost)
    n_ours, total_ours = len(rows), float(sum(cost[i, j] for i, j in zip(rows, cols)))
    n_scipy, total_scipy = scipy_total(cost)
    print(f"  cost matrix {cost.shape[0]} x {cost.shape[1]} ({np.isfinite(cost).mean():.0%} allowed): "
          f"built in {t_cost * 1000:.1f} ms")
    print(f"  assign {ours * 1000:8.1f} ms   scipy linear_sum_assignment {theirs * 1000:8.1f} ms   "
          f"ratio {ours / theirs:.2f}x (target <= 1)")
    same = n_ours == n_scipy and math.isclose(total_ours, total_scipy, rel_tol=1e-9, abs_tol=1e-6)
    print(f"  pairs {n_ours} vs {n_scipy}, total cost {total_ours:.3f} vs {total_scipy:.3f}: "
          f"{'same' if same else 'DIFFERENT'}")
    t0 = time.perf_counter()
    lends = cloud.tick(clock())
    t_tick = time.perf_counter() - t0
    deliver(lines, lends, assigned_at)
    carry_up(lines, mirror, seen_at, assigned_at)
    print(f"  one tick for all: {t_tick * 1000:.1f} ms, {len(lends)} loans asked, "
          f"{len(assigned_at)} assigned across gateways")

    # 2. the demands in waves, one tick each: escalation -> assignment
    clock.t += 10
    lines, site = build(args.gateways, args.resources, rng, clock)
    mirror = FleetMirror()
    cloud = FleetDispatcher(mirror, site)
    for gid in gids:
        lines[gid][0].tick(clock())
    seen_at, assigned_at, ticks = {}, {}, []
    per_wave = args.demands // args.waves
    for w in range(args.waves):
        for i in range(per_wave):
            d, *_rest, lacks, (ox, oy), _sent = lines[gids[(w * per_wave + i) % len(gids)]]
            d.submit(lacks, at=(ox + rng.uniform(0, 50), oy + rng.uniform(0, 50)), priority=rng.randint(1, 10))
        for gid in gids:
            lines[gid][0].tick(clock())
        carry_up(lines, mirror, seen_at, assigned_at)
        t0 = time.perf_counter()
        lends = cloud.tick(clock())
        ticks.append(time.perf_counter() - t0)
        deliver(lines, lends, assigned_at)
        carry_up(lines, mirror, seen_at, assigned_at)
        clock.t += 1
    lat = sorted(assigned_at[k] - seen_at[k] for k in assigned_at if k in seen_at)
    if not lat:
        print("  no demand was assigned across gateways")
        return 1
    p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"  {args.waves} waves of {per_wave}: {len(lat)} of {len(seen_at)} escalations assigned; "
          f"escalation -> assignment p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
          f"cloud tick median {statistics.median(ticks) * 1000:.1f} ms, max {max(ticks) * 1000:.1f} ms")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
