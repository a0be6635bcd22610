"""core_ext.udp: datagrams in batches against real UDP sockets on loopback, both
implementations (recvmmsg/sendmmsg compiled, a call per datagram in the reference)."""
from __future__ import annotations

import errno
import select
import socket

import pytest

pytestmark = pytest.mark.core("udp")


def udp(family=socket.AF_INET, host="127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


@pytest.fixture
def pair():
    server, client = udp(), udp()
    yield server, client
    server.close()
    client.close()


def settle(sock: socket.socket) -> None:
    """Wait until sock has a datagram (loopback delivers during the send, but be sure)."""
    assert select.select([sock], [], [], 2)[0], "nothing arrived"


def test_recv_takes_at_most_count_then_nothing_when_none_waits(impl, pair):
    server, client = pair
    b = impl.Batch(server, 3, 64)
    assert b.recv() == []  # EAGAIN: nothing waits
    for i in range(5):
        client.sendto(b"d%d" % i, server.getsockname())
    settle(server)
    first, second = b.recv(), b.recv()
    assert [d for d, _a, _t in first] == [b"d0", b"d1", b"d2"]
    assert [d for d, _a, _t in second] == [b"d3", b"d4"]
    assert all(a == client.getsockname() and t is False for _d, a, t in first + second)
    assert b.recv() == []


def test_a_datagram_longer_than_the_buffer_is_cut_and_says_so(impl, pair):
    server, client = pair
    b = impl.Batch(server, 8, 16)
    for data in (b"x" * 40, b"y" * 16, b"", b"z" * 17):
        client.sendto(data, server.getsockname())
    settle(server)
    got = [(d, t) for d, _a, t in b.recv()]
    assert got == [(b"x" * 16, True), (b"y" * 16, False), (b"", False), (b"z" * 16, True)]


def test_send_delivers_in_order_to_each_address(impl, pair):
    server, client = pair
    other = udp()
    try:
        b = impl.Batch(client, 4, 64)  # 10 messages: three system calls of at most 4 compiled
        msgs = [(b"m%d" % i, (server if i % 3 else other).getsockname()) for i in range(10)]
        assert b.send(msgs) == (10, [])
        settle(server)
        settle(other)
        assert [d for d, _a, _t in impl.Batch(server, 16, 64).recv()] == [m for m, a in msgs if a == server.getsockname()]
        assert [d for d, _a, _t in impl.Batch(other, 16, 64).recv()] == [m for m, a in msgs if a == other.getsockname()]
        assert b.send([]) == (0, [])
    finally:
        other.close()


def test_a_message_that_cannot_be_sent_is_reported_and_the_rest_go(impl, pair):
    server, client = pair
    b = impl.Batch(client, 8, 64)
    to = server.getsockname()
    msgs = [(b"a", to), (b"b", ("255.255.255.255", 9)), (b"c", to), (b"d", ("255.255.255.255", 9)),
            (b"e", ("<broadcast>", 9)), (b"f", to)]
    done, errors = b.send(msgs)
    assert done == len(msgs)
    # broadcast without SO_BROADCAST; "<broadcast>" is not numeric: the socket module's own sendto
    assert errors == [(1, errno.EACCES), (3, errno.EACCES), (4, errno.EACCES)]
    settle(server)
    assert [d for d, _a, _t in impl.Batch(server, 8, 64).recv()] == [b"a", b"c", b"f"]


def test_an_address_of_the_wrong_shape_raises_as_sendto_does(impl, pair):
    server, client = pair
    with pytest.raises(TypeError):
        impl.Batch(client, 4, 64).send([(b"a", ("127.0.0.1", 9, 0, 0))])
    with pytest.raises(OverflowError):
        impl.Batch(client, 4, 64).send([(b"a", ("127.0.0.1", 70000))])


def test_ipv6(impl):
    try:
        server, client = udp(socket.AF_INET6, "::1"), udp(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        b = impl.Batch(client, 4, 64)
        assert b.send([(b"six", server.getsockname()), (b"two", server.getsockname()[:2])]) == (2, [])
        settle(server)
        got = impl.Batch(server, 4, 64).recv()
        assert [(d, a, t) for d, a, t in got] == [(b"six", client.getsockname(), False),
                                                  (b"two", client.getsockname(), False)]
    finally:
        server.close()
        client.close()


def test_bad_sizes(impl, pair):
    with pytest.raises(ValueError):
        impl.Batch(pair[0], 0, 64)
    with pytest.raises(ValueError):
        impl.Batch(pair[0], 4, 0)
