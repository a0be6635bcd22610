"""Coverage-guided fuzzing of the COSE_Mac0 reader (libFuzzer via atheris), differential:
the fast reader of the layout nodes send (`cose._parse_plain`) against the general reader
built on cbor2 (`cose._parse_cbor`), in the same module; and the frame check of the core
(`core_ext.verify`: COSE_Mac0, MAC, replay window, SenML), compiled against its reference.

    python fuzz/fuzz_cose.py -max_total_time=300        # or: python fuzz/run.py fuzz_cose

Checked on every input:
- `parse_mac0` returns a Mac0 or raises CoseError, nothing else; `_parse_plain` never raises;
- what the fast reader accepts, the general one accepts with the same fields;
- what the general reader accepts in exactly the layout `cose.mac0()` writes (tag 17, empty
  unprotected map, protected {1: 4, 4: kid, 6: piv}), the fast one accepts too: every
  node's frame takes the fast path;
- a Mac0 carries bytes for protected, payload, tag (8 bytes) and a non-empty kid, and its
  protected header's labels are integers or text strings (a `true` key is not label 1);
- every implementation of `Verifier.check`, fed the input twice (the second time a replay,
  if the first was accepted), gives the same result or the same error (type, message,
  node, seq, key), leaves the same window and the same readings; and raises CoseError
  exactly when `parse_mac0` does.
Half the inputs are valid frames with a few bytes changed (fuzz/mutation.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cbor2  # noqa: E402
from mutation import from_seeds, fuzz, instrumented  # noqa: E402

with instrumented(__name__ == "__main__"):
    from core_ext import implementations
    from gateway.errors import CoseError, RejectedFrame
    from gateway.protocol import cose
    from gateway.runtime.registry import Registry
    VERIFIERS = implementations("verify")  # imports the reference: instrumented too
    PARSERS = implementations("ingest")

KEY = bytes(range(32))
SEEDS = [cose.mac0(KEY, kid, payload, seq=seq) for kid, payload, seq in (
    (b"pump3", cbor2.dumps([{-2: "pump3/", -3: 1_700_000_000, 0: "temp", 2: 21.5}]), 7),
    (b"n", b"", 0), (b"k" * 24, bytes(300), 2**24), (b"node-17", b"\x80", 2**40 - 1), (b"x", b"\xa0", None),
    (b"", b"\x80", 1))]  # no kid: the general reader refuses it, so must the fast ones
REGISTRY = Registry()
for _name in ("pump3", "n", "k" * 24, "node-17", "x"):
    REGISTRY.add(_name, KEY)


def verified(name: str, data: bytes) -> list:
    """What one implementation of Verifier.check makes of the input, fed twice."""
    v = VERIFIERS[name].Verifier(REGISTRY.by_kid, PARSERS[name].Parser(max_series=8), {"n": (3, 1)})
    out = []
    for _ in range(2):
        try:
            out.append(v.check(data, 1000.0))
        except RejectedFrame as exc:
            out.append((type(exc).__name__, str(exc), exc.node, exc.seq, exc.key))
        sids, ts, vs, other = v.parser.take()
        out.append((bytes(sids), bytes(ts), [x if x == x else "nan" for x in vs], other, v.parser.names))
    out.append([v.state(n) for n in ("pump3", "n", "k" * 24, "node-17", "x")])
    return out


def fields(m) -> list:
    return [getattr(m, f) for f in m.__slots__]


def check(raw: bytes) -> None:
    data = from_seeds(SEEDS, raw)
    plain = cose._parse_plain(data)
    try:
        full = cose._parse_cbor(data)
    except CoseError:
        full = None
    try:
        parsed = cose.parse_mac0(data)
    except CoseError:
        parsed = None
    if plain is not None:
        if full is None:
            raise AssertionError(f"the fast reader accepts what the general one rejects: {data.hex()}")
        if fields(plain) != fields(full):
            raise AssertionError(f"the readers disagree on {data.hex()}: {fields(plain)} != {fields(full)}")
    if (parsed is None) != (full is None):
        raise AssertionError(f"parse_mac0 and the general reader disagree on {data.hex()}")
    checks = {name: verified(name, data) for name in VERIFIERS}
    if len({repr(c) for c in checks.values()}) > 1:
        raise AssertionError(f"the Verifier implementations disagree on {data.hex()}: {checks}")
    if (parsed is None) != (checks["python"][0][0] == "CoseError"):
        raise AssertionError(f"Verifier.check and parse_mac0 disagree on whether {data.hex()} is a COSE_Mac0")
    if full is None:
        return
    if not (type(full.protected) is bytes and type(full.payload) is bytes and type(full.tag) is bytes
            and len(full.tag) == 8 and type(full.kid) is bytes and full.kid):
        raise AssertionError(f"a Mac0 with fields of the wrong kind from {data.hex()}: {fields(full)}")
    labels = [k for k in cbor2.loads(full.protected) if type(k) not in (int, str)]
    if labels:  # RFC 9052 §3.1: labels are integers or text strings; true is not 1, nor 4.0 kid
        raise AssertionError(f"a protected header label {labels[0]!r} taken as a COSE label: {data.hex()}")
    if full.seq is not None and plain is None:
        # the same message as mac0() writes it (the tag aside): the fast path must take it
        rebuilt = cose.mac0(KEY, full.kid, full.payload, seq=full.seq)[:-8] + full.tag
        if rebuilt == data:
            raise AssertionError(f"a frame in the nodes' layout missed the fast path: {data.hex()}")


if __name__ == "__main__":
    fuzz(check, sys.argv)
