# Serial framing: COBS(message ‖ CRC-32 little-endian) ‖ 0x00 (docs/protocol.md §4).
import struct

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

_TABLE: list | None = None


def crc32_table(data, crc=0):
    """IEEE CRC-32, table-driven: for builds whose binascii lacks crc32."""
    global _TABLE
    if _TABLE is None:
        _TABLE = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            _TABLE.append(c)
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


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
    """One frame on the wire, delimiter included."""
    if len(msg) > MAX_MESSAGE:
        raise ValueError("message too long")
    return cobs_encode(msg + struct.pack("<I", crc32(msg))) + b"\x00"


class Deframer:
    """Split a byte stream into messages; counts and drops bad frames."""

    def __init__(self):
        self._buf = bytearray()
        self._skip = False
        self.crc_errors = 0
        self.cobs_errors = 0
        self.oversize = 0

    def feed(self, data):
        out = []
        buf = self._buf
        for b in data:
            if b != 0:
                if self._skip:
                    continue
                if len(buf) >= MAX_ENCODED:
                    self.oversize += 1
                    self._skip = True
                    buf[:] = b""
                    continue
                buf.append(b)
                continue
            if self._skip:
                self._skip = False
                continue
            if not buf:
                continue
            raw = bytes(buf)
            buf[:] = b""
            try:
                dec = cobs_decode(raw)
            except ValueError:
                self.cobs_errors += 1
                continue
            if len(dec) <= _CRC_LEN:
                self.cobs_errors += 1
                continue
            msg = dec[:-_CRC_LEN]
            if struct.unpack("<I", dec[-_CRC_LEN:])[0] != crc32(msg):
                self.crc_errors += 1
                continue
            out.append(msg)
        return out
