"""Where the sink's messages come from: a durable JetStream consumer, or an MQTT session.

Both give `Message`s in groups (`fetch`) and take their acknowledgement only
after the caller's database commit (`Message.ack`). A message not acknowledged
is delivered again: JetStream after `ack_wait` or at once on `nak`, mosquitto
when the session reconnects.

Usage: `source = JetStreamSource(cfg.jetstream)` (or `MqttSource(cfg.mqtt)`), then
`await source.start()`, `await source.fetch(64, 1.0)` in a loop, `await source.stop()`.

Caveats: on JetStream every worker pulls from one durable consumer, so they
share the stream's messages (competing consumers) and a worker that dies leaves
its unacknowledged messages to the others after `ack_wait`. On mosquitto the
session is persistent (clean_session false, fixed client id): a worker that
restarts gets what arrived meanwhile; several workers need a shared subscription
(`$share/<group>/headrace/v1/#`) and distinct client ids.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Awaitable, Callable

log = logging.getLogger("headrace.sink")


@dataclass
class Message:
    topic: str
    payload: bytes
    position: str | None  # the stream sequence on JetStream; None on MQTT
    ack: Callable[[], Awaitable[None]]
    nak: Callable[[], Awaitable[None]]


class JetStreamSource:
    """A pull subscription on the durable consumer `durable` of `stream`; makes both if missing."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.nc = None
        self.sub = None

    async def start(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        from gateway.runtime.uplink.jetstream import SUBJECTS, ensure_stream

        self.nc = await nats.connect(servers=list(self.cfg.servers), max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.5, connect_timeout=5, name="headrace-sink",
                                     error_cb=self._error, disconnected_cb=self._disconnected)
        js = self.nc.jetstream(timeout=10)
        await ensure_stream(js, self.cfg.stream, SUBJECTS, self.cfg.replicas)
        # every worker binds to one durable consumer of the whole stream: competing consumers
        from nats.js.errors import BadRequestError

        try:
            await js.add_consumer(self.cfg.stream, ConsumerConfig(
                durable_name=self.cfg.durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.cfg.ack_wait, max_ack_pending=20000, num_replicas=self.cfg.replicas))
        except BadRequestError as exc:  # made before with other settings: use it as it is
            log.warning("JetStream consumer %s exists with other settings (%s); using it", self.cfg.durable, exc)
        self.sub = await js.pull_subscribe_bind(durable=self.cfg.durable, stream=self.cfg.stream)

    async def _error(self, exc) -> None:
        log.warning("NATS: %s", exc)

    async def _disconnected(self) -> None:
        log.warning("NATS: disconnected; reconnecting to %s", ", ".join(self.cfg.servers))

    async def last_schema(self, site: str, gateway: str) -> bytes | None:
        """The last schema message a gateway stored in the stream (what MQTT's retained message is):
        a worker meets a batch whose schema message went to another worker, or came before it started."""
        import nats.errors

        try:
            msg = await self.nc.jetstream().get_last_msg(self.cfg.stream, f"headrace.v1.{site}.{gateway}.schema")
        except nats.errors.Error as exc:
            log.warning("no schema of %s/%s in stream %s: %s", site, gateway, self.cfg.stream, exc)
            return None
        return msg.data

    async def fetch(self, n: int, timeout: float) -> list[Message]:
        import nats.errors

        try:
            msgs = await self.sub.fetch(n, timeout=timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.NoServersError) as exc:
            raise ConnectionError(f"NATS: {exc}") from None
        except nats.errors.Error as exc:  # a leader election, a reconnect: pull again shortly
            log.warning("NATS fetch: %s", exc)
            await asyncio.sleep(0.5)
            return []
        return [Message(m.subject, m.data, str(m.metadata.sequence.stream), m.ack, m.nak) for m in msgs]

    async def stop(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None:
            await nc.close()


def _downlink(topic: str) -> bool:
    """Commands to a gateway (`cmd/<node>`, the fleet dispatcher's `cmd/_fleet`) and their answers
    (`cmd_result/<node>`) share the gateways' topic tree, which `headrace/v1/#` subscribes to: they
    are not uplink to store, nor dead letters, and are passed over."""
    parts = topic.split("/")
    return len(parts) == 6 and parts[:2] == ["headrace", "v1"] and parts[4] in ("cmd", "cmd_result")


class MqttSource:
    """A persistent MQTT session (QoS 1, acknowledged by hand after the commit), e.g. on mosquitto."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._q: queue.Queue = queue.Queue()
        self.client = None
        self._connected = threading.Event()

    async def start(self) -> None:
        import paho.mqtt.client as paho

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id, clean_session=False,
                        protocol=paho.MQTTv311)
        c.manual_ack_set(True)  # PUBACK only once the rows are committed (Message.ack)
        c.reconnect_delay_set(0.5, 5)

        pending: set[int] = set()

        def on_connect(client, _u, _flags, reason, _p):
            if not reason.is_failure:
                pending.add(client.subscribe(self.cfg.topic, qos=1)[1])
                if self.cfg.topic.startswith("$share/"):
                    # a shared subscription gets no retained messages, and each message goes to one
                    # worker: every worker reads the gateways' schemas on its own subscription
                    pending.add(client.subscribe("headrace/v1/+/+/schema", qos=1)[1])

        def on_subscribe(_c, _u, mid, _codes, _p):
            # started once the broker has the subscriptions (SUBACK): what is published from
            # then on reaches this session
            pending.discard(mid)
            if not pending:
                self._connected.set()

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        def on_message(client, _u, msg):
            if _downlink(msg.topic):
                if msg.qos:
                    client.ack(msg.mid, msg.qos)
                return
            self._q.put((msg.topic, msg.payload, msg.mid))

        c.on_message = on_message
        self.client = c
        c.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        c.loop_start()
        if not await asyncio.get_running_loop().run_in_executor(None, self._connected.wait, 10):
            raise ConnectionError(f"MQTT broker {self.cfg.host}:{self.cfg.port} did not answer")

    async def fetch(self, n: int, timeout: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        try:
            first = await loop.run_in_executor(None, self._q.get, True, timeout)
        except queue.Empty:
            return []
        items = [first]
        while len(items) < n:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                break
        return [Message(topic, payload, None, self._acker(mid), _nothing) for topic, payload, mid in items]

    def _acker(self, mid: int):
        async def ack() -> None:
            self.client.ack(mid, 1)
        return ack

    async def stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.loop_stop()
            client.disconnect()


async def _nothing() -> None:
    """MQTT has no negative acknowledgement: the broker sends again when the session resumes."""
