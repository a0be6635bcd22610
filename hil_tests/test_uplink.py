"""The MQTT uplink against a real mosquitto: TLS with client certificates, birth and LWT, commands."""
from __future__ import annotations

import json
import os
import signal

import cbor2
from aiocoap.numbers.codes import Code

from gateway.protocol import cose

from .rig import GatewayProcess, Mosquitto, Subscriber, coap_post, make_tls, wait_for


def wait_for_or_none(pred, timeout: float):
    try:
        return wait_for(pred, timeout, "")
    except TimeoutError:
        return None


def frame(key: bytes, seq: int, value: float) -> bytes:
    return cose.mac0(key, b"n1", cbor2.dumps([{-2: "n1/", -3: 1.7e9 + seq, 0: "t", 2: value}]), seq=seq)


def test_tls_with_client_certificate(tmp_path):
    tls = make_tls(tmp_path)
    broker = Mosquitto(tmp_path, tls=tls).start()
    sub = Subscriber(broker.port)
    key = os.urandom(32)
    extra = f'tls_ca = "{tls["ca"]}"\ntls_cert = "{tls["client_cert"]}"\ntls_key = "{tls["client_key"]}"\n'
    gw = GatewayProcess(tmp_path, broker.tls_port, {"n1": key}, mqtt_extra=extra).start()
    try:
        assert coap_post(gw.coap_port, frame(key, 1, 2.5)).code == Code.CHANGED
        got = wait_for(lambda: sub.frames().get(("n1", 1)), 15, "the frame through the TLS listener")
        assert got == [[["t", 1.7e9 + 1, 2.5]]]
        assert "MQTT connected" in gw.log()
    finally:
        gw.stop()
        sub.close()
        broker.stop()


def test_lwt_when_the_gateway_dies(tmp_path, mosquitto, subscriber):
    gw = GatewayProcess(tmp_path, mosquitto.port, {"n1": os.urandom(32)}, mqtt_extra="keepalive = 5\n").start()
    states = lambda: [json.loads(p) for t, p in subscriber.messages if t.endswith("/state")]  # noqa: E731
    wait_for(lambda: any(s.get("online") for s in states()), 10, "the birth message")
    gw.stop(signal.SIGKILL)
    # the broker notices the dead session after 1.5 x keepalive at most, then publishes the LWT
    wait_for(lambda: states()[-1] == {"online": False}, 15, "the LWT")


