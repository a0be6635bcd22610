"""The Sparkplug B 3.0 edge node: the gateway's uplink in the standard SCADA hosts read.

Configuration: `[sparkplug] enabled = true`, `group_id`, `edge_node_id` (default: the
gateway's id), `primary_host_id` ("" for none), `device_timeout` (s), `qos` (births and
data: 1, deleted from the spool after PUBACK; 0 as Sparkplug 3.0 asks, deleted once
written), `datatypes` (datatypes in data messages too, for hosts that need them); the
broker and its session settings stay in `[mqtt]`. docs/sparkplug.md has the topics and
metric names.

Usage: `gateway.runtime.service.Gateway` makes a `SparkplugUplink` in place of the
native `MqttUplink` when enabled. It is the same uplink (session, reconnection with
backoff, the window of batches awaiting PUBACK, records deleted from the spool only
after their PUBACK) with Sparkplug's session rules on top:

* bdSeq: +1 (mod 256) at every MQTT CONNECT, stored durably in the spool's SQLite
  before the CONNECT, so the NDEATH Will the broker holds, the NBIRTH that follows and
  the next start after a `kill -9` all agree.
* with a primary host: STATE is subscribed first; NBIRTH waits for `{"online": true}`;
  when the host goes offline the edge node publishes NDEATH and disconnects, and
  waits again. Records stay in the spool meanwhile.
* NBIRTH (seq 0), then a DBIRTH per node (device) before its first DDATA and whenever it
  shows a metric its birth did not declare; `seq` counts every NBIRTH/NDATA/DBIRTH/
  DDATA/DDEATH modulo 256; rebirth on NCMD `Node Control/Rebirth`, on the same connection.
* records spooled before this session's NBIRTH go up with `is_historical`, in spool order.
* a node silent for `device_timeout` (once the backlog is sent), or removed from the
  registry, gets a DDEATH; its next data births it again.
* DCMD metrics become headrace commands, validated by `gateway.decisions.downlink` exactly as
  `cmd/<node>` ones are; their outcome is the device's `Commands/result` metric.

Caveats: delivery is at least once, as in the native format: a DDATA published but
not acknowledged when the session ends is sent again in the next session (as
historical). Aliases are renumbered by each process: every birth states them.
`headrace spool replay` speaks Sparkplug too when it is enabled: births, the spool
as historical data, NDEATH.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time

from google.protobuf.message import DecodeError

from gateway.config import Config
from gateway.runtime.metrics import Metrics
from gateway.runtime.spool import PRIO_EVENT, KIND_WINDOW, Spool
from gateway.runtime.uplink import sparkplug_payload as spb
from gateway.runtime.uplink.mqtt import QOS_AT_LEAST_ONCE, MqttUplink, _Session
from gateway.runtime.uplink.sparkplug_b_pb2 import Payload

log = logging.getLogger("headrace.sparkplug")
WATCH_PERIOD = 1.0  # seconds between checks for silent or removed nodes


class SparkplugUplink(MqttUplink):
    """The edge node `spBv1.0/<group>/…/<edge node>`; each sensor node is a device."""

    def __init__(self, cfg: Config, spool: Spool, committed: asyncio.Event, metrics: Metrics, downlink=None,
                 nodes: dict | None = None):
        """`nodes`: the pipeline's NodeStatus by node, which tells who is silent (DDEATH)."""
        super().__init__(cfg, spool, committed, metrics, downlink)
        sp = cfg.sparkplug
        self.group, self.edge = sp.group_id, sp.edge_node_id or cfg.gateway.id
        self.host = sp.primary_host_id
        base = f"{spb.NAMESPACE}/{self.group}/"
        self.topic = {kind: f"{base}{kind}/{self.edge}" for kind in
                      ("NBIRTH", "NDEATH", "NDATA", "NCMD", "DBIRTH", "DDEATH", "DDATA", "DCMD")}
        self.topic_host = f"{spb.NAMESPACE}/STATE/{self.host}" if self.host else None
        self.nodes = nodes
        self.bdseq = 0
        self._bdseq_key = f"sparkplug/{self.group}/{self.edge}/bdSeq"
        self._seq = 0
        self._born = False
        self._live_after = 0  # spool ids up to this one were spooled before the NBIRTH: historical
        self._sent_upto = 0
        self._host_up = asyncio.Event()
        self._host_ts = -1
        self._watch: asyncio.Task | None = None
        self._born_at: dict[str, float] = {}  # when each device was last born (a node not heard since restart)
        self._cids = itertools.count(1)
        node_metrics = [(spb.METRIC_BDSEQ, spb.INT64), (spb.METRIC_REBIRTH, spb.BOOLEAN)]
        for rule in cfg.rules:
            if getattr(rule, "emit", "alarm") == "alarm":
                node_metrics += [(f"Alarms/{rule.name}/active", spb.BOOLEAN), (f"Alarms/{rule.name}/value", spb.DOUBLE)]
        node_metrics += [(name, spb.STRING) for name in spb.EVENT_METRICS]
        self.catalog = spb.Catalog(node_metrics)

    # -- session ------------------------------------------------------------------------

    async def _connect(self) -> None:
        stored = await self.spool.get_meta(self._bdseq_key, -1)
        self.bdseq = (stored + 1) % 256
        await self.spool.set_meta(self._bdseq_key, self.bdseq)  # durable before the broker holds the Will
        await super()._connect()

    def _will(self):
        return self.topic["NDEATH"], spb.death(self.bdseq), False

    async def _begin(self, s: _Session) -> None:
        s.on_command = self._message
        subs = [(self.topic["NCMD"], 1), (self.topic["DCMD"] + "/+", 1)]
        if self.topic_host:
            self._host_up.clear()
            subs.append((self.topic_host, 1))
        s.client.subscribe(subs)
        if self.topic_host:
            log.info("waiting for primary host %s to be online (%s)", self.host, self.topic_host)
            await _first(self._host_up.wait(), s.lost.wait())
            if s.lost.is_set():
                raise ConnectionError("connection lost while waiting for the primary host")
        self._live_after = await self.spool.last_id()
        # nothing waiting: no backlog to send before silent nodes may be declared dead
        self._sent_upto = self._live_after if (await self.spool.depth())[0] == 0 else 0
        self._birth(s)
        self._watch = asyncio.create_task(self._watch_devices(s), name="sparkplug-devices")

    async def _teardown(self) -> None:
        s = self._session
        if self._born and s is not None and not s.lost.is_set():
            await self.final_state({})  # a session ended while connected (`spool replay`): NDEATH first
        self._born = False
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await super()._teardown()

    def _send(self, s: _Session, topic: str, payload: Payload, ids=()) -> None:
        """Publish with the next seq at `[sparkplug] qos`; `ids`: the spool records it carries,
        deleted once the broker acknowledges them (at QoS 0: once written to the socket). Nothing is sent
        outside a session (after NDEATH: a clean stop, or the host gone): records stay spooled."""
        if not self._born and topic != self.topic["NBIRTH"]:
            return
        self._seq = 0 if topic == self.topic["NBIRTH"] else (self._seq + 1) % 256
        payload.seq = self._seq
        data = payload.SerializeToString()
        info = s.client.publish(topic, data, qos=self.cfg.sparkplug.qos)
        if info.rc != 0:
            raise ConnectionError(f"publish failed on {topic}: rc {info.rc}")
        self._inflight[info.mid] = (list(ids), len(data))

    def _birth(self, s: _Session) -> None:
        """NBIRTH, then a DBIRTH for every device born before (on a rebirth or a new session)."""
        self._send(s, self.topic["NBIRTH"], spb.node_birth(self.catalog, self.bdseq))
        self._born = True
        self.metrics.inc("headrace_sparkplug_births_total", kind="node")
        log.info("NBIRTH %s/%s bdSeq %d (records up to %d are historical)", self.group, self.edge, self.bdseq,
                 self._live_after)
        for device in self.catalog.devices.values():
            if device.born:
                self._device_birth(s, device)

    def _device_birth(self, s: _Session, device: spb.Device) -> None:
        self._send(s, f"{self.topic['DBIRTH']}/{device.name}", spb.device_birth(device))
        device.born = True
        self._born_at[device.name] = time.time()
        self.metrics.inc("headrace_sparkplug_births_total", kind="device")

    def _device_death(self, s: _Session, device: spb.Device, why: str) -> None:
        self._send(s, f"{self.topic['DDEATH']}/{device.name}", Payload(timestamp=spb.now_ms()))
        device.born = False
        self.metrics.inc("headrace_sparkplug_device_deaths_total")
        log.info("DDEATH %s: %s", device.name, why)

    async def _watch_devices(self, s: _Session) -> None:
        """DDEATH for nodes removed from the registry, and for nodes silent for device_timeout
        once the backlog spooled before the birth has gone up."""
        timeout = self.cfg.sparkplug.device_timeout
        while not s.lost.is_set():
            await asyncio.sleep(WATCH_PERIOD)
            registry = self.downlink.registry if self.downlink is not None else None
            now = time.time()
            for device in self.catalog.devices.values():
                if not device.born:
                    continue
                if registry is not None and registry.by_kid(device.name.encode()) is None:
                    self._device_death(s, device, "removed from the registry")
                    continue
                if self.nodes is None or self._sent_upto < self._live_after:
                    continue
                st = self.nodes.get(device.name)
                last = max(st.last_seen if st is not None else 0.0, self._born_at.get(device.name, 0.0))
                if now - last > timeout:
                    self._device_death(s, device, f"silent for {now - last:.0f} s")

    # -- spool records ------------------------------------------------------------------

    async def _encode(self, prio: int, rows):
        return None  # built in _publish: seq and births are decided at the moment of sending

    def _publish(self, s: _Session, prio: int, rows, payload) -> None:
        groups: dict[tuple[str | None, bool], tuple[list, list]] = {}
        for rid, kind, body in rows:
            historical = rid <= self._live_after
            if prio == PRIO_EVENT:
                device, points = None, spb.event_metrics(body)
            elif kind == KIND_WINDOW:
                device, points = spb.window_metrics(body)
            else:
                device, points = spb.readings_of(body)
            ids, pts = groups.setdefault((device, historical), ([], []))
            ids.append(rid)
            pts += points
        for (device, historical), (ids, points) in groups.items():
            if device is None:
                self._node_data(s, points, historical, ids)
            else:
                self._device_data(s, device, points, historical, ids)
        self._sent_upto = max(self._sent_upto, rows[-1][0])

    def _node_data(self, s: _Session, points, historical: bool, ids=()) -> None:
        known = len(self.catalog.node)
        metrics = [(self._metric(None, name, datatype), at, value) for name, datatype, at, value in points]
        if len(self.catalog.node) != known:
            self._birth(s)  # a metric NBIRTH did not declare (a rule added by a reload): rebirth first
        self._send(s, self.topic["NDATA"], spb.data(metrics, historical, self.cfg.sparkplug.datatypes), ids)

    def _device_data(self, s: _Session, name: str, points, historical: bool, ids=()) -> None:
        device = self.catalog.device(name)
        metrics = [(self._metric(device, n, datatype), at, value) for n, datatype, at, value in points]
        if not device.born or not device.born_with.issuperset(device.metrics):
            self._device_birth(s, device)
        payload = spb.data(metrics, historical, self.cfg.sparkplug.datatypes)
        self._send(s, f"{self.topic['DDATA']}/{name}", payload, ids)

    def _metric(self, device: spb.Device | None, name: str, datatype: int) -> spb.Metric:
        """The metric of that name, or of `<name>/<type>` when a value's type differs from the first."""
        metrics = self.catalog.node if device is None else device.metrics
        m = metrics.get(name)
        if m is not None and m.datatype != datatype:
            name = f"{name}/{_TYPE_NAMES.get(datatype, datatype)}"
            m = metrics.get(name)
        if m is None:
            m = (self.catalog.node_metric(name, datatype) if device is None
                 else self.catalog.device_metric(device, name, datatype))
        return m

    # -- commands and host state ----------------------------------------------------------

    def _message(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self.topic_host:
                self._host_state(payload)
            elif topic == self.topic["NCMD"]:
                self._node_command(payload)
            elif topic.startswith(self.topic["DCMD"] + "/"):
                self._device_command(topic[len(self.topic["DCMD"]) + 1:], payload)
        except (DecodeError, ValueError, UnicodeDecodeError) as exc:
            self.metrics.inc("headrace_sparkplug_rejected_total", topic=topic.split("/")[2])
            log.warning("ignored a message on %s that is not valid: %s", topic, exc)

    def _host_state(self, payload: bytes) -> None:
        state = json.loads(payload)
        online, ts = (state.get("online"), state.get("timestamp")) if isinstance(state, dict) else (None, None)
        if not isinstance(online, bool) or isinstance(ts, bool) or not isinstance(ts, int):
            raise ValueError('a STATE payload is {"online": true|false, "timestamp": <ms>}')
        if ts < self._host_ts:
            log.info("ignored a STATE of %s older than the last one (%d < %d)", self.host, ts, self._host_ts)
            return
        self._host_ts = ts
        if online:
            self._host_up.set()
            return
        self._host_up.clear()
        s = self._session
        if self._born and s is not None:
            log.warning("primary host %s went offline: NDEATH, disconnecting; records stay in the spool", self.host)
            self._born = False
            s.client.publish(self.topic["NDEATH"], spb.death(self.bdseq), qos=QOS_AT_LEAST_ONCE)
            s.client.disconnect()

    def _node_command(self, payload: bytes) -> None:
        p = Payload.FromString(payload)
        s = self._session
        for metric in p.metrics:
            m = self.catalog.node.get(metric.name) if metric.name else self.catalog.by_alias(None, metric.alias)
            if m is not None and m.name == spb.METRIC_REBIRTH and spb.value_of(metric) is True:
                if self._born and s is not None:
                    log.info("rebirth asked by NCMD")
                    self._birth(s)
                self.metrics.inc("headrace_commands_total", result="rebirth")
            else:
                self.metrics.inc("headrace_commands_total", result="rejected")
                log.warning("rejected NCMD metric %r: the edge node takes only %s = true",
                            metric.name or metric.alias, spb.METRIC_REBIRTH)

    def _device_command(self, node: str, payload: bytes) -> None:
        from gateway.decisions.downlink import CommandError

        p = Payload.FromString(payload)
        device = self.catalog.devices.get(node)
        for metric in p.metrics:
            m = (device.metrics.get(metric.name) if metric.name else self.catalog.by_alias(device, metric.alias)) \
                if device is not None else None
            name = m.name if m is not None else (metric.name or f"alias {metric.alias}")
            cid = f"spb-{next(self._cids)}"
            try:
                if self.downlink is None:
                    raise CommandError("this gateway takes no commands")
                try:
                    text = spb.command_of(name, spb.value_of(metric), cid)
                except KeyError:
                    raise CommandError(f"{name!r} is not a command metric: write one of "
                                       f"{', '.join(spb.COMMAND_METRICS)}") from None
                except ValueError as exc:
                    raise CommandError(str(exc)) from None
                command = self.downlink.submit(node, text)
            except CommandError as exc:
                self.metrics.inc("headrace_commands_total", result="rejected")
                log.warning("rejected DCMD for node %r: %s", node, exc)
                self._result(node, {"id": cid, "status": "rejected", "error": str(exc)})
            else:
                self.metrics.inc("headrace_commands_total", result="queued")
                log.info("queued command %s %s for node %s (DCMD)", command.id, command.cmd, node)
                answer = {"id": command.id, "status": "queued"}
                self.downlink.when_durable(lambda n=node, a=answer: self._result(n, a))  # after its commit

    def command_result(self, node: str, answer: dict) -> None:
        """A command's outcome at its node, as the device's Commands/result metric."""
        self.metrics.inc("headrace_commands_total", result=answer["status"])
        log.log(logging.INFO if answer["status"] == "applied" else logging.WARNING, "command %s for node %s %s%s",
                answer["id"], node, answer["status"], f": {answer['error']}" if "error" in answer else "")
        self._result(node, answer)

    def _result(self, node: str, answer: dict) -> None:
        s = self._session
        if s is None or not self._born or (self.downlink and self.downlink.registry.by_kid(node.encode()) is None):
            return  # no device to speak for (an unknown node's rejection is in the log and the counter)
        text = json.dumps(answer, separators=(",", ":"))
        self._device_data(s, node, [(spb.METRIC_COMMAND_RESULT, spb.STRING, spb.now_ms(), text)], False)

    # -- what the native uplink publishes on its own topics --------------------------------

    def publish_state(self) -> None:
        self._state_at = time.monotonic()  # no headrace `state` topic: NBIRTH/NDEATH say it

    async def final_state(self, state: dict) -> None:
        """A clean stop: NDEATH with this session's bdSeq (the broker drops the Will on DISCONNECT)."""
        s = self._session
        if s is None or not self.connected or not self._born:
            return  # never born on this connection: the clean DISCONNECT discards the Will, and that is all
        self._born = False
        info = s.client.publish(self.topic["NDEATH"], spb.death(self.bdseq), qos=QOS_AT_LEAST_ONCE)
        deadline = time.monotonic() + 2
        while not info.is_published() and time.monotonic() < deadline and not s.lost.is_set():
            await asyncio.sleep(0.02)


_TYPE_NAMES = {spb.DOUBLE: "number", spb.BOOLEAN: "boolean", spb.STRING: "string", spb.BYTES: "bytes"}


async def _first(*aws) -> None:
    """Wait for the first of some awaitables; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
