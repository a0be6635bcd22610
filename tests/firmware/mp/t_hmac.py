# HMAC-SHA-256 (cose.Mac: hmac256.py's viper code on MicroPython, hashlib on CPython) against
# HMAC built from hashlib.sha256 by RFC 2104, for keys and messages around the block sizes
# (padding in one block or two, keys hashed first), and at offsets in a buffer; on MicroPython
# a tag allocates nothing. MicroPython and CPython.
import gc
import hashlib
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
import cose  # noqa: E402

MICRO = sys.implementation.name == "micropython"
assert (cose.hmac256 is not None) == MICRO  # every MicroPython here has a native emitter


def hmac_ref(key, data):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(data)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


# RFC 4231 test case 2
assert cose.Mac(b"Jefe").digest(b"what do ya want for nothing?") == bytes.fromhex(
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
buf = bytearray(1200)
for i in range(len(buf)):
    buf[i] = (i * 131 + 7) & 0xFF
out = bytearray(16)
for kn in (0, 1, 32, 63, 64, 65, 131):
    key = bytes((i * 7 + kn) & 0xFF for i in range(kn))
    mac = cose.Mac(key)
    for n in (0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000):
        for start in (0, 3):
            want = hmac_ref(key, bytes(buf[start:start + n]))
            mac.tag_into(buf, start, start + n, out, 5)
            assert bytes(out[5:13]) == want[:8], (kn, n, start)
            assert mac.digest(bytes(buf[start:start + n])) == want, (kn, n)
if MICRO:
    mac = cose.Mac(bytes(32))
    mac.tag_into(buf, 4, 300, out, 0)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(20):
        mac.tag_into(buf, 4, 300, out, 0)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
print("OK t_hmac")
