"""Matching: the assignment solver, the rule table, and alarm-to-dispatch latency.

    python bench/match.py [--part assign rules latency] [--sizes 100 1000 3000]
                          [--rules 10000] [--readings 1000000] [--samples 300]

`assign`: the dispatcher's solver against scipy.optimize.linear_sum_assignment on
the same random dense matrices, in one process: time of `core_ext.match.assign`
and of scipy's solver (best of 3), the ratio (target <= 1x at 1000x1000), and a
check that the totals are the same; square sizes, then 1000 x 5000 and 5000 x 1000
(more resources than demands, as the fleet dispatcher's matrices are, and fewer). Also a 1000x1000 matrix with 90 % forbidden
pairs (inf), which scipy cannot take when no full matching exists, so only ours runs.

`rules`: `core_ext.rules` with 10,000 rules (threshold with hysteresis and a
minimum duration, rate of change, all/any of two series, staleness of a node)
over 1,000,000 readings of 10,000 series in batches of 4,096 (as group commits
hand them over), compiled and pure reference side by side in one process, with a
check that both fire the same transitions.

`latency`: a real gateway process (`headrace gateway run`) and a real mosquitto:
a CoAP frame whose reading raises a demand rule, to the `dispatch` event for it
received by a subscriber on `events`; p50 and p99 over `--samples` alarms (each
demand is then marked done over the API and the rule cleared, so the next one
starts from rest). This includes the frame's commit (fsync), the rule, the
dispatcher, the event's commit (fsync) and the broker hop.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from bench.timing import best_time  # noqa: E402
from core_ext import implementations  # noqa: E402


def bench_assign(sizes) -> None:
    impl = implementations("match").get("cython")
    if impl is None:
        sys.exit("the compiled core is not built: pip install -e .")
    rng = np.random.default_rng(7)
    for n in sizes:
        cost = rng.random((n, n)) * 1000
        repeat = 3 if n <= 1000 else 1
        t_ours = best_time(lambda: impl.assign(cost), repeat)
        t_scipy = best_time(lambda: linear_sum_assignment(cost), repeat)
        r, c = impl.assign(cost)
        r0, c0 = linear_sum_assignment(cost)
        same = abs(cost[r, c].sum() - cost[r0, c0].sum()) < 1e-6 * n
        print(f"{n:>5} x {n:<5} ours {t_ours * 1e3:9.1f} ms   scipy {t_scipy * 1e3:9.1f} ms   "
              f"ratio {t_ours / t_scipy:5.2f}x   same total: {same}")
    for nr, nc in ((1000, 5000), (5000, 1000)):  # more resources than demands (the fleet's shape), and fewer
        cost = rng.random((nr, nc)) * 1000
        t_ours = best_time(lambda: impl.assign(cost), 3)
        t_scipy = best_time(lambda: linear_sum_assignment(cost), 3)
        r, c = impl.assign(cost)
        r0, c0 = linear_sum_assignment(cost)
        same = abs(cost[r, c].sum() - cost[r0, c0].sum()) < 1e-6 * min(nr, nc)
        print(f"{nr:>5} x {nc:<5} ours {t_ours * 1e3:9.1f} ms   scipy {t_scipy * 1e3:9.1f} ms   "
              f"ratio {t_ours / t_scipy:5.2f}x   same total: {same}")
    cost = rng.random((1000, 1000)) * 1000
    cost[rng.random((1000, 1000)) < 0.9] = np.inf
    t = best_time(lambda: impl.assign(cost), 1)
    r, c = impl.assign(cost)
    print(f" 1000 x 1000 with 90 % forbidden: {len(r)} pairs assigned in {t * 1e3:.1f} ms (scipy needs a full matching)")


def rule_table(mod, n_rules: int, n_series: int):
    """n_rules rules over n_series series (10 series a node): 40 % thresholds with hysteresis and
    a 2 s minimum, 30 % rates, 20 % all/any of two series of a node, 10 % node staleness."""
    t = mod.RuleTable()
    rng = np.random.default_rng(1)
    for i in range(n_rules):
        sid = i % n_series
        kind = i % 10
        if kind < 4:
            r = t.add_rule(mod.MODE_ALL, duration=2.0)
            t.add_condition(r, sid, mod.SIGNAL_VALUE, True, 9.0, 8.0)
        elif kind < 7:
            r = t.add_rule(mod.MODE_ALL)
            rising = bool(rng.integers(2))
            t.add_condition(r, sid, mod.SIGNAL_RATE, rising, 5.0 if rising else -5.0, 1.0 if rising else -1.0)
        elif kind < 9:
            r = t.add_rule(mod.MODE_ALL if kind == 7 else mod.MODE_ANY)
            base = sid - sid % 10
            t.add_condition(r, sid, mod.SIGNAL_VALUE, True, 9.5, 9.0)
            t.add_condition(r, base + (sid + 1) % 10, mod.SIGNAL_VALUE, False, 0.5, 1.0)
        else:
            r = t.add_rule(mod.MODE_STALE, after=60.0)
            for k in range(10):
                t.watch(r, sid - sid % 10 + k)
    return t


def bench_rules(n_rules: int, n_readings: int) -> None:
    impls = implementations("rules")
    if "cython" not in impls:
        sys.exit("the compiled core is not built: pip install -e .")
    n_series = n_rules
    rng = np.random.default_rng(2)
    sids = rng.integers(0, n_series, n_readings).astype(np.int64)
    ts = np.linspace(0.0, n_readings / 10_000, n_readings)  # 10,000 readings a second
    vs = np.clip(5.0 + rng.standard_normal(n_readings) * 2.0, 0.0, 10.0)
    batch = 4096
    results = {}
    for name in ("cython", "python"):
        mod = impls[name]
        t = rule_table(mod, n_rules, n_series)
        fired = []
        t0 = time.perf_counter()
        for a in range(0, n_readings, batch):
            out = t.eval(sids[a:a + batch], ts[a:a + batch], vs[a:a + batch], float(ts[a]))
            fired.append(out)
            if a % (batch * 16) == 0:
                fired.append(t.check_stale(float(ts[a])))
        seconds = time.perf_counter() - t0
        results[name] = (seconds, [tuple(map(list, o)) for o in fired])
        print(f"rules {name:<7} {n_rules} rules ({t.n_conditions} conditions), {n_readings} readings: "
              f"{seconds:6.2f} s = {n_readings / seconds / 1e6:7.2f} M readings/s, "
              f"{sum(len(o[0]) for o in fired)} transitions")
    same = results["cython"][1] == results["python"][1]
    print(f"rules compiled / reference: {results['python'][0] / results['cython'][0]:.0f}x faster; "
          f"same transitions: {same}")


def bench_latency(samples: int) -> None:
    import socket
    import tempfile
    import urllib.request

    import cbor2

    from gateway.protocol import coap, cose
    from gateway.runtime.uplink import batch, events
    from hil_tests.rig import GatewayProcess, Mosquitto, Subscriber, wait_for

    class TimedSubscriber(Subscriber):
        def _on_message(self, client, userdata, msg):
            with self._lock:
                self.messages.append((msg.topic, msg.payload, time.perf_counter()))

    rules = ('[[rules]]\nname = "vib"\nseries = "p1/vib"\nabove = 8.0\nemit = "demand"\nneed = "mechanic"\n'
             'priority = 5\nat = [10.0, 5.0]\n[[resources]]\nid = "mech1"\ncapabilities = ["mechanic"]\n'
             'home = [0.0, 0.0]\n')
    key = os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="headrace-latency-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work).start()
        sub = TimedSubscriber(broker.port, "headrace/v1/+/+/events")
        gw = GatewayProcess(work, broker.port, {"p1": key}, extra=rules).start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(10)
        seq = 0

        def send(value: float) -> float:
            nonlocal seq
            msg = cose.mac0(key, b"p1", cbor2.dumps([{-2: "p1/", -3: time.time(), 0: "vib", 2: value}]), seq=seq)
            dgram = coap.request(seq & 0xFFFF, msg, b"\x01")  # CoAP CON POST /d, Content-Format 17
            seq += 1
            t0 = time.perf_counter()
            sock.sendto(dgram, ("127.0.0.1", gw.coap_port))
            sock.recvfrom(4096)  # the ack, after the commit
            return t0

        def dispatch_for(seen: int):
            with sub._lock:
                msgs = sub.messages[seen:]
            for _topic, payload, at in msgs:
                for e in events.rows(batch.decode(payload)):
                    if e["type"] == "dispatch" and e["state"] == "assigned":
                        return e["demand"], at
            return None

        try:
            wait_for(lambda: gw.metric("headrace_uplink_connected") == 1, 10, "the uplink")
            lat = []
            for i in range(samples + 10):
                seen = len(sub.messages)
                t0 = send(9.0)
                did, at = wait_for(lambda: dispatch_for(seen), 10, "the dispatch", interval=0.0005)
                if i >= 10:  # warm-up
                    lat.append(at - t0)
                req = urllib.request.Request(f"http://127.0.0.1:{gw.http_port}/demands/{did}/done", data=b"",
                                             method="POST")
                urllib.request.urlopen(req, timeout=5).close()
                send(5.0)
        finally:
            sock.close()
            gw.stop()
            sub.close()
            broker.stop()
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"latency reading -> dispatch on `events` ({len(lat)} alarms, real gateway + mosquitto): "
          f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", nargs="+", choices=["assign", "rules", "latency"],
                    default=["assign", "rules", "latency"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    ap.add_argument("--rules", type=int, default=10_000)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    if "assign" in args.part:
        bench_assign(args.sizes)
    if "rules" in args.part:
        bench_rules(args.rules, args.readings)
    if "latency" in args.part:
        bench_latency(args.samples)


if __name__ == "__main__":
    main()
