"""Bad input is rejected with a counter and a log line while the gateway keeps serving.

The test plays a node on a real pty (socat) and over CoAP (aiocoap and libcoap's
coap-client), crafting frames with the gateway's own protocol helpers.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import select
import subprocess
import time
import zlib

import cbor2
import pytest
from cobs import cobs

from gateway.protocol import cose
from gateway.protocol.framing import Deframer, encode_frame
from gateway.protocol.numbers import MAX_MESSAGE

from .rig import GatewayProcess, require, wait_for

KEY = secrets.token_bytes(32)
NODE = "tester"


def pack(value: float, t: float = 1_700_000_000.0) -> bytes:
    return cbor2.dumps([{-2: f"{NODE}/", -3: t, 0: "temp", 2: value}])


def good(seq: int, value: float = 21.5) -> bytes:
    return cose.mac0(KEY, NODE.encode(), pack(value), seq=seq)


class SerialPeer:
    """The node end of a pty: write frames, read and verify acks."""

    def __init__(self, path: str):
        import tty
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.deframer = Deframer()
        self.acks: list = []

    def send_raw(self, data: bytes) -> None:
        os.write(self.fd, data)

    def send(self, message: bytes) -> None:
        self.send_raw(b"\x00" + encode_frame(message))

    def read_acks(self, want: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.acks) < want and time.monotonic() < deadline:
            readable, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                continue
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            for msg in self.deframer.feed(data):
                if isinstance(msg, bytes):
                    m = cose.parse_mac0(msg)
                    self.acks.append(cbor2.loads(m.verify(KEY)))
        return self.acks

    def close(self):
        os.close(self.fd)


@pytest.fixture
def gateway(tmp_path, mosquitto, pty_pairs):
    pair = pty_pairs("rej")
    gw = GatewayProcess(tmp_path, mosquitto.port, {NODE: KEY}, serial_ports=[pair.a]).start()
    peer = SerialPeer(pair.b)
    wait_for(lambda: "serial port" in gw.log() and "open" in gw.log(), 30, "the serial port to open")
    yield gw, peer
    peer.close()
    gw.stop()


def rejected(gw, reason: str, transport: str = "serial") -> float:
    return gw.metric(f'headrace_frames_rejected_total{{reason="{reason}",transport="{transport}"}}')


def test_serial_rejects_each_bad_frame_and_keeps_serving(gateway, subscriber):
    gw, peer = gateway
    seq = 0
    peer.send(good(seq))
    assert peer.read_acks(1) == [[1, 0, 0]]

    # 1. bad CRC: flip a byte of the message, keep the old CRC
    msg = bytearray(good(1))
    crc = zlib.crc32(bytes(msg)).to_bytes(4, "little")
    msg[10] ^= 0x55
    peer.send_raw(cobs.encode(bytes(msg) + crc) + b"\x00")
    wait_for(lambda: rejected(gw, "crc") == 1, 5, "crc counter")

    # 2. bad MAC: a valid structure under a wrong key
    peer.send(cose.mac0(secrets.token_bytes(32), NODE.encode(), pack(99.0), seq=2))
    wait_for(lambda: rejected(gw, "auth") == 1, 5, "auth counter")

    # 3. replayed sequence number: acked as duplicate (status 1), not stored again
    peer.send(good(0))
    assert peer.read_acks(2)[1] == [1, 0, 1]
    assert rejected(gw, "replay") == 1

    # 4. malformed CBOR inside a valid MAC: acked as rejected for good (status 2)
    peer.send(cose.mac0(KEY, NODE.encode(), b"\xa1\x01", seq=3))
    assert peer.read_acks(3)[2] == [1, 3, 2]
    assert rejected(gw, "payload") == 1

    # 5. oversize frame: dropped without buffering
    peer.send_raw(b"\x00" + cobs.encode(secrets.token_bytes(MAX_MESSAGE + 200)) + b"\x00")
    wait_for(lambda: rejected(gw, "oversize") == 1, 5, "oversize counter")

    # still serving: a good frame is stored and acked
    peer.send(good(4, 23.25))
    assert peer.read_acks(4)[3] == [1, 4, 0]
    frames = wait_for(lambda: f if len(f := subscriber.frames()) == 2 else None, 10, "two frames at the broker")
    assert sorted(frames) == [(NODE, 0), (NODE, 4)]
    assert frames[(NODE, 4)] == [[["temp", 1_700_000_000.0, 23.25]]]

    log = gw.log()
    for needle in ("(crc)", "(auth)", "(replay)", "(payload)", "(oversize)"):
        assert needle in log, f"no log line for {needle}:\n{log}"
    assert gw.proc.poll() is None


def test_coap_rejects_and_accepts(gateway, subscriber):
    import aiocoap
    from aiocoap.numbers.codes import Code

    gw, _peer = gateway
    uri = f"coap://127.0.0.1:{gw.coap_port}/d"

    async def post(ctx, payload):
        req = aiocoap.Message(code=Code.POST, uri=uri, payload=payload, content_format=17)
        return await asyncio.wait_for(ctx.request(req).response, 10)

    async def main():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await post(ctx, good(10))
            assert r.code == Code.CHANGED
            assert cbor2.loads(cose.parse_mac0(r.payload).verify(KEY)) == [1, 10, 0]
            assert (await post(ctx, cose.mac0(secrets.token_bytes(32), NODE.encode(), pack(1.0), seq=11))).code \
                == Code.UNAUTHORIZED
            assert (await post(ctx, b"\x01\x02")).code == Code.BAD_REQUEST
            r = await post(ctx, good(10))
            assert r.code == Code.CHANGED and cbor2.loads(cose.parse_mac0(r.payload).verify(KEY)) == [1, 10, 1]
            assert (await post(ctx, cose.mac0(KEY, NODE.encode(), b"\xff", seq=12))).code == Code.CHANGED
        finally:
            await ctx.shutdown()

    asyncio.run(main())
    assert rejected(gw, "auth", "coap") == 1
    assert rejected(gw, "cose", "coap") == 1
    assert rejected(gw, "replay", "coap") == 1
    assert rejected(gw, "payload", "coap") == 1
    wait_for(lambda: (NODE, 10) in subscriber.frames(), 10, "the CoAP frame at the broker")


def test_libcoap_client_posts_a_frame(gateway, subscriber, tmp_path):
    gw, _peer = gateway
    client = require("coap-client-notls", "libcoap3-bin")
    f = tmp_path / "frame.cose"
    f.write_bytes(good(20, 19.5))
    p = subprocess.run([client, "-m", "post", "-t", "17", "-f", str(f), "-B", "10",
                        f"coap://127.0.0.1:{gw.coap_port}/d"], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    frames = wait_for(lambda: subscriber.frames().get((NODE, 20)), 10, "the libcoap frame at the broker")
    assert frames == [[["temp", 1_700_000_000.0, 19.5]]]
