"""The cloud's fleet mirror and dispatcher against two real gateway dispatchers (with their
loans), the events and commands carried by a loop in place of the broker: a cross-gateway
dispatch end to end, the site map, the failure cases."""
from __future__ import annotations

import json
import random

import pytest

from gateway import config
from gateway.config.problems import ConfigErrors
from gateway.decisions.dispatch import Dispatcher
from gateway.decisions.downlink import Downlink
from gateway.decisions.loans import Loans
from gateway.errors import ConfigError
from gateway.runtime.registry import Registry
from sink.fleet import FleetDispatcher, FleetMirror
from sink.fleet_map import SiteMap

SITE = {"gateways": {"line1": {"points": {"pumps": [20, 12], "shop1": [2, 2]}, "edges": [["shop1", "pumps"]]},
                     "line2": {"points": {"hall": [60, 2], "press": [70, 12]}, "edges": [["hall", "press"]]}},
        "links": [["line1:pumps", "line2:hall", 45.0]]}


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class Line:
    """One gateway's decisions: dispatcher, downlink, loans, its event stream."""

    def __init__(self, gid, resources, clock, escalate_after=30):
        remote = [] if resources else ["mechanic"]  # a line with no mechanic of its own asks the fleet at once
        cfg = config.from_dict({"resources": resources, "fleet": {"enabled": True, "escalate_after": escalate_after,
                                                                  "remote": remote},
                                "dispatch": {"accept_timeout": 60}})
        self.id, self.events, self.sent = gid, [], 0
        self.downlink = Downlink(Registry())
        self.dispatcher = Dispatcher(cfg, self.events.append, self.downlink, clock=clock)
        self.loans = Loans(self.dispatcher, self.events.append, self.downlink)
        self.up = True  # its link to the cloud

    def take_events(self):
        if not self.up:
            return []  # they wait in the spool
        out, self.sent = self.events[self.sent:], len(self.events)
        return out


def mech(rid, x, y):
    return {"id": rid, "capabilities": ["mechanic"], "home": [x, y], "speed": 1.0}


class Site:
    def __init__(self, clock, lines, site=SITE):
        self.clock, self.lines = clock, {ln.id: ln for ln in lines}
        self.mirror = FleetMirror()
        self.cloud = FleetDispatcher(self.mirror, SiteMap.from_dict(site), ask_timeout=5)
        self.commands = []
        self.cloud_up = True

    def deliver(self, commands):
        for gw, cmd in commands:
            self.commands.append((gw, cmd))
            self.lines[gw].downlink.submit("_fleet", json.dumps(cmd).encode())

    def run(self, seconds=0.0, step=1.0):
        """Tick the gateways and the cloud, carrying events up and commands down until quiet."""
        end = self.clock.t + seconds
        while True:
            for _ in range(10):
                for ln in self.lines.values():
                    ln.dispatcher.tick(self.clock())
                if not self.cloud_up:
                    break
                moved = False
                for ln in self.lines.values():
                    for e in ln.take_events():
                        moved = True
                        self.deliver(self.mirror.apply(ln.id, e))
                lends = self.cloud.tick(self.clock())
                self.deliver(lends)
                if not moved and not lends:
                    break
            if self.clock.t >= end:
                return
            self.clock.t += step


def steps(line, demand):
    return [(e["resource"], e["state"]) for e in line.events if e["type"] == "dispatch" and e["demand"] == demand]


def assert_never_double_assigned(lines):
    for ln in lines:
        holder = {}
        for e in ln.events:
            if e["type"] == "dispatch" and e["resource"] and "/" not in e["resource"]:
                r = e["resource"]
                if e["state"] == "assigned":
                    assert holder.get(r) is None, f"{ln.id}: {r} assigned to {e['demand']} while on {holder[r]}"
                    holder[r] = e["demand"]
                elif e["state"] in ("done", "cancelled", "timeout", "declined"):
                    holder[r] = None


def two_lines(clock, **kw):
    l1 = Line("line1", [mech("mech1", 2, 2)], clock, **kw)
    l2 = Line("line2", [mech("mech2", 60, 2)], clock, **kw)
    return l1, l2, Site(clock, [l1, l2])


