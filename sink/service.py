"""`headrace sink run`: one sink worker, from the broker into the database.

Each turn: fetch up to `[sink] group` messages, decode each (`sink.decode`),
store the group in one transaction (`sink.store`), and only then acknowledge
the messages. A message that cannot be stored as data (undecodable, an unknown
batch version, a gateway not in `[sink] allow`, a topic that is not ours) is
counted, logged with its topic and stream position, parked in `dead_letters`
with its bytes, in the same transaction, and acknowledged: it never blocks the
stream. When the database is away the messages stay unacknowledged (JetStream:
`nak`, delivered again) and the worker retries with backoff.

Usage: `headrace sink run --config sink.toml` (one process a worker; start more
for more throughput: they share one durable consumer). `Sink(cfg).run()` from Python.

Counters (`metrics_port`): headrace_sink_messages_total{kind}, headrace_sink_readings_total,
headrace_sink_duplicates_total, headrace_sink_windows_total, headrace_sink_events_total,
headrace_sink_dead_letters_total{reason}, headrace_sink_store_errors_total,
headrace_sink_presence_changes_total (rows turned online or offline by the presence sweep),
headrace_sink_partitions_dropped_total{table} and headrace_sink_expired_rows_total{table}
(retention, `[sink] keep`: partitions dropped, rows deleted from a default partition).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from gateway.runtime.metrics import Metrics
from sink.config import SinkConfig
from sink.decode import DeadLetter, Decoder
from sink.sources import JetStreamSource, MqttSource
from sink.store import Dead, StoreRejected, StoreUnavailable, open_store

log = logging.getLogger("headrace.sink")


class Sink:
    """One worker: a source, a decoder, a store; owns them and closes them on stop."""

    def __init__(self, cfg: SinkConfig, source=None, store=None, metrics: Metrics | None = None):
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.decoder = Decoder(cfg.sink.allow)
        self.source = source or (JetStreamSource(cfg.jetstream) if cfg.sink.source == "jetstream"
                                 else MqttSource(cfg.mqtt))
        self._store = store
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-db")
        self._stop = asyncio.Event()
        self.started = asyncio.Event()  # set once the store is open and the source started (subscribed)

    @property
    def store(self):
        return self._store

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Until `stop()`: fetch, decode, store, acknowledge."""
        loop = asyncio.get_running_loop()
        if self._store is None:
            s = self.cfg.sink
            self._store = await self._retry(lambda: loop.run_in_executor(
                self._db, lambda: open_store(self.cfg.database, s.gateway_timeout, s.node_timeout, s.partition,
                                             s.retention())))
        # the schema messages stored before (by this worker before a restart, or by another):
        # a batch that refers to one decodes even though its message went by long ago
        saved = await self._retry(lambda: loop.run_in_executor(self._db, self._store.schemas))
        log.info("sink worker read %d stored schema messages", self.decoder.load(saved))
        if not await self._retry_source():
            return  # stopped before the broker could be reached
        log.info("sink worker storing into %s from %s", self._store.kind, self.cfg.sink.source)
        self.started.set()
        swept = 0.0
        try:
            while not self._stop.is_set():
                msgs = await self.source.fetch(self.cfg.sink.group, 0.5)
                if msgs:
                    await self.handle(msgs)
                if time.monotonic() - swept >= self.cfg.sink.presence_interval:
                    swept = time.monotonic()
                    await self.sweep()
        finally:
            await self.source.stop()
            self._db.shutdown(wait=True)

    async def sweep(self) -> None:
        """Presence from silence (sink/presence.py): gateways, nodes and resources gone quiet are
        offline, nodes heard again online. A database away is left to the next sweep."""
        try:
            n = await asyncio.get_running_loop().run_in_executor(self._db, self._store.sweep)
        except (StoreUnavailable, StoreRejected) as exc:
            self.metrics.inc("headrace_sink_store_errors_total")
            log.warning("presence sweep: %s", exc)
            return
        for table, dropped, deleted in getattr(self._store, "take_expired", list)():
            self.metrics.inc("headrace_sink_partitions_dropped_total", dropped, table=table)
            self.metrics.inc("headrace_sink_expired_rows_total", deleted, table=table)
        if n:
            self.metrics.inc("headrace_sink_presence_changes_total", n)
            log.info("presence: %d gateways, nodes or resources changed online/offline", n)

    async def _retry_source(self) -> bool:
        """Start the source, again and again while the broker cannot be reached; False if stopped first."""
        delay = 0.5
        while True:
            start = asyncio.ensure_future(self.source.start())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([start, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not start.done():  # stopped while connecting (nats-py retries the first connection too)
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
                await self.source.stop()
                return False
            try:
                start.result()
                return True
            except Exception as exc:  # nats-py's and paho's connection errors, OSError
                if not isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError)) \
                        and not type(exc).__module__.startswith("nats"):
                    raise
                log.warning("broker unavailable (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await self.source.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _retry(self, make):
        delay = 0.2
        while True:
            try:
                return await make()
            except StoreUnavailable as exc:
                self.metrics.inc("headrace_sink_store_errors_total")
                log.warning("%s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def handle(self, msgs) -> None:
        """Decode, store in one transaction, then acknowledge; retry the store until it works."""
        pairs, dead = [], []
        for m in msgs:
            try:
                pairs.append((m, await self._decode(m)))
            except DeadLetter as exc:
                self.metrics.inc("headrace_sink_dead_letters_total", reason=exc.reason)
                log.warning("dead letter (%s) on %s at position %s: %s", exc.reason, m.topic, m.position, exc.detail)
                dead.append(Dead(m.topic, m.position, exc, bytes(m.payload), self.cfg.sink.source))
        decoded = [d for _m, d in pairs]
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                try:
                    written = await loop.run_in_executor(self._db, self._store.write, decoded, dead)
                except StoreRejected as exc:
                    log.warning("%s; writing the group's %d messages one by one", exc, len(pairs))
                    written = await self._one_by_one(pairs, list(dead))
                break
            except StoreUnavailable as exc:
                self.metrics.inc("headrace_sink_store_errors_total")
                log.warning("%s; %d messages kept unacknowledged, retrying in %.1f s", exc, len(msgs), delay)
                if self._stop.is_set():
                    for m in msgs:
                        await m.nak()
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for m in msgs:
            await m.ack()
        for d in decoded:
            self.metrics.inc("headrace_sink_messages_total", kind=d.kind)
        self.metrics.inc("headrace_sink_readings_total", written.readings)
        self.metrics.inc("headrace_sink_duplicates_total", written.duplicates)
        self.metrics.inc("headrace_sink_windows_total", written.windows)
        self.metrics.inc("headrace_sink_events_total", written.events)


    async def _decode(self, m):
        """Decode one message. A version 3 or 4 batch whose schema this worker has not met reads the
        gateway's schemas from the database (stored by another worker, or since this one started),
        then (JetStream) the gateway's last schema from the stream, trying again after each."""
        try:
            return self.decoder.decode(m.topic, m.payload)
        except DeadLetter as exc:
            if exc.reason != "schema":
                raise
            first = exc
        loop = asyncio.get_running_loop()
        try:
            stored = await loop.run_in_executor(self._db, self._store.schemas, first.site, first.gateway)
        except StoreUnavailable as exc:  # the stream may still have it; the write will retry the store
            log.warning("stored schemas of %s/%s not read: %s", first.site, first.gateway, exc)
            stored = []
        if self.decoder.load(stored):
            try:
                return self.decoder.decode(m.topic, m.payload)
            except DeadLetter as exc:
                if exc.reason != "schema":
                    raise
        last = getattr(self.source, "last_schema", None)
        schema = await last(first.site, first.gateway) if last is not None else None
        if schema is None:
            raise first
        try:
            found = self.decoder.decode(m.topic.rsplit(".", 1)[0] + ".schema" if "/" not in m.topic
                                        else m.topic.rsplit("/", 1)[0] + "/schema", schema)
        except DeadLetter:
            raise first from None
        out = self.decoder.decode(m.topic, m.payload)
        out.schema = found.schema  # stored with the batch: the next worker finds it in the database
        return out

    async def _one_by_one(self, pairs, dead):
        """The database refused a group's rows: write its messages one at a time, so that only the
        one at fault is left out, parked as a dead letter (reason `unstorable`)."""
        from sink.store import Written

        loop = asyncio.get_running_loop()
        total = Written()
        for m, d in pairs:
            try:
                w = await loop.run_in_executor(self._db, self._store.write, [d], [])
            except StoreRejected as one:
                self.metrics.inc("headrace_sink_dead_letters_total", reason="unstorable")
                log.warning("dead letter (unstorable) on %s at position %s: %s", m.topic, m.position, one)
                dead.append(Dead(m.topic, m.position, DeadLetter("unstorable", str(one), d.site, d.gateway),
                                 bytes(m.payload), self.cfg.sink.source))
                continue
            for k in ("readings", "duplicates", "windows", "events"):
                setattr(total, k, getattr(total, k) + getattr(w, k))
        if dead:
            await loop.run_in_executor(self._db, self._store.write, [], dead)
        return total


async def _serve_metrics(metrics: Metrics, port: int):
    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = metrics.render().encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def main(cfg: SinkConfig) -> int:
    """Run one worker until SIGTERM or SIGINT; a summary line every 10 s."""
    sink = Sink(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sink.stop)
    server = await _serve_metrics(sink.metrics, cfg.sink.metrics_port) if cfg.sink.metrics_port else None
    task = asyncio.create_task(sink.run(), name="sink")

    def summary():
        m = sink.metrics
        log.info("sink: %d readings stored, %d repeats dropped, %d events, %d dead letters",
                 m.total("headrace_sink_readings_total"), m.total("headrace_sink_duplicates_total"),
                 m.total("headrace_sink_events_total"), m.total("headrace_sink_dead_letters_total"))

    try:
        last = time.monotonic()
        while not task.done():
            await asyncio.wait([task], timeout=10)
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                summary()
        await task
        summary()
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    return 0
