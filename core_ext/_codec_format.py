"""The series codec's format and choices, shared by both implementations.

This module decides (modes, delta order, bucket width, symbol frequencies) and
lays out the bytes; the per-value loops it calls are "kernels", passed in as a
module: `_codec_py` (pure Python, the reference) or `_codec` (Cython). Both
kernel sets return the same numbers, so both implementations write the same
bytes; the differential tests check it. docs/codec.md describes the format.

Stream (version 1), all integers little-endian, varints LEB128:

    "HRZ" version:u8 flags:u8 n:varint chunk:varint
    timestamps: istream(n int64)
    values: ceil(n / chunk) chunks, each kind:u8 body

An istream holds int64 values as a delta order (0, 1, 2), a frame of reference
or the first values, a common divisor, then one bucket symbol per residual,
coded with rANS against a frequency table in the stream, and the bits below
each bucket's top bits, packed raw.
"""
from __future__ import annotations

import math
import struct
import sys
from array import array
from itertools import compress

# numpy only where it is needed (decoding, the bounded-error modes): the gateway encodes
# lossless batches and runs without it, 13 MB smaller
np = None


def _np():
    global np
    if np is None:
        import numpy
        np = numpy
    return np

MAGIC = b"HRZ"
VERSION = 1
CHUNK = 1 << 16          # values per chunk: each chunk picks its own mode
PROB_BITS = 14           # rANS frequency precision
PROB_SCALE = 1 << PROB_BITS
BUCKET_FINE = 3          # histograms are taken with 3 mantissa bits, coarser widths derived
NSYM_FINE = 16 + 60 * 8  # symbols of the finest bucketing of a uint64
PLAN_RUN = 256          # a long istream picks its delta order on runs of this many values
PLAN_RUNS = 8
PLAN_FULL = 4 * PLAN_RUN * PLAN_RUNS  # up to this length every order is measured on all values
MAX_EXPONENT = 18        # decimal digits after the point tried by decimal detection
DECIMAL_SAMPLE = 64
EXCEPTION_BITS = 80
DIGIT_BITS = 3.33
DICT_MAX_FRACTION = 4    # a dictionary is used only when distinct values <= n / 4

K_RAW, K_DECIMAL, K_BITS, K_DICT, K_QUANT, K_HOLD, K_LINEAR = range(7)
KIND_NAMES = {K_RAW: "raw", K_DECIMAL: "decimal", K_BITS: "bits", K_DICT: "dictionary",
              K_QUANT: "quantised", K_HOLD: "deadband", K_LINEAR: "swinging door"}
MAX_N = 1 << 31          # values per stream a decoder accepts
MAX_CHUNK = 1 << 16
MAX_VALUES_PER_BYTE = 4096


class CodecError(ValueError):
    """Bytes that are not a valid series stream; `offset` is where reading stopped."""

    def __init__(self, message: str, offset: int = -1):
        super().__init__(message if offset < 0 else f"{message} (at byte {offset})")
        self.offset = offset


# --- bytes ---------------------------------------------------------------

class Writer:
    def __init__(self):
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(bytes((v,)))

    def varint(self, v: int) -> None:
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        self.parts.append(bytes(out))

    def svarint(self, v: int) -> None:
        self.varint(zigzag(v))

    def blob(self, b: bytes) -> None:
        self.varint(len(b))
        self.parts.append(bytes(b))

    def raw(self, b: bytes) -> None:
        self.parts.append(bytes(b))

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise CodecError(f"stream ends early: {n} more bytes needed", self.pos)

    def u8(self) -> int:
        self.need(1)
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self, limit: int = 1 << 64) -> int:
        v = shift = 0
        while True:
            b = self.u8()
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise CodecError("varint longer than 64 bits", self.pos)
        if v >= limit:
            raise CodecError(f"value {v} out of range (< {limit})", self.pos)
        return v

    def svarint(self) -> int:
        return unzigzag(self.varint())

    def take(self, n: int) -> bytes:
        self.need(n)
        self.pos += n
        return bytes(self.data[self.pos - n:self.pos])

    def blob(self) -> bytes:
        return self.take(self.varint(len(self.data) + 1))


