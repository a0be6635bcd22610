# COBS and CRC-32 round trips and edge cases; the Deframer on noise. MicroPython and CPython.
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
import framing  # noqa: E402

assert framing.crc32(b"123456789") == 0xCBF43926
for i in range(256):  # the table is the IEEE polynomial's
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
    assert framing._TABLE[4 * i:4 * i + 4] == bytes([c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, c >> 24]), i
assert framing.crc32_table(b"123456789") == 0xCBF43926
for n in (0, 1, 100, 1000):
    data = bytes([(i * 37 + 11) & 0xFF for i in range(n)])
    assert framing.crc32_table(data) == framing.crc32(data)

cases = [b"", b"\x00", b"\x00\x00", b"\x01", b"\x11\x22\x00\x33", bytes(range(1, 255)), bytes(range(1, 256)),
         bytes([1] * 254), bytes([1] * 255), bytes([1] * 253) + b"\x00", bytes(600), bytes([7] * 1000)]
for c in cases:
    enc = framing.cobs_encode(c)
    assert b"\x00" not in enc, c
    assert framing.cobs_decode(enc) == c, c
# the classic examples (Wikipedia, Cheshire & Baker)
assert framing.cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
assert framing.cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255))
assert framing.cobs_encode(bytes(range(1, 256))) == b"\xff" + bytes(range(1, 255)) + b"\x02\xff"

# the serial link's frames, encoded as they are written through its 64-byte buffer: the same
# bytes as framing.frame, at every length around COBS's 254-byte blocks and the buffer's size
import link_serial  # noqa: E402


class Port:
    def __init__(self):
        self.got = b""

    def write(self, data, n=None):
        self.got += bytes(data[:len(data) if n is None else n])


port = Port()
link = link_serial.SerialLink(None, None, port)
more = [bytes([(i * 7 + 3) & 0xFF for i in range(n)]) for n in (1, 2, 60, 63, 64, 65, 200, 1024)]
more += [bytes([5] * n) + tail for n in (250, 251, 252, 253, 254, 255, 508, 509) for tail in (b"", b"\0", b"\0\0")]
for c in cases[1:] + more:
    c = c[:framing.MAX_MESSAGE]
    port.got = b""
    link.send(0, b"xx" + c + b"yy", 2, len(c))
    assert port.got == framing.frame(c), c
d = framing.Deframer()
msgs = [b"hello", bytes(200), b"\x00abc\x00", bytes(range(256)) * 3]
stream = b"".join(framing.frame(m) for m in msgs)
got = []
for i in range(0, len(stream), 7):
    got += d.feed(stream[i:i + 7])
assert got == msgs

# a flipped bit is a CRC (or COBS) error, never a wrong message; the next frame still comes through
bad = bytearray(framing.frame(b"payload-1"))
bad[3] ^= 0x04
got = d.feed(bytes(bad) + framing.frame(b"payload-2"))
assert got == [b"payload-2"], got
assert d.crc_errors + d.cobs_errors == 1
# oversize: dropped without buffering, then resync
got = d.feed(b"\x01" * 5000 + b"\x00" + framing.frame(b"ok"))
assert got == [b"ok"] and d.oversize == 1
# the longest message with a CRC free of zeros: the longest frame, MAX_ENCODED bytes and the delimiter
assert framing.MAX_ENCODED == 1024 + 4 + (1024 + 4) // 254 + 1 == 1033
for k in range(256):
    longest = bytes([1 + (i + k) % 255 for i in range(framing.MAX_MESSAGE)])
    crc = framing.crc32(longest)
    if all((crc >> (8 * j)) & 0xFF for j in range(4)):
        break
wire = framing.frame(longest)
assert len(wire) == framing.MAX_ENCODED + 1, len(wire)
assert d.feed(wire) == [longest] and d.oversize == 1
assert d.feed(b"\x01" * (framing.MAX_ENCODED + 1) + b"\x00") == [] and d.oversize == 2
try:
    framing.frame(bytes(1025))
except ValueError:
    pass
else:
    raise AssertionError("oversize message framed")
print("OK t_framing")
