"""The dispatcher: open demands to free resources, optimally, every tick.

Configuration (validated by gateway/config/resources.py and gateway/config/sections.py):

    [[resources]]
    id = "mech1"
    capabilities = ["mechanic"]
    home = [2.0, 3.0]          # plant metres, where it is until its node says otherwise
    speed = 1.4                # metres per second
    node = "mech1"             # optional: the node whose readings x, y, battery, available,
                               # accept, decline, done mirror this resource

    [dispatch]
    tick = 0.25                # seconds between assignments (a new demand also wakes it)
    accept_timeout = 60.0      # assigned → accepted within this, or it is reassigned
    done_timeout = 3600.0      # accepted → done within this, or it is reassigned
    min_battery = 20.0         # a resource reporting less battery is not dispatched
    max_open = 10000           # demands waiting at once at most

Usage: demands come from demand rules (`gateway/decisions/rules.py`), `POST /demands` and
`headrace demand`. Every tick the open demands (rows) and the free resources
(columns) make a cost matrix: priority × travel time (distance along the zone
graph or straight, over the resource's speed), `inf` where the resource lacks the
capability or cannot get there, minus priority × a bonus larger than any sum of
travel costs, so that when not every demand can be served the most urgent are.
`core_ext.match.assign` solves it (the most pairs, then the least cost); the
demands left wait for the next tick. A dispatch is spooled as an event and queued
on the downlink to the resource's node (`dispatch` command; `recall` when taken
back).

Lifecycle: open → assigned → accepted → done (or cancelled). `accept`, `decline`
and `done` come from the resource's node (a reading whose value is the demand id)
or the API. Assigned but not accepted within `accept_timeout`, or accepted but not
done within `done_timeout`: a `timeout` event, the demand opens again and that
resource is not offered it again while another capable resource exists.

Durability: with a ledger (gateway/decisions/ledger.py) every open demand and dispatch
in progress is a row of the spool's `decisions` table, written in the commit that
spools the event of its change; at start `restore` takes them back (an assigned or
accepted demand keeps its resource, its attempt and the time its step began, so its
timeouts run on), and a demand rule whose demand is still open does not open another.

Caveats: demand ids are the gateway's start time in milliseconds plus a counter (and
above every restored id), so they do not repeat across restarts (they fit a float
reading exactly). A demand answered over the API (201) is durable a commit later
(`[spool] commit_interval`, milliseconds).
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
from dataclasses import dataclass, field

from core_ext.match import assign

from gateway.config.fleet import FleetSection
from gateway.config.resources import Resource
from gateway.decisions.ledger import restore_rows
from gateway.decisions.zones import ZoneMap

log = logging.getLogger("headrace.dispatch")

OPEN, ASSIGNED, ACCEPTED, DONE, CANCELLED = "open", "assigned", "accepted", "done", "cancelled"


class DemandError(ValueError):
    """A demand request that cannot be taken; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


@dataclass
class Demand:
    id: int
    need: str
    at: tuple
    priority: int
    source: str
    created: float
    zone: str = ""
    state: str = OPEN
    resource: str | None = None
    since: float = 0.0
    attempt: int = 0
    excluded: set = field(default_factory=set)
    escalated: bool = False  # asked of the fleet ([fleet]): an `escalation` event went up
    remote: str = ""         # the gateway whose resource serves it on loan (`resource` is "<gateway>/<id>")
    loan: str = ""           # a loan this gateway granted: "<gateway>/<demand id>" it serves there

    def view(self) -> dict:
        return {"id": self.id, "need": self.need, "at": list(self.at), "zone": self.zone, "priority": self.priority,
                "source": self.source, "created": self.created, "state": self.state, "resource": self.resource,
                "since": self.since, "attempt": self.attempt}

    def record(self) -> dict:
        """The ledger's row: everything `from_record` needs to carry on after a restart."""
        return {**self.view(), "excluded": sorted(self.excluded), "escalated": self.escalated,
                "remote": self.remote, "loan": self.loan}

    @classmethod
    def from_record(cls, r: dict) -> "Demand":
        return cls(int(r["id"]), r["need"], tuple(r["at"]), int(r["priority"]), r["source"], float(r["created"]),
                   r.get("zone", ""), r["state"], r.get("resource"), float(r["since"]), int(r["attempt"]),
                   set(r.get("excluded", ())), bool(r.get("escalated")), r.get("remote", ""), r.get("loan", ""))


