"""The walking skeleton, end to end on real parts:

MicroPython nodes (two on socat ptys, one over CoAP) → the gateway process →
mosquitto → a subscriber that decodes every batch and checks that every reading
each node sent arrived exactly once per (node, seq), with its value.
"""
from __future__ import annotations

import os
import zlib


from .rig import GatewayProcess, Node, wait_for

FRAMES = 40


def node_config(name, key, transport, tmp_path, **extra):
    cfg = {"node": name, "key": key.hex(), "transport": transport, "sensors": ["temp", "vib"],
           "period_ms": 5, "batch": 8, "frames": FRAMES, "seed": zlib.crc32(name.encode()) % 1000 + 1,
           "state_file": str(tmp_path / f"{name}.seq"), "ack_timeout_ms": 500, "drain_timeout_s": 20}
    cfg.update(extra)
    return cfg


def test_micropython_nodes_to_broker(tmp_path, mosquitto, subscriber, pty_pairs):
    keys = {name: os.urandom(32) for name in ("ser1", "ser2", "coap1")}
    pairs = {name: pty_pairs(name) for name in ("ser1", "ser2")}
    gw = GatewayProcess(tmp_path, mosquitto.port, keys, serial_ports=[p.a for p in pairs.values()]).start()
    try:
        wait_for(lambda: gw.log().count("serial port") >= 2, 30, "both serial ports open")
        nodes = [Node(tmp_path, node_config(n, keys[n], "serial", tmp_path, port=pairs[n].b)) for n in pairs]
        nodes.append(Node(tmp_path, node_config("coap1", keys["coap1"], "coap", tmp_path,
                                                host="127.0.0.1", coap_port=gw.coap_port)))
        for node in nodes:
            code = node.wait(90)
            assert code == 0, f"{node.name} exited {code}:\n{node.out_path.read_text()[-2000:]}"

        sent = {}
        for node in nodes:
            done = node.events("done")
            assert done and done[-1]["acked"] >= FRAMES, node.out_path.read_text()[-2000:]
            for ev in node.events("sent"):
                assert (node.name, ev["seq"]) not in sent, f"{node.name} reused seq {ev['seq']}"
                sent[(node.name, ev["seq"])] = ev["r"]
        assert len(sent) >= 3 * FRAMES

        frames = wait_for(lambda: f if set(f := subscriber.frames()) >= set(sent) else None, 30,
                          "every sent frame at the broker")
        for key, readings in sent.items():
            copies = frames[key]
            assert len(copies) == 1, f"{key} arrived {len(copies)} times"
            got = copies[0]
            assert len(got) == len(readings), (key, got, readings)
            for (name, t, v), (sensor, t2, v2) in zip(readings, got):
                assert name.split("/")[-1] == sensor
                assert round(t2 * 1000) == t  # the node's integer ms, exactly
                assert v2 == v, (key, name, v, v2)
        assert set(frames) == set(sent), "the broker got frames no node reported sending"
        assert gw.metric('headrace_frames_accepted_total{transport="serial"}') >= 2 * FRAMES
        assert gw.metric('headrace_frames_accepted_total{transport="coap"}') >= FRAMES
    finally:
        assert gw.stop() == 0, gw.log()
