"""Escalation and loans on the gateway ([fleet]): demands the gateway cannot serve go up as
`escalation` events; `lend` is granted only if the resource is free, atomically with the
gateway's own dispatcher; a borrowed resource goes through the usual steps."""
from __future__ import annotations

import asyncio
import json
import random

import pytest

from gateway import config
from gateway.decisions.dispatch import ACCEPTED, ASSIGNED, OPEN, Dispatcher
from gateway.decisions.downlink import CommandError, Downlink
from gateway.decisions.loans import Loans
from gateway.runtime.registry import Registry


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(resources, fleet=None, **dispatch):
    raw = {"resources": resources, "dispatch": dispatch, "fleet": {"enabled": True, **(fleet or {})}}
    cfg = config.from_dict(raw)
    events, clock = [], Clock()
    reg = Registry()
    for r in resources:
        if r.get("node"):
            reg.add(r["node"], bytes(32))
    downlink = Downlink(reg)
    d = Dispatcher(cfg, events.append, downlink, clock=clock)
    loans = Loans(d, events.append, downlink)
    return d, loans, downlink, events, clock


def mech(rid, x, node=""):
    out = {"id": rid, "capabilities": ["mechanic"], "home": [x, 0.0], "speed": 1.0}
    if node:
        out["node"] = node
    return out


def cmd(downlink, cid, name, **args):
    return downlink.submit("_fleet", json.dumps({"id": cid, "cmd": name, "args": args}).encode())


def of(events, kind):
    return [e for e in events if e["type"] == kind]


def test_escalation_at_once_without_the_capability_and_after_waiting_with_it():
    d, _, _, events, clock = make([mech("m1", 0)], fleet={"escalate_after": {"mechanic": 30}, "remote": ["welder"]})
    w = d.submit("welder", at=(5, 0), priority=9)  # nobody here welds: accepted because [fleet] remote lists it
    a = d.submit("mechanic", at=(1, 0))
    b = d.submit("mechanic", at=(2, 0))
    d.tick(clock())
    (esc,) = of(events, "escalation")
    assert (esc["demand"], esc["state"], esc["why"], esc["need"], esc["priority"], esc["at"]) == \
        (w.id, "escalated", "no-capability", "welder", 9, [5.0, 0.0])
    assert a.state == ASSIGNED and b.state == OPEN
    clock.t += 29
    d.tick(clock())
    assert len(of(events, "escalation")) == 1
    clock.t += 1
    d.tick(clock())
    assert of(events, "escalation")[-1] == {"type": "escalation", "demand": b.id, "state": "escalated",
                                            "need": "mechanic", "priority": 5, "at": [2.0, 0.0], "t": 1030.0,
                                            "why": "waited"}
    d.tick(clock())
    assert len(of(events, "escalation")) == 2  # once
    # the gateway kept trying here: m1 is free again, b is served here and withdrawn from the fleet
    d.done(a.id, "m1")
    d.tick(clock())
    assert b.state == ASSIGNED and b.resource == "m1"
    assert of(events, "escalation")[-1]["state"] == "withdrawn" and of(events, "escalation")[-1]["demand"] == b.id
    # a cancelled escalated demand is withdrawn too
    d.cancel(w.id)
    assert [(e["demand"], e["state"]) for e in of(events, "escalation")][-1] == (w.id, "withdrawn")


def test_a_need_not_listed_is_never_escalated_by_time_and_fleet_off_escalates_nothing():
    d, _, _, events, clock = make([mech("m1", 0)], fleet={"escalate_after": {"lift": 5}})
    d.submit("mechanic", at=(1, 0))
    d.submit("mechanic", at=(2, 0))
    for _ in range(3):
        clock.t += 1000
        d.tick(clock())
    assert not of(events, "escalation")
    cfg = config.from_dict({"resources": [mech("m1", 0)]})
    ev = []
    off = Dispatcher(cfg, ev.append, clock=clock)
    off.submit("mechanic", at=(1, 0))
    off.submit("mechanic", at=(1, 0))
    clock.t += 10000
    off.tick(clock())
    assert not of(ev, "escalation")
    with pytest.raises(CommandError, match=r"\[fleet\] enabled"):
        Downlink(Registry()).submit("_fleet", b'{"id": "l1", "cmd": "lend", "args": {}}')


