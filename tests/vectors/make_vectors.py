"""Make the golden frames (frames.json) with an implementation independent of the
firmware and the gateway: cbor2, Python's hmac and zlib, and the cobs package.

    python tests/vectors/make_vectors.py > tests/vectors/frames.json
"""
import hashlib
import hmac
import json
import math
import struct
import zlib

import cbor2
from cobs import cobs

KEY = bytes(range(32))


def num(x):
    """protocol.md §1: integral values in integer form (but -0.0 stays a float)."""
    if isinstance(x, float) and x.is_integer() and (x != 0 or math.copysign(1.0, x) > 0):
        return int(x)
    return x


def senml(node, bt, readings):
    recs = []
    for i, (name, dt, v) in enumerate(readings):
        r = {0: name, 2: num(v)}
        if i == 0:
            r[-2] = node + "/"
            r[-3] = num(bt)
        if dt:
            r[6] = num(dt)
        recs.append(r)
    return cbor2.dumps(recs, canonical=True)


def mac0(key, kid, payload, seq=None):
    hdr = {1: 4, 4: kid}
    if seq is not None:
        hdr[6] = seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")
    prot = cbor2.dumps(hdr, canonical=True)
    tag = hmac.new(key, cbor2.dumps(["MAC0", prot, b"", payload]), hashlib.sha256).digest()[:8]
    return cbor2.dumps(cbor2.CBORTag(17, [prot, {}, payload, tag]))


def frame(msg):
    return cobs.encode(msg + struct.pack("<I", zlib.crc32(msg))) + b"\x00"


CASES = [
    ("pump3", 0, 1700000000, [("temp", 0, 21.5)]),
    ("pump3", 300, 1700000000.25, [("temp", 0, 21.0625), ("vib", 0, 2.015625), ("temp", 0.5, 21.125),
                                   ("vib", 0.5, 1.5), ("temp", 1, -3.0), ("vib", 1, 0.1),
                                   ("temp", 1.5, 1e6), ("vib", 1.5, 65504.0)]),
    ("n-7_x", 70000, 1700000123.5, [("p", 0, 4.0078125), ("p", 0.25, -0.0), ("p", 0.75, 100000.5)]),
    ("press1", 2**32 + 5, 1800000000, [("pressure", 0, 3.99)]),
]


def annotate(v):
    """A byte-by-byte reading of the first vector (1 reading, seq 0)."""
    f = bytes.fromhex(v["frame_hex"])
    c = bytes.fromhex(v["cose_hex"])
    p = bytes.fromhex(v["senml_hex"])
    plen = c[2] & 31
    prot = c[3:3 + plen]
    i = 3 + plen
    return [
        "frame = COBS(message || CRC-32 LE) || 00; the message is the COSE_Mac0 below",
        f"{f[:1].hex()}  COBS: {f[0] - 1} non-zero bytes follow before the first zero of message||CRC",
        f"{c[:2].hex()}  d1 = tag 17 (COSE_Mac0); 84 = array of 4 items",
        f"{c[2:3].hex()}  byte string of {plen} bytes: the protected header",
        f"{prot.hex()}  a3 = map of 3: 01 04 (alg: HMAC 256/64), 04 45 70756d7033 (kid: 'pump3'), 06 41 00 (partial IV: seq 0)",
        f"{c[i:i + 1].hex()}  a0 = unprotected header: empty map",
        f"{c[i + 1:i + 3].hex()}  58 1a = byte string of {len(p)} bytes: the SenML payload",
        f"{p[:2].hex()}  81 = array of 1 record; a4 = map of 4",
        f"{p[2:8].hex()}  00 64 74656d70 = n: 'temp'",
        f"{p[8:12].hex()}  02 f9 4d60 = v: 21.5 (half float)",
        f"{p[12:20].hex()}  21 66 70756d70332f = bn: 'pump3/'",
        f"{p[20:].hex()}  22 1a 6553f100 = bt: 1700000000",
        f"{c[-9:].hex()}  48 = byte string of 8: HMAC-SHA-256 truncated to 64 bits",
        f"{f[-5:-1].hex()}  the CRC-32 of the message (after COBS, as on the wire)",
        "00  frame delimiter",
    ]


def main():
    out = {"key": KEY.hex(), "frames": [], "acks": []}
    for node, seq, bt, readings in CASES:
        payload = senml(node, bt, readings)
        msg = mac0(KEY, node.encode(), payload, seq)
        out["frames"].append({"node": node, "seq": seq, "base_time": bt, "readings": readings,
                              "senml_hex": payload.hex(), "cose_hex": msg.hex(), "frame_hex": frame(msg).hex()})
    for seq, status in ((5, 0), (300, 1), (7, 2)):
        msg = mac0(KEY, b"gw", cbor2.dumps([1, seq, status]))
        out["acks"].append({"seq": seq, "status": status, "cose_hex": msg.hex(), "frame_hex": frame(msg).hex()})
    # an ack carrying commands for the node (docs/protocol.md §3)
    cmds = [["c-17", "set_period", {"period_ms": 5000}], ["c-18", "identify", {}]]
    msg = mac0(KEY, b"gw", cbor2.dumps([1, 42, 0, cmds]))
    out["command_acks"] = [{"seq": 42, "status": 0, "commands": cmds, "cose_hex": msg.hex(),
                            "frame_hex": frame(msg).hex()}]
    out["annotated"] = annotate(out["frames"][0])
    print(json.dumps(out, indent=1, ensure_ascii=True))


if __name__ == "__main__":
    main()
