"""Commands from the cloud reach real MicroPython nodes, are applied once and answered.

MQTT `cmd/<node>` → the gateway validates and queues → the command rides the
next acks to the node (serial and CoAP) → the node applies it and reports it in
a frame → the gateway answers `applied` on `cmd_result/<node>`. A replayed ack
(a proxy on the line plays an ack with commands back to the node) applies
nothing and is counted.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import cbor2

from gateway.protocol import cose
from gateway.protocol.framing import Deframer

from .rig import GatewayProcess, Mosquitto, Node, Subscriber, node_cfg, publish, results, wait_applied, wait_for


def test_commands_reach_a_serial_node_and_a_coap_node(tmp_path, mosquitto, subscriber, pty_pairs):
    keys = {"ser": os.urandom(32), "udp": os.urandom(32)}
    pair = pty_pairs("ser")
    gw = GatewayProcess(tmp_path, mosquitto.port, keys, serial_ports=[pair.a]).start()
    nodes = []
    try:
        wait_for(lambda: "serial port" in gw.log() and "MQTT connected" in gw.log(), 30, "the gateway")
        nodes = [Node(tmp_path, node_cfg(tmp_path, "ser", keys["ser"], 400, transport="serial", port=pair.b,
                                         period_ms=50)),
                 Node(tmp_path, node_cfg(tmp_path, "udp", keys["udp"], 400, transport="coap", host="127.0.0.1",
                                         coap_port=gw.coap_port, period_ms=50))]
        wait_for(lambda: all(n.events("ack") for n in nodes), 30, "both nodes acked")
        for node in ("ser", "udp"):
            publish(mosquitto.port, node,
                    {"id": f"{node}-p", "cmd": "set_period", "args": {"period_ms": 20}},
                    {"id": f"{node}-b", "cmd": "set_batch", "args": {"batch": 4}},
                    {"id": f"{node}-i", "cmd": "identify", "args": {"seconds": 2}})
        ids = [f"{n}-{c}" for n in ("ser", "udp") for c in "pbi"]
        got = wait_applied(subscriber, ids)
        assert {i: got[i]["status"] for i in ids} == dict.fromkeys(ids, "applied")
        for node in nodes:
            cmds = node.events("cmd")
            assert [c["cmd"] for c in cmds] == ["set_period", "set_batch", "identify"], cmds
            assert all(c["ok"] for c in cmds)
        # the new batch size shows in the frames that follow
        wait_for(lambda: any(len(e["r"]) == 4 for e in nodes[0].events("sent")), 20, "4-reading frames")
        assert gw.metric('headrace_commands_total{result="applied"}') == 6
        # a reboot: applied, answered, and the node goes down to come back
        publish(mosquitto.port, "ser", {"id": "ser-r", "cmd": "reboot"})
        wait_applied(subscriber, ["ser-r"])
        assert nodes[0].wait(20) == 3, nodes[0].out_path.read_text()[-1500:]
        assert "command ser-r for node ser applied" in gw.log()
    finally:
        for n in nodes:
            n.kill()
        gw.stop()


class ReplayingLine:
    """A serial line between node and gateway that forwards everything and, three
    times, plays the first ack that carries commands back to the node again."""

    def __init__(self, node_side: str, gateway_side: str, key: bytes):
        self.fds = [self._open(node_side), self._open(gateway_side)]
        self.key = key
        self.captured: bytes | None = None
        self.replayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _open(path: str) -> int:
        import tty
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        return fd

    def _run(self) -> None:
        import select
        deframer = Deframer()
        node_fd, gw_fd = self.fds
        next_replay = None
        while not self._stop.is_set():
            ready, _, _ = select.select(self.fds, [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                os.write(gw_fd if fd == node_fd else node_fd, data)
                if fd == gw_fd and self.captured is None:
                    for msg in deframer.feed(data):
                        if isinstance(msg, bytes) and self._carries_commands(msg):
                            from gateway.protocol.framing import encode_frame
                            self.captured = encode_frame(msg)
                            next_replay = time.monotonic() + 1.0
            if self.captured and self.replayed < 3 and time.monotonic() >= next_replay:
                os.write(node_fd, self.captured)
                self.replayed += 1
                next_replay = time.monotonic() + 0.5

    def _carries_commands(self, msg: bytes) -> bool:
        try:
            body = cbor2.loads(cose.parse_mac0(msg).verify(self.key))
        except Exception:
            return False
        return isinstance(body, list) and len(body) == 4

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in self.fds:
            os.close(fd)


def test_a_replayed_ack_applies_nothing(tmp_path, mosquitto, subscriber, pty_pairs):
    key = os.urandom(32)
    to_gw, to_node = pty_pairs("gwside"), pty_pairs("nodeside")
    gw = GatewayProcess(tmp_path, mosquitto.port, {"rp": key}, serial_ports=[to_gw.a]).start()
    line = ReplayingLine(to_node.a, to_gw.b, key)
    node = None
    try:
        wait_for(lambda: "serial port" in gw.log() and "MQTT connected" in gw.log(), 30, "the gateway")
        node = Node(tmp_path, node_cfg(tmp_path, "rp", key, 120, transport="serial", port=to_node.b, period_ms=50))
        wait_for(lambda: node.events("ack"), 30, "the node acked")
        publish(mosquitto.port, "rp", {"id": "once", "cmd": "set_batch", "args": {"batch": 2}})
        wait_applied(subscriber, ["once"])
        wait_for(lambda: line.replayed == 3, 20, "three replays of the ack")
        assert node.wait(120) == 0, node.out_path.read_text()[-1500:]
        done = node.events("done")[-1]
        assert [c["id"] for c in node.events("cmd")] == ["once"], node.events("cmd")
        assert done["cmds"] == 1 and done["cmds_replayed"] == 3, done
        assert results(subscriber)["once"]["status"] == "applied"
    finally:
        if node:
            node.kill()
        line.close()
        gw.stop()


def test_an_answer_due_while_the_broker_is_away_reaches_it_when_it_is_back(tmp_path, pty_pairs):
    """A command queued, then the broker stopped: the node applies it meanwhile, and the answer
    `applied` waits in the spool, through a kill -9 of the gateway, until the broker is back;
    then it is published once."""
    broker = Mosquitto(tmp_path, persistent=True).start()
    sub = Subscriber(broker.port, persistent_session=True)  # its session outlives the broker's stop
    key = os.urandom(32)
    pair = pty_pairs("aw")
    gw = GatewayProcess(tmp_path, broker.port, {"aw": key}, serial_ports=[pair.a],
                        mqtt_extra="reconnect_max = 1\n").start()
    node = None
    try:
        wait_for(lambda: "serial port" in gw.log() and "MQTT connected" in gw.log(), 30, "the gateway")
        publish(broker.port, "aw", {"id": "away", "cmd": "set_batch", "args": {"batch": 2}})
        wait_for(lambda: results(sub).get("away", {}).get("status") == "queued", 20, "the command queued")
        broker.stop()
        wait_for(lambda: gw.metric("headrace_uplink_connected") == 0, 20, "the uplink down")
        node = Node(tmp_path, node_cfg(tmp_path, "aw", key, 0, transport="serial", port=pair.b, period_ms=50))
        wait_for(lambda: "command away for node aw applied" in gw.log(), 30, "the command applied at the node")
        assert gw.metric("headrace_command_answers_waiting") == 1
        time.sleep(1)  # the pipeline's next group commit (every few ms) writes the answer's row
        gw.stop(signal.SIGKILL)
        gw.restart()
        assert "restored from the spool: 1 command answers" in gw.log()
        assert results(sub)["away"]["status"] == "queued"  # nothing reached the broker yet
        broker.start()
        wait_for(lambda: results(sub)["away"]["status"] == "applied", 30, "the answer after the broker's return")
        wait_for(lambda: gw.metric("headrace_command_answers_waiting") == 0, 10, "the broker's PUBACK")
        time.sleep(1)
        answers = [json.loads(p)["status"] for t, p in list(sub.messages) if t.endswith("/cmd_result/aw")]
        assert answers == ["queued", "applied"], answers  # once each
    finally:
        if node:
            node.kill()
        gw.stop()
        sub.close()
        broker.stop()