def test_commands_from_the_cloud_are_validated_and_answered(tmp_path, mosquitto, subscriber):
    import paho.mqtt.client as paho

    gw = GatewayProcess(tmp_path, mosquitto.port, {"pump3": os.urandom(32)}).start()
    root = "headrace/v1/bench/gwtest/"
    try:
        wait_for(lambda: gw.metric("headrace_uplink_connected") == 1, 10, "the uplink")
        wait_for(lambda: "MQTT connected" in gw.log(), 10, "the connection")
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-cloud")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()

        def answers(prefix):
            return [a for t, p in subscriber.messages if "/cmd_result/" in t
                    and str((a := json.loads(p)).get("id")).startswith(prefix)]

        # the gateway's subscription is live once it answers a probe (the broker drops commands
        # published before it); the probes go to cmd/ghost, the topic of the last command below,
        # so every probe the gateway got is answered before that command's answer
        probes = iter(range(1, 1000))

        def probe_answered():
            pub.publish(root + "cmd/ghost", json.dumps({"id": f"probe-{next(probes)}", "cmd": "reboot"}),
                        qos=1).wait_for_publish(5)
            return wait_for_or_none(lambda: answers("probe-"), 0.5)
        wait_for(probe_answered, 10, "the gateway's subscription to cmd/#")
        pub.publish(root + "cmd/pump3", json.dumps({"id": "c1", "cmd": "set_period", "args": {"period_ms": 500}}),
                    qos=1).wait_for_publish(5)
        pub.publish(root + "cmd/pump3", json.dumps({"id": "c2", "cmd": "format_disk"}), qos=1).wait_for_publish(5)
        pub.publish(root + "cmd/ghost", json.dumps({"id": "c3", "cmd": "reboot"}), qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        results = wait_for(lambda: r if len(r := answers("c")) == 3 else None, 10, "three answers")
        probed = len(answers("probe-"))
        by_id = {r["id"]: r for r in results}
        assert by_id["c1"] == {"id": "c1", "status": "queued"}
        assert by_id["c2"]["status"] == "rejected" and "unknown cmd" in by_id["c2"]["error"]
        assert by_id["c3"]["status"] == "rejected" and "unknown node" in by_id["c3"]["error"]
        assert gw.metric('headrace_commands_total{result="queued"}') == 1
        assert gw.metric('headrace_commands_total{result="rejected"}') == 2 + probed
        assert "rejected command for node 'ghost'" in gw.log()
    finally:
        gw.stop()


def test_batches_encoded_on_the_encoder_thread_leave_in_spool_order_events_first(tmp_path, mosquitto, subscriber,
                                                                                  monkeypatch):
    """The uplink in process against the real broker: data batches are encoded on the uplink's
    encoder thread (not the event loop's), yet batches leave in spool order, events before
    data, and the spool is empty only after every PUBACK. A backlog of GROW full batches or
    more goes in batches GROW times batch_records."""
    import asyncio
    import threading

    from gateway.config import from_dict
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.spool import Spool
    from gateway.runtime.uplink import batch, events
    from gateway.runtime.uplink.mqtt import MqttUplink

    threads = []
    encode = batch.encode

    sizes = []

    def recording_encode(*args):
        threads.append(threading.current_thread().name)
        sizes.append(len(args[2]))  # the batch's frames
        return encode(*args)

    monkeypatch.setattr(batch, "encode", recording_encode)
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path / "data"), "id": "gwtest", "site": "bench"},
                     "mqtt": {"port": mosquitto.port, "batch_records": 100, "inflight": 4, "batch_delay": 0}})

    async def main():
        spool = await Spool.open(cfg.spool_path)
        senml = lambda seq: cbor2.dumps([{-2: "n1/", -3: 1.7e9 + seq, 0: "t", 2: seq / 4}])  # noqa: E731
        for start in range(0, 1000, 100):
            await spool.commit([("frame", batch.frame_body("n1", s, 1.7e9 + s, senml(s)))
                                for s in range(start, start + 100)], {})
        await spool.commit([("event", events.event_body({"type": "alarm", "n": i})) for i in range(3)], {})
        up = MqttUplink(cfg, spool, asyncio.Event(), Metrics())
        loop_thread = threading.current_thread().name
        assert await up.drain(timeout=30) == 1003
        assert await spool.depth() == (0, 0)  # deleted: every batch was PUBACKed
        await spool.close()
        return loop_thread

    loop_thread = asyncio.run(main())
    # 1000 frames waiting, GROW (4) batches of 100 or more: batches of 400 while 400 wait, then the
    # 200 left, on the encoder thread; the last (3 events) is spliced on the loop
    assert MqttUplink.GROW == 4 and sizes == [400, 400, 200], sizes
    assert all(t.startswith("uplink-encode") and t != loop_thread for t in threads), threads
    wait_for(lambda: len(subscriber.frames()) == 1000, 15, "every frame at the broker")
    topics = [t.rsplit("/", 1)[1] for t, _ in subscriber.messages if t.endswith(("/data", "/events"))]
    assert topics[0] == "events" and topics.count("events") == 1
    seqs = [s for t, p in subscriber.messages if t.endswith("/data") for _n, s in batch.frame_ids(subscriber.decode(p))]
    assert seqs == list(range(1000))  # spool order, each frame once


def test_data_waits_for_its_batch_events_do_not_and_a_full_batch_goes_at_once(tmp_path, mosquitto, subscriber):
    """batch_delay: data waits (at most that long) for its batch to fill; events go at once, ahead
    of the data waiting; a full batch (batch_records) goes without waiting, and what is left after
    it waits again (for the next full batch or the delay) with what comes next, instead of going as
    a small batch of its own; the schema goes ahead of the first batch that needs it."""
    import asyncio
    import time

    from gateway.config import from_dict
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.spool import Spool
    from gateway.runtime.uplink import batch, events
    from gateway.runtime.uplink.mqtt import MqttUplink

    delay = 3.0
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path / "data"), "id": "gwtest", "site": "bench"},
                     "mqtt": {"port": mosquitto.port, "batch_records": 50, "batch_delay": delay}})
    senml = lambda seq: cbor2.dumps([{-2: "n1/", -3: 1.7e9 + seq, 0: "t", 2: seq / 4}])  # noqa: E731
    arrived = {}

    def seen(kind, n):
        got = [(t, p) for t, p in list(subscriber.messages) if t.endswith("/" + kind)]
        return len(got) >= n

    async def main():
        spool = await Spool.open(cfg.spool_path)
        committed = asyncio.Event()
        up = MqttUplink(cfg, spool, committed, Metrics())
        task = asyncio.create_task(up.run())
        loop = asyncio.get_running_loop()

        async def until(kind, n, timeout):
            end = loop.time() + timeout
            while not seen(kind, n) and loop.time() < end:
                await asyncio.sleep(0.02)
            return time.monotonic()
        try:
            await until("state", 1, 10)  # connected
            t0 = time.monotonic()
            await spool.commit([("frame", batch.frame_body("n1", s, 1.7e9 + s, senml(s))) for s in range(3)], {})
            committed.set()
            await asyncio.sleep(0.3)
            await spool.commit([("event", events.event_body({"type": "alarm", "n": 1}))], {})
            committed.set()
            arrived["event"] = await until("events", 1, 10) - t0
            arrived["data"] = await until("data", 1, 10) - t0
            t1 = time.monotonic()
            await spool.commit([("frame", batch.frame_body("n1", s, 1.7e9 + s, senml(s))) for s in range(3, 63)], {})
            committed.set()
            arrived["full"] = await until("data", 2, 10) - t1  # the 50 at once; 10 are left
            await asyncio.sleep(0.5)
            await spool.commit([("frame", batch.frame_body("n1", s, 1.7e9 + s, senml(s))) for s in range(63, 66)], {})
            committed.set()
            arrived["later"] = await until("data", 3, 10) - t1  # the 10 left and the 3 after them
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await spool.close()

    asyncio.run(main())
    assert arrived["event"] < arrived["data"] and arrived["event"] < delay / 2, arrived
    assert delay * 0.9 <= arrived["data"] <= delay + 2, arrived
    assert arrived["full"] < delay * 0.8 and delay * 0.9 <= arrived["later"] <= delay + 2, arrived
    topics = [t.rsplit("/", 1)[1] for t, _ in subscriber.messages if not t.endswith("/state")]
    assert topics[:3] == ["events", "schema", "data"], topics
    data = [batch.frame_ids(subscriber.decode(p)) for t, p in subscriber.messages if t.endswith("/data")]
    assert [len(ids) for ids in data] == [3, 50, 13]
    assert [s for ids in data for _n, s in ids] == list(range(66))


