"""`headrace demo`: the gateway with three simulated nodes, on embedded defaults, and a small plant.

Two nodes on serial ptys (an in-process null-modem cable), one over CoAP, all
running the real firmware under MicroPython; an embedded MQTT broker (amqtt)
unless `--mqtt-host` names one. The plant (`sim/plant.py`): a pump whose
vibration rises until rules raise alarms and a demand for a mechanic, two
mechanics and a forklift that the dispatcher sends around the plant map, and an
operator asking for the forklift over the HTTP API. A live view refreshes once a
second: the nodes, the uplink, the map, the alarms and the latest events, as a table
redrawn in place on a terminal (rich), as plain lines otherwise. The gateway's status
page (gateway/runtime/page/) shows the same live in a browser: its address is printed
first.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import from_dict
from gateway.runtime.registry import Registry
from gateway.runtime.service import Gateway
from gateway.tools.sim.nodes import NodeProcess
from gateway.tools.sim.nullmodem import NullModem
from gateway.tools.sim.plant import CONFIG as PLANT, CREW, PUMP_AT, Plant, stale_rules

log = logging.getLogger("headrace.demo")

NODES = [
    ("pump1", "serial", ["temp", "vib"]),
    ("pump2", "serial", ["temp", "pressure"]),
    ("press1", "coap", ["pressure", "temp"]),
]


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def embedded_broker(port: int):
    """An in-process amqtt broker on loopback, for the demo only (tests use mosquitto)."""
    from amqtt.broker import Broker

    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}})
    await broker.start()
    try:
        yield broker
    finally:
        await broker.shutdown()


@contextlib.asynccontextmanager
async def demo_sink(path: Path, host: str, port: int):
    """The cloud end of the demo: a sink worker on the demo's broker into an SQLite file (docs/cloud.md)."""
    from sink.config import from_dict as sink_config
    from sink.service import Sink

    sink = Sink(sink_config({"sink": {"sqlite": str(path), "source": "mqtt"},
                             "mqtt": {"host": host, "port": port, "client_id": f"headrace-demo-sink-{port}"}}))
    task = asyncio.create_task(sink.run(), name="demo-sink")
    try:
        yield sink
    finally:
        await asyncio.sleep(0.5)  # the gateway's last batches
        sink.stop()
        await asyncio.gather(task, return_exceptions=True)


def cloud_summary(sink) -> str:
    if sink.store is None:
        return "the sink did not start"
    n = {t: sink.store.query(f"SELECT count(*) FROM {t}")[0][0]
         for t in ("readings", "windows", "events", "nodes", "dead_letters")}
    return (f"{n['readings']} readings, {n['windows']} windows, {n['events']} events of {n['nodes']} nodes stored "
            f"once each in SQLite ({Path(sink.store.path).name}; {int(sink.metrics.total('headrace_sink_duplicates_total'))} "
            f"repeats dropped, {n['dead_letters']} dead letters)")


