"""batch.encode's CPU a frame: its compiled parts against the same code interpreted.

    python bench/batch_encode.py [--frames 256] [--nodes 10] [--rounds 5]

Frames as the thingsboard load sends them (8 readings at one time, `k0`…`k7`,
values `((i*7 + j*13) % 100000) / 100`), round-robin over `--nodes` nodes, one
batch of `--frames` frames encoded 40 times a round (version 4, a schema). Four
variants alternate round by round:

  cython     all compiled: the per-frame loop (`core_ext.ingest.spread_frames`:
             each frame's body and SenML parsed, its readings spread to their
             series) and the codec's format code (`core_ext._codec.encode`);
  format-py  the codec's format code interpreted (`_codec_format.encode` over
             the compiled kernels), the loop compiled;
  before     both interpreted over the compiled parser, `spread` and kernels:
             batch.encode as it ran before either was compiled;
  python     the pure references throughout.

Prints the CPU time a frame of each (best and all rounds) and the ratios.
Everything else in the encode is the same code.

    python bench/batch_encode.py --grow [--frames 256] [--nodes 100]

compares batch sizes instead, all compiled: batches of `--frames` frames (the
uplink's `batch_records`) against batches GROW times as large (what the uplink
sends while GROW full batches or more wait), the same frames encoded, the two
alternating round by round. With many nodes a batch holds a series (a node's
sensor) for every few readings, and the encoder's work per series is spread
over more readings in the larger batch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from core_ext import _codec_format as codec_format, implementations  # noqa: E402
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
    ap.add_argument("--grow", action="store_true", help="batch_records frames against GROW times as many")
    args = ap.parse_args()
    if args.grow:
        return grow(args)
    bodies = frames(args.frames, args.nodes)
    impls = implementations("ingest")
    if "cython" not in impls:
        sys.exit("core_ext._ingest is not built: ./run.sh setup")
    schema = batch.Schema("gw", "site")
    ref, fast = impls["python"], impls["cython"]

    def loop(parser, frames, nodes, known, entry, table):
        # the reference's loop, run by the interpreter over the compiled parser and spread
        ref.spread = fast.spread
        try:
            return ref.spread_frames(parser, frames, nodes, known, entry, table)
        finally:
            ref.spread = spread_py

    spread_py = ref.spread
    codecs = implementations("codec")

    def format_py(ts, vs):
        return codec_format.encode(ts, vs, 0.0, codecs["cython"])

    variants = {"cython": (fast.spread_frames, fast.Parser, codecs["cython"].encode),
                "format-py": (fast.spread_frames, fast.Parser, format_py),
                "before": (loop, fast.Parser, format_py),
                "python": (ref.spread_frames, ref.Parser, codecs["python"].encode)}
    us: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for kind, (fn, parser, encode) in variants.items():
            batch.spread_frames, batch.Parser, batch.codec.encode = fn, parser, encode
            batch.encode("gw", "site", bodies, [], schema)
            t = time.process_time()
            for _ in range(40):
                batch.encode("gw", "site", bodies, [], schema)
            us[kind].append((time.process_time() - t) / 40 / args.frames * 1e6)
    for kind, xs in us.items():
        print(f"{kind:9s} batch.encode {min(xs):.2f} µs a frame (best of {args.rounds}; "
              f"all {', '.join(f'{x:.2f}' for x in xs)})")
    best = {kind: min(xs) for kind, xs in us.items()}
    print(f"cython / before: {best['cython'] / best['before']:.2f}; cython / format-py: "
          f"{best['cython'] / best['format-py']:.2f}; cython / python: {best['cython'] / best['python']:.2f}")


def grow(args) -> None:
    from gateway.runtime.uplink.mqtt import MqttUplink
    big = args.frames * MqttUplink.GROW
    bodies = frames(big, args.nodes)
    schema = batch.Schema("gw", "site")
    sizes = {f"{args.frames} frames": [bodies[k:k + args.frames] for k in range(0, big, args.frames)],
             f"{big} frames": [bodies]}
    us: dict[str, list[float]] = {k: [] for k in sizes}
    for _ in range(args.rounds):
        for label, batches in sizes.items():
            for b in batches:
                batch.encode("gw", "site", b, [], schema)
            t = time.process_time()
            for _ in range(10):
                for b in batches:
                    batch.encode("gw", "site", b, [], schema)
            us[label].append((time.process_time() - t) / 10 / big * 1e6)
    for label, xs in us.items():
        print(f"batches of {label:12s} {min(xs):.2f} µs a frame (best of {args.rounds}; "
              f"all {', '.join(f'{x:.2f}' for x in xs)})")
    small, large = (min(xs) for xs in us.values())
    print(f"{args.nodes} nodes: {big} frames a batch ÷ {args.frames}: {large / small:.2f} (best of each; "
          f"round by round: {', '.join(f'{b / a:.2f}' for a, b in zip(*us.values()))})")


if __name__ == "__main__":
    main()
