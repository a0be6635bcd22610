"""Sparkplug B edge node against a real mosquitto.

The in-process test drives the uplink with spooled records and reads what the broker
delivers with the protobuf classes; the bench test (below) runs the gateway process,
MicroPython nodes and an independent host application built on Eclipse Tahu's
JavaScript library (hil_tests/sparkplug_host/), which checks every rule it can see.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import cbor2
import paho.mqtt.client as paho

from gateway.config import from_dict
from gateway.decisions.downlink import Downlink
from gateway.runtime.metrics import Metrics
from gateway.runtime.registry import Registry
from gateway.runtime.spool import Spool
from gateway.runtime.uplink import batch
from gateway.runtime.uplink.sparkplug import SparkplugUplink
from gateway.runtime.uplink.sparkplug_b_pb2 import Payload

from .rig import wait_for


class Watcher:
    """Every spBv1.0 message at the broker, decoded, in arrival order."""

    def __init__(self, port: int):
        self.msgs: list[tuple[str, object]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"spb-watch-{port}")
        sub = threading.Event()
        self.client.on_subscribe = lambda *a: sub.set()
        self.client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert sub.wait(10)

    def _on_message(self, client, userdata, msg):
        body = json.loads(msg.payload) if "/STATE/" in msg.topic else Payload.FromString(msg.payload)
        with self._lock:
            self.msgs.append((msg.topic, body))

    def kinds(self) -> list[str]:
        with self._lock:
            return [t.split("/")[2] for t, _ in self.msgs if "/STATE/" not in t]

    def of(self, kind: str) -> list[tuple[str, Payload]]:
        with self._lock:
            return [(t, p) for t, p in self.msgs if t.split("/")[2] == kind]

    def publish(self, topic: str, payload, retain=False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _senml(node: str, t: float, v: float) -> bytes:
    return cbor2.dumps([{-2: node + "/", -3: t, 0: "vib", 2: v}, {0: "temp", 2: v + 20}])


def test_edge_node_session_in_process(tmp_path, mosquitto):
    """Host offline at start: nothing is born, records wait; host online: NBIRTH (bdSeq,
    seq 0), DBIRTH, historical DDATA in spool order; live records after the birth are not
    historical; NCMD rebirth on the same connection; DCMD validated like cmd/#; a STATE
    offline ends the session with NDEATH and the next birth has bdSeq + 1."""
    w = Watcher(mosquitto.port)
    host = "spBv1.0/STATE/scada"
    w.publish(host, json.dumps({"online": False, "timestamp": 1}), retain=True)
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path / "data"), "id": "gwtest", "site": "bench"},
                     "mqtt": {"port": mosquitto.port, "batch_delay": 0},
                     "sparkplug": {"enabled": True, "group_id": "plant", "primary_host_id": "scada"}})
    registry = Registry()
    registry.add("pump3")

    async def main():
        spool = await Spool.open(cfg.spool_path)
        await spool.commit([("frame", batch.frame_body("pump3", s, 1.7e9 + s, _senml("pump3", 1.7e9 + s, s / 4)))
                            for s in range(5)], {})
        committed = asyncio.Event()
        up = SparkplugUplink(cfg, spool, committed, Metrics(), Downlink(registry))
        task = asyncio.create_task(up.run())
        try:
            await asyncio.sleep(1.0)
            assert w.kinds() == []  # host offline: not born, records stay in the spool
            assert (await spool.depth())[0] == 5
            w.publish(host, json.dumps({"online": True, "timestamp": 2}), retain=True)
            await _until(lambda: len(w.of("DDATA")) >= 1)
            await _until(lambda: spool.stats()["frame"]["records"] == 0)
            await spool.commit([("frame", batch.frame_body("pump3", 5, 1.7e9 + 5, _senml("pump3", 1.7e9 + 5, 9.0)))],
                               {})
            committed.set()
            await _until(lambda: len(w.of("DDATA")) >= 2)
            dcmd = Payload(timestamp=1)
            m = dcmd.metrics.add()
            m.name, m.datatype, m.long_value = "Commands/set_period", 4, 500
            m = dcmd.metrics.add()
            m.name, m.datatype, m.double_value = "Commands/set_batch", 10, 2.5  # not a whole number: rejected
            w.publish("spBv1.0/plant/DCMD/gwtest/pump3", dcmd.SerializeToString())
            await _until(lambda: len(w.of("DDATA")) >= 4)
            ncmd = Payload(timestamp=1)
            m = ncmd.metrics.add()
            m.name, m.datatype, m.boolean_value = "Node Control/Rebirth", 11, True
            w.publish("spBv1.0/plant/NCMD/gwtest", ncmd.SerializeToString())
            await _until(lambda: len(w.of("NBIRTH")) == 2 and len(w.of("DBIRTH")) == 2)
            w.publish(host, json.dumps({"online": False, "timestamp": 3}), retain=True)
            await _until(lambda: len(w.of("NDEATH")) == 1)
            w.publish(host, json.dumps({"online": True, "timestamp": 4}), retain=True)
            await _until(lambda: len(w.of("NBIRTH")) == 3)
            return up.downlink.pending("pump3")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await spool.close()

    try:
        pending = asyncio.run(main())
    finally:
        w.close()
    assert [c.cmd for c in pending] == ["set_period"]
    kinds = w.kinds()
    assert kinds[:3] == ["NBIRTH", "DBIRTH", "DDATA"], kinds
    births = [p for _, p in w.of("NBIRTH")]
    bd = [next(m.long_value for m in p.metrics if m.name == "bdSeq") for p in births]
    assert bd[0] == bd[1] and bd[2] == (bd[0] + 1) % 256  # rebirth keeps it; a new session increments it
    death = w.of("NDEATH")[0][1]
    assert [m.long_value for m in death.metrics if m.name == "bdSeq"] == [bd[0]]
    # seq: NBIRTH 0, then +1 for every message of the session, node and device alike
    seqs = [(t.split("/")[2], p.seq) for t, p in w.msgs
            if t.split("/")[2] in ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH")]
    run = None
    for kind, seq in seqs:
        run = 0 if kind == "NBIRTH" else (run + 1) % 256
        assert seq == run, seqs
    dbirth = w.of("DBIRTH")[0][1]
    alias = {m.name: m.alias for m in dbirth.metrics}
    assert {"vib", "temp", "Commands/set_period", "Commands/result"} <= set(alias)
    name = {a: n for n, a in alias.items()}
    data = [p for t, p in w.of("DDATA") if t.endswith("/pump3")]
    first = [(name[m.alias], m.timestamp, m.double_value, m.is_historical) for m in data[0].metrics]
    assert first == [(k, 1_700_000_000_000 + s * 1000, s / 4 + (20 if k == "temp" else 0), True)
                     for s in range(5) for k in ("vib", "temp")]
    live = [(name[m.alias], m.double_value, m.is_historical) for m in data[1].metrics]
    assert live == [("vib", 9.0, False), ("temp", 29.0, False)]
    results = [json.loads(m.string_value) for p in data[2:] for m in p.metrics
               if name[m.alias] == "Commands/result"]
    assert [r["status"] for r in results] == ["queued", "rejected"]
    assert "whole number" in results[1]["error"]


async def _until(pred, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)
