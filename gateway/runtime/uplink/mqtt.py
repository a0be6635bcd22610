"""MQTT uplink: spool → broker, QoS 1, deleted from the spool only after PUBACK.

Configuration: `[mqtt]` host, port, client_id, username/password, TLS files,
keepalive, inflight (batches awaiting PUBACK), batch_records, batch_delay, schema.
Topics under `headrace/v1/<site>/<gateway>/`: `data` (batches, see
`uplink/batch.py`), `events` (sent ahead of data), `schema` (retained: the node
and sensor-name patterns that data batches refer to by id, published on every
connection and before the first batch that needs a grown one; with `schema =
false`, self-contained version 2 batches and no schema topic), `state`
(retained birth `{"online": true}`; the broker publishes the LWT
`{"online": false}` if the gateway vanishes).
Caveats: delivery is at least once: a batch published but not yet deleted when
the gateway dies is published again after restart. Every frame carries
(node, seq) so consumers drop the repeat.

The MQTT protocol engine is paho-mqtt, driven from asyncio without its thread:
its socket is registered with the event loop (add_reader/add_writer). Large data
batches are encoded (the series codec) on one encoder thread the uplink owns, so
the event loop goes on taking frames meanwhile; the pump awaits each batch
before it publishes it, so batches leave in spool order and events first.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
import threading
import time
import types
import urllib

from gateway.config import Config
from gateway.runtime.metrics import Metrics
from gateway.runtime import tls
from gateway.runtime.spool import KIND_EVENT, KIND_FRAME, KIND_WINDOW, PRIO_EVENT, PRIO_FRAME, PRIO_WINDOW, Spool
from gateway.runtime.uplink import batch
from gateway.runtime.uplink.encoder import BatchEncoder
from gateway.runtime.uplink.answers import CommandAnswers
from gateway.runtime.uplink.retry import keep_connected


def _import_paho():
    """paho-mqtt's client. It imports `urllib.request` (with `http.client`, `email` and
    `tempfile` behind it, 1.3 MB of the gateway's RSS) for proxies from the environment,
    which it reads only with PySocks installed: without PySocks, and where nothing loaded
    `urllib.request` yet, it loads with a stand-in, taken away again after it."""
    if "urllib.request" in sys.modules or importlib.util.find_spec("socks") is not None:
        return tls.import_with_stand_in("paho.mqtt.client")
    sys.modules["urllib.request"] = urllib.request = types.ModuleType("urllib.request")
    try:
        return tls.import_with_stand_in("paho.mqtt.client")  # its `except ssl.SSLWantReadError` needs a name
    finally:
        del sys.modules["urllib.request"], urllib.request  # a later import gets the real one


paho = _import_paho()

log = logging.getLogger("headrace.mqtt")
QOS_AT_LEAST_ONCE = 1


class _Session:
    """One MQTT connection: paho client bound to the running loop."""

    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop, on_puback, on_lost,
                 will: tuple[str, bytes | str, bool] | None = None):
        m = cfg.mqtt
        self.loop = loop
        self.connected = loop.create_future()
        self.lost = asyncio.Event()
        client_id = m.client_id or f"headrace-{cfg.gateway.site}-{cfg.gateway.id}"
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                        clean_session=True)
        c.max_inflight_messages_set(0)  # we bound the window ourselves
        c.max_queued_messages_set(0)
        if m.username:
            c.username_pw_set(m.username, m.password or None)
        if m.tls_ca or m.tls_cert:
            c.tls_set(ca_certs=m.tls_ca or None, certfile=m.tls_cert or None, keyfile=m.tls_key or None)
        topic, payload, retain = will or (cfg.topic_root + "state", json.dumps({"online": False}), True)
        c.will_set(topic, payload, qos=1, retain=retain)
        c.on_socket_open = self._sock_open
        c.on_socket_close = self._sock_close
        c.on_socket_register_write = self._want_write
        c.on_socket_unregister_write = self._no_write
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = lambda _c, _u, mid, _rc, _p: on_puback(mid)
        c.on_message = self._on_message
        self.on_command = lambda topic, payload: None  # set by the uplink
        self._on_lost = on_lost
        self.client = c
        self._sock = None
        self._loop_thread = threading.get_ident()  # made by the uplink, on the loop's thread

    def _on_message(self, _client, _userdata, msg) -> None:
        """A message on a subscribed topic, to the uplink. A bug in its handling is logged with
        the topic, never raised into paho's read loop (which would leave the session's reads
        and the message's PUBACK behind it)."""
        try:
            self.on_command(msg.topic, msg.payload)
        except Exception:
            log.exception("a message on %s could not be handled (a bug: please report this log)", msg.topic)

    # paho calls these from the thread that runs connect (an executor thread) as well as from
    # the loop: the selector is only ever touched on the loop's thread, in the order called
    def _on_loop(self, fn, sock) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(sock)
        else:
            self.loop.call_soon_threadsafe(fn, sock)

    def _sock_open(self, client, userdata, sock):
        self._on_loop(self._add_reader, sock)

    def _add_reader(self, sock):
        if sock.fileno() != -1:  # not closed while this waited for the loop
            self._sock = sock
            self.loop.add_reader(sock, self.client.loop_read)

    def _sock_close(self, client, userdata, sock):
        self._on_loop(self._remove, sock)

    def _remove(self, sock):
        try:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        except ValueError:
            pass  # closed before it was ever registered (a connect that failed)

    def _want_write(self, client, userdata, sock):
        self._on_loop(self._add_writer, sock)

    def _add_writer(self, sock):
        if sock.fileno() != -1:
            self.loop.add_writer(sock, self.client.loop_write)

    def _no_write(self, client, userdata, sock):
        self._on_loop(self.loop.remove_writer, sock)

    def _on_connect(self, client, userdata, flags, reason, properties):
        if not self.connected.done():
            if reason.is_failure:
                self.connected.set_exception(ConnectionError(f"broker refused the connection: {reason}"))
            else:
                self.connected.set_result(True)

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"disconnected before CONNACK: {reason}"))
        self.lost.set()
        self._on_lost()

    async def misc(self) -> None:
        """Keepalive pings and timeouts: paho's loop_misc once a second."""
        while not self.lost.is_set():
            if self.client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self.lost.set()
                self._on_lost()
            await asyncio.sleep(1.0)


