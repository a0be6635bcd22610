"""The gateway process: owns every task, talks to systemd, handles signals.

systemd: with `Type=notify` the unit gets READY=1 once the spool is open and
the transports listen, STATUS= lines, WATCHDOG=1 at half of WATCHDOG_USEC
(only while the event loop turns: a hung loop is restarted by systemd), and
STOPPING=1 on SIGTERM, after which queued frames are committed and a final
retained state is published.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import time

from gateway import config as config_module
from gateway.config import Config
from gateway.decisions.dispatch import Dispatcher
from gateway.decisions.downlink import Downlink
from gateway.decisions.ledger import Ledger
from gateway.decisions.loans import Loans
from gateway.errors import ConfigError
from gateway.decisions.events import EventSink
from gateway.runtime.ingest import Ingest
from gateway.runtime.metrics import Metrics
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.registry import Registry
from gateway.decisions.rules import RuleEngine
from gateway.runtime.spool import Spool
from gateway.runtime.transports.coap import CoapServer
from gateway.runtime.uplink.mqtt import MqttUplink
from gateway.runtime.http import StatusServer

log = logging.getLogger("headrace.service")


def sd_notify(state: str) -> bool:
    """Send a state to systemd's NOTIFY_SOCKET (sd_notify(3)); False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), path)
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False
    return True


# The cyclic garbage collector's first threshold (CPython's default is 700): a young collection
# after this many container objects made (and not yet freed) since the last one. See collect_less().
GC_YOUNG = 5_000


