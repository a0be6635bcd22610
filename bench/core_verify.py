"""A node's frame from bytes to readings (core_ext.verify): compiled against the reference.

    python bench/core_verify.py [--frames N] [--rounds R]

The gateway's per-frame check (COSE_Mac0, the node by kid, HMAC-SHA256, replay window,
SenML into columns) on the frames nodes send (8 readings, about 155 bytes, 100 nodes),
timed side by side, the variants alternated in each of R rounds (the machine's noise
falls on all of them alike); medians of the rounds, µs a frame:

- compiled: `core_ext._verify` with the compiled parser (what the gateway runs);
- reference, compiled parser: `core_ext._verify_py` with the compiled parser, which is
  what the gateway ran before the check was compiled;
- reference: both pure-Python references (HEADRACE_PURE=1);
- compiled, one-shot HMAC: the compiled check for nodes past MAC_KEYS, whose MAC is a
  one-shot `hmac.digest` instead of the key's hashed pads (`cose.MacKey`): the two ways
  to OpenSSL's HMAC through Python's hashlib, compared within the compiled check.

Prints the ratios compiled ÷ each of the others.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.core_ingest import make_frames  # noqa: E402
from bench.timing import best_time  # noqa: E402
from core_ext import implementations  # noqa: E402
from gateway.protocol import cose  # noqa: E402
from gateway.runtime.registry import Registry  # noqa: E402

NODES = 100


def messages(n: int, registry: Registry, prefix: str) -> list[bytes]:
    frames = make_frames(n, NODES)
    out = []
    for i, payload in enumerate(frames):
        node = registry.node(f"{prefix}{i % NODES:03d}")
        out.append(cose.mac0(node.key, node.name.encode(), payload, seq=i // NODES))
    return out


def run(verify_impl, parse_impl, registry: Registry, msgs: list[bytes], fill: bool = False) -> float:
    """Seconds for one pass over msgs with a fresh Verifier (its windows empty: every frame new);
    `fill`: other keys take every MacKey first, so these frames' MACs are one-shot."""
    v = verify_impl.Verifier(registry.by_kid, parse_impl.Parser(), None)
    if fill:
        for i in range(verify_impl.MAC_KEYS):
            v.mac_key(bytes([i, 2]) * 16)
    check = v.check

    def one():
        for m in msgs:
            check(m, 1_700_000_000.0)
        v.parser.take()
    return best_time(one, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    ver, ing = implementations("verify"), implementations("ingest")
    if "cython" not in ver or "cython" not in ing:
        sys.exit("the compiled core is not built: pip install -e . (needs Cython and gcc)")
    registry = Registry()
    for i in range(NODES):
        registry.add(f"pump{i:03d}", bytes([i]) * 32)
    msgs = messages(args.frames, registry, "pump")
    small = msgs[: len(msgs) // 10]
    variants = {
        "compiled": lambda: run(ver["cython"], ing["cython"], registry, msgs) / len(msgs),
        "reference, compiled parser": lambda: run(ver["python"], ing["cython"], registry, msgs) / len(msgs),
        "reference": lambda: run(ver["python"], ing["python"], registry, small) / len(small),
        "compiled, one-shot HMAC": lambda: run(ver["cython"], ing["cython"], registry, msgs, fill=True) / len(msgs),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    size = sum(map(len, msgs)) / len(msgs)
    print(f"{len(msgs):,} frames ({size:.0f} bytes, 8 readings, {NODES} nodes), {args.rounds} rounds alternated; "
          "median µs a frame (min-max of the rounds):")
    for k, v in times.items():
        print(f"  {k:28s} {med[k]:7.3f}  ({min(v) * 1e6:.3f}-{max(v) * 1e6:.3f})")
    c = med["compiled"]
    print(f"  compiled ÷ reference with the compiled parser (the path before) {c / med['reference, compiled parser']:.2f}; "
          f"compiled ÷ reference {c / med['reference']:.3f}; "
          f"MacKey ÷ one-shot hmac.digest within the compiled check {c / med['compiled, one-shot HMAC']:.2f}")


if __name__ == "__main__":
    main()
