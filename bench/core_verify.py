"""A node's frame from bytes to readings (core_ext.verify): compiled against the reference.

    python bench/core_verify.py [--frames N] [--rounds R] [--openssl]

The gateway's per-frame work in the core, on the frames nodes send (8 readings, about
159 bytes, 100 nodes): the check (COSE_Mac0, the node by kid, HMAC-SHA256, replay
window, SenML into columns) and the ack. The variants are alternated in each of R
rounds (the machine's noise falls on all of them alike); the least of the rounds (the
least disturbed) with their median and most, µs a frame, and the ratios of the least:

- check, compiled: `core_ext._verify` with the compiled parser (what the gateway runs);
- check, reference with the compiled parser: what the gateway ran before the check was
  compiled (`core_ext._verify_py`, the same code as gateway/runtime/ingest.py had);
- check, reference: both pure-Python references (HEADRACE_PURE=1), on a tenth of the frames;
- check, compiled, portable SHA-256: the compiled check with the core's portable C
  SHA-256 (what runs on a processor without SHA extensions, a Raspberry Pi 4's);
- check, compiled, past MAC_KEYS: nodes whose midstates are not kept (a gateway with
  more nodes than MAC_KEYS): two SHA-256 blocks more a tag, over the padded key;
- ack, compiled (both SHA-256 codes) and reference (`Verifier.ack`);
- HMAC alone over the frames' MAC structures, called from Python: the core's C
  (`core_ext.verify.hmac_sha256`, with the processor's SHA extensions where it has
  them, and portable), and the ways through Python's hashlib: `MacKey.digest` (the
  key's hashed pads: what the compiled check ran before its own C), two
  `hashlib.sha256` calls (RFC 2104), one-shot `hmac.digest`. The C variants make the
  key's midstates for each call (two blocks more than the check does).

hashlib's SHA-256 is CPython's own, as in a gateway without TLS (gateway/runtime/tls.py
leaves OpenSSL out), or with `--openssl` OpenSSL's, as in a gateway with TLS.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if "--openssl" not in sys.argv:  # before anything imports hashlib: as gateway/runtime/tls.py does it
    sys.modules["_hashlib"] = None

import hashlib  # noqa: E402
import hmac  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core_ingest import make_frames  # noqa: E402
from bench.timing import best_time  # noqa: E402
from core_ext import implementations  # noqa: E402
from gateway.protocol import cose  # noqa: E402
from gateway.runtime.registry import Registry  # noqa: E402

NODES = 100
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def messages(n: int, registry: Registry) -> list[bytes]:
    out = []
    for i, payload in enumerate(make_frames(n, NODES)):
        node = registry.node(f"pump{i % NODES:03d}")
        out.append(cose.mac0(node.key, node.name.encode(), payload, seq=i // NODES))
    return out


def verifier(verify_impl, parse_impl, registry: Registry, fill: bool = False):
    """A fresh Verifier (its windows empty: every frame is new); `fill`: other keys take
    every MacKey first, as on a gateway with more nodes than MAC_KEYS."""
    v = verify_impl.Verifier(registry.by_kid, parse_impl.Parser(), None)
    if fill:
        for i in range(verify_impl.MAC_KEYS):
            v.mac_key(bytes([i, 2]) * 16)
    return v


def check(verify_impl, parse_impl, registry: Registry, msgs: list[bytes], fill: bool = False) -> float:
    """Seconds a frame for one pass of Verifier.check over msgs."""
    v = verifier(verify_impl, parse_impl, registry, fill)
    run = v.check

    def one():
        for m in msgs:
            run(m, 1_700_000_000.0)
        v.parser.take()
    return best_time(one, 1) / len(msgs)


def acks(verify_impl, parse_impl, registry: Registry, keys: list[bytes]) -> float:
    v = verifier(verify_impl, parse_impl, registry)
    ack = v.ack
    return best_time(lambda: [ack(k, i, 0) for i, k in enumerate(keys)], 1) / len(keys)


def with_code(verify_impl, code: str, fn):
    """fn() with the compiled core's SHA-256 code `code` ("portable" or "best"), then the best again."""
    def run():
        verify_impl.sha256_code(code)
        try:
            return fn()
        finally:
            verify_impl.sha256_code("best")
    return run


