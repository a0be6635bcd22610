# Serial framing of whole messages at once (docs/protocol.md §4): COBS, the CRC-32 and a frame,
# allocating: for tools and tests, and the same bytes as a node writes as it goes
# (link_serial.SerialLink._frame). framing.X finds these (framing's __getattr__), so a node
# that never calls them keeps none of their functions on its heap.
from framing import MAX_ENCODED, MAX_MESSAGE, crc_into

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

_CRC_LEN = const(4)  # framing's (a constant folded there: no name to import)

try:
    from binascii import crc32 as _native_crc32
except ImportError:  # esp8266 builds
    _native_crc32 = None  # type: ignore[assignment]


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
    return bytes(out[:_cobs_into(out, data, 0, len(data), len(data), 0)])


def _cobs_into(out, msg, start, n, total, tail):
    # COBS of msg[start:start + n] and then out[tail:tail + total - n] (bytes parked at out's
    # end, read before they are overwritten), into out from 0; the length, no delimiter
    code_pos = 0
    code = 1
    o = 1
    for i in range(total):
        b = msg[start + i] if i < n else out[tail + i - n]
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
                    return o  # a full block ends the data: no empty block after it
                code_pos = o
                o += 1
                code = 1
    out[code_pos] = code
    return o


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
    o = _cobs_into(out, msg, start, n, n + _CRC_LEN, MAX_ENCODED - 3)
    out[o] = 0
    return o + 1