@dataclass
class ResourceState:
    spec: Resource
    at: tuple
    battery: float = math.nan
    available: bool = True
    demand: int | None = None
    seen: float = 0.0

    def free(self, min_battery: float) -> bool:
        return self.demand is None and self.available and not self.battery < min_battery

    def view(self) -> dict:
        return {"id": self.spec.id, "capabilities": list(self.spec.capabilities), "at": list(self.at),
                "battery": None if math.isnan(self.battery) else self.battery, "available": self.available,
                "demand": self.demand, "node": self.spec.node}


class Dispatcher:
    """Owns the demands and the resources' state; `run()` ticks until cancelled."""

    def __init__(self, cfg, emit, downlink=None, metrics=None, clock=time.time, ledger=None):
        self.settings, self.zones, self.emit = cfg.dispatch, cfg.zones or ZoneMap(), emit
        self.fleet = getattr(cfg, "fleet", None) or FleetSection()
        self.downlink, self.metrics, self.clock, self.ledger = downlink, metrics, clock, ledger
        self.resources = {r.id: ResourceState(r, r.home) for r in cfg.resources}
        self.capabilities = {c for r in cfg.resources for c in r.capabilities}
        self.demands: dict[int, Demand] = {}     # open, assigned or accepted
        self.closed: collections.deque = collections.deque(maxlen=100)
        self._rule_demand: dict[str, int] = {}   # rule name -> its demand still open
        self._next_id = int(clock() * 1000)
        self._wake = asyncio.Event()
        self._told: dict[str, bool] = {}  # resource -> free, as last told to the fleet

    # -- durability -----------------------------------------------------------------------

    def _changed(self, d: Demand) -> None:
        if self.ledger is not None:
            did = d.id
            self.ledger.mark("demand", str(did), lambda: self.demands[did].record() if did in self.demands else None)

    def restore(self, rows) -> int:
        """Take back the demands the spool's rows recorded [(kind, key, body)]; returns how many.
        A demand whose resource is gone from the config, or already taken, opens again."""
        n = 0
        for _key, r in sorted(restore_rows(rows, "demand"), key=lambda kv: int(kv[0])):
            d = Demand.from_record(r)
            self.demands[d.id] = d
            self._next_id = max(self._next_id, d.id)
            if d.source.startswith("rule:"):
                self._rule_demand[d.source[5:]] = d.id
            if d.resource is not None and not d.remote:
                res = self.resources.get(d.resource)
                if (res is None or res.demand is not None) and d.loan:
                    self.end_loan(d, "removed")
                elif res is None or res.demand is not None:
                    self._reopen(d, "reassigned", recall=False)
                else:
                    res.demand = d.id
            n += 1
        self._count()
        self._wake.set()
        return n

    # -- demands in -----------------------------------------------------------------------

    def submit(self, need: str, at=None, zone: str = "", priority: int = 5, source: str = "api") -> Demand:
        """Open a demand; raise DemandError naming what is wrong."""
        if need not in self.capabilities and not (self.fleet.enabled and need in self.fleet.remote):
            known = ", ".join(sorted(self.capabilities))
            raise DemandError(f"no resource has the capability {need!r} (known: {known})", 422)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
            raise DemandError(f"priority must be a whole number from 1 to 10, got {priority!r}")
        if zone:
            if zone not in self.zones.points:
                raise DemandError(f"unknown zone {zone!r} (known: {', '.join(sorted(self.zones.points)) or 'none'})")
            at = self.zones.points[zone]
        if at is None or len(at) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in at):
            raise DemandError(f"a demand needs a place: at [x, y] in plant metres or a zone, got {at!r}")
        if len(self.demands) >= self.settings.max_open:
            raise DemandError(f"{len(self.demands)} demands are open already ([dispatch] max_open)", 503)
        now = self.clock()
        self._next_id += 1
        d = Demand(self._next_id, need, (float(at[0]), float(at[1])), priority, source, now, zone, since=now)
        self.demands[d.id] = d
        self._changed(d)
        event = {"type": "demand", "id": d.id, "need": need, "priority": priority, "at": list(d.at),
                 "source": source, "t": now}
        if zone:
            event["zone"] = zone
        self.emit(event)
        self._count()
        self._wake.set()
        return d

    def demand_from_rule(self, rule, t: float, value: float) -> None:
        """A demand rule raised: one open demand per rule at a time."""
        if rule.name in self._rule_demand:
            return
        try:
            d = self.submit(rule.need, rule.at, rule.zone, rule.priority, source=f"rule:{rule.name}")
        except DemandError as exc:
            log.warning("rule %s: demand not opened: %s", rule.name, exc)
            return
        self._rule_demand[rule.name] = d.id

    # -- lifecycle ------------------------------------------------------------------------

    def _get(self, did: int, resource: str | None, states: tuple) -> Demand:
        d = self.demands.get(did)
        if d is None:
            raise DemandError(f"no open demand {did}", 404)
        if d.state not in states:
            raise DemandError(f"demand {did} is {d.state}, not {' or '.join(states)}", 409)
        if resource is not None and d.resource != resource:
            raise DemandError(f"demand {did} is assigned to {d.resource!r}, not {resource!r}", 409)
        return d

    def accept(self, did: int, resource: str | None = None) -> Demand:
        d = self._get(did, resource, (ASSIGNED, ACCEPTED))
        if d.state == ASSIGNED:
            d.state, d.since = ACCEPTED, self.clock()
            self._changed(d)
            self._event(d, ACCEPTED)
        return d

    def decline(self, did: int, resource: str | None = None) -> Demand:
        d = self._get(did, resource, (ASSIGNED, ACCEPTED))
        if d.loan:
            self.end_loan(d, "declined")
        else:
            self._reopen(d, "declined", recall=False)
        return d

    def done(self, did: int, resource: str | None = None) -> Demand:
        d = self._get(did, resource, (ASSIGNED, ACCEPTED))
        res = self.resources.get(d.resource)
        if res is not None and not res.spec.node:
            res.at = d.at  # no live position: it is where the work was
        self._close(d, DONE)
        return d

    def cancel(self, did: int) -> Demand:
        d = self._get(did, None, (OPEN, ASSIGNED, ACCEPTED))
        if d.resource is not None:
            self._recall(d)
        self._close(d, CANCELLED)
        return d

    def _close(self, d: Demand, state: str) -> None:
        self.withdraw(d, state)
        self._event(d, state)
        res = self.resources.get(d.resource) if d.resource is not None else None
        if res is not None and res.demand == d.id:
            res.demand = None
            self._tell(res)
        d.state, d.since = state, self.clock()
        del self.demands[d.id]
        self._changed(d)
        self.closed.append(d)
        for name, did in list(self._rule_demand.items()):
            if did == d.id:
                del self._rule_demand[name]
        self._count()
        self._wake.set()

    def _reopen(self, d: Demand, why: str, recall: bool) -> None:
        self._event(d, why)
        if recall:
            self._recall(d)
        d.excluded.add(d.resource)
        if d.resource in self.resources and self.resources[d.resource].demand == d.id:
            self.resources[d.resource].demand = None
            self._tell(self.resources[d.resource])
        d.state, d.resource, d.since, d.remote = OPEN, None, self.clock(), ""
        self._changed(d)
        self._wake.set()

    def update(self, cfg) -> None:
        """New resources, zones and settings (SIGHUP): a resource kept by its id keeps its live
        state and its demand; a removed one gives its demand back to be assigned again."""
        self.settings, self.zones = cfg.dispatch, cfg.zones or ZoneMap()
        self.fleet = getattr(cfg, "fleet", None) or FleetSection()
        specs = {r.id: r for r in cfg.resources}
        for rid, res in list(self.resources.items()):
            if rid not in specs:
                if res.demand is not None and res.demand in self.demands:
                    d = self.demands[res.demand]
                    if d.loan:
                        self.end_loan(d, "removed")
                    else:
                        self._reopen(d, "reassigned", recall=True)
                del self.resources[rid]
        for rid, spec in specs.items():
            if rid in self.resources:
                self.resources[rid].spec = spec
            else:
                self.resources[rid] = ResourceState(spec, spec.home)
        self.capabilities = {c for r in cfg.resources for c in r.capabilities}
        self._wake.set()

    def mirror(self, rid: str, what: str, t: float, value: float) -> None:
        """A reading of a resource's node (via the rule table's mirror rules)."""
        res = self.resources.get(rid)
        if res is None:
            return
        res.seen = self.clock()
        if what == "x":
            res.at = (value, res.at[1])
        elif what == "y":
            res.at = (res.at[0], value)
        elif what == "battery":
            res.battery = value
        elif what == "available":
            res.available = value != 0
            self._tell(res)
            self._wake.set()
        elif what in ("accept", "decline", "done"):
            if not (math.isfinite(value) and value == int(value)):
                log.warning("resource %s: %s = %r is not a demand id", rid, what, value)
                return
            try:
                getattr(self, what)(int(value), rid)
            except DemandError as exc:
                log.warning("resource %s: %s ignored: %s", rid, what, exc)

    # -- assignment -----------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every [dispatch] tick seconds, or as soon as a demand or a resource changes."""
        while True:
            self.tick(self.clock())
            self._wake.clear()
            # not asyncio.wait_for: before Python 3.12 it returns the wake when a cancel arrives
            # with it, and the cancel is lost: the owner awaiting this task would wait forever
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((waiter,), timeout=self.settings.tick)
            finally:
                waiter.cancel()

    def tick(self, now: float) -> int:
        """Time out what waited too long, then assign; returns the dispatches made."""
        s = self.settings
        for d in list(self.demands.values()):
            if (d.state == ASSIGNED and now - d.since > s.accept_timeout) or \
                    (d.state == ACCEPTED and now - d.since > s.done_timeout):
                if d.loan:
                    self.end_loan(d, "timeout")  # a loan is one resource: it ends, the borrower reassigns
                else:
                    self._reopen(d, "timeout", recall=True)
        open_ = sorted((d for d in self.demands.values() if d.state == OPEN), key=lambda d: d.id)
        if self.fleet.enabled:
            self._escalate(open_, now)
            self._tell_fleet(now)
        free = [r for _, r in sorted(self.resources.items()) if r.free(s.min_battery)]
        if not open_ or not free:
            return 0
        rows, cols, eta = self._solve(open_, free)
        for i, j in zip(rows, cols):
            self._assign(open_[i], free[j], eta[i][j], now)
        return len(rows)

    def travel(self, res: ResourceState, d: Demand) -> float:
        """Seconds for a resource to reach a demand; inf when it lacks the capability or a way."""
        if d.need not in res.spec.capabilities:
            return math.inf
        return self.zones.distance(res.at, d.at) / res.spec.speed

    def _solve(self, open_: list, free: list):
        for d in open_:
            capable = {r.spec.id for r in self.resources.values() if d.need in r.spec.capabilities}
            if d.excluded and capable <= d.excluded:
                d.excluded.clear()  # every capable resource failed it once: offer it to all again
                self._changed(d)
        eta = [[math.inf if r.spec.id in d.excluded else self.travel(r, d) for r in free] for d in open_]
        weighted = [[d.priority * x for x in row] for d, row in zip(open_, eta)]
        # a bonus per served demand, by priority, above any sum of travel costs: when not all can be
        # served, the urgent ones are, whatever their travel
        bonus = sum(max((x for x in row if x != math.inf), default=0.0) for row in weighted) + 1.0
        cost = [[x - bonus * d.priority if x != math.inf else math.inf for x in row]
                for d, row in zip(open_, weighted)]
        rows, cols = assign(cost)
        return rows, cols, eta

    def _escalate(self, open_: list, now: float) -> None:
        """Ask the fleet for what waits: at once when no resource here has the need, else after
        [fleet] escalate_after. The gateway keeps trying here meanwhile."""
        for d in open_:
            if d.escalated or d.loan:
                continue
            if d.need not in self.capabilities:
                why = "no-capability"
            elif now - d.since >= self.fleet.after(d.need):
                why = "waited"
            else:
                continue
            d.escalated = True
            self._changed(d)
            self._escalation(d, "escalated", why=why)

    def _tell_fleet(self, now: float) -> None:
        """A `resource` event when a resource turns free or busy (and for each at start), with where
        it is then: what the cloud's fleet mirror knows of the resources it may borrow."""
        for _, res in sorted(self.resources.items()):
            self._tell(res)

    def _tell(self, res: ResourceState | None) -> None:
        """The `resource` event of one resource, if it turned free or busy since last told (with
        [fleet] on): called where its demand changes, so the stream orders it among the steps."""
        if res is None or not self.fleet.enabled:
            return
        rid, free = res.spec.id, res.free(self.settings.min_battery)
        if self._told.get(rid) != free:
            self._told[rid] = free
            event = {"type": "resource", "id": rid, "capabilities": list(res.spec.capabilities),
                     "at": list(res.at), "speed": res.spec.speed, "free": free, "t": self.clock()}
            if res.spec.node:  # the cloud's mirror: the resource is online while this node is
                event["node"] = res.spec.node
            self.emit(event)

    def _escalation(self, d: Demand, state: str, **extra) -> None:
        event = {"type": "escalation", "demand": d.id, "state": state, "need": d.need, "priority": d.priority,
                 "at": list(d.at), "t": self.clock(), **extra}
        if d.zone:
            event["zone"] = d.zone
        self.emit(event)
        if self.metrics is not None:
            self.metrics.inc("headrace_escalations_total", state=state)

    def withdraw(self, d: Demand, why: str) -> None:
        """An escalated demand no longer needs the fleet (served here, done, cancelled)."""
        if d.escalated:
            d.escalated = False
            self._changed(d)
            self._escalation(d, "withdrawn", why=why)

    def end_loan(self, d: Demand, why: str) -> None:
        """A loan this gateway granted ends before it was done: recalled, closed, told in a `loan` event."""
        if d.state in (ASSIGNED, ACCEPTED) and why in ("timeout", "declined"):
            self._event(d, why)
        if d.resource is not None and why != "declined":
            self._recall(d)
        gateway, _, demand = d.loan.partition("/")
        self.emit({"type": "loan", "state": "ended", "why": why, "resource": d.resource, "gateway": gateway,
                   "demand": int(demand), "local": d.id, "t": self.clock()})
        self._close(d, CANCELLED)

    def borrow(self, did: int, gateway: str, resource: str) -> Demand:
        """The fleet found `resource` of `gateway` for an open demand here: it is assigned to it."""
        d = self._get(did, None, (OPEN,))
        d.state, d.resource, d.since, d.remote = ASSIGNED, f"{gateway}/{resource}", self.clock(), gateway
        d.attempt += 1
        self._changed(d)
        self._event(d, ASSIGNED, remote=gateway)
        self.withdraw(d, "borrowed")
        return d

    def lend(self, rid: str, gateway: str, demand: int, need: str, at, priority: int, zone: str = "") -> Demand:
        """Another gateway's demand asks for one of this gateway's resources: granted only if it is
        free now (the caller runs in the event loop, between ticks, so no tick can take it meanwhile)."""
        res = self.resources.get(rid)
        if res is None:
            raise DemandError(f"no resource {rid!r} here", 404)
        if need not in res.spec.capabilities:
            raise DemandError(f"resource {rid!r} has no capability {need!r}", 409)
        if not res.free(self.settings.min_battery):
            why = f"busy with demand {res.demand}" if res.demand is not None else "not available"
            raise DemandError(f"resource {rid!r} is {why}", 409)
        now = self.clock()
        self._next_id += 1
        d = Demand(self._next_id, need, (float(at[0]), float(at[1])), priority, f"loan:{gateway}", now, zone,
                   since=now, loan=f"{gateway}/{demand}")
        self.demands[d.id] = d
        self._changed(d)
        event = {"type": "demand", "id": d.id, "need": need, "priority": priority, "at": list(d.at),
                 "source": d.source, "t": now}
        self.emit(event)
        self._assign(d, res, self.travel(res, d), now)
        self._count()
        return d

    def _assign(self, d: Demand, res: ResourceState, eta: float, now: float) -> None:
        self.withdraw(d, "assigned here")
        d.state, d.resource, d.since = ASSIGNED, res.spec.id, now
        d.attempt += 1
        res.demand = d.id
        self._tell(res)
        self._changed(d)
        self._event(d, ASSIGNED, eta=round(eta, 3))
        if self.downlink is not None and res.spec.node:
            self.downlink.put(res.spec.node, "dispatch", {"demand": d.id, "need": d.need, "x": d.at[0],
                                                          "y": d.at[1], "priority": d.priority}, f"dispatch-{d.id}")

    def _recall(self, d: Demand) -> None:
        res = self.resources.get(d.resource)
        if res is not None and self.downlink is not None and res.spec.node:
            self.downlink.put(res.spec.node, "recall", {"demand": d.id}, f"recall-{d.id}-{d.attempt}")

    def _event(self, d: Demand, state: str, **extra) -> None:
        event = {"type": "dispatch", "demand": d.id, "need": d.need, "resource": d.resource, "state": state,
                 "t": self.clock(), "attempt": d.attempt, **extra}
        self.emit(event)
        if self.metrics is not None:
            self.metrics.inc("headrace_dispatches_total", state=state)

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.set("headrace_demands_open", len(self.demands))

    # -- API ------------------------------------------------------------------------------

    def _refused(self, exc: Exception) -> None:
        log.info("demand API request refused: %s", exc)
        if self.metrics is not None:
            self.metrics.inc("headrace_demand_requests_refused_total")

    def view(self) -> dict:
        return {"demands": [d.view() for d in sorted(self.demands.values(), key=lambda d: d.id)],
                "recent": [d.view() for d in self.closed],
                "resources": [r.view() for _, r in sorted(self.resources.items())]}

    def http(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        """`GET /demands`, `POST /demands`, `POST /demands/<id>/accept|decline|done|cancel`."""
        parts = path.strip("/").split("/")
        try:
            args = json.loads(body) if body.strip() else {}
            if not isinstance(args, dict):
                raise DemandError("the body must be a JSON object")
            if method == "GET" and len(parts) == 1:
                return 200, self.view()
            if method == "POST" and len(parts) == 1:
                extra = set(args) - {"need", "at", "zone", "priority"}
                if extra:
                    raise DemandError(f"unknown field {sorted(extra)[0]!r} (a demand has need, at, zone, priority)")
                d = self.submit(args.get("need"), args.get("at"), args.get("zone") or "", args.get("priority", 5))
                return 201, d.view()
            if method == "POST" and len(parts) == 3 and parts[2] in ("accept", "decline", "done", "cancel"):
                try:
                    did = int(parts[1])
                except ValueError:
                    raise DemandError(f"{parts[1]!r} is not a demand id", 404) from None
                if parts[2] == "cancel":
                    return 200, self.cancel(did).view()
                return 200, getattr(self, parts[2])(did, args.get("resource")).view()
        except DemandError as exc:
            self._refused(exc)
            return exc.status, {"error": str(exc)}
        except ValueError as exc:
            self._refused(exc)
            return 400, {"error": f"not JSON: {exc}"}
        return 404, {"error": "try GET /demands, POST /demands or POST /demands/<id>/accept|decline|done|cancel"}
