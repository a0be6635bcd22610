"""The serial transport on real ptys: one reader for every port. A burst of frames in order,
acks written back framed to the right port, many ports at once, line noise and oversize
frames split across reads, a port that vanishes (its pty closed) and comes back, a
port missing at start, and a full pipeline that stops the reading until it has space."""
import asyncio
import os
import tty

from gateway.protocol.framing import MAX_ENCODED, Deframer, encode_frame
from gateway.runtime.transports import serial as serial_transport


class Recorder:
    """The pipeline's side of the ports: frames offered, rejects counted, acks at once."""

    def __init__(self, capacity=None):
        self.offered = []  # (frame, ack callback)
        self.rejected = []
        self.capacity = capacity  # frames it takes before it is full (None: never full)
        self.intake = []  # the transport's (pause, take, listen) for the commit window
        self._space = asyncio.Event()
        self._space.set()

    def has_space(self):
        return self._space.is_set()

    async def wait_space(self):
        await self._space.wait()

    def free(self, n):
        self.capacity += n
        self._space.set()

    def add_intake(self, pause, take, listen):
        self.intake.append((pause, take, listen))

    def offer(self, message, transport, done):
        assert transport == "serial"
        self.offered.append(message)
        if self.capacity is not None and len(self.offered) >= self.capacity:
            self._space.clear()
        done(b"ack:" + message[:6], None)

    def reject_frame(self, exc, transport):
        self.rejected.append(exc.reason)


class Pty:
    """A pty whose gateway end is reached through a link, as socat's `link=` or udev's by-id names."""

    def __init__(self, link):
        self.link = link
        self.plug()

    def plug(self):
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        if os.path.lexists(self.link):
            os.unlink(self.link)
        os.symlink(os.ttyname(slave), self.link)
        os.close(slave)  # the gateway opens it by name
        os.set_blocking(self.master, False)
        self.acks = Deframer()

    def unplug(self):
        os.close(self.master)
        os.unlink(self.link)
        self.master = -1

    def write(self, data):
        while data:  # a pty takes a few KB at a time
            try:
                data = data[os.write(self.master, data):]
            except BlockingIOError:
                return data
        return b""

    def read_acks(self):
        try:
            return [a for a in self.acks.feed(os.read(self.master, 65536)) if isinstance(a, bytes)]
        except (BlockingIOError, OSError):
            return []


async def until(cond, timeout=10.0):
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def feed(pty, data):
    while data:
        data = pty.write(data)
        if data:
            await asyncio.sleep(0.005)


def run(tmp_path, n_ports, body, pipeline=None, reopen_delay=0.1):
    async def main():
        ptys = [Pty(str(tmp_path / f"node{i}")) for i in range(n_ports)]
        pipe = pipeline or Recorder()
        ports = serial_transport.SerialPorts([(p.link, 115200) for p in ptys], pipe, reopen_delay=reopen_delay)
        task = asyncio.create_task(ports.run())
        try:
            await body(ports, ptys, pipe)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for p in ptys:
                if p.master >= 0:
                    os.close(p.master)
        assert all(port.fd < 0 for port in ports.ports.values())  # every port closed with the reader

    asyncio.run(main())


def test_a_burst_of_frames_is_read_and_acked(tmp_path):
    async def body(ports, ptys, pipe):
        (pty,) = ptys
        await asyncio.wait_for(ports.ports[pty.link].connected.wait(), 5)
        frames = [b"%06d" % i + bytes(150) for i in range(200)]  # about 31 KB
        await feed(pty, b"\x00\x01\x02\x03\x00" + b"".join(encode_frame(f) for f in frames))
        await until(lambda: len(pipe.offered) == len(frames))
        assert pipe.offered == frames
        assert pipe.rejected == ["short"]  # the noise before the first frame (it decodes to 2 bytes)
        acks = []

        def all_acked():
            acks.extend(pty.read_acks())
            return len(acks) == len(frames)
        await until(all_acked)
        assert acks == [b"ack:" + f[:6] for f in frames]

    run(tmp_path, 1, body)


