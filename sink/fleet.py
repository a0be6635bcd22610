"""The fleet: every gateway's resources and escalated demands, and the cloud dispatcher that
lends one gateway's free resource to another gateway's demand (docs/matching.md, "Across gateways").

`FleetMirror` is kept from the gateways' events (the `events` topic, as the sink
stores them): `demand` and `dispatch` (every open demand of every gateway, its step
and resource), `resource` (capabilities, place, free or busy, owning gateway),
`escalation` (a demand its gateway asks the fleet for, or withdraws), `loan` and
`dispatch` (how each loan goes). Applying an event is idempotent (events are
delivered at least once) and returns the fleet commands it calls for, to publish on
`headrace/v1/<site>/<gateway>/cmd/_fleet`:

| event | command |
|---|---|
| `loan` `granted` at the lender | `borrowed` to the borrower |
| `loan` `refused` at the borrower (served meanwhile) | `end_loan` to the lender |
| `loan` `ended` at the lender; its `dispatch` `accepted`, `done` | `loan_step` to the borrower |
| `escalation` `withdrawn` (not `borrowed`) while a loan is asked or granted | `end_loan` to the lender |
| `dispatch` `timeout` / `cancelled` of a borrowed resource at the borrower | `end_loan` to the lender |

`FleetDispatcher.tick(now)` assigns the escalated demands not yet served to free
resources of *other* gateways with `core_ext.match.assign`, the cost as on a gateway:
priority × travel time along the site map (`sink.fleet_map.SiteMap`), minus a bonus
per served demand by priority (the urgent first when not all can be served), `inf`
where the resource lacks the need, is the demand's own gateway's, or refused it
lately. It returns `lend` commands; the resource and the demand are held until the
lender answers (`loan` event) or `ask_timeout` passes.

Restart: `FleetMirror.rebuild(rows)` replays the stored events (the sink's `events`
table: `SELECT gateway, body FROM events WHERE type IN (...) ORDER BY t`) and returns
the relayed commands no event shows taken yet (a `loan_step` done whose `done` the
borrower never reported, say): the ones the cloud may have lost in its fall. Gateways
take each fleet command idempotently (a repeat changes nothing), so sending one twice
is harmless.

Caveats: positions are the site's plant metres, one origin for every gateway; a
resource's place is the one its gateway told when it last turned free or busy.
"""
from __future__ import annotations

import collections
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from core_ext.match import assign
from sink.decode import event_key
from sink.fleet_map import SiteMap

FLEET_EVENTS = ("resource", "demand", "escalation", "loan", "dispatch")
SEEN = 200_000  # event keys remembered to drop repeats (a redelivery comes within minutes, not days)


@dataclass
class FleetResource:
    gateway: str
    id: str
    capabilities: tuple
    at: tuple
    speed: float
    free: bool
    t: float


@dataclass
class Escalated:
    gateway: str
    demand: int
    need: str
    at: tuple
    priority: int
    t: float
    asked: float | None = None               # when a lend was sent for it (None: waiting)
    refused: dict = field(default_factory=dict)  # (gateway, resource) -> when it refused


@dataclass
class Loan:
    id: str
    borrower: str
    demand: int
    lender: str
    resource: str
    state: str = "asked"   # asked → granted → borrowed (→ gone when done, ended or refused)
    local: int | None = None
    t: float = 0.0


def command(to: str, cid: str, cmd: str, **args) -> tuple[str, dict]:
    """(the gateway it goes to, the fleet command), for its cmd/_fleet topic."""
    return to, {"id": cid, "cmd": cmd, "args": args}


