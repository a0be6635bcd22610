# Node updates, the delivery: the node fetches a release the gateway offers, block by block
# (RFC 7959 Block2: GET /u/<rid>/m for the manifest, /u/<rid>/b for the body), over the link
# it sends its frames on: CoAP datagrams on a CoAP node, the same CoAP messages in serial
# frames on a serial node (as slipmux does). docs/protocol.md §9.
#
# The gateway's offer rides an ack as the command `update` (args rid, v, size, block, rate).
# The node asks for one block at a time, paced at the offered rate so its frames keep
# their share of the link; each answer is written into the spare slot by update.Receiver,
# which checks each part's SHA-256. Where the node stands is where the files on flash
# stand, so a drop, a node reboot or a gateway restart resumes there (the gateway offers
# again when the node goes quiet). Once every byte is in, the slot is pending, the node
# reports `<v>:received` and reboots into the boot stage, which checks the signature.
# Imported only when an offer arrives: a node that is not updating pays nothing for it.
import struct

import board

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

_CON_GET = const(0x01)  # 0.01 GET (RFC 7252 §12.1.1)
_CONTENT = const(0x45)  # 2.05
_NOT_FOUND = const(0x84)  # 4.04: the gateway has no such delivery for this node (cancelled, replaced)
_OPT_URI_PATH = const(11)
_OPT_URI_QUERY = const(15)
_OPT_BLOCK2 = const(23)  # RFC 7959 §2.1
# a block's answer is awaited ack_timeout_ms (the node's config), doubled per try up to this
_TIMEOUT_MAX_MS = const(16000)
_GIVE_UP = const(12)  # tries of one block (about 2.5 minutes): then idle until the gateway offers again
_HEAP_PER_BLOCK = const(12)  # free heap per byte of block size asked for (_fitting)
_IDLE = const(0)
_MANIFEST = const(1)
_BODY = const(2)


def _option(out, delta, value):
    n = len(value)
    out.append((delta if delta < 13 else 13) << 4 | (n if n < 13 else 13))
    if delta >= 13:
        out.append(delta - 13)
    if n >= 13:
        out.append(n - 13)
    out.extend(value)


def _uint(v):
    # a CoAP uint in the fewest bytes (0: none); a Block2 value takes at most 3
    n = 0
    t = v
    while t:
        n += 1
        t >>= 8
    return bytes((v >> (8 * (n - 1 - i))) & 0xFF for i in range(n))


def request(mid, token, rid, part, node, num, szx):
    """A confirmable GET /u/<rid>/<part>?n=<node> with Block2 (num, szx): the bytes."""
    out = bytearray([0x40 | len(token), _CON_GET])
    out.extend(struct.pack(">H", mid))
    out.extend(token)
    _option(out, _OPT_URI_PATH, b"u")
    _option(out, 0, rid)
    _option(out, 0, part)
    _option(out, _OPT_URI_QUERY - _OPT_URI_PATH, b"n=" + node)
    _option(out, _OPT_BLOCK2 - _OPT_URI_QUERY, _uint(num << 4 | szx))
    return bytes(out)


def response(data):
    """(code, token, block2 value or -1, payload: a memoryview into `data`) of a CoAP
    response; None if malformed."""
    n = len(data)
    if n < 4 or data[0] >> 6 != 1:
        return None
    tkl = data[0] & 15
    i = 4 + tkl
    if tkl > 8 or i > n:
        return None
    token = bytes(data[4:i])
    number = 0
    block2 = -1
    while i < n:
        b = data[i]
        i += 1
        if b == 0xFF:
            return data[1], token, block2, memoryview(data)[i:]  # no copy of the block
        d = b >> 4
        ln = b & 15
        if d == 13:
            d = data[i] + 13
            i += 1
        elif d == 14:
            d = (data[i] << 8 | data[i + 1]) + 269
            i += 2
        if ln == 13:
            ln = data[i] + 13
            i += 1
        elif ln == 14:
            ln = (data[i] << 8 | data[i + 1]) + 269
            i += 2
        number += d
        if number == _OPT_BLOCK2:
            block2 = 0
            for k in range(ln):
                block2 = block2 << 8 | data[i + k]
        i += ln
    return data[1], token, block2, b""


