# Ed25519 signature verification (RFC 8032 §5.1.7) in plain Python, for release
# manifests (firmware/update.py). Verification only: a node never signs, and every
# value it handles is public, so constant time does not matter here.
#
# Field elements are Python ints modulo p = 2^255 - 19 (bigints on MicroPython, which
# every port with MICROPY_LONGINT_IMPL_MPZ has: unix, esp32, rp2, qemu); points are in
# extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z (Hisil et al. 2008),
# and [S]B - [h]A is one pass over the bits of both scalars (Straus/Shamir), then
# compared with R by its encoding, so R is never decompressed.
# Runs on MicroPython and CPython; checked against the `cryptography` package and the
# RFC 8032 vectors in tests/firmware/mp/t_ed25519.py.
import sha512

_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493  # the group order
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555  # -121665/121666
_D2 = 2 * _D % _P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # 2^((p-1)/4)
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p1):
    x1, y1, z1, _ = p1
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decompress(s):
    """The point encoded by 32 bytes, or None if they encode none (RFC 8032 §5.1.3)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    # x = u/v ^ ((p+3)/8) by one exponentiation: x = u v^3 (u v^7)^((p-5)/8)
    v3 = v * v * v % _P
    x = u * v3 * pow(u * v3 * v3 * v % _P, (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 != u:
        if vx2 != _P - u:
            return None
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode(pt):
    x, y, z, _ = pt
    zi = pow(z, _P - 2, _P)
    x = x * zi % _P
    y = y * zi % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def verify(public, message, signature):
    """True if `signature` (64 bytes) is public key `public`'s (32 bytes) Ed25519
    signature of `message` (bytes); False otherwise, never an exception for bad input."""
    if len(signature) != 64 or len(public) != 32:
        return False
    a = _decompress(public)
    if a is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False  # RFC 8032 §5.1.7: reject, or signatures are malleable
    hasher = sha512.SHA512(signature[:32])
    hasher.update(public)
    hasher.update(message)
    h = int.from_bytes(hasher.digest(), "little") % _L
    b = (_BX, _BY, 1, _BX * _BY % _P)
    neg_a = ((_P - a[0]) % _P, a[1], 1, (_P - a[3]) % _P)
    both = _add(b, neg_a)
    q = (0, 1, 1, 0)
    for i in range(255, -1, -1):
        q = _double(q)
        bit = (s >> i & 1) | (h >> i & 1) << 1
        if bit == 1:
            q = _add(q, b)
        elif bit == 2:
            q = _add(q, neg_a)
        elif bit == 3:
            q = _add(q, both)
    return _encode(q) == bytes(signature[:32])