class FleetMirror:
    """What the cloud knows of every gateway's resources, escalations and loans."""

    def __init__(self):
        self.resources: dict[tuple[str, str], FleetResource] = {}
        self.escalated: dict[tuple[str, int], Escalated] = {}
        self.loans: dict[tuple[str, int], Loan] = {}     # (borrower, demand) -> loan
        self.pending: dict[tuple, tuple[str, dict]] = {}  # relayed commands not yet seen taken
        self.demands: dict[tuple[str, int], dict] = {}  # every gateway's open demands: need, at, priority, state…
        self._seen: collections.OrderedDict = collections.OrderedDict()  # event keys lately applied
        self._ids = itertools.count(1)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def _loan_by_local(self, lender: str, local: int) -> Loan | None:
        for loan in self.loans.values():
            if loan.lender == lender and loan.local == local:
                return loan
        return None

    def apply(self, gateway: str, e: dict) -> list[tuple[str, dict]]:
        """One event of `gateway`; returns the fleet commands it calls for [(gateway, command)]."""
        key = (gateway, e.get("type"), event_key(e))
        if key in self._seen:
            return []
        self._seen[key] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        self._taken(gateway, e)
        kind = e.get("type")
        if kind == "resource":
            self.resources[(gateway, e["id"])] = FleetResource(
                gateway, e["id"], tuple(e["capabilities"]), tuple(e["at"]), float(e["speed"]), bool(e["free"]), e["t"])
            return []
        if kind == "demand":
            self.demands[(gateway, int(e["id"]))] = {
                "need": e["need"], "at": tuple(e["at"]), "priority": e["priority"], "source": e.get("source"),
                "state": "open", "resource": None, "t": e["t"]}
            return []
        if kind == "escalation":
            return self._escalation(gateway, e)
        if kind == "loan":
            return self._loan(gateway, e)
        if kind == "dispatch":
            return self._dispatch(gateway, e)
        return []

    def _escalation(self, gateway: str, e: dict) -> list:
        k = (gateway, int(e["demand"]))
        if e["state"] == "escalated":
            if k not in self.escalated and k not in self.loans:
                self.escalated[k] = Escalated(gateway, k[1], e["need"], tuple(e["at"]), int(e["priority"]), e["t"])
            return []
        self.escalated.pop(k, None)  # withdrawn
        loan = self.loans.get(k)
        if loan is not None and e.get("why") != "borrowed" and loan.state in ("asked", "granted"):
            del self.loans[k]
            return self._relay(("end", loan.lender, gateway, k[1]), loan.lender, "end", "end_loan", gateway=gateway,
                               demand=k[1])
        return []

    def _loan(self, gateway: str, e: dict) -> list:
        # at the lender `gateway` names the borrower and `demand` is the borrower's; at the
        # borrower `gateway` names the lender and `demand` is its own
        state, demand = e["state"], int(e["demand"])
        if state in ("granted", "ended"):
            return self._at_lender(gateway, e)
        if state == "borrowed":
            return self._at_borrower(gateway, e)
        theirs = self.loans.get((e["gateway"], demand))
        if (theirs is not None and theirs.lender == gateway) or (e["gateway"], demand) in self.escalated:
            return self._at_lender(gateway, e)
        return self._at_borrower(gateway, e)

    def _at_lender(self, lender: str, e: dict) -> list:
        k = (e["gateway"], int(e["demand"]))
        loan = self.loans.get(k)
        res = self.resources.get((lender, e["resource"]))
        if e["state"] == "granted":
            if res is not None:
                res.free = False
            if loan is None or loan.lender != lender:
                # granted after the cloud gave up on it (restart, ask timeout): the loan stands, use it
                loan = self.loans[k] = Loan(e.get("id", ""), k[0], k[1], lender, e["resource"])
            loan.state, loan.local = "granted", int(e["local"])
            self.escalated.pop(k, None)
            return self._relay(("borrowed", k[0], k[1]), k[0], "borrow", "borrowed", demand=k[1], gateway=lender,
                               resource=e["resource"])
        if e["state"] == "refused":
            esc = self.escalated.get(k)
            if esc is not None:
                esc.asked = None
                esc.refused[(lender, e["resource"])] = e["t"]
            if loan is not None and loan.lender == lender and loan.state == "asked":
                del self.loans[k]
            return []
        # ended at the lender (timeout, declined, withdrawn, removed)
        if loan is not None and loan.lender == lender:
            del self.loans[k]
            if e.get("why") != "withdrawn":
                return self._relay(("step", k[0], k[1], "ended"), k[0], "step", "loan_step", demand=k[1],
                                   state="ended")
        return []

    def _at_borrower(self, borrower: str, e: dict) -> list:
        k = (borrower, int(e["demand"]))
        loan = self.loans.get(k)
        if loan is None:
            return []
        if e["state"] == "borrowed":
            loan.state = "borrowed"
            return []
        if e["state"] == "refused":  # served meanwhile: the lender takes its resource back
            del self.loans[k]
            return self._relay(("end", loan.lender, borrower, k[1]), loan.lender, "end", "end_loan", gateway=borrower,
                               demand=k[1])
        return []

    def _dispatch(self, gateway: str, e: dict) -> list:
        state = e.get("state")
        mirrored = self.demands.get((gateway, int(e["demand"])))
        if state in ("done", "cancelled"):
            self.demands.pop((gateway, int(e["demand"])), None)
        elif mirrored is not None:
            opened = state in ("timeout", "declined", "reassigned")
            mirrored["state"], mirrored["resource"] = ("open", None) if opened else (state, e.get("resource"))
        if e.get("remote") or "/" in str(e.get("resource") or ""):
            k = (gateway, int(e["demand"]))
            loan = self.loans.get(k)
            if loan is not None and state in ("timeout", "cancelled", "declined"):
                del self.loans[k]
                return self._relay(("end", loan.lender, gateway, k[1]), loan.lender, "end", "end_loan",
                                   gateway=gateway, demand=k[1])
            if loan is not None and state == "done":
                del self.loans[k]
            return []
        loan = self._loan_by_local(gateway, int(e["demand"]))
        if loan is not None and state in ("accepted", "done"):
            if state == "done":
                del self.loans[(loan.borrower, loan.demand)]
            return self._relay(("step", loan.borrower, loan.demand, state), loan.borrower, "step", "loan_step",
                               demand=loan.demand, state=state)
        return []

    def _relay(self, key: tuple, to: str, prefix: str, cmd: str, **args) -> list[tuple[str, dict]]:
        """A relayed command, remembered until the event that shows it taken arrives (`_taken`)."""
        out = command(to, self.next_id(prefix), cmd, **args)
        self.pending[key] = out
        return [out]

    def _taken(self, gateway: str, e: dict) -> None:
        """The events that show a relayed command taken: it need not be sent again after a restart."""
        kind, state = e.get("type"), e.get("state")
        if kind == "loan" and state in ("borrowed", "refused") and "local" not in e:
            self.pending.pop(("borrowed", gateway, int(e["demand"])), None)
        elif kind == "loan" and state == "ended":
            self.pending.pop(("end", gateway, e["gateway"], int(e["demand"])), None)
        elif kind == "dispatch" and "/" in str(e.get("resource") or ""):
            d = int(e["demand"])
            taken = {"accepted": ("accepted",), "done": ("accepted", "done")}.get(state, ("accepted", "done", "ended"))
            for s in taken:
                self.pending.pop(("step", gateway, d, s), None)

    def rebuild(self, rows) -> list[tuple[str, dict]]:
        """Replay stored events [(gateway, event)] in time order; returns the relayed commands not yet
        seen taken (the gateways take each idempotently: one sent twice changes nothing)."""
        for gateway, e in rows:
            self.apply(gateway, e)
        return list(self.pending.values())


