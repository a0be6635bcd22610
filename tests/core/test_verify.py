"""core_ext.verify: a node's frame from bytes to readings, both implementations, and the
compiled one against the reference on mutated frames (same result or the same error)."""
from __future__ import annotations

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext import implementations
from gateway.errors import AuthError, CoseError, PayloadError, ReplayError
from gateway.protocol import cose
from gateway.runtime.registry import Registry

pytestmark = pytest.mark.core("verify")
KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
PARSERS = implementations("ingest")


def pack(node="pump3", t=1_700_000_000, values=(21.5, 22.0)) -> bytes:
    recs = [{-2: f"{node}/", -3: t, 0: "temp", 2: values[0]}]
    recs += [{0: "temp", 6: i + 1, 2: v} for i, v in enumerate(values[1:])]
    return cbor2.dumps(recs)


def registry() -> Registry:
    reg = Registry()
    reg.add("pump3", KEY)
    reg.add("n-2", OTHER)
    return reg


def verifier(impl, windows=None, reg=None):
    """A Verifier with the parser of its own kind (the reference with the reference)."""
    parser = PARSERS["python" if impl.__name__.endswith("_py") else "cython"].Parser()
    return impl.Verifier((reg or registry()).by_kid, parser, windows)


def error(fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    exc = info.value
    return type(exc), str(exc), getattr(exc, "node", None), getattr(exc, "seq", None), getattr(exc, "key", None)


def test_accepts_and_decodes(impl):
    v = verifier(impl)
    payload = pack()
    assert v.check(cose.mac0(KEY, b"pump3", payload, seq=7), 50.0) == ("pump3", 7, KEY, payload, 2)
    sids, ts, vs, _ = v.parser.take()
    assert [(v.parser.names[s], t, x) for s, t, x in zip(sids, ts, vs)] == [
        ("pump3/temp", 1_700_000_000.0, 21.5), ("pump3/temp", 1_700_000_001.0, 22.0)]
    assert v.state("pump3") == (7, 1) and v.state("n-2") is None


def test_another_layout_takes_the_general_reader(impl):
    # unprotected header not empty, protected labels in another order, a 2-byte length form
    payload = pack(values=(1.0,))
    protected = cbor2.dumps({4: b"pump3", 6: b"\x00\x09", 1: 4})
    structure = cbor2.dumps(["MAC0", protected, b"", payload])
    tag = cose.MacKey(KEY).digest(structure)[:8]
    msg = cbor2.dumps(cbor2.CBORTag(17, [protected, {5: b"x"}, payload, tag]))
    assert verifier(impl).check(msg, 0.0) == ("pump3", 9, KEY, payload, 1)
    # the nodes' layout with a byte string's length in the 1-byte form though it is under 24
    plain = cose.mac0(KEY, b"pump3", payload, seq=3)
    assert plain[2] == 0x40 | 13
    longer = plain[:2] + b"\x58\x0d" + plain[3:]
    assert verifier(impl).check(longer, 0.0)[:2] == ("pump3", 3)


@pytest.mark.parametrize("msg, kind, text", [
    (b"", CoseError, "not CBOR"), (b"\xd1\x84", CoseError, "not CBOR"), (cbor2.dumps([1, 2]), CoseError, "tag 17"),
    (cose.mac0(KEY, b"", pack(), seq=1), CoseError, "lacks kid"),
    (cose.mac0(KEY, b"ghost", pack(), seq=1), AuthError, "unknown node kid b'ghost'"),
    (cose.mac0(OTHER, b"pump3", pack(), seq=1), AuthError, "bad MAC from kid b'pump3'"),
    (cose.mac0(KEY, b"pump3", pack()), AuthError, "node pump3: frame without a sequence number"),
    (cose.mac0(KEY, b"pump3", b"\x9f\x01", seq=9), PayloadError, "node pump3 seq 9: invalid SenML at byte 1: record 0 is not a map"),
], ids=["empty", "truncated", "array", "no-kid", "unknown", "bad-mac", "no-seq", "payload"])
def test_errors(impl, msg, kind, text):
    v = verifier(impl)
    got = error(v.check, msg, 0.0)
    assert got[0] is kind and text in got[1]
    assert got == error(verifier(implementations("verify")["python"]).check, msg, 0.0)  # as the reference says


def test_errors_carry_node_seq_and_key(impl):
    v = verifier(impl)
    bad = bytearray(cose.mac0(KEY, b"pump3", pack(), seq=4))
    bad[-1] ^= 1
    assert error(v.check, bytes(bad), 0.0)[2:] == ("pump3", 4, None)
    assert v.state("pump3") is None  # a bad MAC leaves the window alone
    assert error(v.check, cose.mac0(KEY, b"pump3", b"\xa0", seq=9), 0.0)[2:] == ("pump3", 9, KEY)
    assert v.state("pump3") == (9, 1)  # a valid MAC uses the number up, whatever the payload
    assert len(v.parser) == 0  # and nothing of that payload reached the columns
    assert error(v.check, cose.mac0(KEY, b"pump3", pack(), seq=9), 0.0) == (
        ReplayError, "node pump3: sequence number 9 already seen (window top 9)", "pump3", 9, KEY)


def test_window_restore_and_state(impl):
    v = verifier(impl, {"pump3": (100, 0b101)})
    assert v.state("pump3") == (100, 0b101)
    for seq, seen in ((100, True), (98, True), (99, False), (36, True), (37, False), (101, False)):
        msg = cose.mac0(KEY, b"pump3", pack(), seq=seq)
        if seen:
            assert error(v.check, msg, 0.0)[0] is ReplayError
        else:
            v.check(msg, 0.0)
    assert v.state("pump3") == (101, 0b1111)  # 101..98; 37 has left the window
    assert error(v.check, cose.mac0(KEY, b"pump3", pack(), seq=37), 0.0)[0] is ReplayError  # too old now
    v.restore({"n-2": (5, 1)})  # back to what the spool holds: pump3 starts afresh
    assert v.state("pump3") is None and v.state("n-2") == (5, 1)
    assert v.check(cose.mac0(KEY, b"pump3", pack(), seq=0), 0.0)[1] == 0
    assert v.check(cose.mac0(KEY, b"pump3", pack(), seq=2 ** 40 - 1), 0.0)[1] == 2 ** 40 - 1  # the largest (5 bytes)
    assert v.state("pump3") == (2 ** 40 - 1, 1)


def test_registry_reload_and_mac_keys_past_the_bound(impl):
    v = verifier(impl)
    reg = Registry()
    keys = {f"n{i}": bytes([i]) * 32 for i in range(impl.MAC_KEYS + 5)}
    for name, key in keys.items():
        reg.add(name, key)
    v.lookup = reg.by_kid  # a reload: pump3 is gone, the others verify with their keys
    assert error(v.check, cose.mac0(KEY, b"pump3", pack(), seq=1), 0.0)[0] is AuthError
    for name, key in keys.items():
        assert v.check(cose.mac0(key, name.encode(), pack(name), seq=1), 0.0)[0] == name
    assert isinstance(v.mac_key(keys["n0"]), cose.MacKey)
    assert v.mac_key(keys[f"n{impl.MAC_KEYS + 4}"]) == keys[f"n{impl.MAC_KEYS + 4}"]  # past the bound: the key


FRAMES = [cose.mac0(KEY, b"pump3", pack(), seq=5), cose.mac0(OTHER, b"n-2", pack("n-2", values=(1, 2, 3)), seq=300),
          cose.mac0(KEY, b"pump3", pack(), seq=2 ** 33), cose.mac0(KEY, b"pump3", b"\x80", seq=6)]


def outcome(v, msg):
    try:
        result = v.check(msg, 1000.0)
    except (CoseError, AuthError, ReplayError, PayloadError) as exc:
        result = (type(exc).__name__, str(exc), exc.node, exc.seq, exc.key)
    sids, ts, vs, other = v.parser.take()
    return result, v.state("pump3"), v.state("n-2"), bytes(sids), bytes(ts), bytes(vs), other, v.parser.names


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(FRAMES), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
       st.integers(0, 40), st.booleans())
