"""The MQTT uplink against a real mosquitto: TLS with client certificates, birth and LWT."""
from __future__ import annotations

import json
import os
import signal

import cbor2
from aiocoap.numbers.codes import Code

from gateway.protocol import cose

from .bench import GatewayProcess, Mosquitto, Subscriber, coap_post, make_tls, wait_for


def frame(key: bytes, seq: int, value: float) -> bytes:
    return cose.mac0(key, b"n1", cbor2.dumps([{-2: "n1/", -3: 1.7e9 + seq, 0: "t", 2: value}]), seq=seq)


def test_tls_with_client_certificate(tmp_path):
    tls = make_tls(tmp_path)
    broker = Mosquitto(tmp_path, tls=tls).start()
    sub = Subscriber(broker.port)
    key = os.urandom(32)
    extra = f'tls_ca = "{tls["ca"]}"\ntls_cert = "{tls["client_cert"]}"\ntls_key = "{tls["client_key"]}"\n'
    gw = GatewayProcess(tmp_path, broker.tls_port, {"n1": key}, mqtt_extra=extra).start()
    try:
        assert coap_post(gw.coap_port, frame(key, 1, 2.5)).code == Code.CHANGED
        got = wait_for(lambda: sub.frames().get(("n1", 1)), 15, "the frame through the TLS listener")
        assert got == [[["t", 1.7e9 + 1, 2.5]]]
        assert "MQTT connected" in gw.log()
    finally:
        gw.stop()
        sub.close()
        broker.stop()


def test_lwt_when_the_gateway_dies(tmp_path, mosquitto, subscriber):
    gw = GatewayProcess(tmp_path, mosquitto.port, {"n1": os.urandom(32)}, mqtt_extra="keepalive = 5\n").start()
    states = lambda: [json.loads(p) for t, p in subscriber.messages if t.endswith("/state")]  # noqa: E731
    wait_for(lambda: any(s.get("online") for s in states()), 10, "the birth message")
    gw.stop(signal.SIGKILL)
    # the broker notices the dead session after 1.5 x keepalive at most, then publishes the LWT
    wait_for(lambda: states()[-1] == {"online": False}, 15, "the LWT")
