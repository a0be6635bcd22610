"""Rules in the pipeline: committed readings and closed windows → alarms, demands and dispatches,
spooled as event records; the events batch and `headrace decode`."""
from __future__ import annotations

import asyncio
import json

import cbor2

from gateway.config import from_dict
from gateway.decisions.dispatch import Dispatcher
from gateway.decisions.events import EventSink
from gateway.runtime.ingest import Ingest
from gateway.runtime.metrics import Metrics
from gateway.runtime.pipeline import Pipeline
from gateway.protocol import cose
from gateway.runtime.registry import Registry
from gateway.decisions.rules import RuleEngine
from gateway.runtime.spool import PRIO_EVENT, Spool
from gateway.runtime.uplink import batch, events

KEY = bytes(32)
T0 = 1_700_000_000.0

RULES = [
    {"name": "vib-high", "series": "pump1/vib", "above": 7.1, "hysteresis": 1.0, "for": 2, "severity": "critical"},
    {"name": "vib-window", "kind": "window", "series": "pump1/vib", "width": 10, "stat": "mean", "above": 7.1,
     "emit": "demand", "need": "mechanic", "priority": 8, "zone": "pumps"},
    {"name": "pump1-silent", "kind": "stale", "node": "pump1", "after": 5},
]


def frame(node: str, seq: int, records: list) -> bytes:
    recs = [{-2: f"{node}/", **records[0]}] + records[1:]
    return cose.mac0(KEY, node.encode(), cbor2.dumps(recs), seq=seq)


async def make(tmp_path):
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path)}, "aggregate": {"widths": [10], "lateness": 0},
                     "rules": RULES, "zones": {"points": {"pumps": [20, 10]}},
                     "resources": [{"id": "mech1", "capabilities": ["mechanic"], "home": [0, 0], "node": "mech1"}]})
    reg = Registry()
    reg.add("pump1", KEY)
    reg.add("mech1", KEY)
    spool = await Spool.open(cfg.spool_path)
    metrics = Metrics()
    ingest = Ingest(reg, await spool.replay_windows())
    sink = EventSink(metrics)
    disp = Dispatcher(cfg, sink.emit, None, metrics)
    rules = RuleEngine(cfg.rules, cfg.resources, ingest.parser, sink.emit, disp, metrics)
    pipe = Pipeline(cfg, ingest, spool, metrics, rules=rules, events=sink)
    task = asyncio.create_task(pipe.run())
    return spool, pipe, disp, task


async def offer(pipe, msg):
    fut = asyncio.get_running_loop().create_future()
    pipe.offer(msg, "test", lambda ack, err: fut.set_result((ack, err)))
    await asyncio.wait_for(fut, 5)


async def spooled_events(spool, pipe):
    for _ in range(100):
        if not pipe._events:
            break
        await asyncio.sleep(0.01)
    return [cbor2.loads(body) for _id, _kind, body in await spool.read(PRIO_EVENT, 0, 1000)]


def test_alarm_demand_dispatch_and_staleness(tmp_path):
    async def main():
        spool, pipe, disp, task = await make(tmp_path)
        engine = pipe.rules
        engine.check(1000.0)  # arms the stale rule
        vib = [5.0, 8.0, 8.5, 9.0, 9.0, 6.5, 6.0]
        for seq, v in enumerate(vib):  # one reading a second from T0
            await offer(pipe, frame("pump1", seq, [{-3: T0 + seq, 0: "vib", 2: v}]))
        got = await spooled_events(spool, pipe)
        assert [(e["rule"], e["state"], e["t"], e["value"]) for e in got] == [
            ("vib-high", "raised", T0 + 3, 9.0), ("vib-high", "cleared", T0 + 6, 6.0)]
        assert got[0]["severity"] == "critical" and got[0]["series"] == "pump1/vib" and got[0]["node"] == "pump1"
        # the 10 s window: mean 7.0 - no demand; a second window of 9s raises it
        pipe.close_windows(T0 + 10)
        for seq in range(7, 12):
            await offer(pipe, frame("pump1", seq, [{-3: T0 + 10 + seq, 0: "vib", 2: 9.0}]))
        pipe.close_windows(T0 + 30)
        got = await spooled_events(spool, pipe)
        demand = [e for e in got if e["type"] == "demand"]
        assert len(demand) == 1 and demand[0]["source"] == "rule:vib-window" and demand[0]["zone"] == "pumps"
        assert demand[0]["at"] == [20.0, 10.0] and demand[0]["priority"] == 8
        disp.tick(1.0)
        did = demand[0]["id"]
        # the mechanic's node: position, then accept and done by demand id
        await offer(pipe, frame("mech1", 0, [{-3: T0, 0: "x", 2: 20.0}, {0: "y", 2: 10.0},
                                             {0: "accept", 2: float(did)}]))
        await offer(pipe, frame("mech1", 1, [{-3: T0 + 1, 0: "done", 2: float(did)}]))
        got = await spooled_events(spool, pipe)
        assert [(e["state"], e["resource"]) for e in got if e["type"] == "dispatch"] == [
            ("assigned", "mech1"), ("accepted", "mech1"), ("done", "mech1")]
        assert disp.resources["mech1"].at == (20.0, 10.0)
        # staleness on the gateway clock; pump1's readings since 1000.0 keep it quiet until 5 s after
        engine.check(1e10)
        await offer(pipe, frame("pump1", 12, [{-3: T0 + 30, 0: "temp", 2: 20.0}]))
        got = await spooled_events(spool, pipe)
        stale = [(e["rule"], e["state"]) for e in got if e.get("rule") == "pump1-silent"]
        assert stale == [("pump1-silent", "raised"), ("pump1-silent", "cleared")]
        assert pipe.metrics.get("headrace_events_total", type="alarm") == 5  # vib-high raised again by the 9s
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.close()

    asyncio.run(main())


def test_a_broken_rule_evaluation_never_stops_the_commits(tmp_path):
    async def main():
        spool, pipe, _disp, task = await make(tmp_path)

        def boom(*a):
            raise RuntimeError("boom")
        pipe.rules.table = type("Broken", (), {"eval": boom, "eval_windows": boom, "check_stale": boom})()
        await offer(pipe, frame("pump1", 0, [{-3: T0, 0: "vib", 2: 9.0}]))
        await offer(pipe, frame("pump1", 1, [{-3: T0 + 1, 0: "vib", 2: 9.0}]))
        assert pipe.rules.failures == 2 and pipe.metrics.get("headrace_rule_errors_total") == 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.close()

    asyncio.run(main())


def test_events_batch_round_trip_and_decode(tmp_path, capsys):
    from gateway.tools import cli
    evs = [{"type": "alarm", "rule": "vib-high", "state": "raised", "t": T0, "value": 9.5, "severity": "warning",
            "node": "pump1", "series": "pump1/vib"},
           {"type": "dispatch", "demand": 17, "need": "mechanic", "resource": "mech1", "state": "assigned",
            "t": T0 + 1, "attempt": 1, "eta": 12.5}]
    payload = events.encode("gw1", "site1", [events.event_body(e) for e in evs])
    decoded = batch.decode(payload)
    assert decoded["events"] == evs and list(batch.rows(decoded)) == []
    assert list(events.rows(decoded)) == [{"gw": "gw1", **e} for e in evs]
    p = tmp_path / "events.cbor"
    p.write_bytes(payload)
    assert cli.main(["decode", str(p)]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [{"gw": "gw1", **e} for e in evs]