async def run_demo(duration: float | None, mqtt_host: str | None, mqtt_port: int, period_ms: int,
                   python_nodes: bool, workdir: str | None) -> int:
    tmp = tempfile.TemporaryDirectory(prefix="headrace-demo-") if workdir is None else None
    base = Path(workdir or tmp.name)
    base.mkdir(parents=True, exist_ok=True)
    registry = Registry(path=base / "nodes.toml")
    cables, node_cfgs, serial_ports = [], [], []
    coap_port = free_port(socket.SOCK_DGRAM)
    for i, (name, transport, sensors) in enumerate(NODES):
        node = registry.add(name, transport=transport)
        cfg = {"node": name, "key": node.key.hex(), "transport": transport, "sensors": sensors,
               "period_ms": period_ms, "batch": 8, "seed": i + 1, "state_file": str(base / f"{name}.seq")}
        if transport == "serial":
            cable = NullModem()
            gw_end, node_end = cable.open()
            cables.append(cable)
            serial_ports.append({"path": gw_end})
            cfg["port"] = node_end
        else:
            cfg.update(host="127.0.0.1", coap_port=coap_port)
        node_cfgs.append(cfg)
    keys = {name: registry.add(name, transport="sim").key for name in ("pump3", "mech1", "mech2", "fork1")}
    registry.save()
    broker_port = mqtt_port if mqtt_host else free_port()
    cfg = from_dict({
        "gateway": {"id": "demo", "site": "bench", "data_dir": str(base), "registry": str(registry.path)},
        "serial": {"ports": serial_ports},
        "coap": {"bind": "127.0.0.1", "port": coap_port},
        "mqtt": {"host": mqtt_host or "127.0.0.1", "port": broker_port, "batch_delay": 0.2},
        "http": {"port": free_port()},
        **PLANT, "rules": PLANT["rules"] + stale_rules([n[0] for n in NODES]),
    })
    interpreter = sys.executable if python_nodes else None
    nodes = [NodeProcess(c, base, interpreter) for c in node_cfgs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        if not mqtt_host:
            await stack.enter_async_context(embedded_broker(broker_port))
        for cable in cables:
            cable.start()
            stack.callback(cable.close)
        cloud = await stack.enter_async_context(demo_sink(base / "cloud.sqlite", mqtt_host or "127.0.0.1", broker_port))
        gw = await stack.enter_async_context(Gateway(cfg, registry))
        for node in nodes:
            await node.start()
            stack.push_async_callback(node.stop)
        plant = await stack.enter_async_context(Plant(gw, keys))
        page = gw.http.url if gw.http else ""
        print(f"headrace demo: status page {page or 'off'} (open it in a browser)", flush=True)
        view = LiveView(gw, nodes, broker=f"{mqtt_host or 'embedded'}:{broker_port}", plant=plant, page=page)
        gw.events.listeners.append(view.event)
        try:
            await asyncio.wait_for(_view_loop(view, stop), timeout=duration)
        except asyncio.TimeoutError:
            pass
        elapsed = time.monotonic() - started
        frames = gw.metrics.total("headrace_frames_accepted_total")
        print(f"\nheadrace demo: {int(frames)} frames ({int(gw.metrics.total('headrace_readings_total'))} readings) "
              f"from {len(gw.node_table())} nodes in {elapsed:.1f} s = {frames / elapsed:.1f} frames/s; "
              f"{int(gw.metrics.total('headrace_uplink_bytes_total'))} bytes uplinked in "
              f"{int(gw.metrics.total('headrace_uplink_messages_total'))} MQTT messages; stopping.", flush=True)
        for row in gw.node_table():
            print(f"  {row['node']:<8} {row['transport']:<7} {row['frames']:>7} frames "
                  f"{row['frames'] / elapsed:8.1f}/s  rejected {row['rejected']}", flush=True)
        print(f"  events: {int(gw.metrics.get('headrace_events_total', type='alarm'))} alarms, "
              f"{int(gw.metrics.get('headrace_events_total', type='demand'))} demands, "
              f"{int(gw.metrics.get('headrace_events_total', type='dispatch'))} dispatch steps", flush=True)
    print(f"  cloud: {cloud_summary(cloud)}", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    if tmp:
        tmp.cleanup()
    return 0


async def _view_loop(view: "LiveView", stop: asyncio.Event) -> None:
    with view:
        while not stop.is_set():
            view.draw()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


class LiveScreen:
    """A screen redrawn in place (rich's Live) while the view is entered, on a terminal only;
    `tty` false (a pipe, a log file) leaves the view to print plain lines."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self.tty = self.console.is_terminal
        self._live = None

    def __enter__(self):
        if self.tty:
            from rich.live import Live

            # no refresh thread: the view hands over a finished renderable when it draws
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class LiveView(LiveScreen):
    """On a terminal, a table redrawn in place (rich): one row per node with its latest
    readings and rates, the uplink, the plant map, the alarms raised and the latest events.
    Otherwise (a pipe, a log file) plain lines: a status line every 5 s and each event as
    it happens. `page` is the status page's address, shown in both."""

    def __init__(self, gw: Gateway, nodes: list[NodeProcess], broker: str, plant: Plant | None = None,
                 page: str = "", console=None):
        super().__init__(console)
        self.gw, self.nodes, self.broker, self.plant, self.page = gw, nodes, broker, plant, page
        self._last = (time.monotonic(), 0.0)
        self._ticks = 0

    def draw(self) -> None:
        m = self.gw.metrics
        now = time.monotonic()
        frames = m.total("headrace_frames_accepted_total")
        t0, f0 = self._last
        rate = (frames - f0) / (now - t0) if now > t0 else 0.0
        self._last = (now, frames)
        self._ticks += 1
        if not self.tty:  # events are printed as they happen (event())
            if self._ticks % 5 == 1:
                print(f"frames {int(frames)} ({rate:.1f}/s), rejected {int(m.total('headrace_frames_rejected_total'))}, "
                      f"uplink {self.uplink_state()} {int(m.total('headrace_uplink_messages_total'))} msgs "
                      f"{int(m.total('headrace_uplink_bytes_total'))} B", flush=True)
            return
        if self._live is not None:
            self._live.update(self.render(rate), refresh=True)

    def uplink_state(self) -> str:
        return "connected" if self.gw.uplink.connected else "DOWN"

    def render(self, rate: float = 0.0):
        """The whole view as one rich renderable."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        m = self.gw.metrics
        head = Text.assemble(("headrace demo", "bold"), " — gateway 'demo' — status page ",
                             (self.page or "off", "bold cyan underline"), " — Ctrl-C to stop")
        up = self.gw.uplink.connected
        uplink = Text.assemble(
            "uplink  MQTT ", self.broker, " ", ("connected" if up else "DOWN", "green" if up else "bold red"),
            f": {int(m.total('headrace_uplink_messages_total'))} messages, "
            f"{int(m.total('headrace_uplink_bytes_total'))} bytes;  frames in "
            f"{int(m.total('headrace_frames_accepted_total'))} ({rate:.1f}/s), rejected "
            f"{int(m.total('headrace_frames_rejected_total'))}")
        table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
        for name, just in (("node", "left"), ("link", "left"), ("frames", "right"), ("acked", "right"),
                           ("frames/s (1 min)", "right"), ("last seen", "right"), ("last readings", "left")):
            table.add_column(name, justify=just, no_wrap=name != "last readings")
        rows = {n["node"]: n for n in self.gw.node_table()}
        wall = time.time()
        for node in self.nodes:
            row = rows.get(node.name, {})
            last = row.get("last", {})
            shown = "  ".join(f"{k.split('/', 1)[-1]}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in sorted(last.items()))
            seen = f"{wall - row['last_seen']:.0f} s ago" if row.get("last_seen") else "never"
            if node.proc and node.proc.returncode not in (None, 0):
                shown = Text(f"exited with {node.proc.returncode}: "
                             f"{node.stderr.decode(errors='replace').strip().splitlines()[-1:]}", "red")
            table.add_row(node.name, node.config["transport"], str(row.get("frames", 0)), str(node.acked),
                          f"{row.get('rate', 0.0):.2f}", seen, shown)
        parts = [head, Text(""), table, Text(""), uplink]
        alarms = Table(box=None, header_style="bold", pad_edge=False, title="alarms raised", title_justify="left")
        for name in ("rule", "severity", "series", "value", "since"):
            alarms.add_column(name, no_wrap=True)
        for name, e in sorted(self.gw.rules.active.items()):
            value = e.get("value")
            alarms.add_row(name, Text(e["severity"], "bold red" if e["severity"] == "critical" else "yellow"),
                           e.get("series", e.get("node", "")), f"{value:.2f}" if isinstance(value, float) else str(value),
                           time.strftime("%H:%M:%S", time.localtime(e["t"])))
        parts += [Text(""), alarms if self.gw.rules.active else Text("alarms raised: none")]
        events = [Text(describe(e), "red" if e["type"] == "alarm" else "blue" if e["type"] == "dispatch" else "")
                  for e in list(self.gw.events.recent)[-8:]]
        parts += [Text(""), Text("alarms, demands and dispatch steps (latest):", "bold"), *(events or [Text("  none yet")])]
        if self.plant is not None:  # last: a short terminal crops it first
            parts += [Text(""), Text("\n".join(self.plant_lines()))]
        return Group(*parts)

    def plant_lines(self) -> list[str]:
        """The plant map (north up, 1 m a column, 2 m a row), the alarms raised, the latest events."""
        zones, disp = self.gw.cfg.zones, self.gw.dispatcher
        grid = [[" "] * 41 for _ in range(8)]

        def put(p, ch):
            col, row = round(p[0]), round((14 - p[1]) / 2)
            if 0 <= col < 41 and 0 <= row < 8:
                grid[row][col] = ch
        for a, b, _len in zones.edges:
            (ax, ay), (bx, by) = zones.points[a], zones.points[b]
            for k in range(41):
                put((ax + (bx - ax) * k / 40, ay + (by - ay) * k / 40), "·")
        for p in zones.points.values():
            put(p, "+")
        put(PUMP_AT, "P")
        for d in disp.demands.values():
            put(d.at, "!")
        for rid, ch in CREW.items():
            put(disp.resources[rid].at, ch)
        side = [f"P pump3  vib {self.plant.pump.vib:5.2f} mm/s"]
        for rid, ch in CREW.items():
            r = disp.resources[rid]
            job = disp.demands.get(r.demand)
            side.append(f"{ch} {rid:<6} {'→ #…%04d %s' % (job.id % 10000, job.state) if job else 'free'}")
        side.append(f"! demands open: {len(disp.demands)}")
        out = ["plant map (metres; zones +, corridors ·)"]
        out += ["|" + "".join(row) + "|  " + (side[i] if i < len(side) else "") for i, row in enumerate(grid)]
        out += [" " * 45 + line for line in side[8:]]
        out.append("zones: " + ", ".join(f"{n} ({x:g}, {y:g})" for n, (x, y) in zones.points.items()))
        return out

    def event(self, event: dict) -> None:
        """Print alarms and dispatches as they happen when the output is not a terminal."""
        if not self.tty:
            print(describe(event), flush=True)


def describe(e: dict) -> str:
    """One line per event, for people."""
    at = time.strftime("%H:%M:%S", time.localtime(e["t"]))
    if e["type"] == "alarm":
        signal = e.get("signal", "value")
        rate = signal == "rate"
        what = (f"{e['value']:.1f} s silent" if signal == "silence" else
                f"{e['series']} {'rate ' if rate else ''}= {e['value']:.2f}{'/s' if rate else ''}" if "series" in e
                else f"{e['value']:.2f}")
        return f"  {at} ALARM    {e['state']:<8} {e['rule']} ({what}, {e['severity']})"
    if e["type"] == "demand":
        where = e.get("zone") or "(%g, %g)" % tuple(e["at"])
        return (f"  {at} DEMAND   #…{e['id'] % 10000:04d} {e['need']} at {where}, priority {e['priority']} "
                f"({e['source']})")
    if e["type"] == "escalation":  # [fleet]: asked of the other gateways, or no longer
        return f"  {at} FLEET    #…{e['demand'] % 10000:04d} {e['need']} {e['state']} ({e.get('why', '')})"
    if e["type"] == "loan":
        return f"  {at} LOAN     {e['resource']} {e['state']} for {e['gateway']} #…{e['demand'] % 10000:04d}"
    eta = f", eta {e['eta']:.1f} s" if "eta" in e else ""
    return f"  {at} DISPATCH #…{e['demand'] % 10000:04d} {e['need']} → {e['resource']}: {e['state']}{eta}"
