"""The CoAP server's exchange memory: bounded by `dedup_max` at any request rate, and a
repeat past the bound is still answered (as a duplicate, after the next commit)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import cbor2
import pytest

from gateway.protocol import cose
from gateway.protocol.coap import parse, request
from gateway.protocol.numbers import COAP_CHANGED
from gateway.runtime.spool import PRIO_FRAME
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


@contextlib.asynccontextmanager
async def serving(rig, spool_options=(), **server_options):
    """A pipeline (with `spool_options`, [spool] settings) and a CoAP server on a free loopback
    port, and a non-blocking client socket; all stopped at the end."""
    _, spool, pipe, task = await rig.make(**dict(spool_options))
    server = CoapServer("127.0.0.1", 0, pipe, **server_options)
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        yield spool, pipe, server, sock
    finally:
        sock.close()
        await server.stop()
        await rig.stop(spool, task)


def test_exchanges_remembered_are_bounded_and_repeats_past_them_answered(pipeline_rig):
    rig = pipeline_rig

    async def main():
        async with serving(rig, dedup_seconds=60, dedup_max=64) as (spool, pipe, server, sock):
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
    asyncio.run(main())


def test_the_receive_buffer_asked_for_or_a_log_line_with_the_fix(pipeline_rig, caplog):
    rig = pipeline_rig
    rmem_max = int(open("/proc/sys/net/core/rmem_max").read())

    async def main():
        _, spool, pipe, task = await rig.make()
        servers = [CoapServer("127.0.0.1", 0, pipe, receive_buffer=size) for size in (rmem_max // 2, rmem_max * 2)]
        try:
            for s in servers:
                await s.start()
            got = [s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 for s in servers]
            assert got[0] == rmem_max // 2  # within the cap: all of it
            assert got[1] < rmem_max * 2  # past it: what the system gives, and a line that says how to get more
        finally:
            for s in servers:
                await s.stop()
            await rig.stop(spool, task)
    caplog.set_level(logging.INFO, logger="headrace.coap")
    asyncio.run(main())
    hints = [r.getMessage() for r in caplog.records if "rmem_max" in r.getMessage()]
    assert len(hints) == 1 and f"net.core.rmem_max={rmem_max * 2}" in hints[0]


@pytest.mark.parametrize("batch", [8, 0])
def test_a_burst_is_answered_whole_and_bad_datagrams_and_sends_are_counted(pipeline_rig, caplog, batch):
    """A burst of 40 requests sent at once is answered whole, through recvmmsg and sendmmsg
    (`[coap] batch`, 8 here) or asyncio's endpoint (`batch = 0`). Batched: a datagram past the
    buffer is an oversize reject, said so; an answer that cannot be sent is counted and the
    server goes on."""
    rig = pipeline_rig

    async def main():
        loop = asyncio.get_running_loop()
        async with serving(rig, batch=batch) as (spool, pipe, server, sock):
            for seq in range(40):
                sock.sendto(post(seq, rig.frame(seq)), ("127.0.0.1", server.port))
            answers = {}
            while len(answers) < 40:
                _type, code, mid, _tok, _opts, body = parse(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
                answers[mid] = (code, cbor2.loads(cose.parse_mac0(body).verify(rig.key)))
            assert answers == {seq: (COAP_CHANGED, [1, seq, 0]) for seq in range(40)}
            if batch:
                sock.sendto(post(40, rig.frame(40)) + b"\0" * 3000, ("127.0.0.1", server.port))
                assert await exchange(sock, server.port, 41, rig.frame(41), rig.key) == (COAP_CHANGED, [1, 41, 0])
                assert pipe.metrics.get("headrace_frames_rejected_total", transport="coap", reason="oversize") == 1
                assert any("longer than 2048 bytes" in r.getMessage() for r in caplog.records)  # cut, and said so

                server._send(b"\x60\0\0\0", ("255.255.255.255", 9))  # broadcast: EACCES without SO_BROADCAST
                assert await exchange(sock, server.port, 42, rig.frame(42), rig.key) == (COAP_CHANGED, [1, 42, 0])
                assert pipe.metrics.get("headrace_coap_send_errors_total") == 1
                assert len(await spool.read(PRIO_FRAME, 0, 1000)) == 42
    asyncio.run(main())


def test_requests_during_a_commit_window_wait_in_the_socket_and_are_read_at_once_before_the_commit(pipeline_rig):
    """At a low rate the socket is not read while the commit window runs (0.5 s here): five
    requests sent in it are not taken before the window ends, then read in one go, committed
    together and answered."""
    rig = pipeline_rig

    async def main():
        loop = asyncio.get_running_loop()
        async with serving(rig, {"commit_interval": 0.5}) as (spool, pipe, server, sock):
            assert await exchange(sock, server.port, 0, rig.frame(0), rig.key) == (COAP_CHANGED, [1, 0, 0])
            commits = pipe.metrics.get("headrace_spool_commits_total")
            for seq in range(1, 6):  # the window of the commit just made runs for 0.5 s
                sock.sendto(post(seq, rig.frame(seq)), ("127.0.0.1", server.port))
            await asyncio.sleep(0.1)
            assert pipe.metrics.get("headrace_frames_in_total", transport="coap") == 1  # waiting in the kernel
            answers = set()
            while len(answers) < 5:
                _type, code, mid, _tok, _opts, body = parse(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
                assert (code, cbor2.loads(cose.parse_mac0(body).verify(rig.key))) == (COAP_CHANGED, [1, mid, 0])
                answers.add(mid)
            assert pipe.metrics.get("headrace_spool_commits_total") == commits + 1
            # after the window, with nothing left to commit, the socket is read as datagrams come again
            for _ in range(200):
                if server._reading:
                    break
                await asyncio.sleep(0.01)
            assert server._reading
            assert await exchange(sock, server.port, 6, rig.frame(6), rig.key) == (COAP_CHANGED, [1, 6, 0])
    asyncio.run(main())


def test_exchange_keys_number_addresses_and_forget_them_all_at_once():
    server = CoapServer("127.0.0.1", 0, pipeline=None)
    a, b = server._key(("192.168.1.7", 5683), 1), server._key(("10.0.0.1", 5683), 1)
    assert a != b and server._key(("192.168.1.7", 5683), 1) == a
    assert a < 2 ** 60 and server._key(("fe80::1", 40000), 65535) < 2 ** 60  # 32-byte ints, not 48
    server._recent[a] = b"answer"
    server._ips.update({f"10.1.{i >> 8}.{i & 255}": i for i in range(2, 65536)})
    # a new address once 65,536 are numbered: the numbers start again, and nothing keyed by the old ones is kept
    assert server._key(("172.16.0.1", 5683), 1) == a
    assert not server._recent and not server._older and len(server._ips) == 1


def test_a_retransmission_gets_the_same_bytes_again(pipeline_rig):
    rig = pipeline_rig

    async def main():
        loop = asyncio.get_running_loop()
        async with serving(rig) as (spool, pipe, server, sock):
            answers = []
            for _ in range(2):  # the request, then its retransmission (same mid, same token)
                await loop.sock_sendto(sock, request(7, rig.frame(1), token=b"\x01\x02\x03\x04"), ("127.0.0.1", server.port))
                answers.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
            assert answers[0] == answers[1] and parse(answers[0])[1] == COAP_CHANGED
            assert server.duplicates == 1
    asyncio.run(main())
