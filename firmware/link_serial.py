# Serial link: COBS/CRC frames to the gateway over a UART (a pty on the unix board).
#
# The steady state allocates nothing here: frames are encoded into one buffer and written
# with the stream's offset and length, the UART is read into a buffer, acks are deframed
# and checked in the deframer's buffer and handed over in preallocated slots (where the port
# has no native emitter, hashlib's objects verifying an ack's MAC are the exception: see
# cose.Mac.tag_into).
import board
import cbor
import cose
import framing
import protocol

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

ACKS = const(8)  # acks handed over per poll, at most (the rest wait for the next)


class AckSlots:
    """The gateway's acks checked in place in a link's buffer and handed over in the slots
    ack_seq, ack_status and ack_cmds (lists made once), with no allocation (cose.open_ack);
    SerialLink and link_coap.CoapLink read acks with it."""

    def __init__(self, mac):
        self.mac = mac
        self._v = 0  # the value _uint read
        # poll()'s acks: seq, status, commands (a list) or None
        self.ack_seq = [0] * ACKS
        self.ack_status = [0] * ACKS
        self.ack_cmds = [None] * ACKS

    def _ack(self, slot, buf, h, m):
        span = cose.open_ack(self.mac, buf, h, m)
        if span < 0:  # not in the gateway's usual layout: the general (allocating) path
            ack = parse_ack(self.mac, bytes(buf[h:h + m]))
            if ack is None:
                return False
            self.ack_seq[slot], self.ack_status[slot], self.ack_cmds[slot] = ack
            return True
        if not span:
            return False
        p = span >> 16
        end = span & 0xFFFF
        items = buf[p]
        if items not in (0x83, 0x84) or buf[p + 1] != protocol.MSG_ACK:
            return False
        p = self._uint(buf, p + 2, end)
        seq = self._v
        p = self._uint(buf, p, end) if p > 0 else -1
        status = self._v
        if p < 0 or (items == 0x83 and p != end):
            return False
        cmds = None
        if items == 0x84:  # commands: rare, decoded the general way
            try:
                cmds = cbor.loads(bytes(buf[p:end]))
            except ValueError:
                return False
            if not isinstance(cmds, list):
                cmds = None
        self.ack_seq[slot] = seq
        self.ack_status[slot] = status
        self.ack_cmds[slot] = cmds
        return True

    def _uint(self, buf, p, end):
        # the position after a CBOR unsigned integer at buf[p], its value in self._v; -1 if none
        if p >= end:
            return -1
        ib = buf[p]
        if ib < 24:
            self._v = ib
            return p + 1
        n = (1, 2, 4)[ib - 24] if 24 <= ib <= 26 else 0
        if not n or p + 1 + n > end:
            return -1
        v = 0
        for k in range(n):
            v = v << 8 | buf[p + 1 + k]
        self._v = v
        return p + 1 + n


class SerialLink(AckSlots):
    window_default = 4

    def __init__(self, path, mac, port=None):
        AckSlots.__init__(self, mac)
        self.port = port or board.Serial(path)
        self.deframer = framing.Deframer()
        self.bad_acks = 0
        self.tx = self.scratch = bytearray(framing.MAX_ENCODED + 1)  # scratch: free between sends
        self.rx = bytearray(64)
        self._ri = 0  # bytes of rx taken
        self._rn = 0  # bytes in rx
        self.other = None  # takes a CoAP message that is not an ack (fetch.Fetcher.answer)
        self._mid = 0
        self.port.write(b"\x00")  # a delimiter first: the gateway resynchronises on it

    def send(self, seq, msg, start=0, n=-1):
        """Frame `seq`: msg[start:start + n] (all of msg when n < 0)."""
        if n < 0:
            n = len(msg)
        self.port.write(self.tx, framing.frame_into(self.tx, msg, n, start))

    def poll(self, now):
        """How many acks arrived since the last call (up to ACKS): in ack_seq, ack_status and
        ack_cmds [0:n]."""
        n = 0
        d = self.deframer
        while n < ACKS:
            if self._ri >= self._rn:
                got = self.port.readinto(self.rx)
                if not got:
                    break
                self._ri = 0
                self._rn = got
            self._ri = d.scan(self.rx, self._ri, self._rn)
            if d.ready:
                if 0x40 <= d.buf[d.HEAD] < 0x80:  # a CoAP message (node updates, fetch.py), not an ack
                    if self.other is not None:
                        self.other(bytes(d.buf[d.HEAD:d.HEAD + d.ready]))
                    continue
                if self._ack(n, d.buf, d.HEAD, d.ready):
                    n += 1
                else:
                    self.bad_acks += 1
        return n

    def busy(self):
        return False

    def send_coap(self, msg):
        """A CoAP message in a serial frame (node updates: fetch.py)."""
        self.port.write(self.tx, framing.frame_into(self.tx, msg, len(msg), 0))

    def next_mid(self):
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

def parse_ack(mac, msg):
    """(seq, status, commands or None) from an authenticated gateway ack, or None if it
    is not one. Commands are [[id, cmd, args], ...] (docs/protocol.md §3)."""
    try:
        header, payload = cose.verify_mac0(mac, msg)
        if header.get(cose.HDR_KID) != protocol.GATEWAY_KID:
            return None
        body = cbor.loads(payload)
    except (ValueError, TypeError):
        return None
    if not isinstance(body, list) or len(body) not in (3, 4) or body[0] != protocol.MSG_ACK:
        return None
    cmds = body[3] if len(body) == 4 and isinstance(body[3], list) else None
    return body[1], body[2], cmds
