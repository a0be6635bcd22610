"""The CoAP server's exchange memory: bounded by `dedup_max` at any request rate, and a
repeat past the bound is still answered (as a duplicate, after the next commit)."""
from __future__ import annotations

import asyncio
import socket

import cbor2

from gateway.protocol import cose
from gateway.runtime.spool import PRIO_FRAME
from gateway.protocol.coap import parse, request
from gateway.protocol.numbers import COAP_CHANGED
from gateway.runtime.transports.coap import CoapServer


def post(mid: int, payload: bytes) -> bytes:
    return request(mid, payload, token=bytes([mid & 0xFF]))


async def exchange(sock, port: int, mid: int, payload: bytes, key: bytes) -> tuple[int, list]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, post(mid, payload), ("127.0.0.1", port))
    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
    _type, code, rmid, _tok, _opts, body = parse(data)
    assert rmid == mid
    return code, cbor2.loads(cose.parse_mac0(body).verify(key))


def test_exchanges_remembered_are_bounded_and_repeats_past_them_answered(pipeline_rig):
    rig = pipeline_rig

    async def main():
        _, spool, pipe, task = await rig.make()
        server = CoapServer("127.0.0.1", 0, pipe, dedup_seconds=60, dedup_max=64)
        await server.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            for seq in range(300):
                assert await exchange(sock, server.port, seq, rig.frame(seq), rig.key) == (COAP_CHANGED, [1, seq, 0])
                assert len(server._recent) <= 64 and len(server._older) <= 64
            assert pipe.metrics.get("headrace_coap_dedup_full_total") >= 4
            # a recent repeat: the stored answer, nothing offered again
            offered = pipe.metrics.get("headrace_frames_in_total", transport="coap")
            assert await exchange(sock, server.port, 299, rig.frame(299), rig.key) == (COAP_CHANGED, [1, 299, 0])
            assert pipe.metrics.get("headrace_frames_in_total", transport="coap") == offered
            # a repeat the server has forgotten: the replay window answers it as a duplicate
            assert await exchange(sock, server.port, 5, rig.frame(5), rig.key) == (COAP_CHANGED, [1, 5, 1])
            assert len(await spool.read(PRIO_FRAME, 0, 1000)) == 300
        finally:
            sock.close()
            await server.stop()
            await rig.stop(spool, task)
    asyncio.run(main())
