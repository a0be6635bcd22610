"""The series codec against pcodec, zstd and lz4 on the real series of ../shared/data/series.

    python bench/codec.py [--data DIR] [--repeat 3] [--lossy] [--series NAME ...]

Every file is read in place (SKAB gives 8 channels, the others one; an empty
field is a gap, kept as NaN). Each channel is compressed in one process by
headrace's codec (compiled), pcodec (default level), zstd -3 and -19 and lz4
on the float64 bytes. Reported: bits per value for each, and encode / decode
speed in MB/s of float64 input (best of --repeat). The others compress values
alone, so headrace's column is its whole stream (every header included) with a
regular 1 s clock, which costs a few bytes; "ts bits" is what the file's own
timestamps cost apart (NAB and SKAB have real ones; the ELF files have none and
get the regular clock). Every round trip is checked exact, real clock included. With --lossy,
bits per value at max_error = 0.1 % and 1 % of each channel's range.

Targets (DESIGN.md): mean bits/value <= 0.95x pcodec's; encode >= 2x pcodec's
speed; decode >= zstd-3's; regular timestamps <= 0.2 bits each.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# nothing here uses BLAS: numpy's BLAS threads would only spin beside the timed loops
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bench.timing import best_time  # noqa: E402
from core_ext import implementations  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "series"
SECOND = 1_000_000_000


def _number(text: str) -> float:
    text = text.strip().strip('"')
    return float(text) if text else float("nan")


def _ns(text: str) -> int:
    dt = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * SECOND


def load(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{channel: (timestamps ns, values)} of one file."""
    name = path.stem
    if name.startswith("elf_"):
        vs = np.array([_number(line) for line in path.read_text().splitlines()])
        return {name: (1_600_000_000 * SECOND + np.arange(len(vs), dtype=np.int64) * SECOND, vs)}
    delim = ";" if name.startswith("skab") else ","
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=delim))
    head, rows = rows[0], rows[1:]
    ts = np.array([_ns(r[0]) for r in rows], np.int64)
    return {(name if len(head) == 2 else f"{name}:{head[i]}"): (ts, np.array([_number(r[i]) for r in rows]))
            for i in range(1, len(head))}


def baselines():
    import lz4.frame
    import pcodec
    import zstandard
    from pcodec import standalone
    z3, z19, zd = zstandard.ZstdCompressor(level=3), zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    return {
        "pcodec": (lambda v: standalone.simple_compress(v, pcodec.ChunkConfig()), standalone.simple_decompress),
        "zstd-3": (lambda v: z3.compress(v.tobytes()), zd.decompress),
        "zstd-19": (lambda v: z19.compress(v.tobytes()), zd.decompress),
        "lz4": (lambda v: lz4.frame.compress(v.tobytes()), lz4.frame.decompress),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lossy", action="store_true", help="also bits/value at max_error 0.1 %% and 1 %% of range")
    ap.add_argument("--series", nargs="*", help="only channels whose name contains one of these")
    args = ap.parse_args()
    codec = implementations("codec").get("cython")
    if codec is None:
        sys.exit("the compiled core is not built: pip install -e .")
    if not args.data.is_dir():
        sys.exit(f"no series folder at {args.data} (give --data)")
    others = baselines()
    names = ["headrace"] + list(others)
    bits = {k: [] for k in names}
    speed = {k: [0.0, 0.0, 0.0] for k in names}  # seconds encode, seconds decode, MB
    ts_bits = []
    lossy = []
    print(f"{'series':44s} {'n':>7s} " + " ".join(f"{k:>9s}" for k in names) + "   ts bits", flush=True)
    for path in sorted(args.data.glob("*.csv")):
        for name, (ts, vs) in load(path).items():
            if args.series and not any(s in name for s in args.series):
                continue
            n = len(vs)
            row = {}
            blob = codec.encode(ts, vs)
            t2, v2 = codec.decode(blob)
            if not (np.array_equal(t2, ts) and np.array_equal(v2.view(np.int64), vs.view(np.int64))):
                sys.exit(f"{name}: the round trip is not exact")
            # the others compress values alone: give ours a regular clock (a few bytes in all)
            # so that the column compares values; the real timestamps' cost is "ts bits"
            clock = np.arange(n, dtype=np.int64) * SECOND
            blob = codec.encode(clock, vs)
            row["headrace"] = len(blob) * 8 / n
            speed["headrace"][0] += best_time(lambda: codec.encode(clock, vs), args.repeat)
            speed["headrace"][1] += best_time(lambda: codec.decode(blob), args.repeat)
            for k, (enc, dec) in others.items():
                b = enc(vs)
                row[k] = len(b) * 8 / n
                speed[k][0] += best_time(lambda: enc(vs), args.repeat)
                speed[k][1] += best_time(lambda: dec(b), args.repeat)
            for k in names:
                bits[k].append(row[k])
                speed[k][2] += vs.nbytes / 1e6
            tb = len(codec.encode(ts, np.zeros(n))) * 8 / n
            if name.startswith("elf_"):
                ts_bits.append(tb)
            print(f"{name[:44]:44s} {n:7d} " + " ".join(f"{row[k]:9.2f}" for k in names) + f"   {tb:.3f}", flush=True)
            if args.lossy:
                finite = vs[np.isfinite(vs)]
                span = float(finite.max() - finite.min()) if len(finite) else 0.0
                lossy.append((name, row["headrace"], *[
                    len(codec.encode(clock, vs, max_error=f * span)) * 8 / n if span > 0 else row["headrace"]
                    for f in (0.001, 0.01)]))
    if not bits["headrace"]:
        sys.exit("no series matched")
    means = {k: float(np.mean(v)) for k, v in bits.items()}
    print(f"{'mean bits/value':44s} {'':7s} " + " ".join(f"{means[k]:9.2f}" for k in names))
    print(f"{'encode MB/s':44s} {'':7s} " + " ".join(f"{speed[k][2] / speed[k][0]:9.0f}" for k in names))
    print(f"{'decode MB/s':44s} {'':7s} " + " ".join(f"{speed[k][2] / speed[k][1]:9.0f}" for k in names))
    enc = {k: speed[k][2] / speed[k][0] for k in names}
    dec = {k: speed[k][2] / speed[k][1] for k in names}
    print(f"\nheadrace / pcodec bits: {means['headrace'] / means['pcodec']:.3f}x (target <= 0.95)")
    print(f"headrace / pcodec encode speed: {enc['headrace'] / enc['pcodec']:.2f}x (target >= 2)")
    print(f"headrace / zstd-3 decode speed: {dec['headrace'] / dec['zstd-3']:.2f}x (target >= 1)")
    if ts_bits:
        print(f"timestamps of the regular (elf) series: at most {max(ts_bits):.3f} bits each (target <= 0.2)")
    if lossy:
        print(f"\n{'lossy: bits/value':44s} {'exact':>9s} {'0.1 %':>9s} {'1 %':>9s}")
        for name, exact, a, b in lossy:
            print(f"{name[:44]:44s} {exact:9.2f} {a:9.2f} {b:9.2f}")
        print(f"{'mean':44s} " + " ".join(f"{float(np.mean([r[i] for r in lossy])):9.2f}" for i in (1, 2, 3)))


if __name__ == "__main__":
    main()
