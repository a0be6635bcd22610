"""The gateway process under a systemd-like supervisor: READY and WATCHDOG through sd_notify,
SIGTERM flushes and publishes a final retained state."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from .bench import GatewayProcess, wait_for


def test_ready_and_watchdog_through_notify_socket(tmp_path, mosquitto, subscriber):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"n1": os.urandom(32)})
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    gw._log = open(gw.log_path, "ab")
    gw.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "gateway", "run", "--config", str(gw.config)],
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
        wait_for(lambda: any(t.endswith("/state") and json.loads(p).get("online") for t, p in subscriber.messages),
                 10, "the retained birth message")
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