def test_lend_granted_when_free_refused_when_busy_and_the_loan_goes_through_the_steps():
    d, _, downlink, events, clock = make([mech("m1", 0, node="n1")])
    c = cmd(downlink, "l-1", "lend", resource="m1", gateway="gw2", demand=77, need="mechanic", at=[3, 4], priority=8)
    assert (c.id, c.cmd) == ("l-1", "lend")
    granted = of(events, "loan")[-1]
    assert (granted["state"], granted["resource"], granted["gateway"], granted["demand"]) == ("granted", "m1", "gw2", 77)
    local = d.demands[granted["local"]]
    assert (local.state, local.resource, local.source, local.loan) == (ASSIGNED, "m1", "loan:gw2", "gw2/77")
    assert of(events, "dispatch")[-1]["state"] == "assigned" and of(events, "dispatch")[-1]["eta"] == 5.0
    assert [x.cmd for x in downlink.take("n1")] == ["dispatch"]  # the usual command to the resource's node
    # busy now: a second loan and a local demand both wait for it
    cmd(downlink, "l-2", "lend", resource="m1", gateway="gw3", demand=5, need="mechanic", at=[0, 0], priority=9)
    assert of(events, "loan")[-1]["state"] == "refused" and "busy" in of(events, "loan")[-1]["why"]
    mine = d.submit("mechanic", at=(1, 0))
    assert d.tick(clock()) == 0
    d.accept(local.id, "m1")
    d.done(local.id, "m1")
    assert [e["state"] for e in of(events, "dispatch") if e["demand"] == local.id] == ["assigned", "accepted", "done"]
    assert d.tick(clock()) == 1 and mine.resource == "m1"
    # a loan that times out ends (recalled), never reassigned to another resource here
    d.done(mine.id, "m1")
    cmd(downlink, "l-3", "lend", resource="m1", gateway="gw2", demand=78, need="mechanic", at=[3, 4], priority=8)
    loan3 = of(events, "loan")[-1]["local"]
    downlink.take("n1")
    clock.t += 61
    d.tick(clock())
    assert loan3 not in d.demands
    ended = of(events, "loan")[-1]
    assert (ended["state"], ended["why"], ended["demand"], ended["gateway"]) == ("ended", "timeout", 78, "gw2")
    assert [x.cmd for x in downlink.take("n1")] == ["recall"]
    # the borrower withdrew: end_loan recalls it
    cmd(downlink, "l-4", "lend", resource="m1", gateway="gw2", demand=79, need="mechanic", at=[3, 4], priority=8)
    cmd(downlink, "e-4", "end_loan", gateway="gw2", demand=79)
    assert (of(events, "loan")[-1]["state"], of(events, "loan")[-1]["why"]) == ("ended", "withdrawn")
    assert d.resources["m1"].demand is None


def test_lend_refuses_what_the_resource_cannot_do_and_rejects_bad_commands():
    d, _, downlink, events, _ = make([mech("m1", 0)])
    cmd(downlink, "l-1", "lend", resource="m1", gateway="gw2", demand=1, need="lift", at=[0, 0], priority=5)
    assert "no capability 'lift'" in of(events, "loan")[-1]["why"]
    cmd(downlink, "l-2", "lend", resource="zz", gateway="gw2", demand=1, need="mechanic", at=[0, 0], priority=5)
    assert "no resource 'zz'" in of(events, "loan")[-1]["why"]
    for payload, msg in [(b"{", "not JSON"), (b"[]", "JSON object"), (b'{"id": "x", "cmd": "steal"}', "unknown cmd"),
                         (b'{"id": "x", "cmd": "lend", "args": {"resource": "m1", "gateway": "g", "demand": -1}}',
                          "demand must be"),
                         (b'{"id": "x", "cmd": "lend", "args": {"resource": "m1", "gateway": "g", "demand": 1, '
                          b'"need": "mechanic", "at": [1]}}', r"at must be \[x, y\]"),
                         (b'{"id": "x", "cmd": "borrowed", "args": {"node": 1}}', "no argument 'node'")]:
        with pytest.raises(CommandError, match=msg):
            downlink.submit("_fleet", payload)


