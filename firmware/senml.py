# SenML packs (RFC 8428) in CBOR with integer labels: docs/protocol.md §1.
#
# Written into a caller's buffer at a position, with small integers only: times are
# integer milliseconds (never floats: esp32, rp2 and Cortex-M builds have single-precision
# floats, 128 s off at today's epoch), and the seconds SenML wants are written as the
# double nearest ms / 1000, computed bit by bit, in the shortest CBOR float that holds it.
# On 32-bit ports an int above 2**30 is a heap object: epoch times are (day, ms of day).
#
# Records are grouped by sensor: a sensor read once in the pack is a record {n, v} under
# the base name "node/"; one read several times is a run of records {v, t} after a base
# name "node/sensor" (base fields apply to the records after them). Singles first, then
# text records (command reports, errors), then the runs.
import struct
from array import array

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

_BN = const(-2)
_BT = const(-3)
_N = const(0)
_V = const(2)
_VS = const(3)
_T = const(6)
_DAY_MS = const(86400000)

_K_N = const(0x00)   # map keys as encoded (RFC 8949 §4.2.1 order: 0, 2, 3, 6, -2, -3)
_K_V = const(0x02)
_K_VS = const(0x03)
_K_T = const(0x06)
_K_BN = const(0x21)
_K_BT = const(0x22)
_M24 = const(0xFFFFFF)
_M26 = const(0x3FFFFFF)
OBJ = const(255)  # Pack.shift: the value is an object


def put_head(buf, pos, major, n):
    """A CBOR head (major type, argument 0 <= n < 2**30) at buf[pos]; the next position. Here,
    beside the pack's other writers, so the frame path (senml, cose.seal_into) keeps no CBOR
    codec on the heap: cbor.py is imported where something is decoded (commands, a restored
    frame's check), and cbor.put_head is this one."""
    mt = major << 5
    if n < 24:
        buf[pos] = mt | n
        return pos + 1
    if n < 0x100:
        buf[pos] = mt | 24
        buf[pos + 1] = n
        return pos + 2
    if n < 0x10000:
        buf[pos] = mt | 25
        buf[pos + 1] = n >> 8
        buf[pos + 2] = n & 0xFF
        return pos + 3
    buf[pos] = mt | 26
    buf[pos + 1] = n >> 24
    buf[pos + 2] = (n >> 16) & 0xFF
    buf[pos + 3] = (n >> 8) & 0xFF
    buf[pos + 4] = n & 0xFF
    return pos + 5


def put_bytes(buf, pos, major, b):
    """A text (major 3) or byte string (2) whose bytes are `b`."""
    pos = put_head(buf, pos, major, len(b))
    for x in b:
        buf[pos] = x
        pos += 1
    return pos


def _put_uint(buf, pos, neg, hi, lo):
    """The integer hi * 2**24 + lo, 0 < it < 2**64 (negated if neg: CBOR's -1 - n form)."""
    if neg:
        if lo:
            lo -= 1
        else:
            hi -= 1
            lo = _M24
    mt = 0x20 if neg else 0
    if hi == 0:
        return put_head(buf, pos, 1 if neg else 0, lo)
    if hi < 0x100:  # below 2**32
        buf[pos] = mt | 26
        buf[pos + 1] = hi
        buf[pos + 2] = lo >> 16
        buf[pos + 3] = (lo >> 8) & 0xFF
        buf[pos + 4] = lo & 0xFF
        return pos + 5
    buf[pos] = mt | 27
    buf[pos + 1] = hi >> 32
    buf[pos + 2] = (hi >> 24) & 0xFF
    buf[pos + 3] = (hi >> 16) & 0xFF
    buf[pos + 4] = (hi >> 8) & 0xFF
    buf[pos + 5] = hi & 0xFF
    buf[pos + 6] = lo >> 16
    buf[pos + 7] = (lo >> 8) & 0xFF
    buf[pos + 8] = lo & 0xFF
    return pos + 9


