"""Sparkplug B edge node against a real mosquitto.

The in-process test drives the uplink with spooled records and reads what the broker
delivers with the protobuf classes; the bench test (below) runs the gateway process,
MicroPython nodes and an independent host application built on Eclipse Tahu's
JavaScript library (hil_tests/sparkplug_host/), which checks every rule it can see.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import cbor2
import paho.mqtt.client as paho
import pytest

from gateway.config import from_dict
from gateway.decisions.downlink import Downlink
from gateway.runtime.metrics import Metrics
from gateway.runtime.registry import Registry
from gateway.runtime.spool import Spool
from gateway.runtime.uplink import batch, events
from gateway.runtime.uplink.sparkplug import SparkplugUplink
from gateway.runtime.uplink.sparkplug_b_pb2 import Payload

from .rig import REPO, GatewayProcess, Node, wait_for

HOST_DIR = REPO / "hil_tests" / "sparkplug_host"


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


@pytest.mark.parametrize("qos", [1, 0])
def test_edge_node_session_in_process(tmp_path, mosquitto, qos):
    """Host offline at start: nothing is born, records wait; host online: NBIRTH (bdSeq,
    seq 0), DBIRTH, historical DDATA in spool order; live records after the birth are not
    historical; NCMD rebirth on the same connection; DCMD validated like cmd/#; a STATE
    offline ends the session with NDEATH and the next birth has bdSeq + 1. With [sparkplug]
    qos = 0 as with 1: records leave the spool once sent."""
    w = Watcher(mosquitto.port)
    host = "spBv1.0/STATE/scada"
    w.publish(host, json.dumps({"online": False, "timestamp": 1}), retain=True)
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path / "data"), "id": "gwtest", "site": "bench"},
                     "mqtt": {"port": mosquitto.port, "batch_delay": 0},
                     "sparkplug": {"enabled": True, "group_id": "plant", "primary_host_id": "scada", "qos": qos}})
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
            # an alarm: edge node metrics in NDATA; a rule NBIRTH did not declare is declared by a rebirth first
            await spool.commit([("event", events.event_body({"type": "alarm", "rule": "pump3-vib", "state": "raised",
                                                             "t": 1.7e9 + 6, "value": 7.5, "node": "pump3"}))], {})
            committed.set()
            await _until(lambda: len(w.of("NDATA")) == 1)
            pending = up.downlink.pending("pump3")
            registry.remove("pump3")  # a node removed from the registry: DDEATH
            await _until(lambda: len(w.of("DDEATH")) == 1)
            return pending
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
    bd = [next(m.long_value for m in p.metrics if m.name == "bdSeq") for p in births][:3]
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
    rebirth = births[-1]
    node_alias = {m.name: m.alias for m in rebirth.metrics}
    assert "Alarms/pump3-vib/active" in node_alias and len(births) == 4  # declared by a rebirth (same bdSeq)
    assert next(m.long_value for m in rebirth.metrics if m.name == "bdSeq") == bd[2]
    [(_, ndata)] = w.of("NDATA")
    assert [(m.alias, m.timestamp, m.boolean_value) for m in ndata.metrics][0] == (
        node_alias["Alarms/pump3-vib/active"], 1_700_000_006_000, True)
    assert w.of("DDEATH")[0][0] == "spBv1.0/plant/DDEATH/gwtest/pump3"


def test_a_silent_node_gets_a_ddeath_also_when_nothing_waits(tmp_path, mosquitto):
    """A node born again by a new session's births, and silent since: DDEATH after
    device_timeout, though the spool was empty at the birth (no backlog to wait for)."""
    from gateway.runtime.pipeline import NodeStatus

    w = Watcher(mosquitto.port)
    host = "spBv1.0/STATE/scada"
    w.publish(host, json.dumps({"online": True, "timestamp": 1}), retain=True)
    cfg = from_dict({"gateway": {"data_dir": str(tmp_path / "data"), "id": "gwtest", "site": "bench"},
                     "mqtt": {"port": mosquitto.port, "batch_delay": 0},
                     "sparkplug": {"enabled": True, "group_id": "plant", "primary_host_id": "scada",
                                   "device_timeout": 1.0}})

    async def main():
        spool = await Spool.open(cfg.spool_path)
        await spool.commit([("frame", batch.frame_body("pump3", 0, 1.7e9, _senml("pump3", 1.7e9, 1.0)))], {})
        up = SparkplugUplink(cfg, spool, asyncio.Event(), Metrics())
        up.nodes = {"pump3": NodeStatus(last_seen=time.time() + 3600)}  # heard from: alive
        task = asyncio.create_task(up.run())
        try:
            await _until(lambda: len(w.of("DDATA")) == 1 and spool.stats()["frame"]["records"] == 0)
            w.publish(host, json.dumps({"online": False, "timestamp": 2}), retain=True)
            await _until(lambda: len(w.of("NDEATH")) == 1)
            w.publish(host, json.dumps({"online": True, "timestamp": 3}), retain=True)
            await _until(lambda: len(w.of("DBIRTH")) == 2)  # born again with the new session
            up.nodes["pump3"].last_seen = time.time() - 10  # and silent since
            await _until(lambda: len(w.of("DDEATH")) == 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await spool.close()

    try:
        asyncio.run(main())
    finally:
        w.close()
    kinds = w.kinds()
    assert kinds.index("DDEATH") > [i for i, k in enumerate(kinds) if k == "DBIRTH"][1]


def test_spool_replay_is_a_session_of_its_own(tmp_path, mosquitto):
    """`headrace spool replay` in Sparkplug mode: NBIRTH with the next bdSeq, the spool as
    historical DDATA, NDEATH with the same bdSeq; the spool is empty."""
    from gateway.tools.cli import main as cli

    w = Watcher(mosquitto.port)
    data = tmp_path / "data"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{data}"\nregistry = "{tmp_path / "nodes.toml"}"\n'
                      f'[mqtt]\nport = {mosquitto.port}\n[sparkplug]\nenabled = true\ngroup_id = "plant"\n')

    async def fill():
        spool = await Spool.open(data / "spool.sqlite")
        await spool.commit([("frame", batch.frame_body("pump3", s, 1.7e9 + s, _senml("pump3", 1.7e9 + s, s)))
                            for s in range(3)], {})
        await spool.set_meta("sparkplug/plant/gw1/bdSeq", 41)  # the service's last session
        await spool.close()

    asyncio.run(fill())
    try:
        assert cli(["spool", "replay", "--config", str(config)]) == 0
        wait_for(lambda: len(w.of("NDEATH")) == 1, 10, "the NDEATH")
    finally:
        w.close()
    assert w.kinds() == ["NBIRTH", "DBIRTH", "DDATA", "NDEATH"]
    bd = [next(m.long_value for m in p.metrics if m.name == "bdSeq") for _, p in w.of("NBIRTH") + w.of("NDEATH")]
    assert bd == [42, 42]
    ddata = w.of("DDATA")[0][1]
    assert len(ddata.metrics) == 6 and all(m.is_historical for m in ddata.metrics)


async def _until(pred, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


# -- the bench: MicroPython nodes, the gateway process, a host on Eclipse Tahu's library -----

def host_modules() -> Path:
    """The host's node_modules: `npm ci` of its package-lock.json, which ./run.sh makes in
    .cache/sparkplug_host (HEADRACE_CACHE moves .cache)."""
    cache = Path(os.environ.get("HEADRACE_CACHE") or REPO / ".cache") / "sparkplug_host" / "node_modules"
    if shutil.which("node") is None or not (cache / "sparkplug-payload").is_dir():
        pytest.skip(f"the Sparkplug host needs node and {cache} (./run.sh setup installs both)")
    return cache


def test_tahu_javascript_decodes_data_values_with_datatypes_only(tmp_path):
    """Eclipse Tahu's JavaScript decodePayload reads a metric's value by its datatype: in data
    without datatypes (what Sparkplug 3.0 advises, the default) its values are null, so hosts
    built on it alone need `[sparkplug] datatypes = true`; host.js resolves them from the birth."""
    from gateway.runtime.uplink import sparkplug_payload as spb

    modules = host_modules()
    cat = spb.Catalog([])
    vib = cat.device_metric(cat.device("n1"), "vib", spb.DOUBLE)
    script = ("const sp = require('sparkplug-payload').get('spBv1.0');"
              "const bufs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(bufs.map((h) => sp.decodePayload(Buffer.from(h, 'hex'))"
              ".metrics.map((m) => m.value))));")
    bodies = [spb.data([(vib, 1, 2.5)], False, datatypes).SerializeToString().hex() for datatypes in (False, True)]
    out = subprocess.run(["node", "-e", script], input=json.dumps(bodies).encode(), capture_output=True, check=True,
                         env={**os.environ, "NODE_PATH": str(modules)}, timeout=30).stdout
    assert json.loads(out) == [[None], [2.5]]


class HostApp:
    """hil_tests/sparkplug_host/host.js as a child process: JSON lines in, events out."""

    def __init__(self, workdir: Path, port: int, modules: Path, group: str, edge: str, host_id: str):
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._err = open(workdir / "host.err", "wb")
        self.proc = subprocess.Popen(["node", str(HOST_DIR / "host.js"), "--port", str(port), "--host-id", host_id,
                                      "--group", group, "--edge", edge], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, env={**os.environ,
                                                                                   "NODE_PATH": str(modules)})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def send(self, op: str, **kw) -> None:
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()

    def seen(self, ev: str = "msg", **match) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["ev"] == ev and all(e.get(k) == v for k, v in match.items())]

    def wait(self, pred, timeout: float, what: str):
        if self.proc.poll() is not None:
            raise RuntimeError(f"the host exited: {(self._err.name and Path(self._err.name).read_text())}")
        return wait_for(pred, timeout, what)

    def report(self) -> dict:
        n = len(self.seen("report"))
        self.send("report")
        return self.wait(lambda: (r := self.seen("report"))[n:] and r[n], 10, "the host's report")

    def exit(self) -> int:
        self.send("exit")
        try:
            return self.proc.wait(10)
        finally:
            self._err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _same(value):
    """A value as both sides print it: JSON numbers from MicroPython and from JavaScript differ
    in form (3.0 and 3) but not in value."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# the primary host's outage the edge node must ride out (60 s: the issue's; shorter only by hand, to debug)
