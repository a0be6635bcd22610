# Serial framing: COBS(message ‖ CRC-32 little-endian) ‖ 0x00 (docs/protocol.md §4).
try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

MAX_MESSAGE = const(1024)  # the whole COSE_Mac0 (docs/protocol.md §2)
_CRC_LEN = const(4)
# the longest frame between delimiters: message + CRC, one COBS code byte first and one more
# per 254 bytes, (1024 + 4) + 1028 // 254 + 1 = 1033 (1034 on the wire with the delimiter);
# gateway/protocol/framing.py derives the same figure
MAX_ENCODED = const(1033)

try:
    from binascii import crc32 as _native_crc32
except ImportError:  # esp8266 builds
    _native_crc32 = None  # type: ignore[assignment]

# IEEE CRC-32 by table, each entry 4 bytes little-endian, taken in 16-bit halves: no int passes
# 2**30 (a heap object on 32-bit ports), so frames are checked without allocating; a bytes
# constant, so a frozen image keeps the table in flash (tests/firmware/mp/t_framing.py
# checks it against the polynomial)
_TABLE = (
    b"\x00\x00\x00\x00\x96\x30\x07\x77\x2c\x61\x0e\xee\xba\x51\x09\x99\x19\xc4\x6d\x07\x8f\xf4\x6a\x70\x35\xa5\x63\xe9\xa3\x95\x64\x9e"
    b"\x32\x88\xdb\x0e\xa4\xb8\xdc\x79\x1e\xe9\xd5\xe0\x88\xd9\xd2\x97\x2b\x4c\xb6\x09\xbd\x7c\xb1\x7e\x07\x2d\xb8\xe7\x91\x1d\xbf\x90"
    b"\x64\x10\xb7\x1d\xf2\x20\xb0\x6a\x48\x71\xb9\xf3\xde\x41\xbe\x84\x7d\xd4\xda\x1a\xeb\xe4\xdd\x6d\x51\xb5\xd4\xf4\xc7\x85\xd3\x83"
    b"\x56\x98\x6c\x13\xc0\xa8\x6b\x64\x7a\xf9\x62\xfd\xec\xc9\x65\x8a\x4f\x5c\x01\x14\xd9\x6c\x06\x63\x63\x3d\x0f\xfa\xf5\x0d\x08\x8d"
    b"\xc8\x20\x6e\x3b\x5e\x10\x69\x4c\xe4\x41\x60\xd5\x72\x71\x67\xa2\xd1\xe4\x03\x3c\x47\xd4\x04\x4b\xfd\x85\x0d\xd2\x6b\xb5\x0a\xa5"
    b"\xfa\xa8\xb5\x35\x6c\x98\xb2\x42\xd6\xc9\xbb\xdb\x40\xf9\xbc\xac\xe3\x6c\xd8\x32\x75\x5c\xdf\x45\xcf\x0d\xd6\xdc\x59\x3d\xd1\xab"
    b"\xac\x30\xd9\x26\x3a\x00\xde\x51\x80\x51\xd7\xc8\x16\x61\xd0\xbf\xb5\xf4\xb4\x21\x23\xc4\xb3\x56\x99\x95\xba\xcf\x0f\xa5\xbd\xb8"
    b"\x9e\xb8\x02\x28\x08\x88\x05\x5f\xb2\xd9\x0c\xc6\x24\xe9\x0b\xb1\x87\x7c\x6f\x2f\x11\x4c\x68\x58\xab\x1d\x61\xc1\x3d\x2d\x66\xb6"
    b"\x90\x41\xdc\x76\x06\x71\xdb\x01\xbc\x20\xd2\x98\x2a\x10\xd5\xef\x89\x85\xb1\x71\x1f\xb5\xb6\x06\xa5\xe4\xbf\x9f\x33\xd4\xb8\xe8"
    b"\xa2\xc9\x07\x78\x34\xf9\x00\x0f\x8e\xa8\x09\x96\x18\x98\x0e\xe1\xbb\x0d\x6a\x7f\x2d\x3d\x6d\x08\x97\x6c\x64\x91\x01\x5c\x63\xe6"
    b"\xf4\x51\x6b\x6b\x62\x61\x6c\x1c\xd8\x30\x65\x85\x4e\x00\x62\xf2\xed\x95\x06\x6c\x7b\xa5\x01\x1b\xc1\xf4\x08\x82\x57\xc4\x0f\xf5"
    b"\xc6\xd9\xb0\x65\x50\xe9\xb7\x12\xea\xb8\xbe\x8b\x7c\x88\xb9\xfc\xdf\x1d\xdd\x62\x49\x2d\xda\x15\xf3\x7c\xd3\x8c\x65\x4c\xd4\xfb"
    b"\x58\x61\xb2\x4d\xce\x51\xb5\x3a\x74\x00\xbc\xa3\xe2\x30\xbb\xd4\x41\xa5\xdf\x4a\xd7\x95\xd8\x3d\x6d\xc4\xd1\xa4\xfb\xf4\xd6\xd3"
    b"\x6a\xe9\x69\x43\xfc\xd9\x6e\x34\x46\x88\x67\xad\xd0\xb8\x60\xda\x73\x2d\x04\x44\xe5\x1d\x03\x33\x5f\x4c\x0a\xaa\xc9\x7c\x0d\xdd"
    b"\x3c\x71\x05\x50\xaa\x41\x02\x27\x10\x10\x0b\xbe\x86\x20\x0c\xc9\x25\xb5\x68\x57\xb3\x85\x6f\x20\x09\xd4\x66\xb9\x9f\xe4\x61\xce"
    b"\x0e\xf9\xde\x5e\x98\xc9\xd9\x29\x22\x98\xd0\xb0\xb4\xa8\xd7\xc7\x17\x3d\xb3\x59\x81\x0d\xb4\x2e\x3b\x5c\xbd\xb7\xad\x6c\xba\xc0"
    b"\x20\x83\xb8\xed\xb6\xb3\xbf\x9a\x0c\xe2\xb6\x03\x9a\xd2\xb1\x74\x39\x47\xd5\xea\xaf\x77\xd2\x9d\x15\x26\xdb\x04\x83\x16\xdc\x73"
    b"\x12\x0b\x63\xe3\x84\x3b\x64\x94\x3e\x6a\x6d\x0d\xa8\x5a\x6a\x7a\x0b\xcf\x0e\xe4\x9d\xff\x09\x93\x27\xae\x00\x0a\xb1\x9e\x07\x7d"
    b"\x44\x93\x0f\xf0\xd2\xa3\x08\x87\x68\xf2\x01\x1e\xfe\xc2\x06\x69\x5d\x57\x62\xf7\xcb\x67\x65\x80\x71\x36\x6c\x19\xe7\x06\x6b\x6e"
    b"\x76\x1b\xd4\xfe\xe0\x2b\xd3\x89\x5a\x7a\xda\x10\xcc\x4a\xdd\x67\x6f\xdf\xb9\xf9\xf9\xef\xbe\x8e\x43\xbe\xb7\x17\xd5\x8e\xb0\x60"
    b"\xe8\xa3\xd6\xd6\x7e\x93\xd1\xa1\xc4\xc2\xd8\x38\x52\xf2\xdf\x4f\xf1\x67\xbb\xd1\x67\x57\xbc\xa6\xdd\x06\xb5\x3f\x4b\x36\xb2\x48"
    b"\xda\x2b\x0d\xd8\x4c\x1b\x0a\xaf\xf6\x4a\x03\x36\x60\x7a\x04\x41\xc3\xef\x60\xdf\x55\xdf\x67\xa8\xef\x8e\x6e\x31\x79\xbe\x69\x46"
    b"\x8c\xb3\x61\xcb\x1a\x83\x66\xbc\xa0\xd2\x6f\x25\x36\xe2\x68\x52\x95\x77\x0c\xcc\x03\x47\x0b\xbb\xb9\x16\x02\x22\x2f\x26\x05\x55"
    b"\xbe\x3b\xba\xc5\x28\x0b\xbd\xb2\x92\x5a\xb4\x2b\x04\x6a\xb3\x5c\xa7\xff\xd7\xc2\x31\xcf\xd0\xb5\x8b\x9e\xd9\x2c\x1d\xae\xde\x5b"
    b"\xb0\xc2\x64\x9b\x26\xf2\x63\xec\x9c\xa3\x6a\x75\x0a\x93\x6d\x02\xa9\x06\x09\x9c\x3f\x36\x0e\xeb\x85\x67\x07\x72\x13\x57\x00\x05"
    b"\x82\x4a\xbf\x95\x14\x7a\xb8\xe2\xae\x2b\xb1\x7b\x38\x1b\xb6\x0c\x9b\x8e\xd2\x92\x0d\xbe\xd5\xe5\xb7\xef\xdc\x7c\x21\xdf\xdb\x0b"
    b"\xd4\xd2\xd3\x86\x42\xe2\xd4\xf1\xf8\xb3\xdd\x68\x6e\x83\xda\x1f\xcd\x16\xbe\x81\x5b\x26\xb9\xf6\xe1\x77\xb0\x6f\x77\x47\xb7\x18"
    b"\xe6\x5a\x08\x88\x70\x6a\x0f\xff\xca\x3b\x06\x66\x5c\x0b\x01\x11\xff\x9e\x65\x8f\x69\xae\x62\xf8\xd3\xff\x6b\x61\x45\xcf\x6c\x16"
    b"\x78\xe2\x0a\xa0\xee\xd2\x0d\xd7\x54\x83\x04\x4e\xc2\xb3\x03\x39\x61\x26\x67\xa7\xf7\x16\x60\xd0\x4d\x47\x69\x49\xdb\x77\x6e\x3e"
    b"\x4a\x6a\xd1\xae\xdc\x5a\xd6\xd9\x66\x0b\xdf\x40\xf0\x3b\xd8\x37\x53\xae\xbc\xa9\xc5\x9e\xbb\xde\x7f\xcf\xb2\x47\xe9\xff\xb5\x30"
    b"\x1c\xf2\xbd\xbd\x8a\xc2\xba\xca\x30\x93\xb3\x53\xa6\xa3\xb4\x24\x05\x36\xd0\xba\x93\x06\xd7\xcd\x29\x57\xde\x54\xbf\x67\xd9\x23"
    b"\x2e\x7a\x66\xb3\xb8\x4a\x61\xc4\x02\x1b\x68\x5d\x94\x2b\x6f\x2a\x37\xbe\x0b\xb4\xa1\x8e\x0c\xc3\x1b\xdf\x05\x5a\x8d\xef\x02\x2d"
)


