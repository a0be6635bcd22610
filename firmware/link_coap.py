# CoAP link (RFC 7252): confirmable POST /d with Content-Format 17, one exchange at a
# time (NSTART = 1), retransmitted with exponential backoff until acked.
import socket
import struct

import board
import link_serial

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

_VER_CON = const(0x40)  # version 1, type CON, token length added below
_TYPE_CON = const(0)
_TYPE_NON = const(1)
_TYPE_ACK = const(2)
_TYPE_RST = const(3)
_POST = const(2)
_CHANGED = const(0x44)  # 2.04
_OPT_URI_PATH = const(11)
_OPT_CONTENT_FORMAT = const(12)
_CF_COSE_MAC0 = const(17)


def _option(delta, value, out):
    n = len(value)
    out.append((delta << 4 if delta < 13 else 13 << 4) | (n if n < 13 else 13))
    if delta >= 13:
        out.append(delta - 13)
    if n >= 13:
        out.append(n - 13)
    out.extend(value)


class CoapLink:
    window_default = 1

    def __init__(self, host, port, mac, ack_timeout_ms=2000, max_retransmit=4, random_factor=1.5):
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.mac = mac
        self.ack_timeout_ms = ack_timeout_ms
        self.max_retransmit = max_retransmit
        self.random_factor = random_factor
        self.mid = board.epoch_ms() & 0xFFFF
        self.token = 0
        self.exchange = None  # [mid, token, datagram, seq, next_ms, timeout_ms, tries]
        self.failures = 0
        self.errors = 0
        self._rng = board.epoch_ms() & 0xFFFF
        self.ack_seq: list = []
        self.ack_status: list = []
        self.ack_cmds: list = []
        self.other = None  # takes a response that answers no frame (node updates: fetch.Fetcher.answer)

    def busy(self):
        return self.exchange is not None

    def send_coap(self, msg):
        """A CoAP message of the node's own (node updates: fetch.py), beside the frames' exchange."""
        self.sock.sendto(msg, self.addr)

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF  # one message id space for the frames and the fetcher
        return self.mid

    def _jitter(self):
        self._rng = (self._rng * 1103515245 + 12345) & 0x7FFFFFFF
        return (self._rng & 0xFFFF) / 65536.0

    def send(self, seq, msg, start=0, n=-1):
        if n >= 0:
            msg = msg[start:start + n]
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = (self.token + 1) & 0xFFFFFFFF
        token = struct.pack(">I", self.token)
        out = bytearray([_VER_CON | len(token), _POST])
        out.extend(struct.pack(">H", self.mid))
        out.extend(token)
        _option(_OPT_URI_PATH, b"d", out)
        _option(_OPT_CONTENT_FORMAT - _OPT_URI_PATH, bytes([_CF_COSE_MAC0]), out)
        out.append(0xFF)
        out.extend(msg)
        timeout = int(self.ack_timeout_ms * (1 + (self.random_factor - 1) * self._jitter()))
        self.exchange = [self.mid, token, bytes(out), seq, board.ticks_add(board.ticks_ms(), timeout), timeout, 0]
        self.sock.sendto(self.exchange[2], self.addr)

    def poll(self, now):
        """How many acks arrived (in ack_seq, ack_status, ack_cmds [0:n], as SerialLink)."""
        acks = []
        while True:
            try:
                data, _ = self.sock.recvfrom(1152)
            except OSError:
                break
            ack = self._handle(data)
            if ack is not None:
                acks.append(ack)
        ex = self.exchange
        if ex is not None and board.ticks_diff(now, ex[4]) >= 0:
            if ex[6] >= self.max_retransmit:
                self.failures += 1  # gave up; the outbox resends the frame later
                self.exchange = None
            else:
                ex[6] += 1
                ex[5] *= 2
                ex[4] = board.ticks_add(now, ex[5])
                self.sock.sendto(ex[2], self.addr)
        while len(self.ack_seq) < len(acks):
            self.ack_seq.append(0)
            self.ack_status.append(0)
            self.ack_cmds.append(None)
        for i in range(len(acks)):
            self.ack_seq[i], self.ack_status[i], self.ack_cmds[i] = acks[i]
        return len(acks)

    def _handle(self, data):
        if len(data) < 4:
            return None
        first, code = data[0], data[1]
        mtype = (first >> 4) & 3
        tkl = first & 15
        mid = struct.unpack(">H", data[2:4])[0]
        token = bytes(data[4:4 + tkl])
        ex = self.exchange
        if mtype == _TYPE_RST and ex is not None and mid == ex[0]:
            self.exchange = None
            self.errors += 1
            return None
        if mtype == _TYPE_CON:
            # a separate response: acknowledge it with an empty ACK
            self.sock.sendto(bytes([0x60, 0]) + data[2:4], self.addr)
        if code and self.other is not None and (ex is None or token != ex[1]):
            self.other(data)  # a response to the update fetcher (tokens of its own)
            return None
        if ex is None:
            return None
        if mtype == _TYPE_ACK and code == 0:
            if mid == ex[0]:
                ex[4] = board.ticks_add(board.ticks_ms(), 60000)  # empty ACK: the response follows separately
            return None
        if token != ex[1]:
            return None
        self.exchange = None
        if code != _CHANGED:
            self.errors += 1
            return _status_for_code(ex[3], code)
        payload = _payload(data, 4 + tkl)
        return link_serial.parse_ack(self.mac, payload) if payload else None


def _status_for_code(seq, code):
    # 4.00 and 4.13 will never succeed: drop the frame (status 2); others: retry later
    if code in (0x80, 0x8D):
        return seq, 2, None
    return None


def _payload(data, i):
    n = len(data)
    while i < n:
        if data[i] == 0xFF:
            return bytes(data[i + 1:])
        b = data[i]
        i += 1
        d, ln = b >> 4, b & 15
        if d == 13:
            i += 1
        elif d == 14:
            i += 2
        if ln == 13:
            ln = data[i] + 13
            i += 1
        elif ln == 14:
            ln = (data[i] << 8 | data[i + 1]) + 269
            i += 2
        i += ln
    return b""
