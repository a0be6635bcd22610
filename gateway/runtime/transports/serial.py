"""Serial transport: COBS/CRC frames over UARTs (or ptys), one node per port, one reader for all ports.

Configuration: `[[serial.ports]]` tables with `path` and `baudrate`.
Usage: the service starts one `SerialPorts` for all configured ports; its `run()`
opens them, reads them and reopens the ones that go away.
Node updates: a node fetches a release with CoAP block requests in serial frames
(docs/protocol.md §9), answered here by gateway/runtime/updates.py.

Why one reader: with a transport, a protocol, a stream reader and a task per port,
every read of every port woke its own task through a future (about 25 µs of
Python a read here). Here every port's descriptor sits in one epoll set, which the
event loop watches as one descriptor: a wake-up reads every port that has bytes
(`os.read`, up to READ_LIMIT each), splits the frames and offers them to the
pipeline in one callback, and the acks of a commit go out in one callback too.
While the pipeline's commit window runs, no port is read when the window before
brought fewer than WINDOW_FRAMES frames (`Pipeline.add_intake`): what the nodes
send meanwhile waits in the ports' kernel buffers and is read in one go just
before the next commit; they stay unread through that commit and are watched again
only when nothing is left to commit. So at a few hundred frames a second the loop
wakes once a commit rather than once a frame, with no reader made and closed a commit. The acks leave no later: none is sent before its
commit. At higher rates frames come in bunches anyway and are read as they come.

Caveats: a port that disappears (USB unplug: EIO, ENXIO, end of file) is closed and
reopened every `reopen_delay` seconds; the node resends what was not acked
meanwhile. What arrived before the port was opened is discarded: the first
partial frame is counted as line noise. While the pipeline is full no port is
read (the lines, then the nodes' outboxes, hold the rest), and a port whose node
does not read its acks (more than READ_LIMIT waiting) is not read either.
Linux and other systems with epoll only.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import select

import serial

from gateway.errors import FrameError, RejectedFrame
from gateway.runtime.pipeline import Pipeline
from gateway.protocol.coap import CoapFormatError, is_update_request, parse
from gateway.protocol.framing import Deframer, encode_frame
from gateway.protocol.numbers import COAP_VERSION

log = logging.getLogger("headrace.serial")
TRANSPORT = "serial"
# Bytes read from a port at once, and the most a port may have waiting to be written before
# it stops being read. 8 KiB is still over half a second of a 115200 baud line.
READ_LIMIT = 8192
# Frames a commit window may bring and still have the next window left unread (as
# CoAP's `batch`): a 25 ms window of 32 frames is 1280 frames a second. Past it the
# reads overlap the window instead of adding their work to the acks' wait.
WINDOW_FRAMES = 32
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_LOST = select.EPOLLERR | select.EPOLLHUP


class SerialPort:
    """One configured port: its state while open, the frames it could not offer yet, its acks."""

    def __init__(self, path: str, baudrate: int, owner: "SerialPorts"):
        self.path, self.baudrate, self.owner = path, baudrate, owner
        self.handle: serial.Serial | None = None
        self.fd = -1
        self.events = 0  # what epoll watches for it: _IN, _OUT or both
        self.deframer = Deframer()
        self.held: list = []  # frames read while the pipeline was full, offered when it has space
        self.out = bytearray()  # bytes the port did not take yet
        self.acks = bytearray()  # acks of one commit group, written together
        self.connected = asyncio.Event()
        self.lost = 0  # times the port went away
        self.warned = False  # its failure to open was logged (once an outage, not every retry)

    def reply(self, ack: bytes | None, error: Exception | None) -> None:
        """The pipeline's answer to one frame: its ack goes out with the rest of its commit's."""
        if ack is None or self.fd < 0:
            return  # spool failed (no ack, the node resends), or the port is gone
        if not self.acks:
            self.owner.ack_later(self)
        self.acks += encode_frame(ack)


class SerialPorts:
    """Every serial port, read through one epoll set: frames to the pipeline, acks back."""

    def __init__(self, ports: list[tuple[str, int]], pipeline: Pipeline, reopen_delay: float = 2.0,
                 updates=None):
        self.pipeline = pipeline
        self.updates = updates  # node updates: CoAP block requests in serial frames (gateway/runtime/updates.py)
        self.reopen_delay = reopen_delay
        self.ports = {path: SerialPort(path, baudrate, self) for path, baudrate in ports}
        self._by_fd: dict[int, SerialPort] = {}
        self._epoll: select.epoll | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._full = False  # the pipeline was full: no port is read until it has space
        self._windowed = False  # a commit window runs and the ports are left unread meanwhile
        self._taken = 0  # frames offered since the last commit window started
        self._resume: asyncio.Task | None = None
        self._acking: list[SerialPort] = []

    # -- opening and losing ports -------------------------------------------------------------

    async def run(self) -> None:
        """Open every port, serve them, reopen the ones lost, until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._watch(True)
        self.pipeline.add_intake(self._window_starts, self._window_ends, self._listen)
        try:
            while True:
                for port in self.ports.values():
                    if port.fd < 0:
                        self._open(port)
                await asyncio.sleep(self.reopen_delay)
        finally:
            self._watch(False)
            self._windowed = False
            if self._resume is not None:
                self._resume.cancel()
                await asyncio.gather(self._resume, return_exceptions=True)
            for port in self.ports.values():
                self._close(port)
            self._epoll.close()

    def _open(self, port: SerialPort) -> None:
        try:
            handle = serial.Serial(port.path, port.baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            if not port.warned:
                log.warning("cannot open serial port %s: %s; retrying every %g s", port.path, exc,
                            self.reopen_delay)
                port.warned = True
            return
        port.warned = False
        port.handle, port.fd = handle, handle.fd
        port.deframer = Deframer()
        port.out.clear()
        port.acks.clear()
        port.events = _IN
        self._by_fd[port.fd] = port
        self._epoll.register(port.fd, _IN)
        port.connected.set()
        log.info("serial port %s open at %d baud", port.path, port.baudrate)

    def _close(self, port: SerialPort) -> None:
        if port.fd < 0:
            return
        self._by_fd.pop(port.fd, None)
        try:
            self._epoll.unregister(port.fd)
        except (OSError, ValueError):
            pass
        try:
            port.handle.close()
        except OSError:
            pass
        port.handle, port.fd, port.events = None, -1, 0
        port.connected.clear()

    def _lost(self, port: SerialPort, why) -> None:
        log.warning("serial port %s lost: %s; reopening every %g s", port.path, why, self.reopen_delay)
        port.lost += 1
        self._close(port)

    # -- reading ------------------------------------------------------------------------------

    def _watch(self, on: bool) -> None:
        """Have the event loop call `_ready` when any port is ready (one descriptor: the epoll set)."""
        if on and not self._reading:
            self._loop.add_reader(self._epoll.fileno(), self._ready)
        elif not on and self._reading:
            self._loop.remove_reader(self._epoll.fileno())
        self._reading = on

    def _ready(self) -> None:
        # one callback for every port that is ready; epoll is level-triggered, so a port
        # left unread here (the pipeline filled up) is reported again after the pause
        by_fd = self._by_fd
        for fd, ev in self._epoll.poll(0):
            port = by_fd.get(fd)
            if port is None:
                continue
            if ev & _OUT:
                self._write_waiting(port)
                if port.fd < 0:
                    continue
            if ev & (_IN | _LOST) and port.events & _IN:
                try:
                    data = os.read(fd, READ_LIMIT)
                except BlockingIOError:
                    continue
                except OSError as exc:  # EIO (a pty's other end closed), ENXIO, ENODEV: the device is gone
                    self._lost(port, exc)
                    continue
                if not data:
                    self._lost(port, "end of file")
                    continue
                self._offer(port, port.deframer.feed(data))
                if self._full:
                    break  # the pipeline is full

    def _offer(self, port: SerialPort, items: list) -> None:
        pipeline = self.pipeline
        updates = self.updates
        for i, item in enumerate(items):
            if item.__class__ is not bytes:
                pipeline.reject_frame(item, TRANSPORT)
                continue
            if updates is not None and item[0] >> 6 == COAP_VERSION:
                self._update_request(port, item)  # a CoAP message (a COSE_Mac0 starts 0xd1): a node fetching an update
                continue
            if not pipeline.has_space():
                port.held = items[i:]
                self._pause()
                return
            self._taken += 1
            try:
                pipeline.offer(item, TRANSPORT, port.reply)
            except RejectedFrame:
                pass  # counted and logged by the pipeline; never acked

    def _window_starts(self) -> None:
        """A commit window starts: read no port until it ends, unless the window before brought
        WINDOW_FRAMES or more (then frames come in bunches anyway)."""
        taken, self._taken = self._taken, 0
        if taken < WINDOW_FRAMES and not self._full and self._epoll is not None and not self._epoll.closed:
            self._windowed = True
            self._watch(False)
        elif taken >= WINDOW_FRAMES:
            self._listen()

    def _window_ends(self) -> None:
        """The window ends: read every port that has bytes now (their frames join the next
        commit). The ports stay unread through that commit (what comes meanwhile joins the
        group after it either way), until `_listen`."""
        if self._windowed and not self._full:
            self._ready()

    def _listen(self) -> None:
        """Nothing is left to commit: read as bytes come."""
        if not self._windowed:
            return
        self._windowed = False
        if not self._full and self._epoll is not None and not self._epoll.closed:
            self._watch(True)

    def _pause(self) -> None:
        """The pipeline is full: read no port until it has space again."""
        self._full = True
        self._watch(False)
        if self._resume is None or self._resume.done():
            self._resume = self._loop.create_task(self._resume_when_space(), name="serial:resume")

    async def _resume_when_space(self) -> None:
        while True:
            await self.pipeline.wait_space()
            for port in self.ports.values():
                if port.held:
                    items, port.held = port.held, []
                    self._offer(port, items)
                    if port.held:
                        break  # full again
            else:
                self._full = False
                if not self._windowed:
                    self._watch(True)
                return

    def _update_request(self, port: SerialPort, message: bytes) -> None:
        try:
            mtype, code, mid, token, options, _ = parse(message)
        except CoapFormatError as exc:
            self.pipeline.reject_frame(FrameError("coap", f"malformed CoAP message on {port.path}: {exc}"), TRANSPORT)
            return
        if not is_update_request(options):
            self.pipeline.reject_frame(FrameError("coap", f"CoAP request on {port.path} for another path than /u"),
                                       TRANSPORT)
            return
        delay, msg = self.updates.coap(mtype, code, mid, token, options)
        frame = encode_frame(msg)
        if delay > 0:  # throttled: the answer waits
            self._loop.call_later(min(delay, 1.5), self.write, port, frame)
        else:
            self.write(port, frame)

    # -- writing ------------------------------------------------------------------------------

    def ack_later(self, port: SerialPort) -> None:
        """A commit acks many frames at once: one write a port for all of them, after the commit's callbacks."""
        if not self._acking:
            self._loop.call_soon(self._write_acks)
        self._acking.append(port)

    def _write_acks(self) -> None:
        ports, self._acking = self._acking, []
        for port in ports:
            data = bytes(port.acks)
            port.acks.clear()
            self.write(port, data)

    def write(self, port: SerialPort, data: bytes) -> None:
        """Write to a port without blocking; what it does not take now goes when it can."""
        if port.fd < 0 or not data:
            return
        if port.out:
            port.out += data
        else:
            try:
                n = os.write(port.fd, data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._lost(port, exc)
                return
            if n == len(data):
                return
            port.out += data[n:]
        self._set_events(port)

    def _write_waiting(self, port: SerialPort) -> None:
        try:
            n = os.write(port.fd, port.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(port, exc)
            return
        del port.out[:n]
        self._set_events(port)

    def _set_events(self, port: SerialPort) -> None:
        # a node that does not read its acks is not read either, as a stream's drain() did
        events = (_IN if len(port.out) <= READ_LIMIT else 0) | (_OUT if port.out else 0)
        if events != port.events:
            port.events = events
            try:
                self._epoll.modify(port.fd, events)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
