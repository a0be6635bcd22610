"""The gateway's CoAP server against raw datagrams: every RFC 7252 corner it answers."""
from __future__ import annotations

import os
import socket
import struct

import cbor2

from gateway.protocol import cose
from gateway.runtime.transports.coap import parse, response

from .rig import GatewayProcess

KEY = os.urandom(32)


def frame(seq):
    return cose.mac0(KEY, b"c1", cbor2.dumps([{-2: "c1/", -3: 1.7e9, 0: "t", 2: 1.5}]), seq=seq)


def request(mid, payload=b"", code=0x02, path=b"d", mtype=0, cf=17, extra=b"", token=b"\x01\x02"):
    out = bytes([0x40 | mtype << 4 | len(token), code]) + struct.pack(">H", mid) + token
    if path is not None:
        out += bytes([0xB0 | len(path)]) + path
        if cf is not None:
            out += b"\x11" + bytes([cf])
    out += extra
    if payload:
        out += b"\xff" + payload
    return out


def exchange(sock, port, data):
    sock.sendto(data, ("127.0.0.1", port))
    reply, _ = sock.recvfrom(4096)
    return parse(reply)


def test_answers(tmp_path, mosquitto):
    gw = GatewayProcess(tmp_path, mosquitto.port, {"c1": KEY}).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    try:
        p = gw.coap_port
        mtype, code, mid, token, options, payload = exchange(sock, p, request(1, frame(0)))
        assert (mtype, code, mid, token) == (2, 0x44, 1, b"\x01\x02") and options[12] == [b"\x11"]
        assert cbor2.loads(cose.parse_mac0(payload).verify(KEY)) == [1, 0, 0]
        # a retransmission (same message id) gets the very same bytes, without a second commit
        sock.sendto(request(1, frame(0)), ("127.0.0.1", p))
        assert sock.recvfrom(4096)[0] == response(2, 0x44, 1, b"\x01\x02", payload, 17)
        assert exchange(sock, p, request(2, frame(1), mtype=1))[:2] == (1, 0x44)  # NON gets NON
        assert exchange(sock, p, request(3, frame(2), path=b"x"))[1] == 0x84  # 4.04
        assert exchange(sock, p, request(4, b"", code=0x01))[1] == 0x85  # GET: 4.05
        assert exchange(sock, p, request(5, frame(3), cf=50))[1] == 0x8F  # JSON: 4.15
        assert exchange(sock, p, request(6, frame(4), extra=b"\x51\x01"))[1] == 0x82  # option 17: critical, unknown
        assert exchange(sock, p, request(7, os.urandom(1100)))[1] == 0x8D  # 4.13
        assert exchange(sock, p, request(8, b"\x01"))[1] == 0x80  # not a COSE_Mac0: 4.00
        assert exchange(sock, p, request(9, cose.mac0(os.urandom(32), b"c1", b"\x80", seq=9)))[1] == 0x81
        assert exchange(sock, p, bytes([0x40, 0, 0, 10]))[:3] == (3, 0, 10)  # ping: RST
        sock.sendto(b"\x00\x01", ("127.0.0.1", p))  # garbage: counted, no answer, still serving
        assert exchange(sock, p, request(11, frame(5)))[1] == 0x44
        assert gw.metric('headrace_frames_rejected_total{reason="coap",transport="coap"}') == 1
        assert gw.metric('headrace_frames_accepted_total{transport="coap"}') == 3
    finally:
        sock.close()
        gw.stop()