class MqttUplink:
    """Owns the broker session and the pump from spool to broker."""

    STATE_INTERVAL = 60.0  # seconds between retained state updates
    # while at least this many full batches wait (the gateway takes frames faster than batches of
    # batch_records go), batches of that many times batch_records: the encoder's work per series
    # (a node's sensor) is spread over more readings (with 100 nodes of 8 sensors a 256-frame batch
    # holds 800 series of 2-3 readings). At the rates a gateway mostly runs at, batches stay at
    # batch_records.
    GROW = 4
    # batches are GROW times batch_records also while data comes in fast enough to fill such a batch
    # within GROW_FILL seconds (4,096 frames a second with the defaults) for two spans of RATE_SPAN
    # seconds in a row; they shrink again below half that rate. A full batch waits for a grown one
    # at most GROW_FILL; a gateway at the rates it mostly runs at never grows them (nor its memory)
    GROW_FILL = 0.25
    RATE_SPAN = 0.5

    def __init__(self, cfg: Config, spool: Spool, committed: asyncio.Event, metrics: Metrics, downlink=None):
        """`downlink` (a Downlink) takes the commands that arrive on cmd/<node>; its results
        are answered on cmd_result/<node>."""
        self.cfg, self.spool, self.committed, self.metrics = cfg, spool, committed, metrics
        self.topic_data = cfg.topic_root + "data"
        self.topic_events = cfg.topic_root + "events"
        self.topic_state = cfg.topic_root + "state"
        self.topic_schema = cfg.topic_root + "schema"
        # what repeats from batch to batch, described once (a new lineage each start)
        self.schema = batch.Schema(cfg.gateway.id, cfg.gateway.site) if cfg.mqtt.schema else None
        self.topic_cmd = cfg.topic_root + "cmd/"
        self.downlink = downlink
        if downlink is not None:
            downlink.on_result = self.command_result
        # answers on cmd_result/<node> kept (in the spool) until the broker has them
        self.answers = CommandAnswers(getattr(downlink, "ledger", None))
        self._answer_mids: dict[int, int] = {}  # mid -> the answer's key
        self.connected = False
        self._inflight: dict[int, tuple[list[int], int, int]] = {}  # mid -> (spool ids, bytes, priority)
        self._acked: list[int] = []
        self._wake = asyncio.Event()
        self._due: float | None = None  # when the pump sends the data waiting (None: nothing waits)
        self._full = cfg.mqtt.batch_records  # data records that make a batch go now (GROW times while fast)
        self._published = 0  # data records published since the start (the intake's rate, with those waiting)
        self._rate_at: float | None = None  # the rate's last measure (None: from the pump's next turn)
        self._rate_total = 0
        self._fast_spans = 0  # spans in a row at the growing rate
        listen = getattr(committed, "listen", None)  # the pipeline's CommitSignal
        self._commit_callback = listen is not None
        if listen is not None:
            listen(self._on_commit)
        self._session: _Session | None = None
        self._since = time.time()
        self._state_at = 0.0
        # large data batches are encoded on a thread of its own for the time of `run` or `drain`
        self._batches = BatchEncoder(cfg.gateway.id, cfg.gateway.site, self.schema)

    async def run(self) -> None:
        """Connect, pump, reconnect with jittered exponential backoff; until cancelled."""
        with self._batches.running():
            await self._run()

    async def _run(self) -> None:
        m = self.cfg.mqtt
        await keep_connected(self._connect, self._pump, reconnect_max=m.reconnect_max, teardown=self._teardown,
                             failed=lambda exc, delay: log.warning("MQTT broker %s:%d unavailable: %s; retrying in "
                                                                   "%.1f s", m.host, m.port, exc, delay))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.metrics.inc("headrace_uplink_connects_total")
        s = self._session = _Session(self.cfg, loop, self._puback, self._wake.set, self._will())
        await loop.run_in_executor(None, s.client.connect, self.cfg.mqtt.host, self.cfg.mqtt.port,
                                   self.cfg.mqtt.keepalive)
        self._misc = asyncio.create_task(s.misc(), name="mqtt-keepalive")
        await asyncio.wait_for(asyncio.shield(s.connected), timeout=10)
        self.connected = True
        self.metrics.set("headrace_uplink_connected", 1)
        log.info("MQTT connected to %s:%d", self.cfg.mqtt.host, self.cfg.mqtt.port)
        self._since = time.time()
        await self._begin(s)

    def _will(self) -> tuple[str, bytes | str, bool] | None:
        """The session's Will (topic, payload, retain), registered with CONNECT; None: the
        retained `{"online": false}` on `state`. The Sparkplug edge node gives its NDEATH."""
        return None

    async def _begin(self, s: _Session) -> None:
        """After CONNACK, before the pump: the retained birth, and the `cmd/#` subscription."""
        self.publish_state()
        if self.schema is not None and (self.schema.nodes or self.schema.patterns):
            self.publish_schema()  # a broker that lost its retained messages gets it again
        if self.downlink is not None:
            s.on_command = self._command
            s.client.subscribe(self.topic_cmd + "#", qos=1)
        for key, node, answer in self.answers.waiting():  # answers due while the broker was away
            self._publish_answer(key, node, answer)

    def _command(self, topic: str, payload: bytes) -> None:
        """A command from the cloud: validate, queue, answer on cmd_result/<node>."""
        from gateway.decisions.downlink import CommandError

        node = topic[len(self.topic_cmd):]
        try:
            cid = json.loads(payload).get("id")
        except (ValueError, AttributeError, UnicodeDecodeError):
            cid = None
        try:
            command = self.downlink.submit(node, payload)
        except CommandError as exc:
            self.metrics.inc("headrace_commands_total", result="rejected")
            log.warning("rejected command for node %r: %s", node, exc)
            answer = {"id": cid if isinstance(cid, str) else None, "status": "rejected", "error": str(exc)}
        else:
            self.metrics.inc("headrace_commands_total", result="queued")
            log.info("queued command %s %s for node %s", command.id, command.cmd, node)
            answer = {"id": command.id, "status": "queued"}
            self.downlink.when_durable(lambda: self._answer(node, answer))  # after its commit
            return
        self._answer(node, answer)

    def command_result(self, node: str, answer: dict) -> None:
        """A command's outcome at its node (applied, failed, expired): counted, logged, answered."""
        self.metrics.inc("headrace_commands_total", result=answer["status"])
        level = logging.INFO if answer["status"] == "applied" else logging.WARNING
        log.log(level, "command %s for node %s %s%s", answer["id"], node, answer["status"],
                f": {answer['error']}" if "error" in answer else "")
        self._answer(node, answer)

    def _answer(self, node: str, answer: dict) -> None:
        """An answer on cmd_result/<node>: kept until the broker acknowledges it, sent now if connected."""
        key = self.answers.add(node, answer)
        if self.answers.dropped:
            self.metrics.inc("headrace_command_answers_dropped_total", self.answers.dropped)
            log.warning("%d command answers dropped: more than %d waited for the broker", self.answers.dropped,
                        len(self.answers.waiting()))
            self.answers.dropped = 0
        self._publish_answer(key, node, answer)

    def _publish_answer(self, key: int, node: str, answer: dict) -> None:
        self.metrics.set("headrace_command_answers_waiting", len(self.answers.waiting()))
        s = self._session
        if s is None or not self.connected or s.lost.is_set():
            return  # published after the next connect
        info = s.client.publish(self.cfg.topic_root + "cmd_result/" + node, json.dumps(answer), qos=1)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self._answer_mids[info.mid] = key

    def state(self) -> dict:
        """The retained state: online, spool depth per kind, drops by the overflow policy."""
        dropped = {f"{lab['kind']}_{lab['reason']}": int(v)
                   for lab, v in self.metrics.by_label("headrace_spool_dropped_total")}
        return {"online": True, "since": self._since, "at": time.time(), "spool": self.spool.stats(),
                "dropped": dropped}

    def publish_state(self) -> None:
        s = self._session
        if s is not None:
            s.client.publish(self.topic_state, json.dumps(self.state()), qos=1, retain=True)
            self._state_at = time.monotonic()

    def publish_schema(self) -> None:
        """The schema message, retained, QoS 1: ahead of every batch that refers to it,
        on the same connection."""
        s = self._session
        if s is not None and self.schema is not None:
            payload = self.schema.message()
            s.client.publish(self.topic_schema, payload, qos=1, retain=True)
            self.metrics.inc("headrace_uplink_schema_messages_total")
            self.metrics.inc("headrace_uplink_bytes_total", len(payload))

    async def _teardown(self) -> None:
        self.connected = False
        self.metrics.set("headrace_uplink_connected", 0)
        self._inflight.clear()
        self._answer_mids.clear()
        s, self._session = self._session, None
        if s is None:
            return
        misc = getattr(self, "_misc", None)
        if misc is not None:
            misc.cancel()
            await asyncio.gather(misc, return_exceptions=True)
        if not s.connected.done():
            s.connected.cancel()
        sock = s.client.socket()
        if sock is not None:
            try:
                s.loop.remove_reader(sock)
                s.loop.remove_writer(sock)
            except (ValueError, OSError):
                pass
        s.client.disconnect()

    def _puback(self, mid: int) -> None:
        key = self._answer_mids.pop(mid, None)
        if key is not None:
            self.answers.sent(key)
            self.metrics.set("headrace_command_answers_waiting", len(self.answers.waiting()))
            return
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        ids, nbytes = entry[0], entry[1]
        self._acked.extend(ids)
        self.metrics.inc("headrace_uplink_messages_total")
        self.metrics.inc("headrace_uplink_bytes_total", nbytes)
        self._wake.set()

    async def drain(self, timeout: float = 600.0) -> int:
        """Connect, publish everything the spool holds, wait for the PUBACKs, delete, return
        the records sent (`headrace spool replay`). Raises ConnectionError if the broker fails."""
        await self._connect()
        before, _ = await self.spool.depth()
        try:
            with self._batches.running():
                await asyncio.wait_for(self._pump(until_empty=True), timeout)
        finally:
            await self._teardown()
        after, _ = await self.spool.depth()
        return before - after

    async def _pump(self, until_empty: bool = False) -> None:
        """Spool → broker. Events go at once. Data (windows, frames) goes when a full batch
        (`batch_records`) is waiting, or `batch_delay` after the first commit that found
        nothing waiting; the rest of the time the pump sleeps, however many commits and
        PUBACKs arrive (a PUBACK wakes it only to delete). While GROW full batches or more
        wait, batches are GROW times as large."""
        s = self._session
        cursors = {PRIO_EVENT: 0, PRIO_WINDOW: 0, PRIO_FRAME: 0}
        window = self.cfg.mqtt.inflight
        limit = self.cfg.mqtt.batch_records
        delay = self.cfg.mqtt.batch_delay
        self._due = time.monotonic()  # what the spool holds at connect goes at once
        self._rate_at = None  # what waited before the connect is not the intake's rate
        while not s.lost.is_set():
            if time.monotonic() - self._state_at >= self.STATE_INTERVAL:
                self.publish_state()
            if self._acked:
                ids, self._acked = self._acked, []
                await self.spool.delete(ids)
            events, data = self._unsent()
            full = self._batch_size(data, limit)
            by_time = until_empty or not delay or (self._due is not None and time.monotonic() >= self._due)
            data_now = by_time or data >= full
            take = limit * self.GROW if data >= limit * self.GROW or full > limit else limit
            prios = (PRIO_EVENT, PRIO_WINDOW, PRIO_FRAME) if data_now else (PRIO_EVENT,) if events else ()
            sent = drained = False
            while prios and len(self._inflight) < window and not s.lost.is_set():
                self.committed.clear()  # a commit from here on is seen by the wait below
                rows = []
                before = dict(cursors)
                for prio in prios:
                    rows = await self.spool.read(prio, cursors[prio], take)
                    if rows:
                        cursors[prio] = rows[-1][0]
                        break
                if rows and prio == PRIO_WINDOW and len(rows) < take:
                    # windows and frames in one batch: one message, one envelope
                    more = await self.spool.read(PRIO_FRAME, cursors[PRIO_FRAME], take - len(rows))
                    if more:
                        cursors[PRIO_FRAME] = more[-1][0]
                        rows, prio = rows + more, PRIO_FRAME
                if not rows:
                    drained = len(prios) == 3
                    break
                if prio == PRIO_FRAME and len(rows) < take and not by_time:
                    # a full batch brought the pump: the rest waits to fill the next one (or the
                    # delay), instead of going as a small batch, whose encoding costs more a frame
                    cursors.update(before)
                    if self._due is None:
                        self._due = time.monotonic() + delay
                    break
                payload = await self._encode(prio, rows)
                if s.lost.is_set():
                    break  # lost while encoding: the rows are read again after the reconnect
                if self.schema is not None and self.schema.changed:
                    self.publish_schema()
                self._publish(s, prio, rows, payload)
                if prio != PRIO_EVENT:
                    self._published += len(rows)
                sent = True
                if prio == PRIO_FRAME and len(rows) < take and not until_empty:
                    drained = True  # a partial batch: what came since waits for the next delay
                    break
            if drained:
                self._due = None
            if s.lost.is_set():
                break
            if until_empty and not sent and not self._inflight:
                if self._acked:
                    continue  # delete the last acked records first
                return
            if sent and len(self._inflight) < window and not drained:
                continue
            if len(self._inflight) >= window or self._due is None:
                timeout = self.STATE_INTERVAL  # a PUBACK or a commit wakes the pump
            elif until_empty:
                timeout = 0.05
            else:
                timeout = self._due - time.monotonic()  # <= 0: the delay is over, data goes now
            # with the commit callback, a commit set aside by _on_commit is picked up at `due`
            # (or at once, if nothing waited before it)
            commit_seen = self.committed.is_set() and (not self._commit_callback or self._due is None)
            if not commit_seen and not self._wake.is_set() and timeout > 0:
                waits = [asyncio.ensure_future(self._wake.wait())]
                if not self._commit_callback:
                    waits.append(asyncio.ensure_future(self.committed.wait()))
                try:
                    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)
            if self.committed.is_set():
                self.committed.clear()
                if self._due is None:
                    self._due = time.monotonic() + delay
            self._wake.clear()
        raise ConnectionError("connection lost")

    def _on_commit(self) -> None:
        """After each commit: wake the pump only if it has something to do now (start the batch
        delay, send an event, send a full batch); otherwise it sleeps through the delay, and a
        gateway at a few hundred frames a second saves a wake-up a commit."""
        if self._session is None or self._wake.is_set():
            return
        if self._due is None:
            self._wake.set()
            return
        events, data = self._unsent()
        if events > 0 or data >= self._full:
            self._wake.set()

    def _batch_size(self, data: int, limit: int) -> int:
        """The data records that make a batch go at once: `limit`, or GROW times it while the
        records come in fast enough to fill that within GROW_FILL seconds (the rate, records
        committed a second, measured over RATE_SPAN seconds at least: two such spans in a row to
        grow, one under half the rate to shrink)."""
        now, total = time.monotonic(), data + self._published
        if self._rate_at is None:
            self._rate_at, self._rate_total = now, total
            return self._full
        span = now - self._rate_at
        if span >= self.RATE_SPAN:
            rate = (total - self._rate_total) / span
            self._rate_at, self._rate_total = now, total
            fast = limit * self.GROW / self.GROW_FILL
            self._fast_spans = self._fast_spans + 1 if rate >= fast else 0
            if self._fast_spans >= 2:  # a burst (nodes that start together) is not a rate
                self._full = limit * self.GROW
            elif rate < fast / 2:
                self._full = limit
        return self._full

    def _unsent(self) -> tuple[int, int]:
        """(event records, window and frame records) in the spool, not yet published."""
        stats = self.spool.stats()
        inflight = {PRIO_EVENT: 0, PRIO_FRAME: 0}
        for entry in self._inflight.values():  # (ids, bytes, priority); a subclass may leave the priority out
            prio = entry[2] if len(entry) > 2 else PRIO_FRAME
            inflight[PRIO_EVENT if prio == PRIO_EVENT else PRIO_FRAME] += len(entry[0])
        acked = len(self._acked)  # not yet deleted (counted as data: events are few)
        return (stats[KIND_EVENT]["records"] - inflight[PRIO_EVENT],
                stats[KIND_FRAME]["records"] + stats[KIND_WINDOW]["records"] - inflight[PRIO_FRAME] - acked)

    async def _encode(self, prio: int, rows) -> bytes:
        """The payload of one message of spool rows (large data batches on the encoder thread)."""
        return await self._batches.encode(prio, rows)

    def _publish(self, s: _Session, prio: int, rows, payload: bytes) -> None:
        topic = self.topic_events if prio == PRIO_EVENT else self.topic_data
        info = s.client.publish(topic, payload, qos=QOS_AT_LEAST_ONCE)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
        self._inflight[info.mid] = ([r[0] for r in rows], len(payload), prio)

    async def final_state(self, state: dict) -> None:
        """Publish a last retained state (clean shutdown); best effort within 2 s."""
        s = self._session
        if s is None or not self.connected:
            return
        info = s.client.publish(self.topic_state, json.dumps(state), qos=1, retain=True)
        deadline = time.monotonic() + 2
        while not info.is_published() and time.monotonic() < deadline and not s.lost.is_set():
            await asyncio.sleep(0.02)
