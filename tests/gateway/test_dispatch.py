"""The dispatcher: optimal assignment by priority-weighted travel time, the lifecycle, timeouts,
the resources' mirrored state, the downlink and the HTTP API."""
import json
import math

import pytest

from gateway import config
from gateway.decisions.dispatch import ACCEPTED, ASSIGNED, OPEN, DemandError, Dispatcher
from gateway.decisions.downlink import Downlink
from gateway.runtime.registry import Registry


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(resources, zones=None, **dispatch):
    raw = {"resources": resources, "dispatch": dispatch}
    if zones:
        raw["zones"] = zones
    cfg = config.from_dict(raw)
    events, clock = [], Clock()
    downlink = Downlink(Registry())
    return Dispatcher(cfg, events.append, downlink, clock=clock), events, clock, downlink


def res(rid, caps, x, y, speed=1.0, node=""):
    out = {"id": rid, "capabilities": caps, "home": [x, y], "speed": speed}
    if node:
        out["node"] = node
    return out


def states(events, demand=None):
    return [(e["resource"], e["state"]) for e in events if e["type"] == "dispatch"
            and (demand is None or e["demand"] == demand)]


def test_nearest_capable_resource_by_travel_time():
    d, events, clock, _ = make([res("slow", ["mechanic"], 1, 0, speed=0.1), res("fast", ["mechanic"], 10, 0, speed=5),
                                res("lift", ["lift"], 0, 0)])
    dem = d.submit("mechanic", at=(0, 0))
    assert events[0] == {"type": "demand", "id": dem.id, "need": "mechanic", "priority": 5, "at": [0.0, 0.0],
                         "source": "api", "t": 1000.0}
    assert d.tick(clock()) == 1
    assert dem.state == ASSIGNED and dem.resource == "fast"  # 10 m at 5 m/s beats 1 m at 0.1 m/s
    assert events[-1] == {"type": "dispatch", "demand": dem.id, "need": "mechanic", "resource": "fast",
                          "state": "assigned", "t": 1000.0, "attempt": 1, "eta": 2.0}
    assert d.tick(clock()) == 0


def test_optimal_not_greedy_and_waiting():
    # greedy by demand order would give a the close resource r1 and leave b with r2's long trip
    d, events, clock, _ = make([res("r1", ["m"], 0, 0), res("r2", ["m"], 100, 0)])
    a = d.submit("m", at=(10, 0))
    b = d.submit("m", at=(-1, 0))
    c = d.submit("m", at=(200, 0))
    d.tick(clock())
    assert (a.resource, b.resource, c.state) == ("r2", "r1", OPEN)  # 90 + 1 < 10 + 101; c (100 from r2) waits
    d.done(b.id)
    d.tick(clock())
    assert c.resource == "r1"


def test_priority_decides_who_is_served_and_who_gets_the_near_resource():
    d, _, clock, _ = make([res("r1", ["m"], 0, 0)])
    low = d.submit("m", at=(1, 0), priority=2)
    high = d.submit("m", at=(500, 0), priority=9)
    d.tick(clock())
    assert high.resource == "r1" and low.state == OPEN
    d2, _, clock2, _ = make([res("near", ["m"], 0, 0), res("far", ["m"], 30, 0)])
    low = d2.submit("m", at=(10, 0), priority=1)   # unweighted: near→low 10 + far→high 20 = 30
    high = d2.submit("m", at=(10, 0), priority=9)  # weighted: 9 x 10 + 1 x 20 < 9 x 20 + 1 x 10
    d2.tick(clock2())
    assert (high.resource, low.resource) == ("near", "far")


def test_capability_mismatch_waits():
    d, _, clock, _ = make([res("r1", ["m"], 0, 0), res("f", ["lift"], 0, 0)])
    m1, m2 = d.submit("m", at=(0, 0)), d.submit("m", at=(1, 0))
    d.tick(clock())
    assert sorted([m1.state, m2.state]) == [ASSIGNED, OPEN] and "f" not in (m1.resource, m2.resource)
    with pytest.raises(DemandError, match="no resource has the capability 'welder'") as info:
        d.submit("welder", at=(0, 0))
    assert info.value.status == 422