def put_ratio(buf, pos, neg, hi, lo, rem, den):
    """The number (hi * 2**24 + lo + rem / den), negative if neg, as SenML writes numbers: an
    integer when rem is 0, else the double nearest it (round half to even) in the shortest
    CBOR float that holds that double exactly. hi, lo < 2**24; 0 <= rem < den < 2**24."""
    if rem == 0:
        if hi == 0 and lo == 0:
            buf[pos] = 0
            return pos + 1
        return _put_uint(buf, pos, neg, hi, lo)
    # the binary expansion from its leading one: 27 bits into mh, 26 into ml, a round bit
    # and a sticky bit; the exponent e of the leading one
    mh = 0
    ml = 0
    got = 0
    if hi:
        e = 24
        while hi >> (e - 23):
            e += 1
    elif lo:
        e = 23
        while not lo >> e:
            e -= 1
    else:
        e = -1
        while True:
            rem <<= 1
            if rem >= den:
                break
            e -= 1
        rem -= den
        mh = 1
        got = 1
    i = e
    while i >= 0:  # the integer part's bits
        bit = (hi >> (i - 24)) & 1 if i >= 24 else (lo >> i) & 1
        if got < 27:
            mh = mh << 1 | bit
        else:
            ml = ml << 1 | bit
        got += 1
        i -= 1
    while got < 53:  # the fraction's, by long division
        rem <<= 1
        bit = 0
        if rem >= den:
            rem -= den
            bit = 1
        if got < 27:
            mh = mh << 1 | bit
        else:
            ml = ml << 1 | bit
        got += 1
    rem <<= 1
    if rem >= den:  # round bit set: up if anything follows it, or to even
        rem -= den
        if rem or ml & 1:
            ml += 1
            if ml > _M26:
                ml = 0
                mh += 1
                if mh >> 27:
                    mh = 1 << 26
                    e += 1
    s = 0x80 if neg else 0
    if -14 <= e <= 15 and ml == 0 and mh & 0xFFFF == 0:  # half: 11 significant bits
        x = (e + 15) << 2 | (mh >> 24) & 3
        buf[pos] = 0xF9
        buf[pos + 1] = s | x
        buf[pos + 2] = (mh >> 16) & 0xFF
        return pos + 3
    if -126 <= e <= 127 and ml == 0 and mh & 7 == 0:  # single: 24 significant bits
        x = e + 127
        f = (mh >> 3) & 0x7FFFFF
        buf[pos] = 0xFA
        buf[pos + 1] = s | x >> 1
        buf[pos + 2] = (x & 1) << 7 | f >> 16
        buf[pos + 3] = (f >> 8) & 0xFF
        buf[pos + 4] = f & 0xFF
        return pos + 5
    x = e + 1023
    f = mh & _M26  # the leading one is implicit
    buf[pos] = 0xFB
    buf[pos + 1] = s | x >> 4
    buf[pos + 2] = (x & 15) << 4 | f >> 22
    buf[pos + 3] = (f >> 14) & 0xFF
    buf[pos + 4] = (f >> 6) & 0xFF
    buf[pos + 5] = (f & 0x3F) << 2 | ml >> 24
    buf[pos + 6] = (ml >> 16) & 0xFF
    buf[pos + 7] = (ml >> 8) & 0xFF
    buf[pos + 8] = ml & 0xFF
    return pos + 9


def put_ms(buf, pos, ms):
    """A time of `ms` milliseconds (0 <= ms < 2**30) in seconds."""
    s = ms // 1000
    return put_ratio(buf, pos, False, s >> 24, s & _M24, ms - s * 1000, 1000)


def put_epoch(buf, pos, day, msod):
    """The time `msod` ms into day `day` since 1970, in seconds."""
    a = day * 675  # day * 86400 = a * 128, in small ints
    q = msod // 1000
    lo = (a & 0x1FFFF) << 7
    lo += q
    hi = (a >> 17) + (lo >> 24)
    return put_ratio(buf, pos, False, hi, lo & _M24, msod - q * 1000, 1000)


