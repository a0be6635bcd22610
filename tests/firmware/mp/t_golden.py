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



class Port:  # what the serial link writes
    def __init__(self):
        self.got = b""

    def write(self, data, n=None):
        self.got += bytes(data[:len(data) if n is None else n])


for v in golden["frames"]:
    readings = [(r[0], r[1], r[2]) for r in v["readings"]]
    payload = senml.encode_pack(v["node"], readings, v["base_ms"], [(t[0], t[1]) for t in v["texts"]])
    assert hexl(payload) == v["senml_hex"], (v["seq"], hexl(payload), v["senml_hex"])
    msg = cose.mac0(mac, v["node"].encode(), payload, v["seq"])
    assert hexl(msg) == v["cose_hex"], (v["seq"], hexl(msg))
    assert hexl(framing.frame(msg)) == v["frame_hex"]
    # the node's allocation-free path: sealed in place (4 bytes of scratch before), framed from a buffer
    out = bytearray(1100)
    n = cose.seal_into(mac, v["node"].encode(), v["seq"], payload + b"junk", len(payload), out, 10)
    assert hexl(out[10:10 + n]) == v["cose_hex"], (v["seq"], hexl(out[10:10 + n]))
    tx = bytearray(framing.MAX_ENCODED + 1)
    assert hexl(tx[:framing.frame_into(tx, out, n, 10)]) == v["frame_hex"]
    # the node's own path: the pack written in the outbox's ring after room for the COSE head
    # (within its bound), sealed there, moved forward; the serial link encodes as it writes
    texts = [(t[0].encode(), t[1].encode()) for t in v["texts"]]
    names = []
    for r in readings:
        if r[0] not in names:
            names.append(r[0])
    pack = senml.Pack(v["node"], [x.encode() for x in names], max(1, len(readings)))
    pack.day, pack.msod = senml.split_ms(v["base_ms"])
    for name, dt, value in readings:
        pack.add_obj(names.index(name), dt, value)
    ring = bytearray(1100)
    src = 10 + cose.MAC0_OVERHEAD - 9
    end = pack.write(ring, src, texts)
    assert end - src == len(payload) <= pack.bound(texts), (end - src, pack.bound(texts))
    n = cose.seal_into(mac, v["node"].encode(), v["seq"], ring, end - src, ring, 10, src)
    assert hexl(ring[10:10 + n]) == v["cose_hex"]
    port = Port()
    link_serial.SerialLink(None, mac, port).send(v["seq"], ring, 10, n)
    assert hexl(port.got) == "00" + v["frame_hex"]
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
# CoAP (confirmable exchange): the datagram the node's link sends, byte for byte, and the
# gateway's piggybacked response read back into the ack
import os  # noqa: E402
import socket  # noqa: E402
import link_coap  # noqa: E402

for c in golden["coap"]:
    if c["exchange"] != "con":
        continue  # the node's link sends confirmable requests
    frame = [f for f in golden["frames"] if f["seq"] == c["seq"]][0]
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
    port = listener.getsockname()[1] if hasattr(listener, "getsockname") else None
    if port is None:  # MicroPython's socket has no getsockname: the first free port from a random start
        listener.close()
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        start = 20000 + int.from_bytes(os.urandom(2), "little") % 20000
        for port in range(start, start + 200):
            try:
                listener.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
                break
            except OSError:  # in use (EADDRINUSE): another run or another program has it
                continue
        else:
            raise OSError("no free UDP port on 127.0.0.1 in %d..%d" % (start, start + 199))
    link = link_coap.CoapLink("127.0.0.1", port, mac)
    link.mid = (c["mid"] - 1) & 0xFFFF  # the next exchange takes the vector's message id and token
    link.token = int(c["token_hex"], 16) - 1
    link.send(c["seq"], binascii.unhexlify(frame["cose_hex"]))
    sent = listener.recv(2048)
    assert hexl(sent) == c["request_hex"], (hexl(sent), c["request_hex"])
    resp = binascii.unhexlify(c["response_hex"])
    link.rx[:len(resp)] = resp
    assert link._handle(link.rx, len(resp), 0), c
    assert (link.ack_seq[0], link.ack_status[0], link.ack_cmds[0]) == (c["seq"], 0, None)
    assert not link.busy()
    listener.close()
    link.sock.close()

# seal_into is mac0 byte for byte: kids across the 1-byte head limit, every partial IV length,
# payloads across the bstr head limits
out = bytearray(1200)
for kid in (b"a" * 23, b"b" * 24, b"c" * 32):
    for seq in (0, 255, 256, 70000, 2 ** 32 + 5):
        for n in (0, 23, 24, 255, 256, 900):
            payload = bytes([(i * 7 + 1) & 0xFF for i in range(n)])
            k = cose.seal_into(mac, kid, seq, payload, n, out, 4)
            assert bytes(out[4:4 + k]) == cose.mac0(mac, kid, payload, seq), (kid, seq, n)
            assert k <= n + cose.MAC0_OVERHEAD


class Port:
    """A UART stand-in: what the gateway sent, read in chunks of 5 bytes."""

    def __init__(self, data):
        self.data = data
        self.i = 0

    def readinto(self, buf):
        n = min(5, len(buf), len(self.data) - self.i)
        for k in range(n):
            buf[k] = self.data[self.i + k]
        self.i += n
        return n

    def write(self, data, n=None):
        pass


# the node's allocation-free ack path (deframed and verified in place) agrees with parse_ack,
# acks with commands included; a forged ack and line noise are counted, never taken
wire = b"\x13\x37\x00"
for a in golden["acks"] + golden["command_acks"]:
    wire += binascii.unhexlify(a["frame_hex"])
forged = bytearray(binascii.unhexlify(golden["acks"][0]["cose_hex"]))
forged[-1] ^= 1
wire += framing.frame(bytes(forged))
link = link_serial.SerialLink(None, mac, Port(wire))
got = []
for _ in range(3):
    for i in range(link.poll(0)):
        got.append((link.ack_seq[i], link.ack_status[i], link.ack_cmds[i]))
want = [(a["seq"], a["status"], None) for a in golden["acks"]]
want += [(a["seq"], a["status"], a["commands"]) for a in golden["command_acks"]]
assert got == want, got
assert link.bad_acks == 1 and link.deframer.crc_errors + link.deframer.cobs_errors == 1
print("OK t_golden %d frames %d acks %d coap" % (len(golden["frames"]), len(golden["acks"]), len(golden["coap"])))