class Fetcher:
    """The node's side of a delivery. `node` is main.Node (its link, trial, reports and
    reboot); offer() takes the gateway's command, tick() runs in the send loop, answer()
    takes a CoAP message the link received that is not an ack of a frame."""

    def __init__(self, node):
        self.node = node
        self.link = node.link
        self.link.other = self.answer
        self.state = _IDLE
        self.rid = b""
        self.version = ""
        self.rx = None
        self.mbuf = bytearray()  # the manifest as it arrives
        self.num = 0
        self.szx = 5
        self.rate = 2048
        self.due = board.ticks_ms()
        self.out = None  # the request in flight: its bytes
        self.token = b""
        self.tok = 0
        self.sent_at = board.ticks_ms()  # the request in flight was last sent
        self.asked = self.sent_at  # ... and first sent
        self.timeout_ms = node.cfg["ack_timeout_ms"]  # RFC 7252 ACK_TIMEOUT, 2 s by default
        self.timeout = self.timeout_ms
        self.tries = 0
        self.blocks = 0  # blocks taken (the bench's count)

    def busy(self):
        return self.state != _IDLE

    def offer(self, args):
        """The gateway's `update` command: None when fetching (or already), else the error."""
        rid = args.get("rid")
        v = args.get("v")
        block = args.get("block")
        rate = args.get("rate")
        if not isinstance(rid, str) or len(rid) != 16 or not isinstance(v, str) \
                or block not in (16, 32, 64, 128, 256, 512, 1024) or not isinstance(rate, int) or rate < 16:
            return "bad update offer"
        if self.state != _IDLE and rid.encode() == self.rid:
            return None  # the same release, offered again: going on
        trial = self.node.trial
        if trial is None:
            return "no boot stage: this node takes no updates"
        try:
            version = tuple(int(x) for x in v.split("."))
        except ValueError:
            return "bad update offer"
        import update
        if len(version) != 3 or version <= trial.version:
            return self.refuse(update.UpdateError("downgrade", "%s is not newer than %s" % (
                v, update.version_text(trial.version))), v)
        self.rid = rid.encode()
        self.version = v
        self.szx = _szx(_fitting(min(block, getattr(self.link, "block_max", block))))
        self.rate = rate
        self.state = _MANIFEST
        self.mbuf = bytearray()
        self.rx = None
        self.num = 0
        self.out = None
        self.due = board.ticks_ms()
        return None

    def refuse(self, e, version=None):
        """An update refused: reported in the next frame (`<v>:refused:<reason>:<detail>`)."""
        self.state = _IDLE
        self.rx = None
        self.mbuf = bytearray()
        text = "%s:refused:%s:%s" % (version or self.version, e.reason, e.detail)
        self.node.trial.reports.append(text)
        self.node.make_frame(self.node.empty)  # reported now, not at the next sample
        return "refused:%s" % e.reason

    def tick(self, now):
        if self.state == _IDLE:
            return
        if self.out is not None:
            if board.ticks_diff(now, self.sent_at) < self.timeout:
                return
            self.tries += 1
            if self.tries >= _GIVE_UP:  # the gateway is away: it offers again when it is back
                self.state = _IDLE
                self.out = None
                return
            self.timeout = min(self.timeout * 2, _TIMEOUT_MAX_MS)
            self.sent_at = now
            self.link.send_coap(self.out)  # the same message again (the gateway answers it again)
            return
        if board.ticks_diff(now, self.due) < 0:
            return
        self.tok = (self.tok + 1) & 0xFFFF
        self.token = b"u" + struct.pack(">H", self.tok)
        part = b"m" if self.state == _MANIFEST else b"b"
        self.out = request(self.link.next_mid(), self.token, self.rid, part, self.node.kid, self.num, self.szx)
        self.sent_at = now
        self.asked = now
        self.timeout = self.timeout_ms
        self.tries = 0
        self.link.send_coap(self.out)

    def answer(self, data):
        """A CoAP message from the gateway: the answer to the block in flight, or ignored."""
        r = response(data)
        if r is None or self.out is None or r[1] != self.token:
            return
        code, _, block2, payload = r
        self.out = None
        if code == _NOT_FOUND:
            self.state = _IDLE  # the delivery is gone at the gateway
            return
        if code != _CONTENT or block2 < 0 or block2 >> 4 != self.num:
            self.due = board.ticks_add(board.ticks_ms(), 1000)  # busy or odd: ask again later
            return
        import update
        size = 16 << (block2 & 7)
        more = block2 & 8
        self.blocks += 1
        rx = self.rx
        try:
            if self.state == _MANIFEST:
                self.mbuf.extend(payload)
                self.num += 1
                if not more:
                    rx = self.rx = update.Receiver(self.node.trial.slots)
                    pos = rx.begin(bytes(self.mbuf), update.target())
                    self.mbuf = bytearray()
                    self.state = _BODY
                    self.num = pos // size
                    self._check_done(rx)
            elif rx is not None:
                end = self.num * size + len(payload)
                pos = rx.write(self.num * size, payload)
                self.num = pos // size
                if not more and not rx.done():  # the gateway's last block, short of the manifest's size
                    total = rx.manifest["size"]
                    rx.abort()
                    raise update.UpdateError("size", "the body ended at %d of %d bytes" % (end, total))
                self._check_done(rx)
        except update.UpdateError as e:
            self.refuse(e)
            return
        except OSError as e:  # flash full, say: the slot is emptied and the update refused
            if self.rx is not None:
                self.rx.abort()
            self.refuse(update.UpdateError("storage", str(e)))
            return
        # paced: the next request len(payload) / rate seconds after this one was first asked
        # (not after its answer: the link's round trip is inside the pacing, not added to it)
        self.due = board.ticks_add(self.asked, len(payload) * 1000 // self.rate)

    def _check_done(self, rx):
        if self.state != _BODY or not rx.done():
            return
        rx.finish()  # pending: the boot stage checks the signature and switches
        self.state = _IDLE
        self.rx = None
        import gc
        gc.collect()
        free = gc.mem_free() if hasattr(gc, "mem_free") else -1  # the bench's figure: the heap left
        print('{"ev": "received", "v": "%s", "blocks": %d, "free": %d}' % (self.version, self.blocks, free))
        self.node.trial.reports.append(self.version + ":received")
        self.node.make_frame(self.node.empty)  # reported now, not at the next sample
        self.node.commands.reboot_at = board.ticks_add(board.ticks_ms(), 1000)  # the report first


def _fitting(block):
    """The block size to ask for: the offered one, or less on a tight heap (RFC 7959 lets the
    client ask for smaller blocks; the gateway serves any): each block is copied once or
    twice on its way to flash, and a heap of a few KB free in pieces has no 512-byte hole."""
    import gc
    gc.collect()
    free = gc.mem_free() if hasattr(gc, "mem_free") else 1 << 20
    while block > 64 and block * _HEAP_PER_BLOCK > free:
        block //= 2
    return block


def _szx(block):
    n = 0
    while (16 << n) < block:
        n += 1
    return n