def test_a_demand_line1_cannot_serve_is_served_by_line2s_mechanic_end_to_end():
    clock = Clock()
    l1, l2, site = two_lines(clock)
    busy = l1.dispatcher.submit("mechanic", at=(3, 2), priority=9)  # line1's only mechanic gets this
    pump = l1.dispatcher.submit("mechanic", at=(20, 12), priority=8)
    site.run()
    assert pump.state == "open"
    site.run(seconds=30)  # escalate_after: 30 s
    assert (pump.state, pump.resource, pump.remote) == ("assigned", "line2/mech2", "line2")
    (loan,) = [d for d in l2.dispatcher.demands.values() if d.loan]
    assert loan.loan == f"line1/{pump.id}" and loan.resource == "mech2"
    lend = [c for gw, c in site.commands if c["cmd"] == "lend"][0]
    assert lend["args"]["resource"] == "mech2" and lend["args"]["gateway"] == "line1"
    # the dispatch goes through the usual steps at the lender, mirrored at the borrower
    l2.dispatcher.accept(loan.id, "mech2")
    site.run()
    assert pump.state == "accepted"
    l2.dispatcher.done(loan.id, "mech2")
    site.run()
    assert pump.id not in l1.dispatcher.demands and steps(l1, pump.id)[-1] == ("line2/mech2", "done")
    assert steps(l2, loan.id) == [("mech2", "assigned"), ("mech2", "accepted"), ("mech2", "done")]
    assert [e["state"] for e in l1.events if e["type"] == "escalation"] == ["escalated", "withdrawn"]
    assert [e["state"] for e in l2.events if e["type"] == "loan"] == ["granted"]
    assert [e["state"] for e in l1.events if e["type"] == "loan"] == ["borrowed"]
    assert busy.resource == "mech1"
    assert_never_double_assigned([l1, l2])
    # the mirror knows every open demand of every gateway, and every resource
    assert site.mirror.demands == {("line1", busy.id): {
        "need": "mechanic", "at": (3.0, 2.0), "priority": 9, "source": "api", "state": "assigned",
        "resource": "mech1", "t": busy.created}}
    assert {k: v.free for k, v in site.mirror.resources.items()} == {("line1", "mech1"): False,
                                                                     ("line2", "mech2"): True}


def test_priorities_weigh_as_locally_and_travel_follows_the_site_map():
    clock = Clock()
    l1 = Line("line1", [], clock)
    l2 = Line("line2", [mech("near", 60, 2), mech("far", 200, 200)], clock)
    site = Site(clock, [l1, l2])
    low = l1.dispatcher.submit("mechanic", at=(20, 12), priority=1)
    high = l1.dispatcher.submit("mechanic", at=(21, 12), priority=9)
    site.run()
    assert high.resource == "line2/near" and low.resource == "line2/far"
    zones = site.cloud.site.zones
    assert zones.distance((60, 2), (20, 12)) == pytest.approx(45.0)  # along the link, not straight


def test_travel_vectorised_matches_the_zone_map_pair_by_pair():
    rng = random.Random(3)
    site = SiteMap.from_dict(SITE)
    cloud = FleetDispatcher(FleetMirror(), site)

    class P:
        def __init__(self, at, speed=1.0):
            self.at, self.speed = at, speed
    dem = [P((rng.uniform(0, 80), rng.uniform(0, 20))) for _ in range(30)]
    res = [P((rng.uniform(0, 80), rng.uniform(0, 20)), rng.uniform(0.5, 3)) for _ in range(40)]
    got = cloud.travel_seconds(dem, res)
    for i, d in enumerate(dem):
        for j, r in enumerate(res):
            assert got[i, j] == pytest.approx(site.zones.distance(r.at, d.at) / r.speed, abs=1e-9)