def put_float(buf, pos, x):
    """A float (boxed already) in the shortest exact CBOR form; integral ones below 2**64 as integers."""
    if x != x:
        buf[pos] = 0xF9
        buf[pos + 1] = 0x7E
        buf[pos + 2] = 0
        return pos + 3
    if -1.8446744073709552e19 < x < 1.8446744073709552e19 and x == int(x) and not (x == 0 and str(x)[0] == "-"):
        n = int(x)
        neg = n < 0
        if neg:
            n = -n
        return _put_uint(buf, pos, neg, n >> 24, n & _M24)
    for fmt, first, size in ((">e", 0xF9, 2), (">f", 0xFA, 4), (">d", 0xFB, 8)):
        try:
            struct.pack_into(fmt, buf, pos + 1, x)
        except (OverflowError, ValueError):
            continue
        if size == 8 or struct.unpack_from(fmt, buf, pos + 1)[0] == x:
            buf[pos] = first
            return pos + 1 + size
    raise ValueError("float %r" % x)


def put_value(buf, pos, v):
    """A reading's value: an int, or a float."""
    if isinstance(v, int):
        neg = v < 0
        if neg:
            v = -v
        return _put_uint(buf, pos, neg, v >> 24, v & _M24)
    return put_float(buf, pos, v)