def test_many_ports_at_once_each_acked_on_its_own_port(tmp_path):
    async def body(ports, ptys, pipe):
        await until(lambda: all(p.connected.is_set() for p in ports.ports.values()))
        frames = {i: [b"%02d%04d" % (i, k) + bytes(40) for k in range(30)] for i in range(len(ptys))}
        for k in range(30):  # interleaved, as nodes send
            for i, pty in enumerate(ptys):
                await feed(pty, encode_frame(frames[i][k]))
        await until(lambda: len(pipe.offered) == 30 * len(ptys))
        for i in range(len(ptys)):  # in order within each port
            assert [f for f in pipe.offered if f[:2] == b"%02d" % i] == frames[i]
        got = {i: [] for i in range(len(ptys))}

        def all_acked():
            for i, pty in enumerate(ptys):
                got[i] += pty.read_acks()
            return all(len(v) == 30 for v in got.values())
        await until(all_acked)
        for i in range(len(ptys)):
            assert got[i] == [b"ack:" + f[:6] for f in frames[i]]
        assert pipe.rejected == []

    run(tmp_path, 24, body)


def test_ports_are_left_unread_during_a_commit_window_at_low_rates(tmp_path):
    async def body(ports, ptys, pipe):
        await until(lambda: all(p.connected.is_set() for p in ports.ports.values()))
        ((pause, take, listen),) = pipe.intake
        pause()  # the pipeline's commit window starts
        for i, pty in enumerate(ptys):
            await feed(pty, encode_frame(b"w%05d" % i))
        await asyncio.sleep(0.2)
        assert pipe.offered == []  # the frames wait in the ports
        take()  # the window ends: every port is read at once, before the commit
        assert sorted(pipe.offered) == [b"w%05d" % i for i in range(len(ptys))]
        await feed(ptys[0], encode_frame(b"after!"))  # the commit runs: still unread
        await asyncio.sleep(0.2)
        assert pipe.offered[-1:] != [b"after!"]
        listen()  # nothing left to commit: read as bytes come
        await until(lambda: pipe.offered[-1:] == [b"after!"])
        await feed(ptys[1], b"".join(encode_frame(b"b%05d" % k) for k in range(serial_transport.WINDOW_FRAMES)))
        await until(lambda: len(pipe.offered) == len(ptys) + 1 + serial_transport.WINDOW_FRAMES)
        pause()  # a window after one that brought WINDOW_FRAMES frames: the ports are read on
        await feed(ptys[2], encode_frame(b"during"))
        await until(lambda: pipe.offered[-1:] == [b"during"])
        take()
        acks = []
        await until(lambda: acks.extend(ptys[2].read_acks()) or acks == [b"ack:w00002", b"ack:during"])

    run(tmp_path, 3, body)


