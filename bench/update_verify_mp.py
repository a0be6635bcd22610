# The MicroPython side of bench/update_verify.py: time and heap of a release signature check.
#   micropython update_verify_mp.py FOLDER RUNS   (FOLDER: case.json, ed25519.mpy, sha512.mpy)
# On the QEMU board (frozen with ed25519 and sha512): import update_verify_mp; update_verify_mp.qemu()
import gc
import sys
import time

# RFC 8032 §7.1 test 2: for the board, which has no files
PUB = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
SIG = ("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
       "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def need(verify):
    """The least free heap (bytes) verify() runs in: ballast in 16-byte blocks, halving the gap."""
    lo, hi = 0, 16384
    while hi - lo > 64:
        mid = (lo + hi) // 2
        gc.collect()
        ballast = []
        while gc.mem_free() > mid + 600:
            ballast.append(bytearray(512))
        while gc.mem_free() > mid + 40:
            ballast.append(bytearray(16))
        gc.collect()
        free = gc.mem_free()
        try:
            ok = verify()
        except MemoryError:
            ok = False
        ballast = None
        if ok:
            hi = free
        else:
            lo = free
    return hi, lo


def qemu():
    import ed25519
    pub, sig, msg = bytes.fromhex(PUB), bytes.fromhex(SIG), b"\x72"
    gc.collect()
    t = time.ticks_ms()
    ok = ed25519.verify(pub, msg, sig)
    ms = time.ticks_diff(time.ticks_ms(), t)
    hi, lo = need(lambda: ed25519.verify(pub, msg, sig))
    print("QEMU verify ok=%s %d ms; heap %d B total, needs %d B free (%d fails)" %
          (ok, ms, gc.mem_alloc() + gc.mem_free(), hi, lo))
    import sha512
    data = bytes(1543)  # the Sig_structure of the firmware's own release: its SHA-512 comes on top
    gc.collect()
    t = time.ticks_ms()
    sha512.sha512(data).digest()
    print("QEMU sha512 of %d bytes: %d ms" % (len(data), time.ticks_diff(time.ticks_ms(), t)))
    print("QEMU-DONE")


def main():
    import hashlib
    import json
    folder, runs = sys.argv[1], int(sys.argv[2])
    with open(folder + "/case.json") as f:
        case = json.load(f)
    pub, msg, sig = bytes.fromhex(case["pub"]), bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
    parts = [bytes.fromhex(p) for p in case["parts"]]
    case = None
    sys.path.insert(0, folder)
    gc.collect()
    before = gc.mem_alloc()
    import ed25519
    gc.collect()
    modules = gc.mem_alloc() - before
    verify_ms, hash_ms = [], []
    for _ in range(runs):
        t = time.ticks_us()
        assert ed25519.verify(pub, msg, sig)
        verify_ms.append(time.ticks_diff(time.ticks_us(), t) / 1000)
        t = time.ticks_us()
        for p in parts:
            hashlib.sha256(p).digest()
        hash_ms.append(time.ticks_diff(time.ticks_us(), t) / 1000)
    hi, lo = need(lambda: ed25519.verify(pub, msg, sig))
    print(json.dumps({"verify_ms": median(verify_ms), "hash_ms": median(hash_ms), "modules": modules,
                      "need": hi, "need_fail": lo, "msg_len": len(msg)}))


if __name__ == "__main__" and len(sys.argv) > 2:
    main()
