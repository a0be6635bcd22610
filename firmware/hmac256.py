# HMAC-SHA-256 in one preallocated buffer: SHA-256's compression in viper (native code), the
# key's inner and outer states computed once, so a tag allocates nothing (MicroPython's hashlib
# makes two objects and two digests a tag: it has neither copy() nor a digest into a buffer).
#
# Configuration: none; cose.Mac uses it where it imports (a port with a native emitter: unix
# x64/x86, Cortex-M, Xtensa, RV32; frozen images need mpy-cross -march, which
# firmware/build/frozen.py passes), else hashlib. CPython has no viper: ImportError there.
# Usage: ws = new(key) (a bytearray, the key's); tag(ws, buf, start, end) leaves
# HMAC-SHA-256(key, buf[start:end]) at ws[DIGEST:DIGEST + 32]. Functions, no class: a class
# and its instance would keep about 200 more bytes of heap.
# Caveats: viper functions take at most four arguments, so the state, the schedule, the key's
# two states and a block live in one bytearray (`ws`, 416 bytes) at fixed offsets; the round
# constants stay in the module's bytes constant (in flash when frozen), read bytewise as it
# has no alignment. Words are 32-bit, masked after each addition (viper's uint is 64-bit on
# 64-bit ports). Little-endian ports only (every MicroPython port with a native emitter is).
# Time a tag (246 bytes, 4 blocks + 1): 12-30 us on this machine's unix ports, against 2-9 us
# for hashlib's C; bench/firmware.py's frames/s show the node's rate on each target.
import micropython
from micropython import const

_H = const(0)  # the running state, 8 words
_W = const(32)  # the message schedule, 64 words
_IN = const(288)  # the state after the key ^ ipad block
_OUT = const(320)  # the state after the key ^ opad block
_BLK = const(352)  # a block of padding (and the digest, big-endian)
_SIZE = const(416)

# SHA-256's initial state and round constants (FIPS 180-4 §5.3.3, §4.2.2), little-endian words
_IV_K = const(
    b"\x67\xe6\x09\x6a\x85\xae\x67\xbb\x72\xf3\x6e\x3c\x3a\xf5\x4f\xa5\x7f\x52\x0e\x51\x8c\x68\x05\x9b"
    b"\xab\xd9\x83\x1f\x19\xcd\xe0\x5b"
    b"\x98\x2f\x8a\x42\x91\x44\x37\x71\xcf\xfb\xc0\xb5\xa5\xdb\xb5\xe9\x5b\xc2\x56\x39\xf1\x11\xf1\x59"
    b"\xa4\x82\x3f\x92\xd5\x5e\x1c\xab\x98\xaa\x07\xd8\x01\x5b\x83\x12\xbe\x85\x31\x24\xc3\x7d\x0c\x55"
    b"\x74\x5d\xbe\x72\xfe\xb1\xde\x80\xa7\x06\xdc\x9b\x74\xf1\x9b\xc1\xc1\x69\x9b\xe4\x86\x47\xbe\xef"
    b"\xc6\x9d\xc1\x0f\xcc\xa1\x0c\x24\x6f\x2c\xe9\x2d\xaa\x84\x74\x4a\xdc\xa9\xb0\x5c\xda\x88\xf9\x76"
    b"\x52\x51\x3e\x98\x6d\xc6\x31\xa8\xc8\x27\x03\xb0\xc7\x7f\x59\xbf\xf3\x0b\xe0\xc6\x47\x91\xa7\xd5"
    b"\x51\x63\xca\x06\x67\x29\x29\x14\x85\x0a\xb7\x27\x38\x21\x1b\x2e\xfc\x6d\x2c\x4d\x13\x0d\x38\x53"
    b"\x54\x73\x0a\x65\xbb\x0a\x6a\x76\x2e\xc9\xc2\x81\x85\x2c\x72\x92\xa1\xe8\xbf\xa2\x4b\x66\x1a\xa8"
    b"\x70\x8b\x4b\xc2\xa3\x51\x6c\xc7\x19\xe8\x92\xd1\x24\x06\x99\xd6\x85\x35\x0e\xf4\x70\xa0\x6a\x10"
    b"\x16\xc1\xa4\x19\x08\x6c\x37\x1e\x4c\x77\x48\x27\xb5\xbc\xb0\x34\xb3\x0c\x1c\x39\x4a\xaa\xd8\x4e"
    b"\x4f\xca\x9c\x5b\xf3\x6f\x2e\x68\xee\x82\x8f\x74\x6f\x63\xa5\x78\x14\x78\xc8\x84\x08\x02\xc7\x8c"
    b"\xfa\xff\xbe\x90\xeb\x6c\x50\xa4\xf7\xa3\xf9\xbe\xf2\x78\x71\xc6"
)


