"""JetStream uplink: spool → a replicated JetStream stream on a NATS cluster, deleted from the
spool only after the stream's publish acknowledgement.

Why not MQTT into NATS: NATS's MQTT listener sends PUBACK for a QoS 1 PUBLISH
once it has handed the message on, without waiting for a stream that captures
the subject to store (and replicate) it; hil_tests/test_cloud_nats.py shows a
message PUBACKed by the listener and then missing from the stream after a
node of the cluster is killed. A JetStream publish is acknowledged only once the
stream has stored the message on a quorum of its replicas, so a spool record is
deleted only when a copy survives the loss of any one node.

Configuration (`[jetstream]` in gateway.toml; with `enabled = true` it replaces `[mqtt]`):
servers (the cluster's URLs), stream ("HEADRACE"), replicas (3), inflight (batches
awaiting their acknowledgement), timeout (seconds for one), batch_records, batch_delay, schema.
Subjects: `headrace.v1.<site>.<gateway>.data`, `.events`, `.schema`, `.state` (the MQTT
topics with `.` for `/`; with `schema = true`, as on MQTT, batches are version 3 and
refer to the schema message, which is stored before the first batch that needs it); commands arrive on `headrace.v1.<site>.<gateway>.cmd.<node>` (core NATS)
and are answered on `….cmd_result.<node>`.

Usage: `JetStreamUplink(cfg, spool, committed, metrics)`, as `MqttUplink`; the
service picks it when `[jetstream] enabled`. `ensure_stream` makes the stream.

Caveats: delivery is at least once, as with MQTT: a batch stored but not yet
deleted when the gateway dies is published again (each carries a Nats-Msg-Id,
a digest of its bytes, so the stream drops a repeat within its duplicate window;
the sink drops any other by the readings' identity). NATS has no Last Will: a
gateway that vanishes is seen by the age of its last `state` (sent every 60 s).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from gateway.runtime.metrics import Metrics
from gateway.runtime.spool import PRIO_EVENT, PRIO_FRAME, PRIO_WINDOW, Spool
from gateway.runtime.uplink import batch
from gateway.runtime.uplink.encoder import BatchEncoder
from gateway.runtime.uplink.retry import keep_connected

log = logging.getLogger("headrace.jetstream")

SUBJECTS = ("headrace.v1.*.*.data", "headrace.v1.*.*.events", "headrace.v1.*.*.schema", "headrace.v1.*.*.state")
# the stream is a buffer between gateways and sinks, not an archive: a message older than this is
# dropped, consumed or not (the sinks have a week to catch up after an outage)
STREAM_MAX_AGE = 7 * 86400.0  # seconds


async def ensure_stream(js, name: str, subjects=SUBJECTS, replicas: int = 3) -> None:
    """Make the stream that captures the gateways' subjects, unless it exists."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = None
    if info is not None:
        missing = [s for s in subjects if s not in (info.config.subjects or [])]
        if missing:  # made by an older release: capture what is written now too
            info.config.subjects = list(info.config.subjects or []) + missing
            await js.update_stream(info.config)
            log.info("stream %s now also captures %s", name, ", ".join(missing))
        return
    try:
        await js.add_stream(StreamConfig(name=name, subjects=list(subjects), num_replicas=replicas,
                                         storage=StorageType.FILE, max_age=STREAM_MAX_AGE))
        log.info("made JetStream stream %s (R%d) for %s", name, replicas, ", ".join(subjects))
    except BadRequestError as exc:  # made meanwhile by another gateway or a sink
        if "already in use" not in str(exc):
            raise


