"""`headrace demo --fleet`: two lines, two gateways, one fleet dispatcher.

Line 1 has a pump and one mechanic; line 2, sixty metres away, has another mechanic.
An operator keeps line 1's mechanic busy at its workshop (priority 9); then the pump's
vibration rises, a rule asks for a mechanic (priority 8). Line 1 cannot serve it: after
`escalate_after` (3 s) it escalates; the fleet dispatcher (`headrace fleet run`, sink/fleet_service.py, on the
demo's embedded broker) borrows line 2's mechanic, who walks across, fixes the pump and
reports done to its own gateway; line 1 sees its demand done.

The live view (`FleetView`), on a terminal a table redrawn in place (rich): every open
demand of both lines (escalated or not, and the resource serving it, with its gateway:
`line2/mech2` is line 2's mechanic on loan), every resource (free, busy at home, or lent
to another line) and the latest events of both gateways. Otherwise (a pipe, a log file)
each event as a line prefixed by its gateway, and the fleet table whenever it changes.

Usage: `headrace demo --fleet [--duration S]` (ends by itself once the pump is fixed,
or after S seconds).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import tempfile
import socket
import threading
from pathlib import Path

from gateway.config import from_dict
from gateway.runtime.registry import Registry
from gateway.runtime.service import Gateway
from gateway.tools.demo import LiveScreen, describe, embedded_broker, free_port
from gateway.tools.sim.plant import Pump, Worker
from sink.fleet_service import FleetService

FLEET = {"enabled": True, "escalate_after": 3}
LINES = {
    "line1": {"zones": {"points": {"workshop": [2, 2], "pumps": [20, 12]}, "edges": [["workshop", "pumps"]]},
              "resources": [{"id": "mech1", "capabilities": ["mechanic"], "home": [2, 2], "speed": 2.5,
                             "node": "mech1"}],
              "rules": [{"name": "pump3-needs-mechanic", "kind": "window", "series": "pump3/vib", "width": 5,
                         "stat": "mean", "above": 7.1, "emit": "demand", "need": "mechanic", "priority": 8,
                         "zone": "pumps"}],
              "nodes": ("pump3", "mech1")},
    "line2": {"zones": {"points": {"hall": [60, 2], "press": [70, 12]}, "edges": [["hall", "press"]]},
              "resources": [{"id": "mech2", "capabilities": ["mechanic"], "home": [60, 2], "speed": 4.0,
                             "node": "mech2"}],
              "rules": [], "nodes": ("mech2",)},
}
SITE_MAP = """
links = [["line1:pumps", "line2:hall"]]
[gateways.line1]
points = { workshop = [2, 2], pumps = [20, 12] }
edges = [["workshop", "pumps"]]
[gateways.line2]
points = { hall = [60, 2], press = [70, 12] }
edges = [["hall", "press"]]
"""


class _Line:
    pump = None  # the Worker repairs the pump it reaches: line 1's


async def run_fleet_demo(duration: float | None, workdir: str | None) -> int:
    tmp = tempfile.TemporaryDirectory(prefix="headrace-fleet-demo-") if workdir is None else None
    base = Path(workdir or tmp.name)
    port = free_port()
    fixed = asyncio.Event()
    plant = _Line()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(embedded_broker(port))
        (base / "site.toml").write_text(SITE_MAP)
        (base / "fleet.toml").write_text(f'site = "demo"\nsite_map = "{base / "site.toml"}"\ntick = 0.25\n'
                                         f'[mqtt]\nport = {port}\n')
        from sink.fleet_service import load
        fleet = FleetService(load(base / "fleet.toml"))
        ready = threading.Event()
        fleet_task = asyncio.create_task(asyncio.to_thread(_run_fleet, fleet, ready), name="fleet")
        stack.push_async_callback(_stop_fleet, fleet, fleet_task)
        await asyncio.to_thread(ready.wait, 30)
        gws, tasks = {}, []
        view = FleetView(gws, fleet)
        for name, spec in LINES.items():
            work = base / name
            work.mkdir(parents=True, exist_ok=True)
            registry = Registry(path=work / "nodes.toml")
            keys = {n: registry.add(n, transport="sim").key for n in spec["nodes"]}
            registry.save()
            cfg = from_dict({"gateway": {"id": name, "site": "demo", "data_dir": str(work),
                                         "registry": str(registry.path)},
                             "coap": {"port": free_port(socket.SOCK_DGRAM), "bind": "127.0.0.1"},
                             "mqtt": {"port": port, "batch_delay": 0.05}, "http": {"port": free_port()},
                             "aggregate": {"widths": [5.0], "lateness": 0.5}, "fleet": FLEET,
                             "dispatch": {"tick": 0.25, "accept_timeout": 30},
                             **{k: spec[k] for k in ("zones", "resources", "rules")}})
            gw = await stack.enter_async_context(Gateway(cfg, registry))
            gws[name] = gw
            gw.events.listeners.append(lambda e, name=name: view.event(name, e, fixed))
            if name == "line1":
                plant.pump = Pump("pump3", keys["pump3"], gw.pipeline, rise_at=4.0, rise=1.0)
                tasks.append(asyncio.create_task(plant.pump.run(), name="sim:pump3"))
            for r in cfg.resources:
                w = Worker(r.node, keys[r.node], gw.pipeline, r, cfg.zones, gw.downlink, plant,
                           work_s=60.0 if name == "line1" else 3.0)  # line 1's mechanic has a long job
                tasks.append(asyncio.create_task(w.run(), name=f"sim:{r.node}"))
        print("headrace fleet demo: line1 (pump3, mech1) and line2 (mech2), one fleet dispatcher", flush=True)
        gws["line1"].dispatcher.submit("mechanic", zone="workshop", priority=9, source="operator")
        with view:
            try:
                await asyncio.wait_for(_view_loop(view, fixed), timeout=duration)
                print("headrace fleet demo: line1's pump was fixed by line2's mechanic; stopping.", flush=True)
            except asyncio.TimeoutError:
                print("headrace fleet demo: time is up; stopping.", flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if tmp:
        tmp.cleanup()
    return 0


def _run_fleet(fleet: FleetService, ready: threading.Event) -> None:
    fleet.client.on_subscribe = lambda *a: (fleet._subscribed.set(), ready.set())
    fleet.run()


async def _stop_fleet(fleet: FleetService, task) -> None:
    fleet.stop()
    await asyncio.gather(task, return_exceptions=True)


async def _view_loop(view: "FleetView", fixed: asyncio.Event) -> None:
    while not fixed.is_set():
        view.draw()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fixed.wait(), 1.0)
    view.draw()


class FleetView(LiveScreen):
    """The fleet as the demo shows it, from the gateways' own dispatchers (in this process and
    loop): each open demand with its state, whether it was escalated, the resource serving it
    as `<gateway>/<resource>`, and each resource's job (its own line's, or a loan). On a
    terminal a rich table redrawn in place once a second; otherwise the events as lines and
    the table as text whenever it changes."""

    def __init__(self, gws: dict, fleet: FleetService | None = None, console=None):
        super().__init__(console)
        self.gws, self.fleet = gws, fleet
        self.recent: collections.deque = collections.deque(maxlen=10)
        self.escalations: dict[tuple[str, int], str] = {}  # (gateway, demand) -> its last escalation, from events
        self._shown = ""

    def demand_rows(self) -> list[tuple]:
        """(gateway, demand, need, priority, state, fleet, served by, loan) of every open demand; fleet:
        its escalation ("escalated (waited)", "withdrawn (borrowed)"…) or "-"."""
        rows = []
        for name, gw in self.gws.items():
            for d in sorted(gw.dispatcher.demands.values(), key=lambda d: d.id):
                served = d.resource if d.remote else f"{name}/{d.resource}" if d.resource else "-"
                loan = (f"borrowed from {d.remote}" if d.remote else
                        f"lent to {d.loan.split('/', 1)[0]} #…{int(d.loan.split('/', 1)[1]) % 10000:04d}"
                        if d.loan else "")
                fleet = self.escalations.get((name, d.id), "escalated" if d.escalated else "-")
                rows.append((name, f"#…{d.id % 10000:04d}", d.need, str(d.priority), d.state, fleet, served, loan))
        return rows

    def resource_rows(self) -> list[tuple]:
        """(gateway/resource, capabilities, what it does) of every resource."""
        rows = []
        for name, gw in self.gws.items():
            disp = gw.dispatcher
            for rid, r in sorted(disp.resources.items()):
                job = disp.demands.get(r.demand) if r.demand is not None else None
                if job is None:
                    doing = "free"
                elif job.loan:  # "<borrower>/<its demand id>"
                    borrower, demand = job.loan.split("/", 1)
                    doing = f"on loan to {borrower} #…{int(demand) % 10000:04d} {job.state}"
                else:
                    doing = f"{name} #…{job.id % 10000:04d} {job.state}"
                rows.append((f"{name}/{rid}", ",".join(r.spec.capabilities), doing))
        return rows

    def text(self) -> str:
        """The fleet tables as plain text (the non-terminal view)."""
        out = ["fleet: demands open"]
        rows = self.demand_rows()
        out += [f"  {g:<6} {i:<7} {n:<10} p{p:<2} {st:<9} fleet {e:<20} served by {s}{' (' + ln + ')' if ln else ''}"
                for g, i, n, p, st, e, s, ln in rows] or ["  none"]
        out.append("fleet: resources")
        out += [f"  {r:<14} {c:<12} {doing}" for r, c, doing in self.resource_rows()]
        return "\n".join(out)

    def render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        mirror = self.fleet.mirror if self.fleet else None
        head = Text.assemble(("headrace fleet demo", "bold"), f" — {', '.join(self.gws)} — fleet dispatcher: ",
                             (f"{len(mirror.escalated)} escalated, {len(mirror.loans)} loans" if mirror else "off",
                              "bold"), " — Ctrl-C to stop")
        demands = Table(box=None, header_style="bold", pad_edge=False, title="demands open", title_justify="left")
        for col in ("gateway", "demand", "need", "priority", "state", "fleet", "served by", "loan"):
            demands.add_column(col, no_wrap=True)
        for g, i, n, p, st, e, served, loan in self.demand_rows():
            style = "bold magenta" if "/" in served and not served.startswith(g + "/") else ""
            demands.add_row(g, i, n, p, st, Text(e, "yellow" if e.startswith("escalated") else ""),
                            Text(served, style), loan)
        resources = Table(box=None, header_style="bold", pad_edge=False, title="resources", title_justify="left")
        for col in ("resource", "capabilities", "doing"):
            resources.add_column(col, no_wrap=True)
        for r, c, doing in self.resource_rows():
            resources.add_row(r, c, Text(doing, "magenta" if doing.startswith("on loan") else ""))
        parts = [head, Text(""), demands if demands.row_count else Text("demands open: none"), Text(""), resources,
                 Text(""), Text("events (latest):", "bold"), *(Text(line) for line in self.recent)]
        return Group(*parts)

    def draw(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            return
        text = self.text()
        if text != self._shown:
            self._shown = text
            print(text, flush=True)

    def event(self, gateway: str, e: dict, fixed: asyncio.Event | None = None) -> None:
        if e["type"] == "alarm":
            return
        if e["type"] == "escalation":
            self.escalations[(gateway, e["demand"])] = f"{e['state']} ({e.get('why', '')})"
        if e["type"] == "resource":
            line = f"  {gateway}  RESOURCE {e['id']} {'free' if e['free'] else 'busy'}"
        else:
            line = f"  {gateway} {describe(e).strip()}"
        self.recent.append(line.strip() if self.tty else line)
        if not self.tty:
            print(line, flush=True)
        if (fixed is not None and gateway == "line1" and e["type"] == "dispatch" and e["state"] == "done"
                and e.get("resource", "").startswith("line2/")):
            fixed.set()