def test_zone_graph_travel():
    zones = {"points": {"a": [0, 0], "b": [0, 100], "c": [10, 0]}, "edges": [["a", "b"], ["b", "c"]]}
    d, events, clock, _ = make([res("r", ["m"], 0, 0)], zones=zones)
    dem = d.submit("m", zone="c")
    assert dem.at == (10.0, 0.0) and events[0]["zone"] == "c"
    d.tick(clock())
    assert events[-1]["eta"] == round(100 + math.hypot(10, 100), 3)  # around by b, not 10 m straight


def test_lifecycle_accept_done_and_timeouts():
    d, events, clock, downlink = make([res("r1", ["m"], 0, 0, node="n1"), res("r2", ["m"], 5, 0, node="n2")],
                                      accept_timeout=30, done_timeout=600)
    dem = d.submit("m", at=(0, 0))
    d.tick(clock())
    assert dem.resource == "r1"
    (cmd,) = downlink.take("n1")
    assert (cmd.cmd, cmd.id, cmd.args) == ("dispatch", f"dispatch-{dem.id}",
                                           {"demand": dem.id, "need": "m", "x": 0.0, "y": 0.0, "priority": 5})
    clock.t += 31
    d.tick(clock())  # not accepted in time: taken back, offered to the other resource
    assert dem.resource == "r2" and dem.attempt == 2
    assert [c.cmd for c in downlink.take("n1")] == ["recall"]
    assert [c.cmd for c in downlink.take("n2")] == ["dispatch"]
    with pytest.raises(DemandError) as info:
        d.accept(dem.id, "r1")
    assert info.value.status == 409
    d.accept(dem.id, "r2")
    clock.t += 601
    d.tick(clock())  # accepted but never done: both failed it, so offered to all again; r1 is nearest
    assert dem.resource == "r1" and dem.attempt == 3
    clock.t += 31
    d.tick(clock())  # r1 silent again: r2
    assert dem.resource == "r2" and dem.attempt == 4
    d.done(dem.id)
    assert states(events, dem.id) == [("r1", "assigned"), ("r1", "timeout"), ("r2", "assigned"),
                                      ("r2", "accepted"), ("r2", "timeout"), ("r1", "assigned"),
                                      ("r1", "timeout"), ("r2", "assigned"), ("r2", "done")]
    assert dem.id not in d.demands and d.resources["r2"].demand is None
    with pytest.raises(DemandError) as info:
        d.done(dem.id)
    assert info.value.status == 404


def test_decline_and_cancel():
    d, events, clock, downlink = make([res("r1", ["m"], 0, 0, node="n1"), res("r2", ["m"], 9, 0)])
    dem = d.submit("m", at=(0, 0))
    d.tick(clock())
    d.decline(dem.id, "r1")
    d.tick(clock())
    assert dem.resource == "r2"
    d.cancel(dem.id)
    assert states(events, dem.id)[-1] == ("r2", "cancelled") and d.resources["r2"].demand is None
    assert [c.cmd for c in downlink.take("n1")] == ["dispatch"]  # a decline needs no recall


def test_resource_state_mirrored_from_its_node():
    d, events, clock, _ = make([res("r1", ["m"], 0, 0, node="n1"), res("r2", ["m"], 50, 0, node="n2")])
    d.mirror("r2", "x", 1.0, 1.0)
    d.mirror("r2", "y", 1.0, 2.0)
    assert d.resources["r2"].at == (1.0, 2.0)
    d.mirror("r1", "battery", 1.0, 10.0)  # under min_battery (20): not dispatched
    dem = d.submit("m", at=(0, 0))
    d.tick(clock())
    assert dem.resource == "r2"
    d.mirror("r2", "accept", 2.0, float(dem.id))
    assert dem.state == ACCEPTED
    d.mirror("r2", "done", 3.0, float(dem.id))
    assert dem.id not in d.demands
    d.mirror("r2", "available", 4.0, 0.0)
    d.mirror("r1", "battery", 5.0, 90.0)
    dem2 = d.submit("m", at=(1, 2))
    d.tick(clock())
    assert dem2.resource == "r1"  # r2 is nearer but not available
    d.mirror("r1", "done", 6.0, 12.5)  # not a demand id: ignored
    d.mirror("r1", "done", 6.0, float(dem.id))  # not its demand: ignored
    assert dem2.state == ASSIGNED