class Pack:
    """The readings of one pack, in preallocated arrays, and its writer: adding a reading
    and writing the pack allocate nothing (a reading given as an object, a float, is the
    caller's allocation). `names`: the sensors' names as bytes, indexed by sensor."""

    def __init__(self, node, names, capacity):
        # twelve attributes, the instance's table made at its full size first (it grows by
        # steps: 12 entries, 192 B on 64-bit ports, where a 13th took a table of 17, 272 B,
        # late in boot, from a heap in pieces): the capacity is len(idx)
        for k in ("node_bn", "names", "idx", "dt", "raw", "shift", "obj", "order", "count", "n", "day", "msod"):
            setattr(self, k, None)
        self.node_bn = (node + "/").encode()
        self.names = names
        self.idx = bytearray(capacity)           # sensor index of each reading
        self.dt = array("i", bytes(4 * capacity))   # ms after the base time
        self.raw = array("i", bytes(4 * capacity))  # value in quanta of 2**-shift
        self.shift = bytearray(capacity)         # OBJ: the value is obj[k]
        self.obj = [None] * capacity
        self.order = bytearray(capacity)         # the readings in the order written
        self.count = bytearray(len(names) + 1)
        self.n = 0
        self.day = 0  # the base time: the first reading's (day, ms of the day)
        self.msod = 0

    def clear(self):
        obj = self.obj
        for k in range(self.n):
            obj[k] = None
        self.n = 0

    def add_raw(self, i, dt, raw, shift):
        """Reading of sensor i, dt ms after the base time, value raw / 2**shift."""
        k = self.n
        self.idx[k] = i
        self.dt[k] = dt
        self.raw[k] = raw
        self.shift[k] = shift
        self.n = k + 1

    def add_obj(self, i, dt, value):
        """Reading of sensor i whose value is an int or a float."""
        k = self.n
        self.idx[k] = i
        self.dt[k] = dt
        self.shift[k] = OBJ
        self.obj[k] = value
        self.n = k + 1

    def plan(self):
        """Fill self.order with the readings in wire order: sensors read once (in time
        order), then a run per sensor read several times. Returns how many are single."""
        n = self.n
        idx = self.idx
        count = self.count
        order = self.order
        for c in range(len(count)):
            count[c] = 0
        for k in range(n):
            count[idx[k]] += 1
        m = 0
        for k in range(n):
            if count[idx[k]] == 1:
                order[m] = k
                m += 1
        singles = m
        for k in range(n):
            c = idx[k]
            if count[c] > 1:
                count[c] = 0  # its run is written now
                for j in range(k, n):
                    if idx[j] == c:
                        order[m] = j
                        m += 1
        return singles

    def value(self, k):
        """Reading k's value as a Python number (events and tools: it may allocate)."""
        s = self.shift[k]
        return self.obj[k] if s == OBJ else self.raw[k] / (1 << s) if s else self.raw[k]

    def bound(self, texts=()):
        """The most bytes write() can take for the readings added and texts (the room a frame
        is given in the outbox before it is written there); allocates nothing."""
        singles = self.plan()
        bn = len(self.node_bn)
        names = self.names
        idx = self.idx
        b = 17 + bn  # the array's head; the first record's base name and time
        run = -1
        for m in range(self.n):
            c = idx[self.order[m]]
            b += 25  # a record's head, keys, value and time, each at its longest
            if m < singles:
                b += len(names[c])
            elif run != c:
                b += 4 + bn + len(names[c])  # a run's base name
                run = c
        for name, text in texts:
            b += 24 + bn + len(name) + len(text)
        return b

    def write(self, buf, pos, texts=(), limit=0):
        """Write the pack at buf[pos]; the position after it. texts: (name bytes, text
        bytes) records at the base time, after the readings. With `limit`, IndexError rather
        than a record that might pass buf[limit] (written where the bytes after are not free)."""
        n = self.n
        singles = self.plan()
        idx = self.idx
        names = self.names
        bn = self.node_bn
        day = self.day
        msod = self.msod
        if limit and pos + 3 > limit:
            raise IndexError
        pos = put_head(buf, pos, 4, n + len(texts))
        first = True
        run = -1  # the sensor whose base name is in force, if not the node's
        for m in range(n):
            k = self.order[m]
            c = idx[k]
            dt = self.dt[k]
            lead = False
            if limit and pos + 40 + len(bn) + 2 * len(names[c]) > limit:  # a record at its longest
                raise IndexError
            if m < singles:  # {n, v, t?} (+ bn, bt in the first record)
                pos = put_head(buf, pos, 5, (3 if dt else 2) + (2 if first else 0))
                buf[pos] = _K_N
                pos = put_bytes(buf, pos + 1, 3, names[c])
            else:  # {v, t?} (+ bn "node/sensor" when a run starts, + bt in the first record)
                lead = run != c
                pos = put_head(buf, pos, 5, (2 if dt else 1) + (1 if lead else 0) + (1 if first else 0))
            buf[pos] = _K_V
            s = self.shift[k]
            if s == OBJ:
                pos = put_value(buf, pos + 1, self.obj[k])
            else:
                r = self.raw[k]
                neg = r < 0
                if neg:
                    r = -r
                q = r >> s
                pos = put_ratio(buf, pos + 1, neg, q >> 24, q & _M24, r - (q << s), 1 << s)
            if dt:
                buf[pos] = _K_T
                pos = put_ms(buf, pos + 1, dt)
            if m < singles:
                if first:
                    pos = _base(buf, pos, bn, None, day, msod, True)
            elif lead:
                pos = _base(buf, pos, bn, names[c], day, msod, first)
                run = c
            first = False
        for name, text in texts:
            if limit and pos + 24 + len(bn) + len(name) + len(text) > limit:
                raise IndexError
            reset = run >= 0
            pos = put_head(buf, pos, 5, 2 + (2 if first else (1 if reset else 0)))
            buf[pos] = _K_N
            pos = put_bytes(buf, pos + 1, 3, name)
            buf[pos] = _K_VS
            pos = put_bytes(buf, pos + 1, 3, text)
            if first or reset:
                pos = _base(buf, pos, bn, None, day, msod, first)
            first = False
            run = -1
        return pos


def _base(buf, pos, bn, sensor, day, msod, with_time):
    # bn: the node's "node/", with a sensor's name after it for a run; bt: the base time
    buf[pos] = _K_BN
    pos = put_head(buf, pos + 1, 3, len(bn) + (len(sensor) if sensor else 0))
    for x in bn:
        buf[pos] = x
        pos += 1
    if sensor:
        for x in sensor:
            buf[pos] = x
            pos += 1
    if with_time:
        buf[pos] = _K_BT
        pos = put_epoch(buf, pos + 1, day, msod)
    return pos


def __getattr__(name):
    # split_ms, encode_pack, wire_order: whole packs at once, allocating (a node's error
    # reports, tools and tests); in senml_whole.py, loaded at their first use: a node's frames
    # are written by Pack, in place
    import senml_whole
    return getattr(senml_whole, name)
