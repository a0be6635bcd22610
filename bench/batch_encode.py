"""batch.encode's CPU a frame, with the compiled per-reading loop and with its pure-Python reference.

    python bench/batch_encode.py [--frames 256] [--nodes 10] [--rounds 5]

Frames as the thingsboard load sends them (8 readings at one time, `k0`…`k7`,
values `((i*7 + j*13) % 100000) / 100`), round-robin over `--nodes` nodes, one
batch of `--frames` frames encoded 40 times a round (version 4, a schema). The
two variants of `core_ext.ingest.spread` (the uplink's per-reading loop)
alternate round by round; prints the CPU time a frame of each (best and all
rounds) and their ratio. Everything else in the encode is the same code.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from core_ext import implementations  # noqa: E402
from gateway.runtime.uplink import batch  # noqa: E402


def frames(n: int, nodes: int) -> list[bytes]:
    out = []
    for i in range(n):
        node = f"bench-{i % nodes:02d}"
        recs = [{-2: node + "/", -3: 1.7e9 + i * 0.001, 0: "k0", 2: ((i * 7) % 100000) / 100}]
        recs += [{0: f"k{j}", 2: ((i * 7 + j * 13) % 100000) / 100} for j in range(1, 8)]
        out.append(batch.frame_body(node, i, 1.7e9 + i * 0.001 + 0.002, cbor2.dumps(recs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bodies = frames(args.frames, args.nodes)
    impls = implementations("ingest")
    if "cython" not in impls:
        sys.exit("core_ext._ingest is not built: ./run.sh setup")
    schema = batch.Schema("gw", "site")
    us: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(args.rounds):
        for kind, mod in impls.items():
            batch.spread = mod.spread
            batch.encode("gw", "site", bodies, [], schema)
            t = time.process_time()
            for _ in range(40):
                batch.encode("gw", "site", bodies, [], schema)
            us[kind].append((time.process_time() - t) / 40 / args.frames * 1e6)
    for kind, xs in us.items():
        print(f"{kind:7s} spread: batch.encode {min(xs):.2f} µs a frame (best of {args.rounds}; "
              f"all {', '.join(f'{x:.2f}' for x in xs)})")
    print(f"compiled / reference: {min(us['cython']) / min(us['python']):.2f}")


if __name__ == "__main__":
    main()
