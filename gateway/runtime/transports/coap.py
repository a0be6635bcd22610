"""CoAP transport (RFC 7252): `POST /d` with a COSE_Mac0 (Content-Format 17), over UDP.

Configuration: `[coap] enabled, bind, port, dedup_seconds, dedup_max, receive_buffer, batch`.
Usage: nodes send confirmable POSTs; the piggybacked 2.04 response carries the
ack and is sent only after the spool commit. Non-confirmable POSTs are answered
with a non-confirmable 2.04. Error codes as in docs/protocol.md §5.
A request in the layout every node writes (POST /d, Content-Format 17, a
payload of at most MAX_MESSAGE bytes) is read in one compiled call
(`core_ext.coap.data_request`), without the options' dict and the checks it
passes; every other datagram is parsed in full and checked as before.
Caveats: this is a purpose-built server for one resource, not a general CoAP
stack: block-wise transfer (RFC 7959 Block2) only for node updates (`GET /u/...`,
gateway/runtime/updates.py; a frame is at most 1024 bytes), no observe, no separate responses (the commit takes milliseconds, well inside the
client's ACK_TIMEOUT), no DTLS (frames carry their own MAC).

Why not aiocoap's server: it keeps every exchange, with its request and
response objects and a timer, for EXCHANGE_LIFETIME (247 s) to answer
retransmissions; at 500 frames/s that grew the gateway by 1.7 MB/s. Here a
retransmitted CON (same endpoint and message id) within `dedup_seconds` (to twice that) gets
the stored response bytes, and beyond that the replay window answers a repeated
frame as a duplicate, which a node treats like the first ack. That costs about
130 bytes per recent exchange (a 2.04 kept as its ack alone, the key a 32-byte int)
and a fraction of the CPU. At most `dedup_max`
exchanges are remembered per generation: a full generation is swapped early, so at
15000 requests/s the memory stays bounded (about 4.5 MB at the default) and the
window shrinks instead; a repeat past it costs a MAC check and is acked as a
duplicate after the next commit.

The socket asks for a receive buffer of `receive_buffer` bytes (4 MiB): a burst
that the event loop cannot take at once (a commit, a batch being encoded) waits
in the kernel instead of being dropped; the kernel's memory, not the gateway's
RSS. Linux caps it at `net.core.rmem_max` (212,992 bytes on many systems): the
gateway logs the size it got (and the hint below when capped), and `sysctl -w net.core.rmem_max=4194304` lets it
have the whole.

The socket is read with one `recvmmsg` system call for up to `batch` datagrams (32)
each time it is readable, and the answers that are ready in one turn of the event
loop (a commit group's acks) leave with one `sendmmsg` (`core_ext.udp`; its
pure-Python reference makes a call per datagram). While the pipeline's commit window
runs the socket is not read when the window before brought fewer than `batch`
datagrams: what arrives waits in the kernel and is read in one go just before the
next commit (`Pipeline.add_intake`); it stays unread through that commit and is put
back in the event loop's read set only when nothing is left to commit. So at a few
hundred requests a second the loop wakes once a commit rather than once a request,
and does not make and close a reader for the socket every commit; the acks leave no later, since none
is sent before its commit (answers that need no commit, a CoAP ping, a block of an
update, wait up to the window too). At higher rates datagrams come in bunches anyway
and are read as they come. `batch = 0` reads through asyncio's
datagram endpoint instead, a datagram and an answer per call, as each comes. A datagram longer than
2048 bytes is rejected as oversize (counted and logged). Answers that find the
socket's send buffer full wait until it is writable; one that cannot be sent (an
unreachable address) is counted in `headrace_coap_send_errors_total`.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time

# compiled: every frame's request goes through data_request and its answer through response
from core_ext.coap import data_request, parse, response
from core_ext.udp import Batch

from gateway.errors import AuthError, CoseError, FrameError
from gateway.runtime.pipeline import Pipeline
from gateway.protocol.coap import CoapFormatError, is_update_request
from gateway.protocol.numbers import (
    CF_COSE_MAC0,
    COAP_ACK,
    COAP_BAD_OPTION,
    COAP_BAD_REQUEST,
    COAP_CHANGED,
    COAP_CON,
    COAP_DATA_PATH,
    COAP_EMPTY,
    COAP_METHOD_NOT_ALLOWED,
    COAP_NON,
    COAP_NOT_FOUND,
    COAP_OPT_CONTENT_FORMAT,
    COAP_OPT_SIZE1,
    COAP_OPT_URI_HOST,
    COAP_OPT_URI_PATH,
    COAP_OPT_URI_PORT,
    COAP_OPT_URI_QUERY,
    COAP_POST,
    COAP_REQUEST_ENTITY_TOO_LARGE,
    COAP_RST,
    COAP_SERVICE_UNAVAILABLE,
    COAP_UNAUTHORIZED,
    COAP_UNSUPPORTED_CONTENT_FORMAT,
    MAX_MESSAGE,
)

log = logging.getLogger("headrace.coap")
TRANSPORT = "coap"

# critical options a POST /d may carry and that need no action here (RFC 7252 §5.4.1)
_KNOWN_OPTIONS = {COAP_OPT_URI_PATH, COAP_OPT_CONTENT_FORMAT, COAP_OPT_URI_HOST, COAP_OPT_URI_PORT,
                  COAP_OPT_URI_QUERY, COAP_OPT_SIZE1}


# A 2.04's ack (a COSE_Mac0: CBOR tag 17) is kept without the CoAP message around it, 16 bytes
# less an exchange (a 64-byte block instead of 80 with a 4-byte token); a CoAP message starts
# with its version, 0x40-0x7f, never 0xd1
_CBOR_TAG_COSE_MAC0 = 0xD1
_DATA_PATH = [COAP_DATA_PATH.encode()]  # the Uri-Path options of POST /d, as parse() gives them
_MISSING = object()
_DATAGRAM_MAX = 2048  # bytes read of a datagram; a longer one is oversize (a frame is at most 1024)


class CoapServer(asyncio.DatagramProtocol):
    """Owns the UDP endpoint; answers POST /d from the pipeline's acks."""

    def __init__(self, bind: str, port: int, pipeline: Pipeline, dedup_seconds: float = 8.0,
                 dedup_max: int = 16384, updates=None, receive_buffer: int = 0, batch: int = 32):
        self.bind, self.port, self.pipeline = bind, port, pipeline
        self.updates = updates  # node updates (gateway/runtime/updates.py): GET /u/... with Block2
        self.dedup_seconds, self.dedup_max = dedup_seconds, dedup_max
        self.receive_buffer = receive_buffer  # SO_RCVBUF asked for, bytes; 0: the system's default
        self.batch = batch  # datagrams a receive call, answers a send call; 0: asyncio's endpoint
        self._transport: asyncio.DatagramTransport | None = None
        self.sock: socket.socket | None = None
        self._io: Batch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: list[tuple[bytes, tuple]] = []  # answers for the next sendmmsg
        self._flush_due = False  # a flush is scheduled, or the reader flushes when it is done
        self._writer = False  # waiting for the socket to be writable
        self._reading = False  # the socket is in the event loop's read set
        self._taken = 0  # datagrams read since the last commit window ended
        # (endpoint, message id) as one int -> response, None while in progress. Two
        # generations swapped every dedup_seconds, so an exchange is remembered between
        # dedup_seconds and twice that, with no per-entry expiry bookkeeping: at 500
        # requests/s that is about 180 bytes an exchange instead of 440
        self._recent: dict[int, bytes | None] = {}
        self._older: dict[int, bytes | None] = {}
        self._rotate_at = time.monotonic() + dedup_seconds
        self._ips: dict[str, int] = {}
        self.duplicates = 0

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if self.batch:
            infos = await loop.getaddrinfo(self.bind, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _name, address = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.bind(address)
            except OSError:
                sock.close()
                raise
            self.sock, self._io = sock, Batch(sock, self.batch, _DATAGRAM_MAX)
            loop.add_reader(sock.fileno(), self._readable)
            self._reading = True
            self.pipeline.add_intake(self._pause, self._resume, self._listen)
        else:
            self._transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                                     local_addr=(self.bind, self.port))
            if hasattr(self._transport, "max_size"):
                self._transport.max_size = _DATAGRAM_MAX  # asyncio's default reads 256 KiB per datagram
            sock = self.sock = self._transport.get_extra_info("socket")
        self.port = sock.getsockname()[1]
        if self.receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        # Linux reports twice what it grants (the other half is its bookkeeping)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        if got < self.receive_buffer:  # a tuning hint, not a fault: the default system caps it
            log.info("CoAP receive buffer: %d bytes of the %d asked for ([coap] receive_buffer); the system caps "
                     "it: sysctl -w net.core.rmem_max=%d gives it all, and bursts are dropped less",
                     got, self.receive_buffer, self.receive_buffer)
        log.info("CoAP listening on %s:%d (receive buffer %d bytes)", self.bind, self.port, got)

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._io is not None:
            if self._out:
                self._flush()
            fd = self.sock.fileno()
            if self._reading:
                self._loop.remove_reader(fd)
                self._reading = False
            if self._writer:
                self._loop.remove_writer(fd)
            self.sock.close()
            self._io = None
        self.sock = None

    # -- batched socket calls -------------------------------------------------------------

    def _readable(self) -> None:
        """The socket has datagrams: take up to `batch` with one call, answer what can be
        answered at once with one call."""
        self._take()

    def _pause(self) -> None:
        """A commit window starts: stop reading, unless the last window brought a batch or more
        (then datagrams come in bunches anyway, and reading them as they come overlaps their
        work with the window instead of adding it to their acks' wait); what comes waits in
        the kernel until `_resume`."""
        taken, self._taken = self._taken, 0
        self._read_as_they_come(taken >= self.batch)

    def _resume(self) -> None:
        """The window ends: read what waits (up to a group's worth, while the commit queue has
        room). A socket left unread stays so through the commit of what was read (what comes
        meanwhile joins the group after it either way), until `_listen`."""
        if self._io is None:
            return
        limit, n = self.pipeline.cfg.spool.commit_max_frames, 0
        while n < limit and self.pipeline.has_space():
            got = self._take()
            n += got
            if got < self.batch:
                break

    def _listen(self) -> None:
        """Nothing is left to commit: read datagrams as they come."""
        self._read_as_they_come(True)

    def _read_as_they_come(self, on: bool) -> None:
        if self._io is None or on == self._reading:
            return
        if on:
            self._loop.add_reader(self.sock.fileno(), self._readable)
        else:
            self._loop.remove_reader(self.sock.fileno())
        self._reading = on

    def _take(self) -> int:
        """Read up to `batch` datagrams with one call and handle them; how many were read."""
        try:
            got = self._io.recv()
        except OSError as exc:
            self.error_received(exc)
            return 0
        self._taken += len(got)
        self._flush_due = True  # answers made meanwhile leave together below
        try:
            for data, addr, truncated in got:
                if truncated:
                    self.pipeline.reject_frame(FrameError("oversize", f"CoAP datagram from {addr[0]} longer than "
                                                          f"{_DATAGRAM_MAX} bytes"), TRANSPORT)
                    continue
                self.datagram_received(data, addr)
        finally:
            self._flush_due = False
            if self._out and not self._writer:
                self._flush()
        return len(got)

    def _flush(self) -> None:
        self._flush_due = False
        if self._io is None or self._writer or not self._out:
            return
        out, self._out = self._out, []
        done, errors = self._io.send(out)
        for index, code in errors:
            self.pipeline.metrics.inc("headrace_coap_send_errors_total")
            log.debug("CoAP answer to %s not sent: %s", out[index][1], errno.errorcode.get(code, code))
        if done < len(out):  # the send buffer is full: the rest when the socket is writable
            self._out[:0] = out[done:]
            self._writer = True
            self._loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        self._loop.remove_writer(self.sock.fileno())
        self._writer = False
        self._flush()

    # -- requests -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr) -> None:
        # a node's POST /d in the nodes' own layout is recognised in one call, without the
        # options' dict and the checks below, which it passes (core_ext/_coap_py.py)
        fast = data_request(data)
        if fast is not None:
            mtype, mid, token, payload = fast
            options = None  # and no `code`: only the full path's branches below read it
        else:
            try:
                mtype, code, mid, token, options, payload = parse(data)
            except CoapFormatError as exc:
                self.pipeline.reject_frame(FrameError("coap", f"malformed CoAP datagram from {addr[0]}: {exc}"),
                                           TRANSPORT)
                return
            if mtype in (COAP_ACK, COAP_RST):
                return  # we send no confirmable messages: nothing to match
            if code == COAP_EMPTY:
                if mtype == COAP_CON:
                    self._send(response(COAP_RST, COAP_EMPTY, mid, b""), addr)  # CoAP ping
                return
        reply_type = COAP_ACK if mtype == COAP_CON else COAP_NON
        key = self._key(addr, mid)
        self._expire()
        stored = self._recent.get(key, _MISSING)
        if stored is _MISSING:
            stored = self._older.get(key, _MISSING)
        if stored is not _MISSING:
            self.duplicates += 1
            if stored is not None and mtype == COAP_CON:
                if stored[0] == _CBOR_TAG_COSE_MAC0:  # kept as the ack alone: the 2.04 it went in, again
                    stored = response(COAP_ACK, COAP_CHANGED, mid, token, stored, CF_COSE_MAC0)
                self._send(stored, addr)  # a retransmission: the same answer again
            return
        if options is None:  # the fast path's request: only the commit queue may turn it away
            answer = None if self.pipeline.has_space() else COAP_SERVICE_UNAVAILABLE
        elif self.updates is not None and is_update_request(options):
            self._recent[key] = None
            delay, msg = self.updates.coap(mtype, code, mid, token, options)
            if delay > 0:  # throttled: the answer waits (well inside the node's ACK_TIMEOUT)
                asyncio.get_running_loop().call_later(min(delay, 1.5), self._remember, key, msg, addr)
            else:
                self._remember(key, msg, addr)
            return
        else:
            answer = self._check(code, options, payload)
        if answer is not None:
            self._remember(key, response(reply_type, answer, mid, token), addr)
            return
        self._recent[key] = None

        def done(ack: bytes | None, error: Exception | None) -> None:
            if ack is None:
                msg = response(reply_type, COAP_SERVICE_UNAVAILABLE, mid, token, str(error).encode()[:200])
            else:
                msg = response(reply_type, COAP_CHANGED, mid, token, ack, CF_COSE_MAC0)
                if reply_type == COAP_ACK:  # kept as the ack alone (a retransmission has the same mid and token)
                    self._remember(key, msg, addr, ack)
                    return
            self._remember(key, msg, addr)

        try:
            self.pipeline.offer(payload, TRANSPORT, done)
        except AuthError:
            self._remember(key, response(reply_type, COAP_UNAUTHORIZED, mid, token), addr)
        except CoseError:
            self._remember(key, response(reply_type, COAP_BAD_REQUEST, mid, token), addr)

    def _check(self, code: int, options: dict, payload: bytes) -> int | None:
        """A response code for a request we will not offer to the pipeline, or None."""
        for n in options:
            if n & 1 and n not in _KNOWN_OPTIONS:
                return COAP_BAD_OPTION  # an unrecognised critical option (RFC 7252 §5.4.1)
        if options.get(COAP_OPT_URI_PATH) != _DATA_PATH:
            return COAP_NOT_FOUND
        if code != COAP_POST:
            return COAP_METHOD_NOT_ALLOWED
        cf = options.get(COAP_OPT_CONTENT_FORMAT)
        if cf is not None and int.from_bytes(cf[0], "big") != CF_COSE_MAC0:
            return COAP_UNSUPPORTED_CONTENT_FORMAT
        if len(payload) > MAX_MESSAGE:
            self.pipeline.reject_frame(FrameError("oversize", f"CoAP payload of {len(payload)} bytes exceeds "
                                                  f"{MAX_MESSAGE}"), TRANSPORT)
            return COAP_REQUEST_ENTITY_TOO_LARGE
        if not self.pipeline.has_space():
            return COAP_SERVICE_UNAVAILABLE  # the commit queue is full: the node retries
        return None

    def _key(self, addr, mid: int) -> int:
        # the address as a small number, not itself: a key under 2**60 is a 32-byte int, an IPv4
        # address in the top bits made it 48 (16 bytes an exchange remembered, 0.5 MB at 2000/s)
        ip = self._ips.get(addr[0])
        if ip is None:
            if len(self._ips) >= 65536:  # numbers are reused from 0: forget what was keyed by the old ones
                self._ips.clear()
                self._recent.clear()
                self._older.clear()
            ip = self._ips[addr[0]] = len(self._ips)
        return (ip << 32) | (addr[1] << 16) | mid

    def _remember(self, key: int, msg: bytes, addr, kept: bytes | None = None) -> None:
        # the answer may come after a swap: it goes where the exchange is remembered
        (self._older if key in self._older and key not in self._recent else self._recent)[key] = kept or msg
        self._send(msg, addr)

    def _send(self, msg: bytes, addr) -> None:
        if self._io is not None:
            self._out.append((msg, addr))
            if not self._flush_due and not self._writer:  # acks of a commit group: one call after them all
                self._flush_due = True
                self._loop.call_soon(self._flush)
        elif self._transport is not None:
            self._transport.sendto(msg, addr)

    def _expire(self) -> None:
        now = time.monotonic()
        if now >= self._rotate_at or len(self._recent) >= self.dedup_max:
            if now < self._rotate_at:
                self.pipeline.metrics.inc("headrace_coap_dedup_full_total")
            idle = now >= self._rotate_at + self.dedup_seconds
            self._older = {} if idle else self._recent
            self._recent = {}
            self._rotate_at = now + self.dedup_seconds

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)
