"""`headrace demo --fleet`: two lines, two gateways, one fleet dispatcher.

Line 1 has a pump and one mechanic; line 2, sixty metres away, has another mechanic.
An operator keeps line 1's mechanic busy at its workshop (priority 9); then the pump's
vibration rises, a rule asks for a mechanic (priority 8). Line 1 cannot serve it: after
`escalate_after` (3 s) it escalates; the fleet dispatcher (`headrace fleet run`, sink/fleet_service.py, on the
demo's embedded broker) borrows line 2's mechanic, who walks across, fixes the pump and
reports done to its own gateway; line 1 sees its demand done. Both gateways' events are
printed as they happen, each line prefixed by its gateway.

Usage: `headrace demo --fleet [--duration S]` (ends by itself once the pump is fixed,
or after S seconds).
"""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
import socket
import threading
from pathlib import Path

from gateway.config import from_dict
from gateway.runtime.registry import Registry
from gateway.runtime.service import Gateway
from gateway.tools.demo import describe, embedded_broker, free_port
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
            gw.events.listeners.append(lambda e, name=name: _show(name, e, fixed))
            if name == "line1":
                plant.pump = Pump("pump3", keys["pump3"], gw.pipeline, rise_at=4.0, rise=1.0)
                tasks.append(asyncio.create_task(plant.pump.run(), name="sim:pump3"))
            for r in cfg.resources:
                w = Worker(r.node, keys[r.node], gw.pipeline, r, cfg.zones, gw.downlink, plant,
                           work_s=60.0 if name == "line1" else 3.0)  # line 1's mechanic has a long job
                tasks.append(asyncio.create_task(w.run(), name=f"sim:{r.node}"))
        print("headrace fleet demo: line1 (pump3, mech1) and line2 (mech2), one fleet dispatcher", flush=True)
        gws["line1"].dispatcher.submit("mechanic", zone="workshop", priority=9, source="operator")
        try:
            await asyncio.wait_for(fixed.wait(), timeout=duration)
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


def _show(gateway: str, e: dict, fixed: asyncio.Event) -> None:
    if e["type"] == "alarm":
        return
    if e["type"] == "resource":
        print(f"  {gateway}  RESOURCE {e['id']} {'free' if e['free'] else 'busy'}", flush=True)
        return
    print(f"  {gateway} {describe(e).strip()}", flush=True)
    if gateway == "line1" and e["type"] == "dispatch" and e["state"] == "done" and e.get("resource", "").startswith(
            "line2/"):
        fixed.set()
