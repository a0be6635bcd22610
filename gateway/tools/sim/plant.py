"""The demo's plant: a pump whose vibration rises until a mechanic fixes it, a crew (two
mechanics, a forklift) that follows the dispatcher on a small plant map, and an operator
who asks for the forklift over the HTTP API now and then.

Each of them is a simulated node inside the demo process: its readings are SenML packs
in a COSE_Mac0 under its own key, offered to the gateway's pipeline like any transport's
frames (transport `sim`), so the rules, the dispatcher's mirror of the crew and the spool
see them as they would a real node's. The crew reads its `dispatch` and `recall`
commands from the gateway's downlink queue, as a node's link would carry them.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import time
import urllib.request

import cbor2

from gateway.protocol import cose

# The plant map (metres), the rules and the crew: merged into the demo's gateway config.
CONFIG = {
    "aggregate": {"widths": [5.0, 10.0], "lateness": 0.5},
    "zones": {"points": {"workshop": [2, 2], "hall": [20, 2], "pumps": [20, 12], "dock": [38, 2], "store": [38, 12]},
              "edges": [["workshop", "hall"], ["hall", "pumps"], ["hall", "dock"], ["dock", "store"]]},
    "resources": [
        {"id": "mech1", "capabilities": ["mechanic"], "home": [2, 2], "speed": 2.5, "node": "mech1"},
        {"id": "mech2", "capabilities": ["mechanic"], "home": [38, 12], "speed": 2.5, "node": "mech2"},
        {"id": "fork1", "capabilities": ["lift"], "home": [38, 2], "speed": 3.5, "node": "fork1"},
    ],
    "rules": [
        {"name": "pump3-vibration", "series": "pump3/vib", "above": 7.1, "hysteresis": 1.0, "for": 2},
        {"name": "pump3-heating", "kind": "rate", "series": "pump3/temp", "above": 1.0, "hysteresis": 0.5},
        {"name": "pump3-distress", "severity": "critical",
         "all": [{"series": "pump3/vib", "above": 9.5}, {"series": "pump3/temp", "above": 50}]},
        {"name": "pump3-needs-mechanic", "kind": "window", "series": "pump3/vib", "width": 5, "stat": "mean",
         "above": 7.1, "emit": "demand", "need": "mechanic", "priority": 8, "zone": "pumps"},
    ],
    "dispatch": {"tick": 0.25, "accept_timeout": 15},
}
PUMP_AT = (20.0, 12.0)
CREW = {"mech1": "A", "mech2": "B", "fork1": "F"}
LIFT_STOPS = ["store", "workshop", "pumps", "dock"]


def stale_rules(nodes: list[str]) -> list[dict]:
    """An alarm for each firmware node silent for 10 s."""
    return [{"name": f"{n}-silent", "kind": "stale", "node": n, "after": 10, "severity": "critical"} for n in nodes]


class SimNode:
    """A node in this process: readings in, authenticated frames out to the pipeline."""

    def __init__(self, name: str, key: bytes, pipeline):
        self.name, self.key, self.pipeline = name, key, pipeline
        self.seq = int(time.time() * 100)  # above any number an earlier demo run used in this spool
        self.acked = 0

    def send(self, readings: dict) -> None:
        items = list(readings.items())
        recs = [{-2: f"{self.name}/", -3: time.time(), 0: items[0][0], 2: float(items[0][1])}]
        recs += [{0: k, 2: float(v)} for k, v in items[1:]]
        self.seq += 1
        msg = cose.mac0(self.key, self.name.encode(), cbor2.dumps(recs), seq=self.seq)
        self.pipeline.offer(msg, "sim", self._done)

    def _done(self, ack, err) -> None:
        self.acked += ack is not None


class Pump(SimNode):
    """Vibration (mm/s RMS) rises from `rise_at` s until repaired, then calms down for a while."""

    def __init__(self, name, key, pipeline, rise_at: float = 2.0, rise: float = 0.8, calm: float = 25.0):
        super().__init__(name, key, pipeline)
        self.start = time.monotonic()
        self.rise_from = self.start + rise_at
        self.rise, self.calm = rise, calm
        self.vib = 2.0
        self.rng = random.Random(3)

    def repair(self) -> None:
        self.rise_from = time.monotonic() + self.calm

    async def run(self, period: float = 0.5) -> None:
        while True:
            grown = max(0.0, time.monotonic() - self.rise_from) * self.rise
            self.vib = min(11.0, 2.0 + grown) + self.rng.uniform(-0.2, 0.2)
            self.send({"vib": round(self.vib, 3), "temp": round(30 + 2.5 * min(11.0, 2.0 + grown), 3)})
            await asyncio.sleep(period)


class Worker(SimNode):
    """A mechanic or a forklift: takes its dispatches from the downlink, walks the zone graph,
    accepts, works, reports done, walks home."""

    def __init__(self, name, key, pipeline, resource, zones, downlink, plant, work_s: float = 4.0):
        super().__init__(name, key, pipeline)
        self.res, self.zones, self.downlink, self.plant = resource, zones, downlink, plant
        self.at = tuple(resource.home)
        self.route: list = []
        self.job: dict | None = None
        self.working_until = 0.0
        self.work_s = work_s
        self.battery = 90.0 if "lift" in resource.capabilities else None

    def _go(self, target) -> None:
        self.route = self.zones.route(self.at, target) if target != self.at else []

    async def run(self, period: float = 0.25) -> None:
        tick = 0
        while True:
            out: dict = {}
            for cmd in self.downlink.take(self.name):
                if cmd.cmd == "dispatch":
                    self.job = cmd.args
                    self._go((cmd.args["x"], cmd.args["y"]))
                    out["accept"] = cmd.args["demand"]
                elif cmd.cmd == "recall" and self.job and self.job["demand"] == cmd.args["demand"]:
                    self.job = None
                    self._go(tuple(self.res.home))
            self._move(period * self.res.speed)
            now = time.monotonic()
            if self.job and not self.route:
                if not self.working_until:
                    self.working_until = now + self.work_s
                elif now >= self.working_until:
                    out["done"] = self.job["demand"]
                    if "mechanic" in self.res.capabilities and math.dist(self.at, PUMP_AT) < 2:
                        self.plant.pump.repair()
                    self.job, self.working_until = None, 0.0
                    self._go(tuple(self.res.home))
            if self.battery is not None:
                self.battery = max(0.0, self.battery - 0.02)
            tick += 1
            if out or self.route or tick % 4 == 0:
                out.update(x=round(self.at[0], 2), y=round(self.at[1], 2), available=1)
                if self.battery is not None:
                    out["battery"] = round(self.battery, 1)
                self.send(out)
            await asyncio.sleep(period)

    def _move(self, step: float) -> None:
        while self.route and step > 0:
            tx, ty = self.route[0]
            d = math.dist(self.at, (tx, ty))
            if d <= step:
                self.at, step = (tx, ty), step - d
                self.route.pop(0)
            else:
                f = step / d
                self.at = (self.at[0] + (tx - self.at[0]) * f, self.at[1] + (ty - self.at[1]) * f)
                step = 0


class Plant:
    """The pump, the crew and the operator as tasks; `async with Plant(gw, registry)`."""

    def __init__(self, gw, keys: dict[str, bytes], lift_every: float = 20.0):
        self.gw = gw
        p = gw.pipeline
        self.pump = Pump("pump3", keys["pump3"], p)
        self.crew = {r.id: Worker(r.node, keys[r.node], p, r, gw.cfg.zones, gw.downlink, self)
                     for r in gw.cfg.resources}
        self.lift_every = lift_every
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "Plant":
        self._tasks = [asyncio.create_task(self.pump.run(), name="sim:pump3")]
        self._tasks += [asyncio.create_task(w.run(), name=f"sim:{w.name}") for w in self.crew.values()]
        self._tasks.append(asyncio.create_task(self._operator(), name="sim:operator"))
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _operator(self) -> None:
        """Asks for the forklift over the gateway's HTTP API, as `headrace demand lift --zone …` would."""
        await asyncio.sleep(6.0)
        for i in range(1_000_000):
            body = json.dumps({"need": "lift", "zone": LIFT_STOPS[i % len(LIFT_STOPS)], "priority": 4}).encode()
            url = f"http://127.0.0.1:{self.gw.http.port}/demands"
            req = urllib.request.Request(url, data=body, method="POST")
            try:
                await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=5).close())
            except OSError:
                pass
            await asyncio.sleep(self.lift_every)
