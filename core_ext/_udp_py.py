"""Datagrams in batches on a non-blocking UDP socket: the pure-Python reference.

`Batch(sock, count, size)` serves one non-blocking datagram socket (AF_INET or
AF_INET6) from one thread:

- `recv()` takes the datagrams waiting on the socket, at most `count`, without
  waiting: a list of `(data, address, truncated)`, empty when none waits. `data`
  is at most `size` bytes; `truncated` is True when the datagram was longer (the
  rest of it is gone). `address` is what `socket.recvfrom` gives. An error
  (OSError) after some datagrams were taken is raised by the next call instead,
  so no datagram taken is lost with it.
- `send(messages)` sends each `(data, address)` of the list in order and returns
  `(done, errors)`: `done` is how many messages from the start of the list were
  dealt with (sent or failed) before the socket's send buffer was full; the rest,
  `messages[done:]`, was not tried (wait until the socket is writable). `errors`
  lists `(index, errno)` of the messages that failed (an unreachable address, a
  broadcast address without SO_BROADCAST): those are not retried.

The compiled module (`_udp.pyx`) does the same with one `recvmmsg` and one
`sendmmsg` system call for up to `count` datagrams, where this reference makes a
call per datagram.
"""
from __future__ import annotations

import socket


class Batch:
    def __init__(self, sock: socket.socket, count: int = 32, size: int = 2048):
        if count < 1 or size < 1:
            raise ValueError("count and size must be at least 1")
        self.sock, self.count, self.size = sock, count, size
        self._error: OSError | None = None

    def recv(self) -> list[tuple[bytes, tuple, bool]]:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        out = []
        recvmsg, size = self.sock.recvmsg, self.size
        for _ in range(self.count):
            try:
                data, _anc, flags, addr = recvmsg(size)
            except BlockingIOError:
                break
            except OSError as exc:
                if not out:
                    raise
                self._error = exc
                break
            out.append((data, addr, bool(flags & socket.MSG_TRUNC)))
        return out

    def send(self, messages: list[tuple[bytes, tuple]]) -> tuple[int, list[tuple[int, int]]]:
        errors = []
        sendto = self.sock.sendto
        for i, (data, addr) in enumerate(messages):
            try:
                sendto(data, addr)
            except BlockingIOError:
                return i, errors
            except OSError as exc:
                errors.append((i, exc.errno))
        return len(messages), errors