def zigzag(v: int) -> int:
    return -2 * v - 1 if v < 0 else 2 * v


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


def wrap64(v: int) -> int:
    """Two's complement int64 of an integer taken modulo 2**64."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


# --- buckets and frequencies ----------------------------------------------

def bucket(u: int, m: int) -> tuple[int, int]:
    """(symbol, count of raw bits below it) of a uint64 with `m` mantissa bits."""
    if u < (2 << m):
        return u, 0
    b = u.bit_length()
    extra = b - 1 - m
    return (2 << m) + (b - m - 2) * (1 << m) + ((u >> extra) & ((1 << m) - 1)), extra


def _fine_representative(sym: int) -> int:
    if sym < 16:
        return sym
    b = (sym - 16) // 8 + 5
    return (8 + (sym - 16) % 8) << (b - 4)


_COARSE = {m: [bucket(_fine_representative(s), m) for s in range(NSYM_FINE)] for m in range(BUCKET_FINE + 1)}


COARSE_SYM = [[_COARSE[m][s][0] for s in range(NSYM_FINE)] for m in range(BUCKET_FINE + 1)]
COARSE_EXTRA = [[_COARSE[m][s][1] for s in range(NSYM_FINE)] for m in range(BUCKET_FINE + 1)]


def plan_runs(n: int) -> list[int]:
    """Starts of the evenly spaced runs a long istream's delta order is chosen on."""
    return [(n - PLAN_RUN) * k // (PLAN_RUNS - 1) for k in range(PLAN_RUNS)]


def coarse_hist(fine, m: int) -> dict[int, int]:
    """Histogram at bucket width m, by symbol (ascending), from the finest one."""
    hist: dict[int, int] = {}
    table = COARSE_SYM[m]
    for s in compress(range(len(fine)), fine):  # the few nonzero bins, found in C
        sym = table[s]
        hist[sym] = hist.get(sym, 0) + fine[s]
    return hist


def istream_cost(fine: list[int]) -> tuple[float, int]:
    """(estimated bits, best bucket width) for residuals with this fine histogram: the
    entropy of the symbols, the raw bits under them and about 3 bytes a table entry.
    Both kernel sets compute exactly this sum, in this order."""
    best, best_m = math.inf, 0
    for m in range(BUCKET_FINE + 1):
        hist = coarse_hist(fine, m)
        extra = sum(COARSE_EXTRA[m][s] * c for s, c in enumerate(fine) if c)
        total = sum(hist.values())
        bits = extra + 8.0 * (3 * len(hist) + 2)
        for sym in sorted(hist):
            c = hist[sym]
            bits += c * math.log2(total / c)
        if bits < best:
            best, best_m = bits, m
    return best, best_m


def normalise(hist: dict[int, int]) -> list[tuple[int, int]]:
    """Frequencies summing to PROB_SCALE, every present symbol at least 1, by symbol."""
    syms = sorted(hist)
    total = sum(hist.values())
    freq = {s: max(1, hist[s] * PROB_SCALE // total) for s in syms}
    short = PROB_SCALE - sum(freq.values())
    by_count = sorted(syms, key=lambda s: (-hist[s], s))
    i = 0
    while short != 0:
        s = by_count[i % len(by_count)]
        if short > 0:
            freq[s] += short
            short = 0
        elif freq[s] > 1:
            step = min(freq[s] - 1, -short)
            freq[s] -= step
            short += step
        i += 1
    return [(s, freq[s]) for s in syms]


def tables(pairs: list[tuple[int, int]], nsym: int) -> tuple[array, array]:
    """(frequency, cumulative frequency) per symbol, as uint32 arrays."""
    freq = array("I", bytes(4 * nsym))
    cum = array("I", bytes(4 * nsym))
    acc = 0
    for s, f in pairs:
        freq[s] = f
        cum[s] = acc
        acc += f
    return freq, cum


def nsym_of(m: int) -> int:
    return (2 << m) + (64 - m - 1) * (1 << m)


# --- integer streams ---------------------------------------------------------

def write_istream(w: Writer, ints, k, plan=None) -> None:
    n = len(ints)
    _, order, m, base, gcd, fine = plan or k.plan(ints)
    w.u8(order)
    w.u8(m)
    if order == 0:
        w.svarint(base)
    else:
        for v in ints[:order].tolist():
            w.svarint(v)
    w.varint(gcd)
    if n <= order:
        return
    write_residuals(w, ints, order, m, base, gcd, fine, k)


def write_residuals(w: Writer, ints, order: int, m: int, base: int, gcd: int, fine, k) -> None:
    """What follows an istream's header: its frequency table, rANS bytes and raw bits."""
    n = len(ints)
    first = next(compress(range(len(fine)), fine)) if fine is not None else None  # lowest bucket used
    if first is None or first >= (2 << m) or fine[first] != n - order:
        # the frequencies come from the encoding pass itself (the same as the plan's, whose
        # fine buckets map exactly onto these): one call, no table built in Python
        table, rans, extra = k.encode_body(ints, order, base, gcd, m)
        w.raw(table)
        w.blob(rans)
        w.blob(extra)
        return
    # one symbol and no raw bits (a regular clock, a constant): nothing to encode, the
    # rANS states never move, and no pass over the values is made
    pairs = normalise(coarse_hist(fine, m))
    w.raw(k.write_table(array("q", [s for s, _ in pairs]), array("q", [f for _, f in pairs])))
    freq, cum = tables(pairs, nsym_of(m))
    rans, extra = k.encode_ints(ints, order, base, gcd, m, freq, cum)
    w.blob(rans)
    w.blob(extra)


def read_istream(r: Reader, n: int, k):
    """n int64 values (a numpy array), the decoder's side of `write_istream`."""
    return _np().frombuffer(_read_istream(r, n, k), _np().int64)


def _read_istream(r: Reader, n: int, k):
    order = r.u8()
    m = r.u8()
    if order > 2 or m > BUCKET_FINE:
        raise CodecError(f"istream order {order} / bucket width {m} unknown", r.pos)
    heads = [r.svarint()] if order == 0 else [r.svarint() for _ in range(min(order, n))]
    heads = [wrap64(h) for h in heads]
    gcd = r.varint()
    if gcd == 0:
        raise CodecError("divisor 0", r.pos)
    if n <= order:
        return array("q", heads[:n])
    freq, cum, r.pos = k.read_table(r.data, r.pos, nsym_of(m))
    rans = r.blob()
    extra = r.blob()
    return k.decode_ints(n, order, heads, gcd, m, freq, cum, rans, extra)


# --- float helpers shared by both implementations (numpy) -----------------------------

_LOW63 = 0x7FFFFFFFFFFFFFFF


def unordered(ints):
    """The floats of `ordered` bit patterns (numpy; the decoder's side)."""
    np = _np()
    b = np.asarray(ints, np.int64)
    return np.where(b < 0, b ^ np.int64(_LOW63), b).view(np.float64)


def hold(idx, pts, n: int):
    """Deadband decoding: each kept value holds until the next kept index."""
    np = _np()
    return np.repeat(pts, np.diff(np.append(idx, n)))


def interp(ts, idx, pts):
    """Swinging-door decoding: straight lines in time between kept points; kept points
    exact; a segment touching a non-finite point, or of no duration, holds its start."""
    np = _np()
    n = len(ts)
    i = np.arange(n)
    j = np.searchsorted(idx, i, side="right") - 1
    j1 = np.minimum(j + 1, len(idx) - 1)
    a, b = idx[j], idx[j1]
    pa, pb = pts[j], pts[j1]
    with np.errstate(all="ignore"):
        span = (ts[b] - ts[a]).astype(np.float64)
        frac = (ts - ts[a]).astype(np.float64) / span
        line = pa + (pb - pa) * frac
    straight = (span > 0) & np.isfinite(pa) & np.isfinite(pb)
    return np.where((i == a) | ~straight, pa, line)


# --- value chunks --------------------------------------------------------------

def detect_decimal(values, k) -> int | None:
    """The decimal digits that code a sample of the values smallest, or None.

    Each digit costs about log2(10) bits a value; a value that does not come back
    exactly becomes an exception at about 80 bits. So a series with a few values
    of full precision among 8-digit ones is coded with 8 digits, not 17.
    """
    size, counts = k.decimal_counts(values, DECIMAL_SAMPLE, MAX_EXPONENT)
    if size == 0:
        return None
    best_e, best_score, best_count = None, math.inf, 0
    for e, count in enumerate(counts):
        score = (size - count) * EXCEPTION_BITS + size * e * DIGIT_BITS
        if score < best_score:
            best_e, best_score, best_count = e, score, count
        if count == size:
            break  # more digits only cost more
    return best_e if best_count * 10 >= size * 9 else None


def write_exceptions(w: Writer, values, positions, k) -> None:
    w.varint(len(positions))
    if len(positions):
        write_istream(w, positions, k)
        write_istream(w, k.ordered(k.take(values, positions)), k)


def read_exceptions(r: Reader, n: int, k):
    np = _np()
    count = r.varint(n + 1)
    if not count:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    pos = read_istream(r, count, k)
    if pos.min() < 0 or pos.max() >= n:
        raise CodecError("exception position out of range", r.pos)
    return pos, unordered(read_istream(r, count, k))


def _encoded(fn, *args) -> bytes:
    w = Writer()
    fn(w, *args)
    return w.getvalue()


def write_values(w: Writer, values: array, k, allow_dict: bool = True) -> None:
    """The smallest lossless encoding of one chunk among the modes that apply.

    Sizes are estimated from the residual histograms (cheap) and only the winner is
    encoded; a dictionary is tried only when the estimate is poor, as it needs a sort.
    """
    n = len(values)
    options = []  # (estimated bits, kind, header bytes, ints, plan)
    e = detect_decimal(values, k) if n else None
    exc = ()
    if e is not None:
        ints, exc = k.decimal_ints(values, e)
        if len(exc) * 4 < n:
            head = bytes((K_DECIMAL, e)) + _encoded(write_exceptions, values, exc, k)
            plan = k.plan(ints)
            options.append((plan[0] + 8 * len(head), K_DECIMAL, head, ints, plan))
    if not options or len(exc) * 100 > n:
        bits = k.ordered(values)
        plan = k.plan(bits)
        options.append((plan[0] + 8, K_BITS, bytes((K_BITS,)), bits, plan))
    if allow_dict and n >= 64:
        found = k.dictionary(values, n // DICT_MAX_FRACTION)
        if found is not None:
            uniq, index = found
            w2 = Writer()
            w2.u8(K_DICT)
            w2.varint(len(uniq))
            write_values(w2, k.unordered(uniq), k, allow_dict=False)
            plan = k.plan(index)
            head = w2.getvalue()
            options.append((plan[0] + 8 * len(head), K_DICT, head, index, plan))
    best = min(options, key=lambda o: o[0])
    if best[0] >= 64 * n + 8:
        w.u8(K_RAW)
        w.raw(_le(values))
        return
    w.raw(best[2])
    write_istream(w, best[3], k, best[4])


def _le(a) -> bytes:
    """A float64 column's bytes, little-endian (an array.array or a memoryview of one)."""
    if sys.byteorder == "big":
        a = array("d", a)
        a.byteswap()
    return a.tobytes()


def read_values(r: Reader, n: int, ts, k, depth: int = 0):
    np = _np()
    kind = r.u8()
    if kind == K_RAW:
        return np.frombuffer(r.take(8 * n), "<f8").astype(np.float64)
    if kind == K_BITS:
        return unordered(read_istream(r, n, k))
    if kind == K_DECIMAL:
        e = r.u8()
        if e > MAX_EXPONENT:
            raise CodecError(f"decimal exponent {e} out of range", r.pos)
        pos, exc = read_exceptions(r, n, k)
        out = np.frombuffer(k.decimal_values(_read_istream(r, n, k), e), np.float64)
        if len(pos):
            out = out.copy()
            out[pos] = exc
        return out
    if kind == K_QUANT:
        (q,) = struct.unpack("<d", r.take(8))
        pos, exc = read_exceptions(r, n, k)
        out = read_istream(r, n, k).astype(np.float64) * q
        out[pos] = exc
        return out
    if kind == K_DICT and depth == 0:
        d = r.varint(n + 1)
        if d == 0:
            raise CodecError("empty dictionary", r.pos)
        uniq = read_values(r, d, ts, k, depth + 1)
        index = read_istream(r, n, k)
        if index.min() < 0 or index.max() >= d:
            raise CodecError("dictionary index out of range", r.pos)
        return uniq[index]
    if kind in (K_HOLD, K_LINEAR) and depth == 0:
        p = r.varint(n + 1)
        idx = read_istream(r, p, k)
        pts = read_values(r, p, ts, k, depth + 1)
        last = n - 1 if kind == K_LINEAR else idx[-1] if p else 0
        if p == 0 or idx[0] != 0 or (p > 1 and np.any(np.diff(idx) <= 0)) or idx[-1] != last or last >= n:
            raise CodecError("lossy points out of order", r.pos)
        return hold(idx, pts, n) if kind == K_HOLD else interp(ts, idx, pts)
    raise CodecError(f"unknown chunk kind {kind}", r.pos - 1)


def write_lossy(w: Writer, ts: array, values: array, max_error: float, k) -> None:
    """The smallest of quantisation, deadband, swinging door and the exact encoding,
    all within max_error."""
    np = _np()
    n = len(values)
    q = 2.0 * max_error
    ints, exc = k.quant_ints(values, q, max_error)
    options = [bytes((K_QUANT,)) + struct.pack("<d", q)
               + _encoded(write_exceptions, values, exc, k) + _encoded(write_istream, ints, k)]
    tsn = np.frombuffer(ts, np.int64)
    vsn = np.frombuffer(values, np.float64)
    for kind, idx in ((K_HOLD, k.deadband(values, max_error)), (K_LINEAR, k.swinging_door(ts, values, max_error))):
        decoded = (lambda i: hold(i, vsn[i], n)) if kind == K_HOLD else (lambda i: interp(tsn, i, vsn[i]))
        idx = _within(np.frombuffer(idx, np.int64), decoded, vsn, max_error)
        w2 = Writer()
        w2.u8(kind)
        w2.varint(len(idx))
        write_istream(w2, _arr("q", idx), k)
        write_values(w2, _arr("d", vsn[idx]), k, allow_dict=False)
        options.append(w2.getvalue())
    exact = Writer()
    write_values(exact, values, k)  # within any error; best on values with few distinct levels
    options.append(exact.getvalue())
    w.raw(min(options, key=len))


def _arr(typecode: str, a) -> array:
    out = array(typecode)
    out.frombytes(_np().ascontiguousarray(a).tobytes())
    return out


def _within(idx, decoded, values, max_error: float):
    """Keep more points until every decoded value is within max_error (rounding in the
    interpolation can overshoot by an ulp) and every non-finite value comes back as it was."""
    np = _np()
    while True:
        out = decoded(idx)
        with np.errstate(invalid="ignore"):
            ok = np.abs(out - values) <= max_error
        ok |= out.view(np.int64) == values.view(np.int64)
        if ok.all():
            return idx
        idx = np.union1d(idx, np.flatnonzero(~ok)).astype(np.int64)


# --- whole streams -------------------------------------------------------------

def as_arrays(timestamps, values):
    """int64 and float64 columns from numpy arrays, array.array or lists: a memoryview of
    the caller's buffer when it already holds them, else an array.array copy."""
    ts, vs = _column("q", timestamps, "timestamps"), _column("d", values, "values")
    if len(ts) != len(vs):
        raise ValueError(f"timestamps and values must be 1-D and of one length ({len(ts)} vs {len(vs)})")
    return ts, vs


_FORMATS = {"q": ("q", "l", "<q", "<l", "=q", "=l"), "d": ("d", "<d", "=d")}


def _column(typecode: str, x, what: str):
    try:
        m = memoryview(x)
    except TypeError:
        m = None
    if m is not None:
        if m.ndim != 1:
            raise ValueError(f"{what} must be 1-D, not of shape {m.shape}")
        if m.format in _FORMATS[typecode] and m.itemsize == 8 and m.c_contiguous:
            return m.cast("B").cast(typecode)  # the caller's buffer as it is: no copy
    try:
        return array(typecode, x if m is None or typecode == "d" else (int(v) for v in x))
    except (TypeError, OverflowError) as exc:
        raise ValueError(f"{what}: {exc}") from None


def encode(timestamps, values, max_error: float, k) -> bytes:
    ts, vs = as_arrays(timestamps, values)
    if not (max_error >= 0.0 and math.isfinite(max_error)):
        raise ValueError(f"max_error must be a finite number >= 0, not {max_error!r}")
    n = len(ts)
    w = Writer()
    w.raw(MAGIC)
    w.u8(VERSION)
    w.u8(1 if max_error > 0 else 0)
    w.varint(n)
    w.varint(CHUNK)
    if n:
        write_istream(w, ts, k)
    for start in range(0, n, CHUNK):
        chunk = vs[start:start + CHUNK]
        if max_error > 0:
            write_lossy(w, ts[start:start + CHUNK], chunk, max_error, k)
        else:
            write_values(w, chunk, k)
    return w.getvalue()


def decode(data, k):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    np = _np()
    r = Reader(bytes(data))
    if bytes(data[:3]) != MAGIC:
        raise CodecError("not a headrace series stream (magic HRZ missing)", 0)
    r.take(3)
    version = r.u8()
    if version != VERSION:
        raise CodecError(f"series format version {version} is not supported (this decoder reads {VERSION})", 3)
    r.u8()  # flags: informative (1 = lossy)
    n = r.varint(MAX_N)
    chunk = r.varint(MAX_CHUNK + 1)
    # each chunk takes at least one byte, which bounds what a short stream can make us allocate
    if not chunk:
        raise CodecError("chunk size 0", r.pos)
    # a chunk takes at least 16 bytes (a constant: kind, table, rANS states), so a
    # stream holds at most 4096 values a byte; checking this first bounds what a
    # short or hostile stream can make the decoder allocate
    if -(-n // chunk) > len(r.data) - r.pos or n > MAX_VALUES_PER_BYTE * len(r.data):
        raise CodecError(f"{n} values in chunks of {chunk} cannot fit in {len(data)} bytes", r.pos)
    ts = read_istream(r, n, k) if n else np.zeros(0, np.int64)
    parts = [read_values(r, min(chunk, n - start), ts[start:start + chunk], k) for start in range(0, n, chunk)]
    if r.pos != len(r.data):
        raise CodecError(f"{len(r.data) - r.pos} bytes after the end of the stream", r.pos)
    vs = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.float64)
    return ts, vs
