"""Rule and dispatcher events end to end: the real gateway process, real frames, a real mosquitto.

Alarms, demands and dispatches reach the broker on `events`; with the broker down and the
spool over its quota, bulk frames are dropped and events never are, and go up first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from gateway.protocol import cose
from gateway.runtime.uplink import batch

from .rig import REPO, GatewayProcess, Mosquitto, Subscriber, coap_post, post_demand, received_events, wait_for

RULES = """
[[rules]]
name = "vib-high"
series = "p1/vib"
above = 7.1
hysteresis = 1.0
severity = "critical"

[[rules]]
name = "vib-mechanic"
series = "p1/vib"
above = 8.0
emit = "demand"
need = "mechanic"
priority = 7
at = [20.0, 10.0]

[[resources]]
id = "mech1"
capabilities = ["mechanic"]
home = [0.0, 0.0]
speed = 1.5
node = "m1"
"""


def reading(key: bytes, node: str, seq: int, sensor: str, value: float) -> bytes:
    body = cbor2.dumps([{-2: f"{node}/", -3: time.time(), 0: sensor, 2: value}])
    return cose.mac0(key, node.encode(), body, seq=seq)


def test_alarms_and_dispatches_reach_the_broker_on_events(tmp_path, mosquitto, subscriber):
    kp, km = os.urandom(32), os.urandom(32)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"p1": kp, "m1": km}, extra=RULES).start()
    try:
        wait_for(lambda: gw.metric("headrace_uplink_connected") == 1, 10, "the uplink")
        assert coap_post(gw.coap_port, reading(kp, "p1", 0, "vib", 5.0)).code == Code.CHANGED
        assert coap_post(gw.coap_port, reading(kp, "p1", 1, "vib", 9.0)).code == Code.CHANGED
        got = wait_for(lambda: e if len(e := received_events(subscriber)) >= 3 else None, 15,
                       "alarm, demand and dispatch")
        alarm, demand, dispatch = got[:3]
        assert (alarm["rule"], alarm["state"], alarm["value"], alarm["severity"], alarm["series"]) == \
            ("vib-high", "raised", 9.0, "critical", "p1/vib")
        assert (demand["type"], demand["need"], demand["priority"], demand["at"], demand["source"]) == \
            ("demand", "mechanic", 7, [20.0, 10.0], "rule:vib-mechanic")
        did = demand["id"]
        assert (dispatch["demand"], dispatch["resource"], dispatch["state"]) == (did, "mech1", "assigned")
        assert dispatch["eta"] == round((20**2 + 10**2) ** 0.5 / 1.5, 3)
        # the mechanic's node accepts, then reports done; the pump calms down
        assert coap_post(gw.coap_port, reading(km, "m1", 0, "accept", float(did))).code == Code.CHANGED
        assert coap_post(gw.coap_port, reading(km, "m1", 1, "done", float(did))).code == Code.CHANGED
        assert coap_post(gw.coap_port, reading(kp, "p1", 2, "vib", 5.0)).code == Code.CHANGED
        # and an operator asks from the command line
        cli = subprocess.run([sys.executable, "-m", "gateway", "demand", "mechanic", "--at", "1,2", "--priority",
                              "9", "--url", f"http://127.0.0.1:{gw.http_port}"], capture_output=True, text=True,
                             cwd=REPO, timeout=30)
        assert cli.returncode == 0, cli.stderr
        got = wait_for(lambda: e if len(e := received_events(subscriber)) >= 8 else None, 15, "eight events")
        summary = [(e["type"], e.get("state"), e.get("resource")) for e in got]
        assert summary == [("alarm", "raised", None), ("demand", None, None), ("dispatch", "assigned", "mech1"),
                           ("dispatch", "accepted", "mech1"), ("dispatch", "done", "mech1"),
                           ("alarm", "cleared", None), ("demand", None, None), ("dispatch", "assigned", "mech1")]
        assert got[6]["source"] == "api" and got[6]["priority"] == 9
        # events never travel on data, and `headrace decode` prints them
        payload = next(p for t, p in subscriber.messages if t.endswith("/events"))
        for t, p in list(subscriber.messages):
            if t.endswith("/events"):
                assert not list(batch.rows(batch.decode(p)))
            elif t.endswith("/data"):
                assert "events" not in subscriber.decode(p)
        dec = subprocess.run([sys.executable, "-m", "gateway", "decode", "-"], input=payload,
                             capture_output=True, cwd=REPO, timeout=30)
        assert dec.returncode == 0 and json.loads(dec.stdout.splitlines()[0])["rule"] == "vib-high"
        assert gw.metric('headrace_dispatches_total{state="done"}') == 1
        assert gw.metric("headrace_demands_open") == 1
    finally:
        gw.stop()


def test_events_are_never_dropped_by_the_quota_and_go_first(tmp_path, pty_pairs):
    from bench.gateway_e2e import make_frames, serial_load

    key = os.urandom(32)
    pair = pty_pairs("q")
    # the subscriber's session outlives the broker's stop (persistence, clean session off), so
    # what the gateway publishes the moment the broker is back is queued for it, not lost to
    # a subscriber that had not subscribed yet
    broker = Mosquitto(tmp_path, persistent=True).start()
    sub = Subscriber(broker.port, persistent_session=True)
    broker.stop()  # the uplink is down from the start
    extra = ('[spool]\nmax_bytes = 1048576\ncheck_interval = 0.5\n[dispatch]\naccept_timeout = 86400\n'
             '[[rules]]\nname = "vib-top"\nseries = "q1/vib"\nabove = 23.9\nhysteresis = 22.9\n'
             '[[resources]]\nid = "r1"\ncapabilities = ["mechanic"]\nhome = [0.0, 0.0]\n')
    gw = GatewayProcess(tmp_path, broker.port, {"q1": key}, serial_ports=[pair.a], extra=extra,
                        mqtt_extra="reconnect_max = 3\n").start()
    try:
        wait_for(lambda: "serial port" in gw.log(), 30, "the serial port to open")
        n = 9000
        result: dict = {}
        load = threading.Thread(target=serial_load, args=(pair.b, make_frames("q1", key, n, time.time()), 64, result))
        load.start()
        demand_ids = [post_demand(gw.http_port, {"need": "mechanic", "at": [i, 0], "priority": 1 + i % 10})["id"]
                      for i in range(50)]
        load.join(120)
        assert result["acked"] == n
        dropped_frames = 'headrace_spool_dropped_total{kind="frame",reason="quota"}'
        wait_for(lambda: gw.metric(dropped_frames) and gw.metric("headrace_spool_bytes") <= 1048576, 30,
                 "the quota to drop frames, and the spool back under it")
        m = gw.metrics()
        assert not any(k.startswith("headrace_spool_dropped_total") and 'kind="event"' in k for k in m)
        made = {t: int(m.get(f'headrace_events_total{{type="{t}"}}', 0)) for t in ("alarm", "demand", "dispatch")}
        assert made["alarm"] == 742 and made["demand"] == 50 and made["dispatch"] == 1
        broker.start()
        total = sum(made.values())
        got = wait_for(lambda: e if len(e := received_events(sub)) >= total else None, 60, "every event")
        assert len(got) == total
        assert sorted(e["id"] for e in got if e["type"] == "demand") == sorted(demand_ids)
        assert sum(e["type"] == "alarm" for e in got) == made["alarm"]
        wait_for(lambda: any(t.endswith("/data") for t, _ in sub.messages), 30, "the frames the quota kept")
        topics = [t.rsplit("/", 1)[1] for t, _ in sub.messages if t.endswith(("/data", "/events"))]
        assert topics.index("data") > len(topics) - 1 - topics[::-1].index("events"), "events go up before data"
        print(f"quota 1 MiB, broker down: {n} frames in, {int(m[dropped_frames])} oldest dropped; "
              f"{total} events kept and delivered first")
    finally:
        sub.close()
        gw.stop()
        broker.stop()


@pytest.mark.long
def test_demo_shows_alarms_and_dispatches(tmp_path):
    """`headrace demo` (what `./run.sh demo` runs): the pump's vibration rises, rules raise an
    alarm and a demand, the dispatcher sends a mechanic; the forklift gets the operator's request."""
    p = subprocess.run([sys.executable, "-m", "gateway", "demo", "--duration", "25", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert "ALARM    raised   pump3-vibration" in out
    assert "DEMAND" in out and "mechanic at pumps, priority 8 (rule:pump3-needs-mechanic)" in out
    assert "mechanic → mech1: assigned" in out and "mechanic → mech1: accepted" in out
    assert "lift → fork1: assigned" in out
    assert "rejected 0" in out
    # the demo's cloud end: a sink worker on the embedded broker stored each reading once in SQLite
    import re
    import sqlite3
    stored = int(re.search(r"cloud: (\d+) readings", out).group(1))
    db = sqlite3.connect(tmp_path / "cloud.sqlite")
    assert stored > 0 and db.execute("SELECT count(*), count(DISTINCT node || '/' || seq || '/' || idx) FROM readings"
                                     ).fetchone() == (stored, stored)
    assert db.execute("SELECT count(*) FROM events WHERE type = 'alarm'").fetchone()[0] > 0