def test_site_map_errors_name_the_key_and_the_fix():
    with pytest.raises(ConfigErrors) as err:
        SiteMap.from_dict({"gateways": {"line1": {"points": {"a": [0, 0], "b": [1, 1]}, "edges": [["a", "c"]]},
                                        "Line 2": {}},
                           "links": [["line1:a", "line9:x"], ["line1:a", "line1:b"], ["line1:a"]], "extra": 1})
    text = str(err.value)
    for part in ["[gateways.line1] edges[0]: 'c' is not a zone point", "[gateways.Line 2]: is not a gateway id",
                 "links[0]: 'line9:x' is not a point of the site map (fix: name points <gateway>:<point>",
                 "links[1]: joins two points of gateway 'line1' (fix: put it in [gateways.line1] edges",
                 "links[2]: must be [a, b] or [a, b, metres]", "[extra]: unknown key"]:
        assert part in text, part
    with pytest.raises(ConfigError, match="cannot read"):
        SiteMap.load("/nonexistent/site.toml")


def test_cloud_unreachable_each_line_goes_on_and_a_demand_served_meanwhile_is_withdrawn():
    clock = Clock()
    l1, l2, site = two_lines(clock)
    site.cloud_up = False
    first = l1.dispatcher.submit("mechanic", at=(3, 2))
    pump = l1.dispatcher.submit("mechanic", at=(20, 12))
    site.run(seconds=31)
    assert [e["state"] for e in l1.events if e["type"] == "escalation"] == ["escalated"]
    l1.dispatcher.done(first.id, "mech1")  # served locally while the cloud is away
    site.run()
    assert pump.resource == "mech1"
    site.cloud_up = True
    site.run()
    assert not [c for _, c in site.commands if c["cmd"] == "lend"]  # the withdrawal arrived with the escalation
    assert not site.mirror.escalated and not [d for d in l2.dispatcher.demands.values() if d.loan]


def test_a_lender_that_dies_while_its_resource_is_on_loan_times_out_and_the_demand_is_reassigned():
    clock = Clock()
    l1 = Line("line1", [mech("mech1", 2, 2)], clock)
    l2 = Line("line2", [mech("mech2", 60, 2)], clock)
    l3 = Line("line3", [mech("mech3", 80, 2)], clock)
    site = Site(clock, [l1, l2, l3], site={})
    l1.dispatcher.submit("mechanic", at=(3, 2))
    pump = l1.dispatcher.submit("mechanic", at=(20, 12))
    site.run(seconds=30)
    assert pump.resource == "line2/mech2"
    l2.up = False  # line2 dies: nothing more from it
    site.run(seconds=61)
    assert [s for r, s in steps(l1, pump.id)].count("timeout") == 1
    site.run(seconds=31)  # escalated again; mech2's last word was "busy": line3's mechanic goes
    assert pump.resource == "line3/mech3"
    assert_never_double_assigned([l1, l2, l3])


def test_the_cloud_restarted_mid_dispatch_rebuilds_from_the_stored_events_and_carries_on():
    clock = Clock()
    l1, l2, site = two_lines(clock)
    stored = []  # what the sink stored: every event, by gateway, in order
    real_take = {ln.id: ln.take_events for ln in (l1, l2)}
    for ln in (l1, l2):
        def take(ln=ln):
            evs = real_take[ln.id]()
            stored.extend((ln.id, e) for e in evs)
            return evs
        ln.take_events = take
    l1.dispatcher.submit("mechanic", at=(3, 2))
    pump = l1.dispatcher.submit("mechanic", at=(20, 12))
    site.run(seconds=30)
    assert pump.resource == "line2/mech2"
    # the cloud dies and comes back: a new mirror from the stored events
    site.mirror = FleetMirror()
    site.cloud = FleetDispatcher(site.mirror, SiteMap.from_dict(SITE))
    again = site.mirror.rebuild(sorted(stored, key=lambda ge: ge[1]["t"]))
    site.deliver(again)  # a borrowed sent again is a repeat at line1: nothing changes
    assert pump.resource == "line2/mech2" and pump.attempt == 1
    (loan,) = [d for d in l2.dispatcher.demands.values() if d.loan]
    l2.dispatcher.accept(loan.id, "mech2")
    l2.dispatcher.done(loan.id, "mech2")
    site.run()
    assert pump.id not in l1.dispatcher.demands
    assert not [c for _, c in site.commands if c["cmd"] == "lend"][1:]  # no second loan


