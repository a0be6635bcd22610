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
    """protocol.md §1: integral values below 2**64 in integer form (but -0.0 stays a float)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**64 and (x != 0 or math.copysign(1.0, x) > 0):
        return int(x)
    return x


def senml(node, base_ms, readings, texts=()):
    """protocol.md §1: times are integer ms, sent in seconds (the double nearest ms / 1000);
    sensors read once in the pack first, as {n, v} under bn "node/"; then each sensor read
    several times as a run of {v, t} after bn "node/sensor"; text records last."""
    count = {}
    for name, _dt, _v in readings:
        count[name] = count.get(name, 0) + 1
    singles = [r for r in readings if count[r[0]] == 1]
    runs = []
    for name in dict.fromkeys(r[0] for r in readings):
        if count[name] > 1:
            runs.append([r for r in readings if r[0] == name])
    recs = []
    for name, dt, v in singles:
        recs.append({0: name, 2: num(v)})
        if dt:
            recs[-1][6] = num(dt / 1000)
    for run in runs:
        for i, (name, dt, v) in enumerate(run):
            recs.append({2: num(v)})
            if i == 0:
                recs[-1][-2] = f"{node}/{name}"
            if dt:
                recs[-1][6] = num(dt / 1000)
    for name, text in texts:
        recs.append({0: name, 3: text})
        if runs and len(recs) > 1 and -2 not in recs[-1]:
            recs[-1][-2] = node + "/"
            runs = []
    if -2 not in recs[0]:
        recs[0][-2] = node + "/"
    recs[0][-3] = num(base_ms / 1000)
    return cbor2.dumps(recs, canonical=True)


def mac0(key, kid, payload, seq=None):
    hdr = {1: 4, 4: kid}
    if seq is not None:
        hdr[6] = seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")
    prot = cbor2.dumps(hdr, canonical=True)
    tag = hmac.new(key, cbor2.dumps(["MAC0", prot, b"", payload]), hashlib.sha256).digest()[:8]
    return cbor2.dumps(cbor2.CBORTag(17, [prot, {}, payload, tag]))


def coap(mtype, code, mid, token, cf, payload, path=None):
    """RFC 7252 §3 by hand: header, token, options (Uri-Path 11, Content-Format 12, deltas < 13), payload."""
    out = bytes([0x40 | mtype << 4 | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    if path is not None:
        out += bytes([(11 - last) << 4 | len(path)]) + path
        last = 11
    out += bytes([(12 - last) << 4 | 1, cf])
    return out + b"\xff" + payload


def frame(msg):
    return cobs.encode(msg + struct.pack("<I", zlib.crc32(msg))) + b"\x00"


# (node, seq, base time in ms since 1970, readings (sensor, ms after the base time, value), texts)
CASES = [
    ("pump3", 0, 1700000000000, [("temp", 0, 21.5)], []),
    ("pump3", 300, 1700000000250, [("temp", 0, 21.0625), ("vib", 0, 2.015625), ("temp", 500, 21.125),
                                   ("vib", 500, 1.5), ("temp", 1000, -3.0), ("vib", 1000, 0.1),
                                   ("temp", 1500, 1e6), ("vib", 1500, 65504.0)], []),
    ("n-7_x", 70000, 1700000123500, [("p", 0, 4.0078125), ("p", 250, -0.0), ("p", 750, 100000.5)], []),
    ("press1", 2**32 + 5, 1800000000000, [("pressure", 0, 3.99)], []),
    # a base time with a fractional second (the double nearest 1700000000.123), ms offsets, a
    # sensor read once among runs, a command report after a run
    ("pump3", 301, 1700000000123, [("temp", 0, 21.0625), ("flow", 0, 30), ("vib", 0, 2.5), ("temp", 1, 21.125),
                                   ("vib", 999, 2.25), ("temp", 100125, 21.1875)], [("cmd", "c-1:ok")]),
    # only a text record (an error frame)
    ("pump3", 302, 1700000001001, [], [("error", "sensor vib (adxl345) did not start: no device")]),
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
    for node, seq, bt, readings, texts in CASES:
        payload = senml(node, bt, readings, texts)
        msg = mac0(KEY, node.encode(), payload, seq)
        out["frames"].append({"node": node, "seq": seq, "base_ms": bt, "readings": readings, "texts": texts,
                              "senml_hex": payload.hex(), "cose_hex": msg.hex(), "frame_hex": frame(msg).hex()})
    for seq, status in ((5, 0), (300, 1), (7, 2)):
        msg = mac0(KEY, b"gw", cbor2.dumps([1, seq, status]))
        out["acks"].append({"seq": seq, "status": status, "cose_hex": msg.hex(), "frame_hex": frame(msg).hex()})
    # an ack carrying commands for the node (docs/protocol.md §3)
    cmds = [["c-17", "set_period", {"period_ms": 5000}], ["c-18", "identify", {}]]
    msg = mac0(KEY, b"gw", cbor2.dumps([1, 42, 0, cmds]))
    out["command_acks"] = [{"seq": 42, "status": 0, "commands": cmds, "cose_hex": msg.hex(),
                            "frame_hex": frame(msg).hex()}]
    # CoAP (docs/protocol.md §5): a node's CON POST /d of the second frame, and the gateway's
    # piggybacked 2.04 carrying the ack; then the same exchange non-confirmable
    f = out["frames"][1]
    ack = mac0(KEY, b"gw", cbor2.dumps([1, f["seq"], 0]))
    out["coap"] = []
    for name, req_type, resp_type, mid, token in (("con", 0, 2, 0x1234, b"\x00\x00\x00\x07"),
                                                  ("non", 1, 1, 0xFFFF, b"\x01\x02\x03\x04")):
        out["coap"].append({"exchange": name, "mid": mid, "token_hex": token.hex(), "seq": f["seq"],
                            "request_hex": coap(req_type, 0x02, mid, token, 17, bytes.fromhex(f["cose_hex"]), b"d").hex(),
                            "response_hex": coap(resp_type, 0x44, mid, token, 17, ack).hex(), "ack_cose_hex": ack.hex()})
    out["annotated"] = annotate(out["frames"][0])
    print(json.dumps(out, indent=1, ensure_ascii=True))


if __name__ == "__main__":
    main()