def test_garbage_and_oversize_frames_across_reads(tmp_path):
    async def body(ports, ptys, pipe):
        (pty,) = ptys
        await asyncio.wait_for(ports.ports[pty.link].connected.wait(), 5)
        await feed(pty, encode_frame(b"first!"))
        await until(lambda: pipe.offered == [b"first!"])
        # an oversize frame written in pieces, each read on its own
        for _ in range(4):
            await feed(pty, b"\x07" * (MAX_ENCODED // 3))
            await asyncio.sleep(0.05)
        await feed(pty, b"\x07" * 10 + b"\x00")  # its end
        bad_crc = bytearray(encode_frame(b"crcbad"))
        bad_crc[2] ^= 0x40
        await feed(pty, bytes(bad_crc) + b"\x05\x01\x00" + encode_frame(b"second"))
        await until(lambda: pipe.offered == [b"first!", b"second"])
        assert pipe.rejected == ["oversize", "crc", "cobs"]
        assert len(ports.ports[pty.link].deframer._buf) == 0  # nothing held of the oversize frame

    run(tmp_path, 1, body)


def test_a_port_that_vanishes_is_reopened_when_it_comes_back(tmp_path, caplog):
    async def body(ports, ptys, pipe):
        gone, stays = ptys
        port = ports.ports[gone.link]
        await until(lambda: all(p.connected.is_set() for p in ports.ports.values()))
        await feed(gone, encode_frame(b"before"))
        await until(lambda: pipe.offered == [b"before"])
        gone.unplug()  # the adapter pulled out
        await until(lambda: not port.connected.is_set())
        assert port.lost == 1 and port.fd < 0
        await feed(stays, encode_frame(b"others"))  # the other ports are still read
        await until(lambda: pipe.offered == [b"before", b"others"])
        await asyncio.sleep(0.3)  # reopening fails meanwhile (the path is missing), quietly
        gone.plug()
        await asyncio.wait_for(port.connected.wait(), 5)
        await feed(gone, encode_frame(b"after!"))
        await until(lambda: pipe.offered[-1:] == [b"after!"])
        await until(lambda: gone.read_acks() == [b"ack:after!"])

    with caplog.at_level("INFO", logger="headrace.serial"):
        run(tmp_path, 2, body)
    text = caplog.text
    # a pty's far end closed reads as the end of file here; a USB adapter pulled out gives EIO
    assert "node0 lost: end of file" in text or "node0 lost: [Errno 5]" in text
    assert text.count("cannot open serial port") == 1  # once an outage, not every retry
    assert text.count(f"serial port {tmp_path / 'node0'} open at 115200 baud") == 2


def test_a_port_missing_at_start_is_opened_when_it_appears(tmp_path):
    async def main():
        pipe = Recorder()
        link = str(tmp_path / "late")
        ports = serial_transport.SerialPorts([(link, 115200)], pipe, reopen_delay=0.05)
        task = asyncio.create_task(ports.run())
        try:
            await asyncio.sleep(0.2)
            assert not ports.ports[link].connected.is_set()
            pty = Pty(link)
            await asyncio.wait_for(ports.ports[link].connected.wait(), 5)
            await feed(pty, encode_frame(b"hello!"))
            await until(lambda: pipe.offered == [b"hello!"])
            os.close(pty.master)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_a_full_pipeline_stops_the_reading_and_loses_nothing(tmp_path):
    async def body(ports, ptys, pipe):
        await until(lambda: all(p.connected.is_set() for p in ports.ports.values()))
        frames = [[b"%d%05d" % (i, k) for k in range(40)] for i in range(len(ptys))]
        for i, pty in enumerate(ptys):
            await feed(pty, b"".join(encode_frame(f) for f in frames[i]))
        await until(lambda: len(pipe.offered) == 10)
        await asyncio.sleep(0.1)
        assert len(pipe.offered) == 10 and not ports._reading  # full: nothing more is taken
        while len(pipe.offered) < 120:
            n = len(pipe.offered)
            pipe.free(25)
            await until(lambda: len(pipe.offered) > n)
        await until(lambda: len(pipe.offered) == 120)
        for i in range(len(ptys)):
            assert [f for f in pipe.offered if f[:1] == b"%d" % i] == frames[i]

    run(tmp_path, 3, body, pipeline=Recorder(capacity=10))


def test_a_node_that_does_not_read_its_acks_is_not_read_either(tmp_path):
    async def body(ports, ptys, pipe):
        (pty,) = ptys
        port = ports.ports[pty.link]
        await asyncio.wait_for(port.connected.wait(), 5)
        # the acks of these fill the pty's buffer (a few KB) and then the port's: it stops being read
        big = [b"%06d" % k + bytes(60) for k in range(3000)]
        rest = b"".join(encode_frame(f) for f in big)
        for _ in range(400):
            rest = pty.write(rest)
            if not rest:
                break
            await asyncio.sleep(0.01)
            if not port.events & serial_transport._IN:
                break
        await until(lambda: not port.events & serial_transport._IN)
        assert len(port.out) > serial_transport.READ_LIMIT
        acks = []
        while len(acks) < len(big):  # the node reads its acks again: everything flows
            acks += pty.read_acks()
            rest = pty.write(rest)
            await asyncio.sleep(0.005)
        assert pipe.offered == big
        assert acks == [b"ack:" + f[:6] for f in big]

    run(tmp_path, 1, body)