def test_two_cloud_dispatchers_racing_for_one_resource_never_double_assign():
    """Two cloud workers, each with its own mirror, lend the same resource for different demands
    in the same instant, while the lender's own dispatcher ticks: hundreds of rounds."""
    rng = random.Random(15)
    clock = Clock()
    lender = Line("line2", [mech("mech2", 60, 2)], clock)
    borrowers = [Line(f"line{i}", [], clock) for i in (1, 3)]
    clouds = [Site(clock, [*borrowers, lender], site={}) for i in range(2)]  # each hears one borrower
    for c in clouds:
        c.cloud.refused_for = 0.0  # a refused demand may ask the same resource again at once
    heard = {(i, line.id): 0 for i in range(2) for line in (*borrowers, lender)}
    for _ in range(300):
        for b in borrowers:
            b.dispatcher.submit("mechanic", at=(rng.uniform(0, 50), 0))
        if rng.random() < 0.3:
            lender.dispatcher.submit("mechanic", at=(61, 2))
        for b in borrowers:
            b.dispatcher.tick(clock())  # escalates at once: no mechanic of its own
        for i, c in enumerate(clouds):  # each cloud hears its borrower's escalations and the lender's events
            for line in (borrowers[i], lender):
                for e in line.events[heard[i, line.id]:]:
                    c.deliver(c.mirror.apply(line.id, e))
                heard[i, line.id] = len(line.events)
        # both decide on what they know now, then their lends and the lender's own tick land in any order
        moves = [lambda c=c, lends=c.cloud.tick(clock()): c.deliver(lends) for c in clouds]
        moves.append(lambda: lender.dispatcher.tick(clock()))
        rng.shuffle(moves)
        for move in moves:
            move()
        held = lender.dispatcher.resources["mech2"].demand
        if held is not None:
            lender.dispatcher.accept(held, "mech2")
            lender.dispatcher.done(held, "mech2")
        for b in borrowers:
            for d in list(b.dispatcher.demands.values()):
                if d.state == "assigned" or d.state == "accepted":
                    b.dispatcher.cancel(d.id)
        clock.t += 1
    loans = [e for e in lender.events if e["type"] == "loan"]
    granted = sum(e["state"] == "granted" for e in loans)
    refused = sum(e["state"] == "refused" for e in loans)
    assert_never_double_assigned([lender])
    assert granted > 20 and refused > 20, (granted, refused)  # the race was run, both ways


def test_a_relay_lost_in_the_clouds_fall_is_sent_again_after_the_rebuild():
    clock = Clock()
    l1, l2, site = two_lines(clock)
    stored = []
    for ln in (l1, l2):
        real = ln.take_events

        def take(ln=ln, real=real):
            evs = real()
            stored.extend((ln.id, e) for e in evs)
            return evs
        ln.take_events = take
    l1.dispatcher.submit("mechanic", at=(3, 2), priority=9)
    pump = l1.dispatcher.submit("mechanic", at=(20, 12))
    site.run(seconds=30)
    (loan,) = [d for d in l2.dispatcher.demands.values() if d.loan]
    l2.dispatcher.accept(loan.id, "mech2")
    l2.dispatcher.done(loan.id, "mech2")
    l2.take_events()  # the sink stores line2's steps; the cloud falls before it relays them
    assert pump.state == "assigned"
    mirror = FleetMirror()
    again = mirror.rebuild(sorted(stored, key=lambda ge: ge[1]["t"]))
    assert [(gw, c["cmd"], c["args"]["state"]) for gw, c in again] == [("line1", "loan_step", "accepted"),
                                                                        ("line1", "loan_step", "done")]
    site.deliver(again)
    assert pump.id not in l1.dispatcher.demands and steps(l1, pump.id)[-1] == ("line2/mech2", "done")
    # once line1's steps are seen, nothing is left to send again
    for e in l1.take_events():
        mirror.apply("line1", e)
    assert not mirror.pending