def test_rule_demands_one_at_a_time():
    from gateway.config.rules import Rule
    d, events, clock, _ = make([res("r1", ["m"], 0, 0)])
    rule = Rule("vib", emit="demand", need="m", priority=7, at=(3.0, 4.0))
    d.demand_from_rule(rule, 1.0, 9.0)
    d.demand_from_rule(rule, 2.0, 9.5)
    (dem,) = d.demands.values()
    assert (dem.source, dem.priority, dem.at) == ("rule:vib", 7, (3.0, 4.0))
    d.cancel(dem.id)
    d.demand_from_rule(rule, 3.0, 9.0)
    assert len(d.demands) == 1


def test_http_api():
    d, events, clock, _ = make([res("r1", ["m"], 0, 0)], max_open=2)
    code, body = d.http("POST", "/demands", json.dumps({"need": "m", "at": [1, 2], "priority": 3}).encode())
    assert code == 201 and body["state"] == OPEN and body["at"] == [1.0, 2.0]
    did = body["id"]
    assert d.http("POST", "/demands", b'{"need": "m"}') == (400, {"error": "a demand needs a place: at [x, y] in "
                                                                           "plant metres or a zone, got None"})
    assert d.http("POST", "/demands", b"[1]")[0] == 400
    assert d.http("POST", "/demands", b"{nope")[0] == 400
    assert d.http("POST", "/demands", b'{"need": "m", "at": [0, 0], "urgent": true}')[0] == 400
    assert d.http("POST", "/demands", b'{"need": "m", "at": [0, 0], "priority": 0}')[0] == 400
    assert d.http("POST", f"/demands/{did}/accept", b"")[0] == 409  # not assigned yet
    d.tick(clock())
    assert d.http("POST", f"/demands/{did}/accept", b'{"resource": "r1"}')[1]["state"] == ACCEPTED
    assert d.http("POST", f"/demands/{did}/done", b"")[1]["state"] == "done"
    assert d.http("POST", "/demands/x/done", b"")[0] == 404
    assert d.http("POST", f"/demands/{did}/done", b"")[0] == 404
    code, view = d.http("GET", "/demands", b"")
    assert code == 200 and view["recent"][0]["id"] == did and view["resources"][0]["id"] == "r1"
    d.http("POST", "/demands", b'{"need": "m", "at": [0, 0]}')
    d.http("POST", "/demands", b'{"need": "m", "at": [0, 0]}')
    assert d.http("POST", "/demands", b'{"need": "m", "at": [0, 0]}')[0] == 503  # max_open
    assert d.http("DELETE", "/demands", b"")[0] == 404


def test_update_keeps_live_state_and_reassigns_a_removed_resources_demand():
    d, events, clock, _ = make([res("m1", ["mechanic"], 0, 0), res("m2", ["mechanic"], 50, 0)])
    dem = d.submit("mechanic", at=(1, 0))
    assert d.tick(clock()) == 1 and d.resources["m1"].demand == dem.id
    d.resources["m2"].at = (40.0, 0.0)  # mirrored from its node
    # m1 goes, m2 stays (its live position kept), m3 comes
    d.update(config.from_dict({"resources": [res("m2", ["mechanic"], 50, 0), res("m3", ["mechanic", "lift"], 5, 0)]}))
    assert sorted(d.resources) == ["m2", "m3"] and d.resources["m2"].at == (40.0, 0.0)
    assert d.demands[dem.id].state == OPEN and d.capabilities == {"mechanic", "lift"}
    assert d.tick(clock()) == 1 and d.demands[dem.id].resource == "m3"
    assert ("m1", "reassigned") in states(events, dem.id)


def test_run_ends_when_cancelled_even_as_it_is_woken():
    """A cancel that arrives with a wake-up ends run(): asyncio.wait_for lost such a cancel
    before Python 3.12, and the owner awaiting the task hung (seen in the loans race test)."""
    import asyncio

    async def main():
        d, *_ = make([res("m1", ["mechanic"], 0, 0)], tick=0.01)
        for steps in range(4):  # the cancel 0-3 loop steps after the wake
            task = asyncio.create_task(d.run())
            await asyncio.sleep(0.005)
            d._wake.set()
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert done and task.cancelled(), f"run() went on after a cancel {steps} steps after a wake"

    asyncio.run(main())
