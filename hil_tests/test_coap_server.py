"""The gateway's CoAP server against raw datagrams: every RFC 7252 corner it answers."""
from __future__ import annotations

import os
import socket

import cbor2

from gateway.protocol import coap, cose
from gateway.protocol.coap import parse, response
from gateway.protocol.numbers import (
    CF_COSE_MAC0,
    COAP_ACK,
    COAP_BAD_OPTION,
    COAP_BAD_REQUEST,
    COAP_CHANGED,
    COAP_CON,
    COAP_EMPTY,
    COAP_METHOD_NOT_ALLOWED,
    COAP_NON,
    COAP_NOT_FOUND,
    COAP_OPT_CONTENT_FORMAT,
    COAP_POST,
    COAP_REQUEST_ENTITY_TOO_LARGE,
    COAP_RST,
    COAP_UNAUTHORIZED,
    COAP_UNSUPPORTED_CONTENT_FORMAT,
)

from .rig import GatewayProcess

KEY = os.urandom(32)


def frame(seq):
    return cose.mac0(KEY, b"c1", cbor2.dumps([{-2: "c1/", -3: 1.7e9, 0: "t", 2: 1.5}]), seq=seq)


CF_JSON = 50  # RFC 7252 §12.3
UNKNOWN_CRITICAL_OPTION = 17  # odd, so critical (RFC 7252 §5.4.1), and registered to nothing we know


def request(mid, payload=b"", code=COAP_POST, path="d", mtype=COAP_CON, cf=CF_COSE_MAC0, options=(),
            token=b"\x01\x02"):
    return coap.request(mid, payload, token, path, cf, mtype, code, options)


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
        assert (mtype, code, mid, token) == (COAP_ACK, COAP_CHANGED, 1, b"\x01\x02")
        assert options[COAP_OPT_CONTENT_FORMAT] == [bytes([CF_COSE_MAC0])]
        assert cbor2.loads(cose.parse_mac0(payload).verify(KEY)) == [1, 0, 0]
        # a retransmission (same message id) gets the very same bytes, without a second commit
        sock.sendto(request(1, frame(0)), ("127.0.0.1", p))
        assert sock.recvfrom(4096)[0] == response(COAP_ACK, COAP_CHANGED, 1, b"\x01\x02", payload, CF_COSE_MAC0)
        assert exchange(sock, p, request(2, frame(1), mtype=COAP_NON))[:2] == (COAP_NON, COAP_CHANGED)  # NON gets NON
        assert exchange(sock, p, request(3, frame(2), path="x"))[1] == COAP_NOT_FOUND
        assert exchange(sock, p, request(4, b"", code=0x01))[1] == COAP_METHOD_NOT_ALLOWED  # 0.01 GET
        assert exchange(sock, p, request(5, frame(3), cf=CF_JSON))[1] == COAP_UNSUPPORTED_CONTENT_FORMAT
        assert exchange(sock, p, request(6, frame(4), options=[(UNKNOWN_CRITICAL_OPTION, b"\x01")]))[1] == COAP_BAD_OPTION
        assert exchange(sock, p, request(7, os.urandom(1100)))[1] == COAP_REQUEST_ENTITY_TOO_LARGE
        assert exchange(sock, p, request(8, b"\x01"))[1] == COAP_BAD_REQUEST  # not a COSE_Mac0
        assert exchange(sock, p, request(9, cose.mac0(os.urandom(32), b"c1", b"\x80", seq=9)))[1] == COAP_UNAUTHORIZED
        assert exchange(sock, p, coap.encode(COAP_CON, COAP_EMPTY, 10))[:3] == (COAP_RST, COAP_EMPTY, 10)  # ping
        sock.sendto(b"\x00\x01", ("127.0.0.1", p))  # garbage: counted, no answer, still serving
        assert exchange(sock, p, request(11, frame(5)))[1] == COAP_CHANGED
        assert gw.metric('headrace_frames_rejected_total{reason="coap",transport="coap"}') == 1
        assert gw.metric('headrace_frames_accepted_total{transport="coap"}') == 3
    finally:
        sock.close()
        gw.stop()