def test_batches_grow_while_data_comes_in_fast_and_shrink_when_it_slows(tmp_path, mosquitto, subscriber,
                                                                         monkeypatch):
    """While records come in fast enough to fill GROW times batch_records within GROW_FILL seconds,
    batches are that large (the encoder's work a series spread over more readings); when the rate
    falls under half of that, they are batch_records again. Every frame arrives once, in order."""
    import asyncio

    from gateway.config import from_dict
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.spool import Spool
    from gateway.runtime.uplink import batch
    from gateway.runtime.uplink.mqtt import MqttUplink

    sizes = []
    encode = batch.encode

    def recording_encode(*args):
        sizes.append((phase[0], len(args[2])))
        return encode(*args)

    monkeypatch.setattr(batch, "encode", recording_encode)
    limit = 100
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path / "data"), "id": "gwtest", "site": "bench"},
                     "mqtt": {"port": mosquitto.port, "batch_records": limit, "batch_delay": 4.0}})
    fast = limit * MqttUplink.GROW / MqttUplink.GROW_FILL
    assert fast == 1600  # records a second from which batches grow
    senml = lambda seq: cbor2.dumps([{-2: "n1/", -3: 1.7e9 + seq, 0: "t", 2: seq / 4}])  # noqa: E731
    phase = ["fast"]

    async def main():
        spool = await Spool.open(cfg.spool_path)
        committed = asyncio.Event()
        up = MqttUplink(cfg, spool, committed, Metrics())
        task = asyncio.create_task(up.run())
        seq = 0

        async def feed(n, every, seconds):
            nonlocal seq
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                await spool.commit([("frame", batch.frame_body("n1", s, 1.7e9 + s, senml(s)))
                                    for s in range(seq, seq + n)], {})
                seq += n
                committed.set()
                await asyncio.sleep(every)

        try:
            for _ in range(500):  # connected: its first state message
                if any(t.endswith("/state") for t, _ in list(subscriber.messages)):
                    break
                await asyncio.sleep(0.02)
            await feed(50, 0.01, 2.0)  # 5,000 a second at most; 3× `fast` on a slow machine too
            phase[0] = "slow"
            await feed(20, 0.1, 3.0)  # 200 a second: under half of `fast`
            phase[0] = "rest"  # what is left goes by the delay
            for _ in range(750):
                if await spool.depth() == (0, 0):  # every batch PUBACKed and deleted
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await spool.close()
        return seq

    sent = asyncio.run(main())
    fast_sizes = [n for p, n in sizes if p == "fast"]
    slow_sizes = [n for p, n in sizes if p == "slow"]
    assert fast_sizes.count(limit * MqttUplink.GROW) >= 3, sizes
    # shrunk: full batches of 100 (one every half second), none larger at the end; a remainder the
    # delay sent (a machine slow enough to lag the fast phase) is smaller, never larger
    assert slow_sizes.count(limit) >= 3 and max(slow_sizes[-3:]) <= limit, sizes
    wait_for(lambda: sum(len(batch.frame_ids(subscriber.decode(p))) for t, p in list(subscriber.messages)
                         if t.endswith("/data")) == sent, 15, "every frame at the broker")
    seqs = [s for t, p in subscriber.messages if t.endswith("/data") for _n, s in batch.frame_ids(subscriber.decode(p))]
    assert seqs == list(range(sent))