@micropython.viper
def _compress(ws, src, off: int):
    """One block, src[off:off + 64], into the state ws[_H:]."""
    s = ptr32(ws)
    p = ptr8(src)
    m = uint(0xFFFF) << 16 | uint(0xFFFF)
    kp = ptr8(_IV_K)  # bytes, in flash when frozen: read by bytes (no alignment there)
    w = int(_W) >> 2
    i = 0
    while i < 16:
        j = off + (i << 2)
        s[w + i] = (p[j] << 24) | (p[j + 1] << 16) | (p[j + 2] << 8) | p[j + 3]
        i += 1
    while i < 64:
        x = uint(s[w + i - 15])
        y = uint(s[w + i - 2])
        s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
        s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
        s[w + i] = (uint(s[w + i - 16]) + (s0 & m) + uint(s[w + i - 7]) + (s1 & m)) & m
        i += 1
    a = uint(s[0])
    b = uint(s[1])
    c = uint(s[2])
    d = uint(s[3])
    e = uint(s[4])
    f = uint(s[5])
    g = uint(s[6])
    h = uint(s[7])
    i = 0
    while i < 64:
        j = 32 + (i << 2)
        kw = uint(kp[j]) | (uint(kp[j + 1]) << 8) | (uint(kp[j + 2]) << 16) | (uint(kp[j + 3]) << 24)
        t1 = (h + ((((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7))) & m)
              + ((e & f) ^ ((e ^ m) & g)) + kw + uint(s[w + i])) & m
        t2 = ((((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))) & m) \
            + ((a & b) ^ (a & c) ^ (b & c))
        h = g
        g = f
        f = e
        e = (d + t1) & m
        d = c
        c = b
        b = a
        a = (t1 + t2) & m
        i += 1
    s[0] = (uint(s[0]) + a) & m
    s[1] = (uint(s[1]) + b) & m
    s[2] = (uint(s[2]) + c) & m
    s[3] = (uint(s[3]) + d) & m
    s[4] = (uint(s[4]) + e) & m
    s[5] = (uint(s[5]) + f) & m
    s[6] = (uint(s[6]) + g) & m
    s[7] = (uint(s[7]) + h) & m


@micropython.viper
def _load(ws, at: int):
    """The state ws[_H:] from the 8 words at ws[at:]."""
    s = ptr32(ws)
    j = at >> 2
    i = 0
    while i < 8:
        s[i] = s[j + i]
        i += 1


@micropython.viper
def _store(ws, at: int):
    """The 8 words of the state to ws[at:]."""
    s = ptr32(ws)
    j = at >> 2
    i = 0
    while i < 8:
        s[j + i] = s[i]
        i += 1


@micropython.viper
def _pad(ws, src, off: int, end: int) -> int:
    """The last bytes of a message, src[off:end] (fewer than 64), its 0x80 and zeros into the
    block ws[_BLK:]; 1 when the length still fits this block, else 0 (the block is to be
    compressed and a block of zeros and the length follows)."""
    b = ptr8(ws)
    p = ptr8(src)
    n = end - off
    i = 0
    while i < n:
        b[int(_BLK) + i] = p[off + i]
        i += 1
    b[int(_BLK) + n] = 0x80
    i = n + 1
    while i < 64:
        b[int(_BLK) + i] = 0
        i += 1
    if n < 56:
        return 1
    return 0


@micropython.viper
def _length(ws, nbytes: int):
    """The message's length in bits, big-endian, at the end of the block (under 2**29 bytes)."""
    b = ptr8(ws)
    bits = nbytes << 3
    b[int(_BLK) + 60] = (bits >> 24) & 0xFF
    b[int(_BLK) + 61] = (bits >> 16) & 0xFF
    b[int(_BLK) + 62] = (bits >> 8) & 0xFF
    b[int(_BLK) + 63] = bits & 0xFF


@micropython.viper
def _digest(ws, at: int):
    """The state as 32 big-endian bytes at ws[at:]."""
    s = ptr32(ws)
    b = ptr8(ws)
    i = 0
    while i < 8:
        x = uint(s[i])
        j = at + (i << 2)
        b[j] = (x >> 24) & 0xFF
        b[j + 1] = (x >> 16) & 0xFF
        b[j + 2] = (x >> 8) & 0xFF
        b[j + 3] = x & 0xFF
        i += 1


def _zero(ws, off):
    for i in range(64):
        ws[off + i] = 0


def new(key):
    """The buffer of an HMAC-SHA-256 with `key` (bytes): 416 bytes, all a tag needs."""
    ws = bytearray(_SIZE)
    ws[_OUT:_OUT + 32] = _IV_K[:32]  # the initial state (until the outer one takes its place)
    if len(key) > 64:
        _load(ws, _OUT)
        _hash(ws, key, 0, len(key), 0)
        _digest(ws, _BLK)
        key = bytes(ws[_BLK:_BLK + 32])
    for pad, at in ((0x36, _IN), (0x5C, _OUT)):
        for i in range(64):
            ws[_BLK + i] = (key[i] if i < len(key) else 0) ^ pad
        _load(ws, _OUT)
        _compress(ws, ws, _BLK)
        _store(ws, at)
    return ws


def _hash(ws, src, start, end, before):
    """The state after src[start:end] with its padding, `before` bytes hashed already."""
    off = start
    while end - off >= 64:
        _compress(ws, src, off)
        off += 64
    if not _pad(ws, src, off, end):
        _compress(ws, ws, _BLK)
        _zero(ws, _BLK)
    _length(ws, before + end - start)
    _compress(ws, ws, _BLK)


def tag(ws, src, start, end):
    """HMAC-SHA-256(key, src[start:end]) at ws[DIGEST:DIGEST + 32] (ws from new(key));
    allocates nothing."""
    _load(ws, _IN)
    _hash(ws, src, start, end, 64)
    _digest(ws, _BLK)  # the inner hash: the outer message
    _load(ws, _OUT)
    _hash(ws, ws, _BLK, _BLK + 32, 64)
    _digest(ws, _BLK)


DIGEST = _BLK
