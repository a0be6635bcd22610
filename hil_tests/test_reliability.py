"""Nothing lost: kill -9 of the gateway, broker outages, bit errors on the line.

Real MicroPython nodes, the real gateway process, a real mosquitto. Every test
checks, at a subscriber, that every reading a node reported sending arrived,
exactly once per (node, seq) after the consumer's dedup, with its value.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import threading
import time

import pytest

from gateway.tools.sim.nullmodem import NullModem
from gateway.runtime.uplink import batch

from .rig import GatewayProcess, Mosquitto, Node, Subscriber, node_cfg, wait_for


def sent_readings(nodes) -> dict:
    sent = {}
    for node in nodes:
        for ev in node.events("sent"):
            sent[(node.name, ev["seq"])] = ev["r"]
    return sent


def check_delivered(subscriber, sent: dict, timeout: float = 60, also_sent: set | None = None) -> dict:
    """Every sent frame at the broker with its readings; returns the frames seen (with copies).
    `also_sent`: frames a node sent whose ack it did not see, which may arrive too."""
    frames = wait_for(lambda: f if set(sent) <= set(f := subscriber.frames()) else None, timeout,
                      "every sent frame at the broker")
    for key, readings in sent.items():
        for copy in frames[key]:  # a repeat after a crash carries the same readings
            assert [(r[0].split("/")[-1], r[2]) for r in readings] == [(c[0], c[2]) for c in copy], key
    assert set(frames) <= set(sent) | (also_sent or set()), "the broker got frames no node reported sending"
    return frames


def integrity(path) -> str:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


@pytest.mark.long
def test_kill_9_twenty_times(tmp_path, mosquitto, subscriber, pty_pairs):
    keys = {"k1": os.urandom(32), "k2": os.urandom(32)}
    pair = pty_pairs("k1")
    gw = GatewayProcess(tmp_path, mosquitto.port, keys, serial_ports=[pair.a]).start()
    wait_for(lambda: "serial port" in gw.log(), 30, "the serial port to open")
    nodes = [Node(tmp_path, node_cfg(tmp_path, "k1", keys["k1"], 400, transport="serial", port=pair.b)),
             Node(tmp_path, node_cfg(tmp_path, "k2", keys["k2"], 400, transport="coap", host="127.0.0.1",
                                     coap_port=gw.coap_port))]
    rng = random.Random(20)
    spool = tmp_path / "data" / "spool.sqlite"
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.2, 0.8))
            gw.stop(signal.SIGKILL)
            assert integrity(spool) == "ok"
            gw.restart()
        for node in nodes:
            assert node.wait(120) == 0, node.out_path.read_text()[-2000:]
            done = node.events("done")[-1]
            assert done["unacked"] == 0 and done["dropped"] == 0, done  # the node's outbox never overflowed
        sent = sent_readings(nodes)
        assert len(sent) == 800
        frames = check_delivered(subscriber, sent)
        repeats = sum(len(c) - 1 for c in frames.values())
        print(f"kill -9 x20: {len(sent)} frames, all delivered; {repeats} repeated at the broker (dropped by dedup)")
    finally:
        gw.stop()
    assert integrity(spool) == "ok"


@pytest.mark.long
def test_broker_outage_buffers_and_delivers_in_order(tmp_path):
    # an at-least-once chain end to end: a broker that persists, a subscriber with a persistent
    # session (what the broker acked to the gateway it keeps for the subscriber across its restart)
    key = os.urandom(32)
    broker = Mosquitto(tmp_path, persistent=True).start()
    sub = Subscriber(broker.port, persistent_session=True)
    gw = GatewayProcess(tmp_path, broker.port, {"b1": key}, mqtt_extra="reconnect_max = 5.0\n").start()
    outage = float(os.environ.get("HEADRACE_OUTAGE_S", "60"))
    node = None
    try:
        node = Node(tmp_path, node_cfg(tmp_path, "b1", key, 0, transport="coap", host="127.0.0.1",
                                       coap_port=gw.coap_port, period_ms=20))
        wait_for(lambda: len(sub.frames()) >= 5, 20, "data flowing before the outage")
        broker.stop()
        time.sleep(outage)
        assert gw.metric("headrace_uplink_connected") == 0
        waiting = gw.metric("headrace_spool_depth")
        assert waiting > 0, "nothing buffered during the outage"
        broker.start()  # same port, same persistence file
        wait_for(lambda: gw.metric("headrace_uplink_connected") == 1, 30, "the uplink to reconnect")
        last = max(ev["seq"] for ev in node.events("ack"))
        wait_for(lambda: any(seq > last for _n, seq in sub.frames()), 30,
                 "a frame acked after the reconnection at the broker")
        node.kill()
        # a frame the node had not seen acked when it was killed may never have reached the gateway
        acked = {ev["seq"] for ev in node.events("ack")}
        every = sent_readings([node])
        sent = {k: v for k, v in every.items() if k[1] in acked}
        check_delivered(sub, sent, timeout=60, also_sent=set(every))
        # in order per series: first copies arrive in sequence order
        seqs = []
        for topic, payload in list(sub.messages):
            for _n, seq in batch.frame_ids(sub.decode(payload)) if topic.endswith("/data") else ():
                if seq not in seqs:
                    seqs.append(seq)
        assert seqs == sorted(seqs), "frames of one series out of order after the outage"
        print(f"broker outage {outage:.0f} s: {int(waiting)} records buffered, {len(sent)} frames all delivered")
    finally:
        if node:
            node.kill()
        gw.stop()
        sub.close()
        broker.stop()


class ThreadedNullModem:
    """A NullModem with its own event loop on a thread, for tests that run synchronously."""

    def __init__(self, flip_rate: float, seed: int):
        self.modem = NullModem(flip_rate, seed)
        self.paths = self.modem.open()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.modem.start)
        self.loop.run_forever()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.modem.close()
        self.loop.close()


def test_bit_errors_never_yield_a_corrupt_reading(tmp_path, mosquitto, subscriber):
    key = os.urandom(32)
    line = ThreadedNullModem(flip_rate=1e-4, seed=4)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"noisy": key}, serial_ports=[line.paths[0]]).start()
    try:
        wait_for(lambda: "serial port" in gw.log(), 30, "the serial port to open")
        node = Node(tmp_path, node_cfg(tmp_path, "noisy", key, 300, transport="serial", port=line.paths[1],
                                       period_ms=5, outbox=128, ack_timeout_ms=100))
        assert node.wait(180) == 0, node.out_path.read_text()[-2000:]
        done = node.events("done")[-1]
        assert done["unacked"] == 0 and done["dropped"] == 0, done
        sent = sent_readings([node])
        check_delivered(subscriber, sent)
        m = gw.metrics()
        noise = sum(v for k, v in m.items() if k.startswith("headrace_frames_rejected_total") and
                    any(r in k for r in ('"crc"', '"cobs"', '"short"')))
        assert line.modem.flipped > 0 and noise > 0, (line.modem.flipped, m)
        assert not any(k.startswith("headrace_frames_rejected_total") and '"auth"' in k for k in m), \
            "a corrupted frame passed the CRC and reached the MAC check"
        print(f"BER 1e-4: {line.modem.flipped} bits flipped, {int(noise)} frames dropped as noise and resent, "
              f"{len(sent)} frames all delivered intact")
    finally:
        gw.stop()
        line.close()


def test_spool_commands_stats_inspect_replay(tmp_path, mosquitto, subscriber):
    import json
    import subprocess
    import sys

    import cbor2

    from gateway.protocol import cose

    from .rig import coap_post, free_port

    key = os.urandom(32)
    dead_broker = free_port()  # nothing listens: everything stays in the spool
    gw = GatewayProcess(tmp_path, dead_broker, {"sp": key}).start()
    try:
        for seq in range(5):
            msg = cose.mac0(key, b"sp", cbor2.dumps([{-2: "sp/", -3: 1.7e9 + seq, 0: "t", 2: seq + 0.5}]), seq=seq)
            assert coap_post(gw.coap_port, msg).code.is_successful()
    finally:
        gw.stop()

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "gateway", "spool", *args, "--config", str(gw.config)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    stats = json.loads(cli("stats", "--check"))
    assert stats["by_kind"]["frame"]["records"] == 5 and stats["integrity"] == "ok"
    assert stats["records"] >= 5  # windows flushed at the clean stop are there too
    rows = [json.loads(line) for line in cli("inspect", "--kind", "frame").splitlines()]
    assert [(r["node"], r["seq"], r["readings"][0][2]) for r in rows] == [("sp", s, s + 0.5) for s in range(5)]
    out = cli("replay", "--mqtt-port", str(mosquitto.port))
    assert f"replayed {stats['records']} records" in out and "0 left" in out
    frames = wait_for(lambda: f if len(f := subscriber.frames()) == 5 else None, 10, "the replayed frames")
    assert sorted(frames) == [("sp", s) for s in range(5)]


def test_disk_quota_drops_the_oldest_frames_and_says_so(tmp_path, pty_pairs):
    import json
    import threading

    from bench.gateway_e2e import make_frames, serial_load

    from .rig import Mosquitto

    key = os.urandom(32)
    pair = pty_pairs("q")
    # The subscriber's session (clean_session false) is made first and kept by the broker's persistence
    # through its stop: when the broker comes back, whatever the gateway publishes is queued for the
    # subscriber even if the gateway reconnects before the subscriber does.
    broker = Mosquitto(tmp_path, persistent=True).start()
    sub = Subscriber(broker.port, persistent_session=True)
    broker.stop()  # the uplink is down
    # the uplink retries every second at most: the test waits for the quota's work, not for a back-off
    gw = GatewayProcess(tmp_path, broker.port, {"q1": key}, serial_ports=[pair.a], mqtt_extra="reconnect_max = 1\n",
                        extra="[spool]\nmax_bytes = 1048576\ncheck_interval = 0.5\n").start()
    try:
        wait_for(lambda: "serial port" in gw.log(), 30, "the serial port to open")
        n = 9000
        result: dict = {}
        t = threading.Thread(target=serial_load, args=(pair.b, make_frames("q1", key, n, time.time()), 64, result))
        t.start()
        t.join(120)
        assert result["acked"] == n
        metric = 'headrace_spool_dropped_total{kind="frame",reason="quota"}'
        wait_for(lambda: gw.metric(metric) and gw.metric("headrace_spool_bytes") <= 1048576, 20,
                 "the quota to drop frames, and the spool back under it")
        assert "over quota" in gw.log()
        broker.start()  # the subscriber's paho reconnects within 2 s
        # the count may still grow by a few: the spool's journal hands its backlog to SQLite, whose
        # pages can take the spool over the quota once more. Every frame is delivered or counted.
        try:
            frames = wait_for(lambda: f if len(f := subscriber_frames(sub)) + gw.metric(metric) >= n else None, 60,
                              "the frames the quota kept")
        except TimeoutError:
            print(f"{len(subscriber_frames(sub))} frames arrived, {gw.metric(metric)} dropped, of {n}; "
                  f"the gateway's log:\n{gw.log()}")
            raise
        dropped = gw.metric(metric)
        assert sorted(frames) == list(range(int(dropped), n)), "the quota must drop the oldest frames, only them"
        states = [json.loads(p) for t_, p in sub.messages if t_.endswith("/state")]
        assert states and states[-1]["dropped"]["frame_quota"] == dropped
        print(f"quota 1 MiB: {n} frames in, {int(dropped)} oldest dropped and reported, {len(frames)} delivered")
    finally:
        sub.close()
        gw.stop()
        broker.stop()


def subscriber_frames(sub) -> list[int]:
    return [seq for (_node, seq) in sub.frames()]