def crc_into(data, start, end, out, at):
    """Write the CRC-32 of data[start:end] at out[at:at + 4], little-endian; allocates nothing."""
    lo = 0xFFFF
    hi = 0xFFFF
    t = _TABLE
    for k in range(start, end):
        i = ((lo ^ data[k]) & 0xFF) << 2
        lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ (t[i] | t[i + 1] << 8)
        hi = (hi >> 8) ^ (t[i + 2] | t[i + 3] << 8)
    lo ^= 0xFFFF
    hi ^= 0xFFFF
    out[at] = lo & 0xFF
    out[at + 1] = lo >> 8
    out[at + 2] = hi & 0xFF
    out[at + 3] = hi >> 8


def crc32_table(data, crc=0):
    """IEEE CRC-32 by the firmware's table (crc: 0; for builds whose binascii lacks crc32)."""
    out = bytearray(4)
    crc_into(data, 0, len(data), out, 0)
    return out[0] | out[1] << 8 | out[2] << 16 | out[3] << 24


def crc32(data):
    if _native_crc32 is not None:
        return _native_crc32(data) & 0xFFFFFFFF
    return crc32_table(data)


def cobs_encode(data):
    out = bytearray(len(data) + len(data) // 254 + 2)
    code_pos = 0
    code = 1
    o = 1
    last = len(data) - 1
    for i, b in enumerate(data):
        if b == 0:
            out[code_pos] = code
            code_pos = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                if i == last:
                    return bytes(out[:o])  # a full block ends the data: no empty block after it
                code_pos = o
                o += 1
                code = 1
    out[code_pos] = code
    return bytes(out[:o])


def cobs_decode(data):
    """Decode one COBS block (no delimiter); ValueError if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise ValueError("COBS block runs past the frame")
        out.extend(data[i:end])
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def frame(msg):
    """One frame on the wire, delimiter included (allocates: tools and tests)."""
    if len(msg) > MAX_MESSAGE:
        raise ValueError("message too long")
    out = bytearray(MAX_ENCODED + 1)
    return bytes(out[:frame_into(out, msg, len(msg))])


def frame_into(out, msg, n, start=0):
    """COBS(msg[start:start + n] ‖ CRC-32 LE) ‖ 0x00 into bytearray out (MAX_ENCODED + 1
    bytes); the length. Allocates nothing."""
    if n > MAX_MESSAGE:
        raise ValueError("message too long")
    crc_into(msg, start, start + n, out, MAX_ENCODED - 3)  # the CRC parked at the end, read before overwritten
    code_pos = 0
    code = 1
    o = 1
    total = n + _CRC_LEN
    for i in range(total):
        b = msg[start + i] if i < n else out[MAX_ENCODED - 3 + i - n]
        if b == 0:
            out[code_pos] = code
            code_pos = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_pos] = code
                if i == total - 1:
                    out[o] = 0
                    return o + 1  # a full block ends the data: no empty block after it
                code_pos = o
                o += 1
                code = 1
    out[code_pos] = code
    out[o] = 0
    return o + 1


class Deframer:
    """Split a byte stream into messages; counts and drops bad frames. `size`: the longest
    frame it takes (a node takes less than the longest a gateway sends: see link_serial).

    scan() decodes into the deframer's own buffer (COBS in place, the CRC by table), so a
    node reads its acks without allocating; feed() is the same for tools and tests."""

    HEAD = 4  # bytes kept free before a message in buf (cose.open_ack writes its prefix there)

    def __init__(self, size=MAX_ENCODED):
        self.size = size  # the longest frame taken (encoded bytes); longer ones are counted oversize
        self.buf = bytearray(self.HEAD + size)
        self._n = 0  # encoded bytes gathered, at buf[HEAD:]
        self._skip = False
        self._crc = bytearray(4)
        self.ready = 0  # after scan(): the length of a message at buf[HEAD:], 0 if none
        self.crc_errors = 0
        self.cobs_errors = 0
        self.oversize = 0

    def scan(self, data, i, end):
        """Take data[i:end] up to the end of the first complete frame; the index after what
        was taken. self.ready is the length of the message then at buf[HEAD:] (0: none)."""
        self.ready = 0
        buf = self.buf
        h = self.HEAD
        while i < end:
            b = data[i]
            i += 1
            if b != 0:
                if self._skip:
                    continue
                if self._n >= self.size:
                    self.oversize += 1
                    self._skip = True
                    self._n = 0
                    continue
                buf[h + self._n] = b
                self._n += 1
                continue
            if self._skip:
                self._skip = False
                continue
            n = self._n
            self._n = 0
            if not n:
                continue
            m = self._decode(n)
            if m > 0:
                self.ready = m
                return i
        return i

    def _decode(self, n):
        # COBS in place (the output never passes the input), then the CRC; the message length
        buf = self.buf
        h = self.HEAD
        r = 0
        w = 0
        while r < n:
            code = buf[h + r]
            r += 1
            stop = r + code - 1
            if stop > n:
                self.cobs_errors += 1
                return 0
            while r < stop:
                buf[h + w] = buf[h + r]
                w += 1
                r += 1
            if code < 0xFF and r < n:
                buf[h + w] = 0
                w += 1
        if w <= _CRC_LEN:
            self.cobs_errors += 1
            return 0
        m = w - _CRC_LEN
        crc = self._crc
        crc_into(buf, h, h + m, crc, 0)
        for k in range(4):
            if crc[k] != buf[h + m + k]:
                self.crc_errors += 1
                return 0
        return m

    def feed(self, data):
        """The messages complete in data, as bytes (allocates)."""
        out = []
        i = 0
        while i < len(data):
            i = self.scan(data, i, len(data))
            if self.ready:
                out.append(bytes(self.buf[self.HEAD:self.HEAD + self.ready]))
        return out
