# CBOR encoder against RFC 8949 Appendix A, and decoder round trips. Runs on MicroPython and CPython:
#   micropython t_cbor.py REPO_ROOT
import sys
import json
import binascii

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
import cbor  # noqa: E402

# the round-trip examples of RFC 8949 Appendix A (bignums left out: nodes never send them)
with open(ROOT + "/tests/vectors/rfc8949_appendix_a.json") as f:
    vectors = json.load(f)

passed = 0
for v in vectors:
    value = v["decoded"]
    got = binascii.hexlify(cbor.dumps(value)).decode()
    assert got == v["hex"], "encode %r: got %s want %s" % (value, got, v["hex"])
    back = cbor.loads(binascii.unhexlify(v["hex"]))
    assert back == value or (value != value and back != back), "decode %s: got %r" % (v["hex"], back)
    passed += 1
assert passed == len(vectors) == 47, "%d of %d Appendix A vectors passed" % (passed, len(vectors))

# decoder: tags, nesting, malformed input
t = cbor.loads(cbor.dumps(cbor.Tag(17, [b"\x01", {}, b"", b"12345678"])))
assert isinstance(t, cbor.Tag) and t.tag == 17 and t.value[0] == b"\x01"
for bad in (b"", b"\x18", b"\x5a\x00\x00\x00\x10ab", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x81", b"\x01\x02",
            b"\xfc", b"\x81" * 40 + b"\x00"):
    try:
        cbor.loads(bad)
    except ValueError:
        pass
    else:
        raise AssertionError("accepted malformed %r" % bad)
# deterministic map order whatever the dict order
assert cbor.dumps({-3: 1, 0: 2, -2: 3, 6: 4, 2: 5}) == binascii.unhexlify("a5000202050604210322 01".replace(" ", ""))
print("OK t_cbor %d vectors" % passed)
