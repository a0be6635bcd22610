"""A null-modem cable made of two ptys, with optional fault injection.

Each end is a pty whose slave path a program opens like a serial port
(`/dev/pts/N`); bytes written to one end come out of the other. It is what
`socat pty,raw,echo=0 pty,raw,echo=0` does, in-process, so the demo needs no
system package. `flip_rate` flips random bits (bit error rate per bit) to test
that line noise never yields a corrupt reading.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
import tty


class NullModem:
    def __init__(self, flip_rate: float = 0.0, seed: int | None = None):
        self.flip_rate = flip_rate
        self._rng = random.Random(seed)
        self._fds: list[int] = []
        self.paths: tuple[str, str] = ("", "")
        self.bytes = [0, 0]
        self.flipped = 0

    def open(self) -> tuple[str, str]:
        """Create both ptys; returns the two slave paths (end A, end B)."""
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            ends.append((master, slave, os.ttyname(slave)))
        # keep the slaves open ourselves, so a peer closing its side never makes the master read EIO
        self._fds = [fd for m, s, _ in ends for fd in (m, s)]
        self._masters = (ends[0][0], ends[1][0])
        self.paths = (ends[0][2], ends[1][2])
        return self.paths

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        a, b = self._masters
        self._pending = {a: bytearray(), b: bytearray()}  # bytes waiting to be written to each end
        self._loop.add_reader(a, self._relay, a, b, 0)
        self._loop.add_reader(b, self._relay, b, a, 1)

    def _relay(self, src: int, dst: int, direction: int) -> None:
        try:
            data = os.read(src, 65536)
        except (BlockingIOError, OSError):
            return
        if self.flip_rate:
            data = self._flip(data)
        self.bytes[direction] += len(data)
        self._pending[dst] += data
        self._flush(src, dst, direction)

    def _flush(self, src: int, dst: int, direction: int) -> None:
        """Write what waits for `dst`; while it cannot take more, stop reading `src`
        (flow control, as a real UART with RTS/CTS: nothing is dropped)."""
        buf = self._pending[dst]
        try:
            n = os.write(dst, buf)
            del buf[:n]
        except BlockingIOError:
            pass
        except OSError:
            buf.clear()  # the far end is gone
        if buf:
            self._loop.remove_reader(src)
            self._loop.add_writer(dst, self._drained, src, dst, direction)

    def _drained(self, src: int, dst: int, direction: int) -> None:
        self._loop.remove_writer(dst)
        self._flush(src, dst, direction)
        if not self._pending[dst]:
            self._loop.add_reader(src, self._relay, src, dst, direction)

    def _flip(self, data: bytes) -> bytes:
        out = bytearray(data)
        nbits = len(out) * 8
        # number of flips ~ Binomial(nbits, p); draw positions directly
        k = _binomial(self._rng, nbits, self.flip_rate)
        for _ in range(k):
            pos = self._rng.randrange(nbits)
            out[pos // 8] ^= 1 << (pos % 8)
        self.flipped += k
        return bytes(out)

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            for fd in self._masters:
                loop.remove_reader(fd)
                loop.remove_writer(fd)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n * p < 30:
        # Poisson approximation by inversion: exact enough for small n*p
        limit, k, prod = math.exp(-n * p), 0, rng.random()
        while prod > limit:
            k += 1
            prod *= rng.random()
        return min(k, n)
    return max(0, min(n, round(rng.gauss(n * p, (n * p * (1 - p)) ** 0.5))))