def two_sha256(key: bytes, data: bytes) -> bytes:
    k = key.ljust(64, b"\0")
    return hashlib.sha256(k.translate(_OPAD) + hashlib.sha256(k.translate(_IPAD) + data).digest()).digest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--openssl", action="store_true", help="hashlib's SHA-256 from OpenSSL (a gateway with TLS)")
    args = ap.parse_args()
    ver, ing = implementations("verify"), implementations("ingest")
    if "cython" not in ver or "cython" not in ing:
        sys.exit("the compiled core is not built: pip install -e . (needs Cython and gcc)")
    registry = Registry()
    for i in range(NODES):
        registry.add(f"pump{i:03d}", bytes([i]) * 32)
    msgs = messages(args.frames, registry)
    small = msgs[: len(msgs) // 10]
    keys = [registry.by_kid(cose.parse_mac0(m).kid).key for m in msgs]
    parsed = [cose.parse_mac0(m) for m in msgs]
    structures = [cose._MAC_STRUCTURE_HEAD + cose._bstr(m.protected) + m.protected + b"\x40" + cose._bstr(m.payload)
                  + m.payload for m in parsed]
    assert two_sha256(keys[0], structures[0]) == hmac.digest(keys[0], structures[0], "sha256")
    mac_keys = {k: cose.MacKey(k) for k in set(keys)}
    pairs = [(mac_keys[k], k, s) for k, s in zip(keys, structures)]
    n = len(pairs)
    c = ver["cython"]
    code = c.sha256_code()  # "sha-ni" where the processor has the SHA extensions
    c_hmac = c.hmac_sha256
    variants = {
        "check, compiled": lambda: check(c, ing["cython"], registry, msgs),
        "check, compiled, portable SHA-256": with_code(c, "portable",
                                                       lambda: check(c, ing["cython"], registry, msgs)),
        "check, reference, compiled parser": lambda: check(ver["python"], ing["cython"], registry, msgs),
        "check, reference": lambda: check(ver["python"], ing["python"], registry, small),
        "check, compiled, past MAC_KEYS": lambda: check(ver["cython"], ing["cython"], registry, msgs, fill=True),
        "ack, compiled": lambda: acks(c, ing["cython"], registry, keys),
        "ack, compiled, portable SHA-256": with_code(c, "portable", lambda: acks(c, ing["cython"], registry, keys)),
        "ack, reference": lambda: acks(ver["python"], ing["cython"], registry, keys),
        f"HMAC: core C ({code})": lambda: best_time(lambda: [c_hmac(k, s) for _mk, k, s in pairs], 1) / n,
        "HMAC: core C (portable)": with_code(c, "portable", lambda: best_time(
            lambda: [c_hmac(k, s) for _mk, k, s in pairs], 1) / n),
        "HMAC: MacKey.digest": lambda: best_time(lambda: [mk.digest(s) for mk, _k, s in pairs], 1) / n,
        "HMAC: two sha256 calls": lambda: best_time(lambda: [two_sha256(k, s) for _mk, k, s in pairs], 1) / n,
        "HMAC: one-shot hmac.digest": lambda: best_time(lambda: [hmac.digest(k, s, "sha256") for _mk, k, s in pairs],
                                                        1) / n,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn() * 1e6)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = {k: min(v) for k, v in times.items()}
    size = sum(map(len, msgs)) / len(msgs)
    print(f"{len(msgs):,} frames ({size:.0f} bytes, 8 readings, {NODES} nodes), {args.rounds} rounds alternated, "
          f"SHA-256 from {'OpenSSL' if args.openssl else 'CPython (no TLS)'}; µs a frame, least (median, most) of the rounds:")
    for k, v in times.items():
        print(f"  {k:36s} {med[k]:7.3f}  ({statistics.median(v):.3f}, {max(v):.3f})")
    chk = med["check, compiled"]
    print(f"check: compiled ÷ the path before (reference, compiled parser) "
          f"{chk / med['check, reference, compiled parser']:.2f}; "
          f"compiled ÷ reference {chk / med['check, reference']:.3f}; "
          f"portable SHA-256 ÷ {code} {med['check, compiled, portable SHA-256'] / chk:.2f}; past MAC_KEYS ÷ kept "
          f"midstates {med['check, compiled, past MAC_KEYS'] / chk:.2f}")
    print(f"ack: compiled ÷ reference {med['ack, compiled'] / med['ack, reference']:.2f}; portable SHA-256 ÷ {code} "
          f"{med['ack, compiled, portable SHA-256'] / med['ack, compiled']:.2f}")
    mk = med["HMAC: MacKey.digest"]
    print(f"HMAC: core C ({code}) ÷ MacKey {med[f'HMAC: core C ({code})'] / mk:.2f}, core C (portable) ÷ MacKey "
          f"{med['HMAC: core C (portable)'] / mk:.2f}, "
          f"two sha256 calls ÷ MacKey {med['HMAC: two sha256 calls'] / mk:.2f}, "
          f"one-shot hmac.digest ÷ MacKey {med['HMAC: one-shot hmac.digest'] / mk:.2f}")


if __name__ == "__main__":
    main()