def test_compiled_agrees_with_the_reference(frame, changes, cut, twice):
    impls = implementations("verify")
    if "cython" not in impls:
        pytest.skip("compiled module not built (the reference alone is tested)")
    msg = bytearray(frame)
    for at, value in changes:
        if at < len(msg):
            msg[at] = value
    msg = bytes(msg[:len(msg) - cut] if cut < 20 else msg)
    both = {name: verifier(impl, {"n-2": (299, 1)}) for name, impl in impls.items()}
    for _ in range(2 if twice else 1):
        got = {name: outcome(v, msg) for name, v in both.items()}
        assert got["cython"] == got["python"], msg.hex()


def test_acks_as_the_reference_writes_them(impl):
    ref = verifier(implementations("verify")["python"])
    long_key = bytes(range(100))  # longer than a block: hashed first (RFC 2104)
    cases = [(k, seq, status) for k in (KEY, long_key) for seq in (0, 23, 24, 255, 256, 2 ** 16, 2 ** 32, 2 ** 40 - 1)
             for status in (0, 1, 2)]
    for past_the_bound in (False, True):
        v = verifier(impl)
        if past_the_bound:  # other keys hold every MacKey: these acks take the other HMAC path
            for i in range(impl.MAC_KEYS):
                v.mac_key(bytes([i, 9]) * 16)
            assert v.mac_key(KEY) == KEY
        for key, seq, status in cases:
            ack = v.ack(key, seq, status)
            assert ack == ref.ack(key, seq, status)
            m = cose.parse_mac0(ack)
            assert (m.kid, m.seq, cbor2.loads(m.verify(key))) == (b"gw", None, [1, seq, status])
    with pytest.raises(ValueError):
        v.ack(KEY, -1, 0)
    with pytest.raises(ValueError):
        v.ack(KEY, 2 ** 64, 0)