OFFLINE_S = int(os.environ.get("HEADRACE_SPB_OFFLINE", 60))


@pytest.mark.long
def test_tahu_host_checks_the_edge_node_through_faults(tmp_path, mosquitto):
    """Two MicroPython nodes over CoAP, the gateway in Sparkplug mode, and a primary host on
    Eclipse Tahu's JavaScript library that checks every message (host.js). Then: DCMD (valid and
    invalid), NCMD rebirth, kill -9 of the gateway, a broker restart, the host offline for 60 s;
    every reading the nodes had acked reaches the host with its time and value, those spooled
    while the host was away as historical and in order, and the host saw no rule broken."""
    modules = host_modules()
    host = HostApp(tmp_path, mosquitto.port, modules, "plant", "gwtest", "scada")
    keys = {n: os.urandom(32) for n in ("n1", "n2")}
    gw = GatewayProcess(tmp_path, mosquitto.port, keys, mqtt_extra="keepalive = 5\n",
                        extra='[sparkplug]\nenabled = true\ngroup_id = "plant"\nprimary_host_id = "scada"\n'
                              "device_timeout = 3.0\n")
    nodes = []
    try:
        host.wait(lambda: host.seen("connected"), 15, "the host's connection")
        gw.start()
        nodes = [Node(tmp_path, {"node": n, "key": k.hex(), "transport": "coap", "host": "127.0.0.1",
                                 "coap_port": gw.coap_port, "sensors": ["temp", "vib"], "period_ms": 250,
                                 "batch": 4, "seed": i + 3, "state_file": str(tmp_path / f"{n}.seq"),
                                 "ack_timeout_ms": 500}) for i, (n, k) in enumerate(keys.items())]
        host.wait(lambda: all(host.seen(kind="DDATA", device=n) for n in keys), 30, "data of both nodes")
        births = host.seen(kind="NBIRTH")
        assert len(births) == 1 and births[0]["bdSeq"] == 0 and births[0]["seq"] == 0

        # commands through DCMD: one valid, one out of range (the validation of cmd/#), one unknown
        host.send("dcmd", device="n1", metrics=[{"name": "Commands/set_batch", "type": "Int64", "value": 2}])
        host.send("dcmd", device="n1", metrics=[{"name": "Commands/set_period", "type": "Int64", "value": 1}])
        host.send("dcmd", device="n2", metrics=[{"name": "Commands/format", "type": "Boolean", "value": True}])
        results = host.wait(lambda: r if len(r := [json.loads(e["value"]) for e in host.seen("result")]) >= 4
                            and any(x["status"] == "applied" for x in r) else None, 20, "the commands' outcomes")
        statuses = sorted(x["status"] for x in results)
        assert statuses == ["applied", "queued", "rejected", "rejected"], results
        assert any("period_ms must be a whole number from 10" in x.get("error", "") for x in results)
        assert any("not a command metric" in x.get("error", "") for x in results)

        # rebirth on NCMD: the same connection, so the same bdSeq; then both devices' DBIRTH
        n = len(host.events)
        host.send("rebirth")
        host.wait(lambda: host.seen(kind="NBIRTH", rebirth=True), 10, "the rebirth")
        host.wait(lambda: {e["device"] for e in host.events[n:] if e.get("kind") == "DBIRTH"} == set(keys), 10,
                  "both DBIRTHs after the rebirth")

        # kill -9: the broker publishes the Will, the NDEATH with this session's bdSeq
        gw.stop(signal.SIGKILL)
        host.wait(lambda: host.seen(kind="NDEATH", bdSeq=0), 20, "the NDEATH Will with bdSeq 0")
        assert not host.seen(kind="NDEATH", bdSeq=0)[0].get("stale")
        gw.restart()
        host.wait(lambda: host.seen(kind="NBIRTH", bdSeq=1), 20, "the next NBIRTH, bdSeq 1")

        # the broker restarts: a new session, bdSeq counted on, data again from both nodes
        n = len(host.events)
        mosquitto.stop()
        mosquitto.start()
        host.wait(lambda: {e["device"] for e in host.events[n:] if e.get("kind") == "DDATA"} == set(keys), 30,
                  "data of both nodes after the broker's restart")
        assert [e["bdSeq"] >= 2 for e in host.events[n:] if e.get("kind") == "NBIRTH"][:1] == [True]

        # the primary host goes away for 60 s: NDEATH, nothing more, the spool fills
        n = len(host.events)
        host.send("offline")
        host.wait(lambda: [e for e in host.events[n:] if e.get("kind") == "NDEATH" and not e.get("stale")], 15,
                  "the NDEATH")
        offline_at = time.time()
        quiet_from = len(host.events)
        time.sleep(max(0.0, OFFLINE_S - 5))
        assert gw.metric("headrace_spool_depth") > 0
        assert [e for e in host.events[quiet_from:] if e["ev"] == "msg"] == [], host.events[quiet_from - 3:]
        time.sleep(max(0.0, offline_at + OFFLINE_S - time.time()))
        online_at = time.time()
        host.send("online")
        host.wait(lambda: [e for e in host.events[quiet_from:] if e.get("kind") == "DDATA" and e["hist"]], 20,
                  "historical data")
        born_at = host.seen(kind="NBIRTH")[-1]["at"] / 1000  # the host's clock: the same machine's
        host.wait(lambda: [e for e in host.events[quiet_from:] if e.get("kind") == "DDATA" and not e["hist"]
                           and e["at"] / 1000 > born_at + 2.5], 20, "live data after the birth")

        # the nodes stop; the spool empties; silent nodes are DDEATHs
        for node in nodes:
            node.kill()
        wait_for(lambda: gw.metric("headrace_spool_depth") == 0, 30, "an empty spool")
        host.wait(lambda: {e["device"] for e in host.events[quiet_from:] if e.get("kind") == "DDEATH"} == set(keys),
                  20, "a DDEATH for each silent node")
        n = len(host.events)
        assert gw.stop() == 0, gw.log()
        host.wait(lambda: [e for e in host.events[n:] if e.get("kind") == "NDEATH" and not e.get("stale")], 10,
                  "the NDEATH of a clean stop")
        report = host.report()
    finally:
        for node in nodes:
            node.kill()
        if gw.proc and gw.proc.poll() is None:
            gw.stop()
        code = host.exit() if host.proc.poll() is None else host.proc.returncode
        host.kill()
        (tmp_path / "host-events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in host.events))
    assert report["violations"] == [], report["violations"]
    assert code == 0

    # every reading the nodes sent and had acked is at the host, with its time and value; nothing else is
    got, windows = {}, set()
    for device, name, at, value, historical, session in report["readings"]:
        if name.startswith("Windows/"):
            windows.add((device, name))
        elif device is not None and name != "Commands/result":
            got.setdefault((device, name, at, _same(value)), []).append((historical, session))
    sent, acked = {}, set()
    for node in nodes:
        acked |= {(node.name, e["seq"]) for e in node.events("ack")}
        for e in node.events("sent"):
            sent[(node.name, e["seq"])] = [(node.name, r[0].split("/")[-1], int(r[1]), _same(r[2]))  # node times are ms
                                           for r in e["r"]]
    every_sent = {r for rs in sent.values() for r in rs}
    # the gateway's windows, as metrics of each node's device
    assert {(n, f"Windows/10s/{sensor}/{stat}") for n in keys for sensor in ("temp", "vib")
            for stat in ("count", "min", "max", "mean", "twa")} <= windows
    missing = [r for key in acked for r in sent[key] if r not in got]
    assert missing == [], missing[:5]
    assert set(got) <= every_sent, sorted(set(got) - every_sent)[:5]
    # spooled while the host was offline: historical, in order (each series' times increase)
    offline_readings = [k for k in got if offline_at + 2 < k[2] / 1000 < online_at - 2]
    assert len(offline_readings) > 50
    last_session = max(s for copies in got.values() for _h, s in copies)
    for k in offline_readings:
        assert any(h for h, s in got[k] if s == last_session), k
    live = [k for k in got if k[2] / 1000 > born_at + 1.0]  # sampled after the NBIRTH: spooled after it
    assert live and all(not h for k in live for h, s in got[k] if s == last_session)
    times = {}
    for device, name, at, _v, _h, session in report["readings"]:
        if session == last_session and device is not None and name != "Commands/result":
            assert at > times.get((device, name), 0), (device, name, at)
            times[(device, name)] = at