def collect_less() -> None:
    """Once the gateway is up: what start-up made (modules, configuration, the registry: most of
    the objects the collector tracks) is frozen out of the collector's reach (`gc.freeze()`), and
    a young collection waits for GC_YOUNG new container objects instead of 700. The hot path
    makes and drops a few such objects a frame (tuples, lists, closures), nearly all freed at once
    by their reference counts, but enough of them live through a commit window to reach 700 many
    times a second: at 15,000 frames a second (bench/peers.py, the nodered load over CoAP) the
    collector ran 3,850 young, 350 middle and 31 full collections in a 10 s run, 0.64 s of CPU
    (6 % of a core), and found about 1,500 objects in cycles in all, start-up included. With
    this, 45 young collections and 0.09 s. Cycles are still collected, later (at most GC_YOUNG
    container objects wait); what start-up made is never scanned again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


class Gateway:
    """All the roles of DESIGN.md wired together. `async with Gateway(cfg, registry) as gw:`."""

    def __init__(self, cfg: Config, registry: Registry, metrics: Metrics | None = None,
                 config_path: str | None = None):
        self.cfg, self.registry = cfg, registry
        self.config_path = config_path  # re-read on SIGHUP for the rules, resources, zones, dispatch
        self.metrics = metrics or Metrics()
        self.spool: Spool | None = None
        self.pipeline: Pipeline | None = None
        self.uplink: MqttUplink | None = None
        self.downlink: Downlink | None = None
        self.events: EventSink | None = None
        self.dispatcher: Dispatcher | None = None
        self.loans: Loans | None = None
        self.rules: RuleEngine | None = None
        self.coap: CoapServer | None = None
        self.http: StatusServer | None = None
        self.serial = None  # gateway/runtime/transports/serial.py's SerialPorts, one reader for every port
        self.updates = None  # gateway/runtime/updates.py's Updates when [update] public_key is set
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "Gateway":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        cfg = self.cfg
        self.spool = await Spool.open(cfg.spool_path, cfg.spool.journal_bytes)
        if self.spool.journal_error:
            log.warning("%s", self.spool.journal_error)
        ingest = Ingest(self.registry, await self.spool.replay_windows())
        # made in the order they depend on each other, each given its collaborators
        self.events = EventSink(self.metrics)
        self.ledger = Ledger()  # demands, dispatches and queued commands, committed with their events
        self.downlink = Downlink(self.registry, ledger=self.ledger)
        self.dispatcher = Dispatcher(cfg, self.events.emit, self.downlink, self.metrics, ledger=self.ledger)
        if cfg.fleet.enabled:  # the fleet's loan commands on cmd/_fleet
            self.loans = Loans(self.dispatcher, self.events.emit, self.downlink, self.metrics)
        self.rules = RuleEngine(cfg.rules, cfg.resources, ingest.parser, self.events.emit, self.dispatcher,
                                self.metrics)
        self.pipeline = Pipeline(cfg, ingest, self.spool, self.metrics, rules=self.rules, downlink=self.downlink,
                                 events=self.events, ledger=self.ledger)
        # what the decisions knew at the last commit carries on (after a restart, a crash, a kill -9)
        rows = await self.spool.decisions()
        restored = self.dispatcher.restore(rows), self.downlink.restore(rows)
        if any(restored):
            log.info("restored from the spool: %d open demands and dispatches, %d queued commands", *restored)
        committed = self.pipeline.committed
        if cfg.jetstream.enabled:
            from gateway.runtime.uplink.jetstream import JetStreamUplink
            self.uplink = JetStreamUplink(cfg, self.spool, committed, self.metrics, self.downlink)
        elif cfg.sparkplug.enabled:  # Sparkplug B over MQTT instead of headrace's own batches
            # imported here, as JetStream's: protobuf takes 2.2 MB of RSS a gateway without it never needs
            from gateway.runtime.uplink.sparkplug import SparkplugUplink
            self.uplink = SparkplugUplink(cfg, self.spool, committed, self.metrics, self.downlink,
                                          nodes=self.pipeline.nodes)  # silent nodes are DDEATHs
        else:
            self.uplink = MqttUplink(cfg, self.spool, committed, self.metrics, self.downlink)
            if self.uplink.answers.restore(rows):  # answers the broker had not acknowledged
                log.info("restored from the spool: %d command answers for the broker",
                         len(self.uplink.answers.waiting()))
        if cfg.update.public_key:  # node updates: off without the release public key
            from gateway.runtime.updates import Updates
            self.updates = Updates(cfg.update, cfg.gateway.data_dir, self.downlink, self.metrics, self.registry)
            self.pipeline.updates = self.updates
            self.downlink.route_updates(self.updates.cloud_command)  # {"cmd": "update"} on cmd/<node>
            self._spawn(self.updates.run(), "updates")
        self._spawn(self.rules.run(), "rules")
        self._spawn(self.dispatcher.run(), "dispatcher")
        self._spawn(self.pipeline.run(), "pipeline")
        self._spawn(self.uplink.run(), "uplink")
        if cfg.serial.ports:
            from gateway.runtime.transports.serial import SerialPorts  # pyserial only when a port is configured
            self.serial = SerialPorts([(p.path, p.baudrate) for p in cfg.serial.ports], self.pipeline,
                                      updates=self.updates)
            self._spawn(self.serial.run(), "serial")
        if cfg.coap.enabled:
            self.coap = CoapServer(cfg.coap.bind, cfg.coap.port, self.pipeline, cfg.coap.dedup_seconds,
                                   cfg.coap.dedup_max, updates=self.updates, receive_buffer=cfg.coap.receive_buffer,
                                   batch=cfg.coap.batch)
            await self.coap.start()
        if cfg.http.port:
            self.http = StatusServer(cfg.http, self)
            if self.http.page is not None and self.updates is not None:
                self.http.page.node_extras.append(self.updates.page_fields)  # "update: 1.3.0 sending 35 %"
            await self.http.start()
        depth, _ = await self.spool.depth()
        log.info("gateway %s/%s up: %d nodes registered, %d serial ports, CoAP %s, spool %s (%d records waiting)",
                 cfg.gateway.site, cfg.gateway.id, len(self.registry), len(cfg.serial.ports),
                 f"{cfg.coap.bind}:{cfg.coap.port}" if cfg.coap.enabled else "off", cfg.spool_path, depth)

    def reload(self) -> None:
        """SIGHUP: re-read the node registry (new, removed and rekeyed nodes) and, from the
        config file, the rules, resources, zones and dispatch settings, without dropping a
        frame. Other settings need a restart (said in the log); a broken file keeps what
        was loaded before."""
        try:
            registry = Registry.load(self.cfg.gateway.registry)
        except Exception as exc:
            log.error("reload failed, keeping the %d nodes loaded before: %s", len(self.registry), exc)
        else:
            self.registry = registry
            self.pipeline.ingest.registry = registry
            self.downlink.registry = registry
            if self.updates is not None:
                self.updates.registry = registry
            log.info("reloaded %s: %d nodes", self.cfg.gateway.registry, len(registry))
        if self.config_path is None:
            return
        try:
            cfg = config_module.load(self.config_path)
        except ConfigError as exc:
            log.error("reload: %s; keeping the rules and resources loaded before", exc)
            return
        matching = ("rules", "resources", "zones", "dispatch")
        others = [f.name for f in dataclasses.fields(cfg) if f.name not in matching
                  and getattr(cfg, f.name) != getattr(self.cfg, f.name)]
        if others:
            log.warning("reload: [%s] changed in %s; those take effect at the next restart",
                        "], [".join(others), self.config_path)
        if all(getattr(cfg, k) == getattr(self.cfg, k) for k in matching):
            return
        self.dispatcher.update(cfg)
        rules = RuleEngine(cfg.rules, cfg.resources, self.pipeline.ingest.parser, self.events.emit,
                           self.dispatcher, self.metrics)
        names = {r.name for r in cfg.rules}
        rules.active = {name: ev for name, ev in self.rules.active.items() if name in names}
        self.rules = rules
        self.pipeline.replace_rules(rules)
        for task in [t for t in self._tasks if t.get_name() == "rules"]:
            task.cancel()
            self._tasks.remove(task)
        self._spawn(self.rules.run(), "rules")
        self.cfg = dataclasses.replace(self.cfg, **{k: getattr(cfg, k) for k in matching})
        log.info("reloaded %s: %d rules, %d resources", self.config_path, len(cfg.rules), len(cfg.resources))

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s died: %r", task.get_name(), task.exception(), exc_info=task.exception())

    async def stop(self) -> None:
        """Stop intake, commit what is queued, publish the final state, close everything."""
        if self.coap:
            await self.coap.stop()
        intake = [t for t in self._tasks if t.get_name() != "uplink"]
        for task in intake:
            task.cancel()
        await asyncio.gather(*intake, return_exceptions=True)
        if self.pipeline:
            try:
                await self.pipeline.drain()
            except Exception as exc:  # shutdown must go on
                log.warning("drain on shutdown failed: %s", exc)
        if self.uplink:
            await self.uplink.final_state({"online": False, "clean": True, "at": time.time()})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.http:
            await self.http.stop()
        if self.spool:
            await self.spool.close()

    # -- status ---------------------------------------------------------------------------

    async def render_metrics(self) -> str:
        depth, size = await self.spool.depth()
        self.metrics.set("headrace_spool_depth", depth)
        self.metrics.set("headrace_spool_bytes", size)
        oldest = await self.spool.oldest()
        # how far the broker is behind: the age of the oldest record not yet acknowledged
        self.metrics.set("headrace_uplink_lag_seconds", round(time.time() - oldest, 3) if oldest else 0.0)
        return self.metrics.render()

    def health(self) -> dict:
        alive = all(not t.done() for t in self._tasks)
        return {"ok": alive, "uplink_connected": bool(self.uplink and self.uplink.connected),
                "nodes": len(self.pipeline.nodes) if self.pipeline else 0,
                "uptime_s": round(time.time() - self.metrics.started, 1)}

    def node_table(self) -> list[dict]:
        rows = []
        for name, st in sorted((self.pipeline.nodes if self.pipeline else {}).items()):
            last = {k: v[1] for k, v in self.pipeline.node_last(name).items()}
            battery = next((v for k, v in last.items() if k.rsplit("/", 1)[-1] in BATTERY_NAMES), None)
            rows.append({"node": name, "transport": st.transport, "frames": st.frames, "readings": st.readings,
                         "rejected": st.rejected, "last_seen": st.last_seen, "rate": round(st.rate(), 3),
                         "link_quality": round(st.frames / (st.frames + st.rejected), 4) if st.frames else None,
                         "battery": battery, "last": last,
                         "update": self.updates.of(name) if self.updates is not None else None})
        if self.updates is not None:  # a node being updated that has sent nothing yet still shows
            seen = {r["node"] for r in rows}
            rows += [{"node": p["node"], "transport": "", "frames": 0, "readings": 0, "rejected": 0, "last_seen": 0.0,
                      "rate": 0.0, "link_quality": None, "battery": None, "last": {}, "update": p}
                     for p in self.updates.progress() if p["node"] not in seen]
        return rows


BATTERY_NAMES = ("battery", "bat", "vbat", "batt")  # sensor names the status view reads as battery


async def serve(cfg: Config, registry: Registry, config_path: str | None = None) -> None:
    """Run until SIGTERM/SIGINT; notify systemd; feed its watchdog; SIGHUP reloads."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(cfg, registry, config_path=config_path) as gw:
        loop.add_signal_handler(signal.SIGHUP, gw.reload)
        collect_less()  # the process is the gateway's alone (a gateway made in a test's process leaves it be)
        sd_notify("READY=1\nSTATUS=serving")
        watchdog = asyncio.create_task(_watchdog(gw), name="watchdog")
        try:
            await stop.wait()
        finally:
            log.info("stopping: committing queued frames and publishing the final state")
            sd_notify("STOPPING=1")
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)


async def _watchdog(gw: Gateway) -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    period = usec / 2e6 if usec else 10.0
    while True:
        m = gw.metrics
        status = (f"STATUS={int(m.total('headrace_frames_accepted_total'))} frames in, "
                  f"{int(m.total('headrace_uplink_messages_total'))} batches up, "
                  f"uplink {'up' if gw.uplink and gw.uplink.connected else 'down'}")
        sd_notify(("WATCHDOG=1\n" if usec else "") + status)
        await asyncio.sleep(period)