class JetStreamUplink:
    """Owns the NATS connection and the pump from spool to stream."""

    STATE_INTERVAL = 60.0

    def __init__(self, cfg, spool: Spool, committed: asyncio.Event, metrics: Metrics, downlink=None):
        self.cfg, self.spool, self.committed, self.metrics = cfg, spool, committed, metrics
        root = f"headrace.v1.{cfg.gateway.site}.{cfg.gateway.id}."
        self.subject_data, self.subject_events, self.subject_state = root + "data", root + "events", root + "state"
        self.subject_schema = root + "schema"
        # the node and sensor-name patterns, once in a schema message that version 3 batches refer to
        self.schema = batch.Schema(cfg.gateway.id, cfg.gateway.site) if cfg.jetstream.schema else None
        # large data batches are encoded on a thread of its own for the time of `run` or `drain`
        self._batches = BatchEncoder(cfg.gateway.id, cfg.gateway.site, self.schema)
        self.subject_cmd = root + "cmd."
        self.downlink = downlink
        if downlink is not None:
            downlink.on_result = self.command_result
        self.connected = False
        self.nc = None
        self.js = None
        self._since = time.time()
        self._state_at = 0.0

    async def run(self) -> None:
        """Connect, pump, start again on a failed publish; until cancelled."""
        with self._batches.running():
            await keep_connected(self._connect, self._pump, reconnect_max=self.cfg.jetstream.reconnect_max,
                                 transient=_nats_error,  # nats-py's errors (timeouts, no responders in an election)
                                 failed=lambda exc, delay: log.warning("JetStream uplink: %s: %s; again in %.1f s",
                                                                       type(exc).__name__, exc, delay),
                                 teardown=self._disconnected)

    async def _disconnected(self) -> None:
        self.connected = False
        self.metrics.set("headrace_uplink_connected", 0)

    async def _connect(self) -> None:
        if self.nc is not None and self.nc.is_connected:
            return
        import nats

        j = self.cfg.jetstream
        if self.nc is not None:
            await self._close()
        self.metrics.inc("headrace_uplink_connects_total")
        self.nc = await nats.connect(servers=list(j.servers), name=f"headrace-{self.cfg.gateway.site}-"
                                     f"{self.cfg.gateway.id}", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                     connect_timeout=5, error_cb=self._nats_error)
        self.js = self.nc.jetstream(timeout=j.timeout)
        await ensure_stream(self.js, j.stream, SUBJECTS, j.replicas)
        if self.downlink is not None:
            await self.nc.subscribe(self.subject_cmd + "*", cb=self._command)
        self._since = time.time()
        log.info("JetStream uplink connected to %s, stream %s", ", ".join(j.servers), j.stream)

    async def _nats_error(self, exc) -> None:
        log.warning("NATS: %s", exc)

    async def _command(self, msg) -> None:
        from gateway.decisions.downlink import CommandError

        node = msg.subject[len(self.subject_cmd):]
        try:
            cid = json.loads(msg.data).get("id")
        except (ValueError, AttributeError, UnicodeDecodeError):
            cid = None
        try:
            command = self.downlink.submit(node, msg.data)
        except CommandError as exc:
            self.metrics.inc("headrace_commands_total", result="rejected")
            log.warning("rejected command for node %r: %s", node, exc)
            answer = {"id": cid if isinstance(cid, str) else None, "status": "rejected", "error": str(exc)}
        else:
            self.metrics.inc("headrace_commands_total", result="queued")
            answer = {"id": command.id, "status": "queued"}
            loop = asyncio.get_running_loop()  # answered after its commit
            self.downlink.when_durable(lambda: loop.create_task(self._answer(node, answer)))
            return
        await self._answer(node, answer)

    async def _answer(self, node: str, answer: dict) -> None:
        if self.nc is not None and self.nc.is_connected:
            await self.nc.publish(self.subject_cmd[:-4] + "cmd_result." + node, json.dumps(answer).encode())

    def command_result(self, node: str, answer: dict) -> None:
        """A command's outcome at its node: counted, logged, answered (best effort)."""
        self.metrics.inc("headrace_commands_total", result=answer["status"])
        log.info("command %s for node %s %s", answer["id"], node, answer["status"])
        if self.nc is not None and self.nc.is_connected:
            asyncio.get_running_loop().create_task(self._answer(node, answer))

    def state(self) -> dict:
        dropped = {f"{lab['kind']}_{lab['reason']}": int(v)
                   for lab, v in self.metrics.by_label("headrace_spool_dropped_total")}
        return {"online": True, "since": self._since, "at": time.time(), "spool": self.spool.stats(),
                "dropped": dropped}

    async def _publish_state(self, state: dict) -> None:
        await self.js.publish(self.subject_state, json.dumps(state).encode())
        self._state_at = time.monotonic()

    async def _publish_schema(self) -> None:
        """The schema message, stored (acknowledged) before any batch that refers to it is sent."""
        payload = self.schema.message()
        await self.js.publish(self.subject_schema, payload)
        self.metrics.inc("headrace_uplink_schema_messages_total")
        self.metrics.inc("headrace_uplink_bytes_total", len(payload))

    async def _pump(self, until_empty: bool = False) -> None:
        """Publish spool rows in order, `inflight` awaiting their acks; delete what is acked."""
        j = self.cfg.jetstream
        await self._publish_state(self.state())
        if self.schema is not None and (self.schema.nodes or self.schema.patterns):
            await self._publish_schema()  # a stream that lost it (or a new one) gets it again
        self.connected = True
        self.metrics.set("headrace_uplink_connected", 1)
        cursors = {PRIO_EVENT: 0, PRIO_WINDOW: 0, PRIO_FRAME: 0}
        inflight: list[tuple[asyncio.Future, list[int], int]] = []
        try:
            while True:
                if time.monotonic() - self._state_at >= self.STATE_INTERVAL:
                    await self._publish_state(self.state())
                self.committed.clear()  # before reading: a commit from now on wakes the wait below
                while len(inflight) < j.inflight:
                    rows, prio = [], None
                    for prio in (PRIO_EVENT, PRIO_WINDOW, PRIO_FRAME):
                        rows = await self.spool.read(prio, cursors[prio], j.batch_records)
                        if rows:
                            cursors[prio] = rows[-1][0]
                            break
                    if not rows:
                        break
                    payload = await self._batches.encode(prio, rows)
                    if self.schema is not None and self.schema.changed:
                        await self._publish_schema()  # rare: a new node or pattern
                    subject = self.subject_events if prio == PRIO_EVENT else self.subject_data
                    msg_id = hashlib.blake2b(payload, digest_size=16).hexdigest()
                    fut = asyncio.ensure_future(self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}))
                    inflight.append((fut, [r[0] for r in rows], len(payload)))
                if inflight:
                    # acks are taken in publish order: a record is deleted only once it and every
                    # record before it are stored, so a restart resends a suffix, never leaves a gap
                    fut, ids, nbytes = inflight.pop(0)
                    await fut  # raises on a timeout or an error: the pump starts again from the spool
                    done = list(ids)
                    while inflight and inflight[0][0].done() and not inflight[0][0].exception():
                        f2, ids2, n2 = inflight.pop(0)
                        done += ids2
                        nbytes += n2
                        self.metrics.inc("headrace_uplink_messages_total")
                    self.metrics.inc("headrace_uplink_messages_total")
                    self.metrics.inc("headrace_uplink_bytes_total", nbytes)
                    await self.spool.delete(done)
                    continue
                if until_empty:
                    return
                # not asyncio.wait_for: before Python 3.12 it returns the wake when a cancel arrives
                # with it, and the cancel is lost: the owner awaiting this task would wait forever
                waiter = asyncio.ensure_future(self.committed.wait())
                try:
                    await asyncio.wait((waiter,), timeout=self.STATE_INTERVAL)
                finally:
                    waiter.cancel()
                if not self.committed.is_set():
                    continue  # the state interval passed with no commit
                if j.batch_delay:
                    await asyncio.sleep(j.batch_delay)
        finally:
            for fut, _ids, _n in inflight:
                fut.cancel()
            await asyncio.gather(*(f for f, _i, _n in inflight), return_exceptions=True)

    async def drain(self, timeout: float = 600.0) -> int:
        """Publish everything the spool holds, wait for the acks, return the records sent."""
        await self._connect()
        before, _ = await self.spool.depth()
        try:
            with self._batches.running():
                await asyncio.wait_for(self._pump(until_empty=True), timeout)
        finally:
            await self._close()
        after, _ = await self.spool.depth()
        return before - after

    async def final_state(self, state: dict) -> None:
        """A last state (clean shutdown), then close; best effort within 2 s."""
        if self.nc is None or not self.nc.is_connected:
            return
        try:
            await asyncio.wait_for(self.js.publish(self.subject_state, json.dumps(state).encode()), 2)
        except Exception as exc:  # best effort: the gateway is stopping
            log.info("final state not stored: %s", exc)
        await self._close()

    async def _close(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                pass


def _nats_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("nats")
