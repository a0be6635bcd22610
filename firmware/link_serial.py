# Serial link: COBS/CRC frames to the gateway over a UART (a pty on the unix board).
#
# The steady state allocates nothing here: frames are encoded as they are written, through a
# 64-byte buffer, the UART is read into a buffer, acks are deframed
# and checked in the deframer's buffer and handed over in preallocated slots (where the port
# has no native emitter, hashlib's objects verifying an ack's MAC are the exception: see
# cose.Mac.tag_into).
import board
import cose
import framing
import protocol

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

ACKS = const(4)  # acks handed over per poll, at most (the rest wait for the next)
_CHUNK = const(64)  # bytes of a frame written to the port at a time
_RX_FRAME = const(768)  # the longest frame taken from the gateway, encoded


# The gateway's acks checked in place in a link's buffer and handed over in the link's slots
# ack_seq, ack_status and ack_cmds (lists made once, init_acks), with no allocation
# (cose.open_ack); SerialLink and link_coap.CoapLink read acks with take_ack. Functions of the
# link rather than a base class of both: a class is about 250 bytes of heap on 64-bit ports.

no_cmds = 0  # set by the node when it had no heap for commands: acks' commands are not decoded


def init_acks(link, mac):
    link.mac = mac
    link._v = 0  # the value _uint read
    # poll()'s acks: seq, status, commands (a list) or None
    link.ack_seq = [0] * ACKS
    link.ack_status = [0] * ACKS
    link.ack_cmds = [None] * ACKS


def take_ack(link, slot, buf, h, m):
    """The ack at buf[h:h + m] into the link's slot `slot`, if it is one (checked in place)."""
    span = cose.open_ack(link.mac, buf, h, m)
    if span < 0:  # not in the gateway's usual layout: the general (allocating) path
        ack = parse_ack(link.mac, bytes(buf[h:h + m]))
        if ack is None:
            return False
        link.ack_seq[slot], link.ack_status[slot], link.ack_cmds[slot] = ack
        return True
    if not span:
        return False
    p = span >> 16
    end = span & 0xFFFF
    items = buf[p]
    if items not in (0x83, 0x84) or buf[p + 1] != protocol.MSG_ACK:
        return False
    p = _uint(link, buf, p + 2, end)
    seq = link._v
    p = _uint(link, buf, p, end) if p > 0 else -1
    status = link._v
    if p < 0 or (items == 0x83 and p != end):
        return False
    cmds = None
    if items == 0x84 and no_cmds:  # the node has no heap for commands (main.Node.send)
        cmds = True
    elif items == 0x84:  # commands: rare, decoded the general way
        try:
            import cbor  # the codec, loaded at the first ack with commands
            cmds = cbor.loads(bytes(buf[p:end]))
        except ValueError:
            return False
        except MemoryError:  # no heap to decode them: the ack is taken all the same, its frame
            cmds = True      # is stored; the node tells (main.Node.send)
        else:
            if not isinstance(cmds, list):
                cmds = None
    link.ack_seq[slot] = seq
    link.ack_status[slot] = status
    link.ack_cmds[slot] = cmds
    return True


def _uint(link, buf, p, end):
    # the position after a CBOR unsigned integer at buf[p], its value in link._v; -1 if none
    if p >= end:
        return -1
    ib = buf[p]
    if ib < 24:
        link._v = ib
        return p + 1
    n = (1, 2, 4)[ib - 24] if 24 <= ib <= 26 else 0
    if not n or p + 1 + n > end:
        return -1
    v = 0
    for k in range(n):
        v = v << 8 | buf[p + 1 + k]
    link._v = v
    return p + 1 + n


class SerialLink:
    ack_seq: list  # init_acks: the acks poll() hands over
    ack_status: list
    ack_cmds: list
    window_default = 4
    block_max = 512  # the largest block of a release asked for over this link (fetch.py)

    def __init__(self, path, mac, port=None):
        init_acks(self, mac)
        self.port = port or board.Serial(path)
        # what the gateway sends a node is shorter than a frame at its longest: an ack with
        # up to 4 commands (ids of up to 64 characters) is under 700 bytes, and a block of a
        # release (fetch.py) is asked for at 512 bytes at most: 265 B less of heap
        self.deframer = framing.Deframer(_RX_FRAME)
        self.bad_acks = 0
        # a frame goes out through a small buffer, encoded as it is written (no buffer of a
        # whole frame: 1 KB less of heap)
        self.tx = bytearray(_CHUNK)
        self._crc = bytearray(4)
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
        self._frame(msg, start, n)

    def _frame(self, msg, start, n):
        # COBS(msg[start:start + n] ‖ CRC-32 LE) ‖ 0x00, the same bytes as framing.frame_into,
        # written as encoded: each block's length is found ahead, then its code and bytes go
        # into tx, written out whenever it fills; allocates nothing
        if n > framing.MAX_MESSAGE:
            raise ValueError("message too long")
        crc = self._crc
        framing.crc_into(msg, start, start + n, crc, 0)
        port = self.port
        tx = self.tx
        total = n + 4
        o = 0
        i = 0
        while True:
            j = i
            while j < total and j - i < 254 and (msg[start + j] if j < n else crc[j - n]):
                j += 1
            tx[o] = j - i + 1  # the block's code
            o += 1
            for k in range(i, j):
                if o == _CHUNK:
                    port.write(tx, o)
                    o = 0
                tx[o] = msg[start + k] if k < n else crc[k - n]
                o += 1
            if o == _CHUNK:
                port.write(tx, o)
                o = 0
            if j - i == 254:  # a full block: no zero taken; none after it when the data ends
                i = j
                if i == total:
                    break
                continue
            if j == total:
                break
            i = j + 1  # the zero the block's code stands for
            if i == total:
                tx[o] = 1  # the data ends with a zero: an empty block
                o += 1
                if o == _CHUNK:
                    port.write(tx, o)
                    o = 0
                break
        tx[o] = 0
        port.write(tx, o + 1)

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
                if take_ack(self, n, d.buf, d.HEAD, d.ready):
                    n += 1
                else:
                    self.bad_acks += 1
        return n

    def busy(self):
        return False

    def send_coap(self, msg):
        """A CoAP message in a serial frame (node updates: fetch.py)."""
        self._frame(msg, 0, len(msg))

    def next_mid(self):
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

def parse_ack(mac, msg):
    """(seq, status, commands or None) from an authenticated gateway ack, or None if it
    is not one. Commands are [[id, cmd, args], ...] (docs/protocol.md §3)."""
    import cbor
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
