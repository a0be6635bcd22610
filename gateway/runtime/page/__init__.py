"""The status page: what the gateway sees, on one page that updates itself.

Usage: the HTTP listener (gateway/runtime/http.py) makes one `StatusPage(gateway)`
and serves `html()` at `/`, `snapshot()` at `/status`, `stream()` at
`/status/stream` (Server-Sent Events) and `samples()` at `/status/history`.
The page (status.html, status.js, no build step) shows:

- nodes: link, last seen (late ones marked), frames a minute, link quality,
  rejects by cause, battery, the latest readings with a sparkline each; a click
  on a node plots its sensors over the last minutes (uPlot, vendored);
- uplink: connected or not, spool depth, age of the oldest unsent record, drops
  by kind and reason;
- rules: the alarms raised, since when;
- dispatch: the plant map (zones, resources where they are, open demands) and
  every dispatch step as it happens;
- gateway: version, uptime, disk free under the spool, configuration warnings.

The stream sends a full `state` on connect, then every `tick` seconds a `state`
with the nodes that changed, and each alarm, demand and dispatch step as an `ev`
at once. A page that loses the stream says so and reconnects.

Per-node extra fields: append a callable to `StatusPage.node_extras`; it takes a
node's name and returns a dict of short label -> value (e.g. an update's
progress), or an empty dict. The fields ride in each row's `extra` and show in
the node table's last column. A callable that raises is logged and skipped.

Caveats: the page's timings (frames a minute, late) use the gateway's clock;
sparklines sample each node's newest frame every `History.period` seconds (see
history.py). A client that cannot keep up (64 messages queued) is dropped and
reconnects to a full state; at most MAX_STREAMS pages stream at once (others get 503
and retry every 2 s).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from gateway.config.advice import config_warnings
from gateway.runtime.page.history import History
from gateway.runtime.service import BATTERY_NAMES
from gateway.runtime.page.render import render_page

log = logging.getLogger("headrace.page")

QUEUE = 64
MAX_STREAMS = 32  # pages open at once; each costs a queue and a row diff a tick
INF = math.inf
ASSETS = {"status.js": "text/javascript; charset=utf-8", "status.css": "text/css; charset=utf-8",
          "uPlot.iife.min.js": "text/javascript; charset=utf-8", "uPlot.min.css": "text/css; charset=utf-8",
          "uPlot.LICENSE": "text/plain; charset=utf-8"}


def version() -> str:
    # the package's own attribute: importlib.metadata (with zipfile, csv and email) costs the
    # gateway half a megabyte of RSS for one string
    import gateway
    return gateway.__version__


class StatusPage:
    def __init__(self, gateway, tick: float = 1.0, history: History | None = None):
        self.gw, self.tick = gateway, tick
        self.history = history or History()
        self.node_extras: list[Callable[[str], dict]] = []
        self._clients: set[asyncio.Queue] = set()
        self._tasks: list[asyncio.Task] = []
        self._sent: dict[str, tuple] = {}  # node -> what its row showed at the last tick
        self._assets: dict[str, bytes] = {}
        self._listening = False

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        events = getattr(self.gw, "events", None)
        if events is not None:
            events.listeners.append(self._on_event)
            self._listening = True
        self._tasks = [asyncio.create_task(self._sample_loop(), name="page-history"),
                       asyncio.create_task(self._tick_loop(), name="page-ticks")]

    async def stop(self) -> None:
        if self._listening:
            self.gw.events.listeners.remove(self._on_event)
            self._listening = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for q in list(self._clients):
            self._close(q)

    async def _sample_loop(self) -> None:
        while True:
            if self.gw.pipeline is not None:
                self.history.sample(self.gw.pipeline, time.time())
            await asyncio.sleep(self.history.period)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            if not self._clients:
                self._sent.clear()  # the next client starts from a full state anyway
                continue
            try:
                state = await self.snapshot(changed_only=True)
            except Exception:  # the page must not take the gateway down; say why once a tick
                log.exception("status page: building the state failed")
                continue
            self._broadcast(_sse("state", state))

    # -- what the page shows --------------------------------------------------------------

    async def snapshot(self, changed_only: bool = False) -> dict:
        """Everything the page shows. `changed_only`: the nodes whose row changed since the last call."""
        gw, now = self.gw, time.time()
        rows = self.node_rows(now, changed_only)
        state = {"now": round(now, 3), "gateway": await self.gateway_view(now), "uplink": await self.uplink_view(now),
                 "nodes": rows, "node_count": len(gw.pipeline.nodes), "full": not changed_only,
                 "alarms": self.alarms(), "dispatch": self.dispatch_view()}
        if not changed_only:
            state["events"] = [_plain(e) for e in list(gw.events.recent)[-40:]] if gw.events else []
        return state

    def node_rows(self, now: float, changed_only: bool = False) -> list[dict]:
        """The node table's rows; with `changed_only`, those whose row changed since the last call
        (decided on counters before a row is built: most nodes send less often than once a tick)."""
        p = self.gw.pipeline
        rows, sent = [], self._sent
        for name, st in sorted(p.nodes.items()):
            per_min = round(st.rate(now) * 60, 1)
            extra = self._extras(name) if self.node_extras else {}
            sig = (st.frames, st.rejected, per_min, st.transport, tuple(extra.items()))
            if changed_only and sent.get(name) == sig:
                continue
            sent[name] = sig
            last = {series.split("/", 1)[-1]: (v if -INF < v < INF else None)  # NaN and infinities: null
                    for series, (_t, v) in sorted(p.node_last(name).items())}
            battery = next((v for k, v in last.items() if k in BATTERY_NAMES), None)
            taken = st.frames + st.rejected
            rows.append({"node": name, "transport": st.transport, "last_seen": round(st.last_seen, 3),
                         "per_min": per_min, "frames": st.frames, "readings": st.readings,
                         "rejected": st.rejected, "causes": dict(st.causes),
                         "quality": round(st.frames / taken, 4) if taken else None, "battery": battery,
                         "last": last, "extra": extra})
        return rows

    def _extras(self, name: str) -> dict:
        out = {}
        for fn in self.node_extras:
            try:
                out.update(fn(name) or {})
            except Exception as exc:
                log.warning("status page: node extra field %r failed for %s: %r", fn, name, exc)
        return out

    async def gateway_view(self, now: float) -> dict:
        gw = self.gw
        cfg = gw.cfg
        try:
            disk = shutil.disk_usage(cfg.gateway.data_dir)
            free, total = disk.free, disk.total
        except OSError:
            free = total = None
        return {"id": cfg.gateway.id, "site": cfg.gateway.site, "version": version(), "pid": os.getpid(),
                "uptime": round(now - gw.metrics.started, 1), "ok": gw.health()["ok"],
                "data_dir": cfg.gateway.data_dir, "disk_free": free, "disk_total": total,
                "warnings": config_warnings(cfg)}

    async def uplink_view(self, now: float) -> dict:
        gw, m = self.gw, self.gw.metrics
        depth, size = await gw.spool.depth()
        oldest = await gw.spool.oldest()
        return {"connected": bool(gw.uplink and gw.uplink.connected),
                "broker": f"{gw.cfg.mqtt.host}:{gw.cfg.mqtt.port}", "depth": depth, "bytes": size,
                "oldest_age": round(now - oldest, 1) if oldest else None,
                "messages": int(m.total("headrace_uplink_messages_total")),
                "dropped": {f"{lab.get('kind')} ({lab.get('reason')})": int(v)
                            for lab, v in m.by_label("headrace_spool_dropped_total")},
                "rejects": _by(m, "headrace_frames_rejected_total", "reason")}

    def alarms(self) -> list[dict]:
        rules = self.gw.rules
        out = []
        for name, e in sorted((rules.active if rules else {}).items()):
            out.append({"rule": name, "severity": e.get("severity", ""), "since": e.get("t"),
                        "series": e.get("series", e.get("node", "")), "value": _num(e.get("value")),
                        "signal": e.get("signal", "value")})
        return out

    def dispatch_view(self) -> dict:
        disp = self.gw.dispatcher
        zones = disp.zones
        view = disp.view()
        return {"points": {k: list(v) for k, v in zones.points.items()},
                "edges": [[a, b] for a, b, _len in zones.edges],
                "resources": view["resources"], "demands": view["demands"], "recent": view["recent"][-10:]}

    def samples(self, nodes: list[str]) -> dict:
        """The sparkline samples of up to 200 nodes (those a page shows)."""
        return self.history.view(nodes[:200])

    async def html(self) -> bytes:
        return render_page(await self.snapshot()).encode()

    def asset(self, name: str) -> tuple[str, bytes] | None:
        if name not in ASSETS:
            return None
        if name not in self._assets:
            base = Path(__file__).parent  # not importlib.resources: the package is a folder, and its
            path = base / name if not name.startswith("uPlot") else base / "vendor" / name  # import costs RSS
            self._assets[name] = path.read_bytes()
        return ASSETS[name], self._assets[name]

    # -- the event stream -----------------------------------------------------------------

    async def stream(self, writer: asyncio.StreamWriter) -> None:
        """Serve one Server-Sent Events client until it goes or the page stops."""
        if len(self._clients) >= MAX_STREAMS:
            log.warning("status page: %d pages open already; refusing another", MAX_STREAMS)
            writer.write(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                         b"too many status pages open at once\n")
            return
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                     b"Connection: close\r\n\r\nretry: 1000\n\n")
        q: asyncio.Queue = asyncio.Queue(QUEUE)
        q.put_nowait(_sse("state", await self.snapshot()))
        self._clients.add(q)
        try:
            while True:
                chunk = await q.get()
                if chunk is None:
                    return
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 10)
        finally:
            self._clients.discard(q)

    def _on_event(self, event: dict) -> None:
        self._broadcast(_sse("ev", _plain(event)))

    def _broadcast(self, chunk: bytes) -> None:
        for q in list(self._clients):
            try:
                q.put_nowait(chunk)
            except asyncio.QueueFull:
                log.warning("status page: a client fell %d messages behind; dropping it (it reconnects)", QUEUE)
                self._close(q)

    def _close(self, q: asyncio.Queue) -> None:
        self._clients.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)


def _sse(kind: str, obj) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(obj, separators=(',', ':'), default=str)}\n\n".encode()


def _num(v):
    if isinstance(v, float):
        return v if -INF < v < INF else None
    return v


def _plain(event: dict) -> dict:
    """An event as JSON takes it: times keep every digit, NaN and infinities become null."""
    return {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in event.items()}


def _by(m, name: str, label: str) -> dict:
    out: dict = {}
    for lab, v in m.by_label(name):
        out[lab.get(label, "")] = out.get(lab.get(label, ""), 0) + int(v)
    return out
