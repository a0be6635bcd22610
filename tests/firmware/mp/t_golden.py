# The golden frames of tests/vectors/frames.json, byte for byte: SenML, COSE_Mac0, serial frame,
# and the gateway's acks verified. MicroPython and CPython.
import sys
import json
import binascii

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
import cose  # noqa: E402
import framing  # noqa: E402
import link_serial  # noqa: E402
import senml  # noqa: E402

with open(ROOT + "/tests/vectors/frames.json") as f:
    golden = json.load(f)
mac = cose.Mac(binascii.unhexlify(golden["key"]))
hexl = lambda b: binascii.hexlify(b).decode()  # noqa: E731

for v in golden["frames"]:
    readings = [(r[0], r[1], r[2]) for r in v["readings"]]
    payload = senml.encode_pack(v["node"], readings, v["base_ms"], [(t[0], t[1]) for t in v["texts"]])
    assert hexl(payload) == v["senml_hex"], (v["seq"], hexl(payload), v["senml_hex"])
    msg = cose.mac0(mac, v["node"].encode(), payload, v["seq"])
    assert hexl(msg) == v["cose_hex"], (v["seq"], hexl(msg))
    assert hexl(framing.frame(msg)) == v["frame_hex"]
    header, body = cose.verify_mac0(mac, msg)
    assert body == payload and header[4] == v["node"].encode()

for a in golden["acks"]:
    msg = binascii.unhexlify(a["cose_hex"])
    assert link_serial.parse_ack(mac, msg) == (a["seq"], a["status"], None)
    bad = bytearray(msg)
    bad[-1] ^= 1
    assert link_serial.parse_ack(mac, bytes(bad)) is None  # a forged ack is ignored
    assert link_serial.parse_ack(cose.Mac(bytes(32)), msg) is None  # and one under another key

for a in golden["command_acks"]:
    msg = binascii.unhexlify(a["cose_hex"])
    assert link_serial.parse_ack(mac, msg) == (a["seq"], a["status"], a["commands"])
    bad = bytearray(msg)
    bad[-3] ^= 1
    assert link_serial.parse_ack(mac, bytes(bad)) is None  # a forged command is never taken
    d = framing.Deframer()
    assert d.feed(binascii.unhexlify(a["frame_hex"])) == [msg]
print("OK t_golden %d frames %d acks" % (len(golden["frames"]), len(golden["acks"])))
