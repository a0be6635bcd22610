# CoAP link (RFC 7252): confirmable POST /d with Content-Format 17, one exchange at a
# time (NSTART = 1), retransmitted with exponential backoff until acked.
import select
import socket

import board
import framing
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
_HEAD = const(13)  # the request before its payload: header 4, token 4, Uri-Path "d" 2, Content-Format 2, 0xFF
_RX = const(1152)  # a datagram read, at most (a response with a 1 KB payload and its options);
# also the node's pack scratch, which takes framing.MAX_ENCODED + 1


class CoapLink:
    """The steady state allocates no buffers: each request is built in one transmit buffer
    made at boot, each datagram copied into one receive buffer and the gateway's ack checked
    there in place, as SerialLink does. What is left: the datagram recv() returns (an ack,
    about 60 bytes; and hashlib's objects where the port has no native emitter for
    hmac256.py); an idle poll allocates nothing (a poll object, not a recv that raises)."""

    ack_seq: list  # link_serial.init_acks: the acks poll() hands over
    ack_status: list
    ack_cmds: list
    window_default = 1

    def __init__(self, host, port, mac, ack_timeout_ms=2000, max_retransmit=4, random_factor=1.5):
        link_serial.init_acks(self, mac)
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        # a datagram waiting is seen by a poll object made once (MicroPython's ipoll allocates
        # nothing; a non-blocking recv with nothing there raises, an exception object each time),
        # then read with recv: readinto would join datagrams queued back to back (a stream read
        # fills the buffer), and MicroPython's sockets have no recv_into
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        self._ipoll = getattr(self._poller, "ipoll", None)
        self.ack_timeout_ms = ack_timeout_ms
        self.max_retransmit = max_retransmit
        # ACK_TIMEOUT * (1 + (ACK_RANDOM_FACTOR - 1) * r), r in [0, 1) in 1/256 steps: small ints only
        self._spread = int(ack_timeout_ms * (random_factor - 1))
        self.mid = board.epoch_ms() & 0xFFFF
        self.token = 0
        self._rng = (board.epoch_ms() & 0xFFFF) or 1
        self.dgram = bytearray(_HEAD + framing.MAX_MESSAGE)  # the request in flight, kept to resend
        self.txv = memoryview(self.dgram)
        # datagrams are copied here and handled before poll() returns: between polls the node
        # writes its packs here too (scratch), as it does in the serial link's transmit buffer
        self.rx = self.scratch = bytearray(_RX)
        self._empty_ack = bytearray(4)
        # the exchange in flight: message id, token, datagram length (in tx), frame, next send
        # (ticks ms), timeout (ms), retransmissions so far
        self.busy_ = False
        self.ex_mid = self.ex_token = self.ex_len = self.ex_seq = self.ex_timeout = self.ex_tries = 0
        self.ex_next = board.ticks_ms()
        self.failures = 0
        self.errors = 0
        self.bad_acks = 0
        self.other = None  # takes a response that answers no frame (node updates: fetch.Fetcher.answer)

    def busy(self):
        return self.busy_

    def send_coap(self, msg):
        """A CoAP message of the node's own (node updates: fetch.py), beside the frames' exchange."""
        self.sock.sendto(msg, self.addr)

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF  # one message id space for the frames and the fetcher
        return self.mid

    def _jitter_ms(self):
        # a 16-bit LCG (multiplier 75, modulus 65537: ZX81's): never a heap int on 32-bit ports
        self._rng = (self._rng * 75 + 74) % 65537
        return (self._spread * (self._rng & 0xFF)) >> 8

    def send(self, seq, msg, start=0, n=-1):
        """Frame `seq`: msg[start:start + n] (all of msg when n < 0), as a confirmable POST /d."""
        if n < 0:
            n = len(msg) - start
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = (self.token + 1) & 0xFFFFFFFF
        t = self.dgram
        t[0] = _VER_CON | 4  # token of 4 bytes
        t[1] = _POST
        t[2] = self.mid >> 8
        t[3] = self.mid & 0xFF
        tok = self.token
        for k in range(4):
            t[4 + k] = (tok >> (24 - 8 * k)) & 0xFF
        t[8] = _OPT_URI_PATH << 4 | 1  # Uri-Path "d"
        t[9] = 0x64
        t[10] = (_OPT_CONTENT_FORMAT - _OPT_URI_PATH) << 4 | 1
        t[11] = _CF_COSE_MAC0
        t[12] = 0xFF
        for i in range(n):
            t[_HEAD + i] = msg[start + i]
        timeout = self.ack_timeout_ms + self._jitter_ms()
        self.busy_ = True
        self.ex_mid = self.mid
        self.ex_token = tok
        self.ex_len = _HEAD + n
        self.ex_seq = seq
        self.ex_next = board.ticks_add(board.ticks_ms(), timeout)
        self.ex_timeout = timeout
        self.ex_tries = 0
        self.sock.sendto(self.txv[:self.ex_len], self.addr)

    def poll(self, now):
        """How many acks arrived (in ack_seq, ack_status, ack_cmds [0:n], as SerialLink)."""
        n = 0
        rx = self.rx
        while n < link_serial.ACKS and self._waiting():
            try:
                data = self.sock.recv(_RX)  # the one allocation: the datagram (an ack: ~60 B)
            except OSError:
                break
            got = len(data)
            if not got:
                break
            for i in range(got):
                rx[i] = data[i]
            if self._handle(rx, got, n):
                n += 1
        if self.busy_ and board.ticks_diff(now, self.ex_next) >= 0:
            if self.ex_tries >= self.max_retransmit:
                self.failures += 1  # gave up; the outbox resends the frame later
                self.busy_ = False
            else:
                self.ex_tries += 1
                self.ex_timeout *= 2
                self.ex_next = board.ticks_add(now, self.ex_timeout)
                self.sock.sendto(self.txv[:self.ex_len], self.addr)
        return n

    def _waiting(self):
        """Whether a datagram waits (no allocation on MicroPython)."""
        if self._ipoll is None:  # CPython
            return bool(self._poller.poll(0))
        for _ in self._ipoll(0):
            return True
        return False

    def _token_is(self, data):
        """Whether the message in data carries the exchange's token (4 bytes from data[4])."""
        tok = self.ex_token
        for k in range(4):
            if data[4 + k] != (tok >> (24 - 8 * k)) & 0xFF:
                return False
        return True

    def _handle(self, data, n, slot):
        """The datagram data[:n]: True when it was the response to the exchange and carried an
        ack (or a status for the frame), now in the ack slots at `slot`."""
        if n < 4:
            return False
        first, code = data[0], data[1]
        mtype = (first >> 4) & 3
        tkl = first & 15
        mid = data[2] << 8 | data[3]
        if mtype == _TYPE_RST and self.busy_ and mid == self.ex_mid:
            self.busy_ = False
            self.errors += 1
            return False
        if mtype == _TYPE_CON:
            # a separate response: acknowledge it with an empty ACK
            e = self._empty_ack
            e[0] = 0x60
            e[1] = 0
            e[2] = data[2]
            e[3] = data[3]
            self.sock.sendto(e, self.addr)
        ours = self.busy_ and tkl == 4 and n >= 8 and self._token_is(data)
        if code and self.other is not None and not ours:
            self.other(bytes(data[:n]))  # a response to the update fetcher (tokens of its own): rare
            return False
        if not self.busy_:
            return False
        if mtype == _TYPE_ACK and code == 0:
            if mid == self.ex_mid:
                self.ex_next = board.ticks_add(board.ticks_ms(), 60000)  # empty ACK: the response follows
            return False
        if not ours:
            return False
        self.busy_ = False
        if code != _CHANGED:
            self.errors += 1
            if code in (0x80, 0x8D):  # 4.00 and 4.13 will never succeed: drop the frame (status 2)
                self.ack_seq[slot] = self.ex_seq
                self.ack_status[slot] = 2
                self.ack_cmds[slot] = None
                return True
            return False  # others: the outbox resends later
        p = _payload(data, 8, n)
        if p < 0:
            return False
        # the payload's head is scratch from here on: open_ack needs 4 free bytes before it
        if link_serial.take_ack(self, slot, data, p, n - p):
            return True
        self.bad_acks += 1
        return False


def _payload(data, i, n):
    """Where the payload of the CoAP message data[:n] starts (options from data[i]); -1: none."""
    while i < n:
        if data[i] == 0xFF:
            return i + 1 if i + 1 < n else -1
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
    return -1
