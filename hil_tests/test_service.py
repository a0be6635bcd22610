"""The gateway process under a systemd-like supervisor: READY and WATCHDOG through sd_notify,
SIGTERM flushes and publishes a final retained state."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from .rig import GatewayProcess, Node, coap_post, wait_for


def test_ready_and_watchdog_through_notify_socket(tmp_path, mosquitto, subscriber):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"n1": os.urandom(32)})
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    gw._log = open(gw.log_path, "ab")
    gw.proc = subprocess.Popen([sys.executable, "-m", "gateway", "gateway", "run", "--config", str(gw.config)],
                               stdout=gw._log, stderr=subprocess.STDOUT, env=env)
    got: list[str] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in got) < 3:
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                assert gw.proc.poll() is None, gw.log()
        assert any(m.startswith("READY=1") for m in got), got
        assert sum("WATCHDOG=1" in m for m in got) >= 3, got
        assert got.index(next(m for m in got if m.startswith("READY=1"))) < \
            got.index(next(m for m in got if "WATCHDOG=1" in m))
        birth = wait_for(lambda: next((json.loads(p) for t, p in subscriber.messages
                                       if t.endswith("/state") and json.loads(p).get("online")), None),
                         10, "the retained birth message")
        assert birth["spool"]["frame"] == {"records": 0, "bytes": 0} and birth["dropped"] == {}
    finally:
        code = gw.stop()
    sock.settimeout(0.2)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except socket.timeout:
        pass
    sock.close()
    assert code == 0, gw.log()
    assert any(m.startswith("STOPPING=1") for m in got), got
    states = [json.loads(p) for t, p in subscriber.messages if t.endswith("/state")]
    assert states[-1]["online"] is False and states[-1]["clean"] is True, states


def test_sighup_reloads_the_registry(tmp_path, mosquitto, subscriber):
    import cbor2
    from aiocoap.numbers.codes import Code

    from gateway.protocol import cose
    from gateway.runtime.registry import Registry

    gw = GatewayProcess(tmp_path, mosquitto.port, {"old": os.urandom(32)}).start()
    key = os.urandom(32)
    msg = cose.mac0(key, b"newnode", cbor2.dumps([{-2: "newnode/", -3: 1.7e9, 0: "t", 2: 1.0}]), seq=0)

    def post():
        return coap_post(gw.coap_port, msg).code

    try:
        assert post() == Code.UNAUTHORIZED
        reg = Registry.load(tmp_path / "nodes.toml")
        reg.add("newnode", key)
        reg.save()
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in gw.log(), 10, "the reload log line")
        assert post() == Code.CHANGED
        (tmp_path / "nodes.toml").write_text("[nodes.broken\n")
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in gw.log(), 10, "the failed reload log line")
        assert post() == Code.CHANGED  # the old registry stays in force
    finally:
        assert gw.stop() == 0


def test_status_command_lists_nodes(tmp_path, mosquitto):
    import cbor2
    from aiocoap.numbers.codes import Code

    from gateway.protocol import cose

    key = os.urandom(32)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"pump7": key}).start()
    msg = cose.mac0(key, b"pump7", cbor2.dumps([{-2: "pump7/", -3: 1.7e9, 0: "t", 2: 1.0}, {0: "bat", 2: 3.7}]), seq=0)

    def post():
        return coap_post(gw.coap_port, msg).code

    try:
        assert post() == Code.CHANGED
        assert post() == Code.CHANGED  # the same frame again: a duplicate (its ack was lost), an error
        p = subprocess.run([sys.executable, "-m", "gateway", "status", "--config", str(gw.config)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        line = next(l for l in p.stdout.splitlines() if l.startswith("pump7"))
        # node, link, last seen, rate, frames, readings, errors, quality, battery
        assert line.split()[:2] == ["pump7", "coap"], line
        assert line.split()[-6:] == ["1", "2", "1", "50.0", "%", "3.7"], line
        assert float(line.split()[5]) > 0, line  # a frame in the last minute
        assert gw.metric("headrace_uplink_lag_seconds") >= 0
    finally:
        gw.stop()
    p = subprocess.run([sys.executable, "-m", "gateway", "status", "--config", str(gw.config)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot reach the gateway" in p.stderr


@pytest.mark.long
def test_sighup_reloads_rules_and_resources_without_dropping_frames(tmp_path, mosquitto, subscriber):
    """A rule and a resource added to gateway.toml take effect on SIGHUP while a node streams;
    a broken file keeps them; a setting only a restart applies is said so in the log."""
    import json as json_
    import urllib.request

    from .rig import node_cfg

    key = os.urandom(32)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"hup": key}).start()
    base = gw.config.read_text()
    node = None
    try:
        node = Node(tmp_path, node_cfg(tmp_path, "hup", key, 300, transport="coap", host="127.0.0.1",
                                       coap_port=gw.coap_port, period_ms=20))
        wait_for(lambda: node.events("ack"), 30, "the node acked")
        gw.config.write_text(base + '\n[[rules]]\nname = "hot"\nseries = "hup/temp"\nabove = -1000.0\n'
                             '[[resources]]\nid = "fitter"\ncapabilities = ["mechanic"]\nhome = [1.0, 2.0]\n')
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "1 rules, 1 resources" in gw.log(), 10, "the reload of the rules")
        wait_for(lambda: gw.metric('headrace_events_total{type="alarm"}') >= 1, 20, "the new rule's alarm")
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/demands", timeout=5) as r:
            assert [res["id"] for res in json_.load(r)["resources"]] == ["fitter"]
        gw.config.write_text(base + "\n[[rules]]\nname = \"broken\"\n")
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the rules and resources loaded before" in gw.log(), 10, "the refused reload")
        # a second rule, the first still raised: the table is rebuilt and the alarm is not raised twice
        gw.config.write_text(base.replace("batch_delay = 0.05", "batch_delay = 0.2") + '\n[[rules]]\nname = "hot"\n'
                             'series = "hup/temp"\nabove = -1000.0\n[[rules]]\nname = "cold"\nseries = "hup/temp"\n'
                             'above = 1e9\n[[resources]]\nid = "fitter"\ncapabilities = ["mechanic"]\nhome = [1.0, 2.0]\n')
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "take effect at the next restart" in gw.log(), 10, "the restart-only setting named")
        wait_for(lambda: "2 rules, 1 resources" in gw.log(), 10, "the second reload of the rules")
        readings = gw.metric("headrace_readings_total")
        wait_for(lambda: gw.metric("headrace_readings_total") >= readings + 40, 20,
                 "readings through the new rule table")
        assert gw.metric('headrace_events_total{type="alarm"}') == 1, "the reload raised the same alarm again"
        assert node.wait(120) == 0, node.out_path.read_text()[-1500:]
        done = node.events("done")[-1]
        assert done["unacked"] == 0 and done["dropped"] == 0, done
        sent = {("hup", e["seq"]) for e in node.events("sent")}
        wait_for(lambda: sent <= set(subscriber.frames()), 30, "every frame at the broker, across the reloads")
    finally:
        if node:
            node.kill()
        gw.stop()
