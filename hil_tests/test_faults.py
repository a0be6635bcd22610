"""Faults between node and gateway: a lossy UDP path, a node killed mid-stream."""
from __future__ import annotations

import os
import random
import socket
import threading
import time

from .rig import GatewayProcess, Node, wait_for

# the moments of the power cuts: the same in every run unless HEADRACE_TEST_SEED says otherwise
SEED = int(os.environ.get("HEADRACE_TEST_SEED", "19"))


class LossyUdpProxy:
    """Forwards datagrams between one client and a server, dropping each with probability `loss`."""

    def __init__(self, server_port: int, loss: float, seed: int = 7):
        self.server = ("127.0.0.1", server_port)
        self.loss = loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client = None
        self.dropped = self.passed = 0
        self._stop = False
        self._threads = [threading.Thread(target=self._pump, args=(self.sock, True), daemon=True),
                         threading.Thread(target=self._pump, args=(self.up, False), daemon=True)]
        for s in (self.sock, self.up):
            s.settimeout(0.1)
        for t in self._threads:
            t.start()

    def _pump(self, sock, from_client):
        while not self._stop:
            try:
                data, addr = sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            if from_client:
                self.client = addr
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self.passed += 1
            if from_client:
                self.up.sendto(data, self.server)
            elif self.client:
                self.sock.sendto(data, self.client)

    def close(self):
        self._stop = True
        for t in self._threads:
            t.join(2)
        self.sock.close()
        self.up.close()


def test_coap_retransmits_through_a_lossy_path(tmp_path, mosquitto, subscriber):
    key = os.urandom(32)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"lossy": key}).start()
    proxy = LossyUdpProxy(gw.coap_port, loss=0.2)
    try:
        node = Node(tmp_path, {"node": "lossy", "key": key.hex(), "transport": "coap", "host": "127.0.0.1",
                               "coap_port": proxy.port, "sensors": ["temp"], "period_ms": 2, "batch": 4,
                               "frames": 40, "ack_timeout_ms": 50, "max_retransmit": 4, "drain_timeout_s": 60,
                               "state_file": str(tmp_path / "lossy.seq")})
        assert node.wait(120) == 0, node.out_path.read_text()[-2000:]
        sent = {ev["seq"] for ev in node.events("sent")}
        acked = {ev["seq"] for ev in node.events("ack")}
        assert len(sent) == 40 and acked == sent
        assert proxy.dropped > 5, "the proxy dropped nothing: the test proves nothing"
        frames = wait_for(lambda: f if {("lossy", s) for s in sent} <= set(f := subscriber.frames()) else None,
                          30, "every frame at the broker")
        assert all(len(frames[("lossy", s)]) == 1 for s in sent)  # retransmissions never stored twice
    finally:
        proxy.close()
        gw.stop()


def test_node_killed_mid_stream_never_reuses_a_sequence_number(tmp_path, mosquitto, subscriber, pty_pairs):
    """Power cuts at random moments: no sequence number reused, no acked frame sent again
    as new, and no unacked frame lost (the outbox's log on flash brings them back)."""
    key = os.urandom(32)
    rng = random.Random(SEED)
    print(f"power cut moments from seed {SEED} (HEADRACE_TEST_SEED={SEED} repeats them)")
    pair = pty_pairs("reboot")
    gw = GatewayProcess(tmp_path, mosquitto.port, {"rb": key}, serial_ports=[pair.a]).start()
    cfg = {"node": "rb", "key": key.hex(), "transport": "serial", "port": pair.b, "sensors": ["temp", "vib"],
           "period_ms": 1, "batch": 8, "state_file": str(tmp_path / "rb.seq"), "ack_timeout_ms": 300}
    try:
        wait_for(lambda: "serial port" in gw.log(), 30, "the serial port to open")
        used: list[int] = []
        restored = boots = 0
        # at least 3 cuts, and more until one has left frames unacked for the log to bring back
        while boots < 3 or (restored == 0 and boots < 10):
            boots += 1
            node = Node(tmp_path, dict(cfg, frames=0))  # runs until killed
            wait_for(lambda: len(node.events("ack")) >= 5, 30, "some acks")
            time.sleep(rng.uniform(0, 0.05))  # a chosen moment, not a wait
            node.kill()  # a power cut at a random moment
            used += [ev["seq"] for ev in node.events("sent")]
            restored += node.events("boot")[0]["restored"]
        node = Node(tmp_path, dict(cfg, frames=10, drain_timeout_s=30))
        assert node.wait(60) == 0
        final = [ev["seq"] for ev in node.events("sent")]
        restored += node.events("boot")[0]["restored"]
        assert min(final) > max(used), "a sequence number was reused after a reboot"
        assert len(set(used + final)) == len(used + final)
        done = node.events("done")[-1]
        assert done["unacked"] == 0, done
        # every frame of every boot reached the broker, once: the unacked ones of a killed
        # boot were restored from the log and sent by the next
        want = {("rb", s) for s in used + final}
        frames = wait_for(lambda: f if want <= set(f := subscriber.frames()) else None, 30,
                          "every frame of every boot at the broker")
        assert all(len(copies) == 1 for copies in frames.values())
        assert restored > 0, "no power cut left a frame unacked: the test proved nothing about the log"
        print(f"{boots} power cuts: {len(used) + len(final)} frames, {restored} restored from the log after a cut, "
              "all delivered once")
    finally:
        gw.stop()