def test_borrowed_resource_goes_through_the_steps_and_a_dead_lender_times_out():
    d, _, downlink, events, clock = make([mech("m1", 0)], fleet={"escalate_after": 10})
    a = d.submit("mechanic", at=(1, 0))
    b = d.submit("mechanic", at=(2, 0))
    d.tick(clock())
    clock.t += 10
    d.tick(clock())
    assert of(events, "escalation")[-1]["demand"] == b.id
    cmd(downlink, "b-1", "borrowed", demand=b.id, gateway="gw2", resource="m7")
    assert (b.state, b.resource, b.remote) == (ASSIGNED, "gw2/m7", "gw2")
    assert of(events, "dispatch")[-1] == {"type": "dispatch", "demand": b.id, "need": "mechanic", "resource": "gw2/m7",
                                          "state": "assigned", "t": clock(), "attempt": 1, "remote": "gw2"}
    assert of(events, "escalation")[-1]["state"] == "withdrawn"
    cmd(downlink, "s-1", "loan_step", demand=b.id, state="accepted")
    assert b.state == ACCEPTED
    cmd(downlink, "s-2", "loan_step", demand=b.id, state="done")
    assert b.id not in d.demands and of(events, "dispatch")[-1]["state"] == "done"
    cmd(downlink, "s-3", "loan_step", demand=b.id, state="done")  # a repeat: nothing
    # a demand served here meanwhile refuses the loan (the cloud then ends it at the lender)
    cmd(downlink, "b-2", "borrowed", demand=a.id, gateway="gw2", resource="m7")
    assert of(events, "loan")[-1]["state"] == "refused" and a.resource == "m1"
    # the lender dies: nothing comes, the borrowed dispatch times out here and the demand opens again
    d.accept(a.id, "m1")  # m1 stays busy with a (done_timeout is an hour)
    c = d.submit("mechanic", at=(3, 0))
    d.tick(clock())
    cmd(downlink, "b-3", "borrowed", demand=c.id, gateway="gw2", resource="m7")
    clock.t += 61
    d.tick(clock())
    assert (c.state, c.resource, c.remote, a.state) == (OPEN, None, "", ACCEPTED)
    timeouts = [e for e in of(events, "dispatch") if e["demand"] == c.id and e["state"] == "timeout"]
    assert len(timeouts) == 1 and timeouts[0]["resource"] == "gw2/m7"
    clock.t += 10
    d.tick(clock())  # still nobody here: asked of the fleet again
    assert [(e["demand"], e["state"]) for e in of(events, "escalation")][-1] == (c.id, "escalated")


def test_race_local_dispatcher_against_loans_never_double_assigns():
    """The gateway's dispatcher ticking on its own task, a local stream of demands, and the fleet's
    lend commands arriving on another task at random moments, for one resource, many rounds.
    Replaying the event stream, the resource never holds two dispatches at once."""
    rng = random.Random(15)  # its own: seeding the module's generator would reach other tests
    d, _, downlink, events, clock = make([mech("m1", 0, node="n1")], tick=0.01)
    clock.t = 0.0

    async def local():
        for _ in range(300):
            d.submit("mechanic", at=(rng.random() * 10, 0), priority=rng.randint(1, 10))
            await asyncio.sleep(rng.random() * 0.002)

    async def cloud():
        for i in range(300):
            try:
                cmd(downlink, f"l-{i}", "lend", resource="m1", gateway="gw2", demand=i + 1, need="mechanic",
                    at=[1, 1], priority=5)
            except CommandError:
                raise
            await asyncio.sleep(rng.random() * 0.002)

    async def worker():
        # the mechanic finishes whatever it holds, after a random while
        while True:
            await asyncio.sleep(rng.random() * 0.003)
            held = d.resources["m1"].demand
            if held is not None:
                d.accept(held, "m1")
                d.done(held, "m1")

    async def main():
        ticking = asyncio.create_task(d.run())
        working = asyncio.create_task(worker())
        await asyncio.gather(local(), cloud())
        for _ in range(2000):  # at most 20 s: a double assignment leaves a demand nobody finishes
            if not d.demands:
                break
            await asyncio.sleep(0.01)
        ticking.cancel()
        working.cancel()
        await asyncio.gather(ticking, working, return_exceptions=True)

    asyncio.run(main())
    holder, granted, local_assigned = None, 0, 0
    for e in events:
        if e["type"] == "dispatch" and e["resource"] == "m1":
            if e["state"] == "assigned":
                assert holder is None, f"m1 assigned to {e['demand']} while it holds {holder}"
                holder = e["demand"]
                local_assigned += 1
            elif e["state"] in ("done", "cancelled", "timeout", "declined"):
                assert holder == e["demand"]
                holder = None
        elif e["type"] == "loan" and e["state"] == "granted":
            granted += 1
    refused = sum(1 for e in of(events, "loan") if e["state"] == "refused")
    assert granted + refused == 300 and granted > 20 and refused > 20, (granted, refused)
    assert local_assigned - granted >= 250  # every local demand was served, between the loans