def test_the_same_implementation_loads_in_a_gateway_without_openssl():
    # gateway/runtime/tls.py makes _hashlib unimportable in a gateway without TLS: the compiled
    # module must not need it (it would fall back to the reference, or fail under HEADRACE_REQUIRE_EXT)
    import subprocess
    import sys

    import core_ext.verify
    code = ("import sys; sys.modules['_hashlib'] = sys.modules['ssl'] = None; import core_ext.verify as v; "
            "print(v.IMPLEMENTATION)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == core_ext.verify.IMPLEMENTATION


# RFC 4231 §4: test cases 1, 2 and 6 (a key longer than a block is hashed first)
RFC4231 = [(b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
           (b"Jefe", b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
           (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")]


def sha256_codes():
    """The compiled module's SHA-256 codes this processor runs (the portable one always)."""
    impls = implementations("verify")
    if "cython" not in impls:
        return []
    c = impls["cython"]
    best = c.sha256_code("best")
    return ["portable"] + (["best"] if best != "portable" else [])


def test_hmac_sha256_is_rfc_4231_and_hashlib(impl):
    import hmac
    assert impl.sha256_code() in (("hashlib",) if impl.__name__.endswith("_py") else ("sha-ni", "portable"))
    with pytest.raises(ValueError):
        impl.sha256_code("fastest")
    for key, data, tag in RFC4231:
        assert impl.hmac_sha256(key, data).hex() == tag
    # every length around the block boundaries: the padding's two cases, a key of every kind
    for klen in (0, 1, 32, 63, 64, 65, 130):
        key = bytes((7 * i + klen) & 0xFF for i in range(klen))
        for n in range(0, 200):
            data = bytes((3 * i + n) & 0xFF for i in range(n))
            assert impl.hmac_sha256(key, data) == hmac.digest(key, data, "sha256"), (klen, n)


@pytest.mark.parametrize("code", ["portable", "best"])
def test_each_compiled_sha256_code_agrees_with_hashlib_and_the_reference(code):
    import hmac
    if code not in sha256_codes():
        pytest.skip("compiled module not built" if not sha256_codes() else
                    "this processor has no SHA extensions: the portable code alone runs here")
    c = implementations("verify")["cython"]
    try:
        assert c.sha256_code(code) == ("portable" if code == "portable" else c.sha256_code())
        for key, data, tag in RFC4231:
            assert c.hmac_sha256(key, data).hex() == tag
        for n in list(range(0, 300)) + [1000, 4096, 65537]:
            data = bytes((5 * i + n) & 0xFF for i in range(n))
            assert c.hmac_sha256(KEY, data) == hmac.digest(KEY, data, "sha256"), n
        # and the frames' tags and the acks, with a MacKey's midstates and past MAC_KEYS
        ref = verifier(implementations("verify")["python"])
        for past_the_bound in (False, True):
            v = verifier(c)
            if past_the_bound:
                for i in range(c.MAC_KEYS):
                    v.mac_key(bytes([i, 7]) * 16)
            for seq, values in ((1, (1.5,)), (2, tuple(float(i) for i in range(40)))):
                msg = cose.mac0(KEY, b"pump3", pack(values=values), seq=seq)
                assert v.check(msg, 0.0)[:4] == ("pump3", seq, KEY, pack(values=values))
                assert v.ack(KEY, seq, 0) == ref.ack(KEY, seq, 0)
            with pytest.raises(AuthError):
                v.check(cose.mac0(OTHER, b"pump3", pack(), seq=3), 0.0)
    finally:
        c.sha256_code("best")
    with pytest.raises(ValueError):
        c.sha256_code("fastest")