class FleetDispatcher:
    """Assigns escalated demands to other gateways' free resources; `tick(now)` -> lend commands."""

    def __init__(self, mirror: FleetMirror, site: SiteMap | None = None, ask_timeout: float = 10.0,
                 refused_for: float = 60.0):
        self.mirror, self.site = mirror, site or SiteMap(zones=None)
        self.ask_timeout, self.refused_for = ask_timeout, refused_for
        self.last_tick = 0.0  # seconds the last tick took (cost matrix and assignment)

    def tick(self, now: float) -> list[tuple[str, dict]]:
        m = self.mirror
        for k, loan in list(m.loans.items()):  # a lender that never answered: ask elsewhere
            if loan.state == "asked" and now - loan.t > self.ask_timeout:
                del m.loans[k]
                if k in m.escalated:
                    m.escalated[k].asked = None
        asked = {(loan.lender, loan.resource) for loan in m.loans.values() if loan.state == "asked"}
        demands = sorted((e for e in m.escalated.values() if e.asked is None), key=lambda e: (e.gateway, e.demand))
        free = [r for _, r in sorted(m.resources.items()) if r.free and (r.gateway, r.id) not in asked]
        if not demands or not free:
            return []
        cost = self.cost(demands, free, now)
        rows, cols = assign(cost)
        out = []
        for i, j in zip(rows, cols):
            d, r = demands[i], free[j]
            lid = m.next_id("lend")
            m.loans[(d.gateway, d.demand)] = Loan(lid, d.gateway, d.demand, r.gateway, r.id, t=now)
            d.asked = now
            out.append(command(r.gateway, lid, "lend", resource=r.id, gateway=d.gateway, demand=d.demand,
                               need=d.need, at=list(d.at), priority=d.priority))
        return out

    def cost(self, demands: list, free: list, now: float) -> np.ndarray:
        """priority × travel seconds − bonus × priority; inf where the pair cannot be."""
        travel = self.travel_seconds(demands, free)
        # forbidden pairs, by whole rows and columns (a Python loop over 5 M pairs would take seconds)
        gw_index: dict = {}
        res_gw = np.array([gw_index.setdefault(r.gateway, len(gw_index)) for r in free])
        dem_gw = np.array([gw_index.get(d.gateway, -1) for d in demands])
        forbidden = dem_gw[:, None] == res_gw[None, :]
        able: dict = {}
        for need in {d.need for d in demands}:
            able[need] = np.array([need in r.capabilities for r in free])
        forbidden |= ~np.array([able[d.need] for d in demands])
        column = {(r.gateway, r.id): j for j, r in enumerate(free)}
        for i, d in enumerate(demands):
            for pair, when in d.refused.items():
                if now - when < self.refused_for and pair in column:
                    forbidden[i, column[pair]] = True
        travel[forbidden] = math.inf
        prio = np.array([d.priority for d in demands], dtype=float)[:, None]
        cost = travel
        cost *= prio  # in place: 5 M pairs, no temporaries beyond the one below; inf stays inf
        row_max = np.where(np.isfinite(cost), cost, -np.inf).max(axis=1)
        bonus = float(np.maximum(row_max, 0.0).sum()) + 1.0
        cost -= bonus * prio  # inf - x is inf: forbidden pairs stay forbidden
        return cost

    def travel_seconds(self, demands: list, free: list) -> np.ndarray:
        """Seconds from each free resource to each demand along the site map (vectorised)."""
        dem = np.array([d.at for d in demands], dtype=float)
        res = np.array([r.at for r in free], dtype=float)
        speed = np.array([r.speed for r in free], dtype=float)
        zones = self.site.zones
        if zones is None or not zones.routed:
            out = np.hypot(dem[:, None, 0] - res[None, :, 0], dem[:, None, 1] - res[None, :, 1])
            out /= speed[None, :]
            return out
        names = sorted(zones.points)
        pts = np.array([zones.points[n] for n in names], dtype=float)
        index = {n: i for i, n in enumerate(names)}
        graph = np.full((len(names), len(names)), np.inf)
        for (a, b), (length, _hops) in zones._paths.items():
            graph[index[a], index[b]] = length

        def nearest(xy):  # each end's nearest zone point, ties to the first name (as ZoneMap.nearest)
            dist = np.hypot(xy[:, None, 0] - pts[None, :, 0], xy[:, None, 1] - pts[None, :, 1])
            k = dist.argmin(axis=1)
            return k, dist[np.arange(len(xy)), k]
        kd, dd = nearest(dem)
        kr, dr = nearest(res)
        # resource -> its point -> graph -> the demand's point -> demand, by rows of the small
        # point-to-point table (a few hundred points), gathered per column
        out = np.take(graph[:, kd].T, kr, axis=1)  # out[i, j] = graph[kr[j], kd[i]]
        out += dd[:, None]
        out += dr[None, :]
        i, j = np.nonzero(kd[:, None] == kr[None, :])  # both ends nearest one point: straight
        out[i, j] = np.hypot(dem[i, 0] - res[j, 0], dem[i, 1] - res[j, 1])
        out /= speed[None, :]
        return out
