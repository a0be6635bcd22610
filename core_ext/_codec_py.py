"""Series codec, pure-Python reference: the specification of `_codec` and the decoder
the cloud side can run with nothing but numpy.

    encode(timestamps, values, *, max_error=0.0) -> bytes
    decode(data) -> (timestamps, values)

timestamps are int64 nanoseconds, values float64; numpy arrays, array.array or
lists are accepted, numpy arrays come back. With max_error=0 the round trip is
bit-exact (NaN payloads, infinities, -0.0 and subnormals included). With
max_error > 0 every decoded value is within max_error of the original and the
timestamps stay exact. decode raises CodecError on anything that is not a
valid stream. The format and the choices live in `_codec_format`; this module
holds the per-value loops ("kernels") in plain Python.
"""
from __future__ import annotations

import math
import struct
import sys
from array import array

from . import _codec_format as fmt
from ._codec_format import CodecError

__all__ = ["encode", "decode", "CodecError"]

_MASK = 0xFFFFFFFFFFFFFFFF
_RANS_L = 1 << 16
_GCD_MAX = 1 << 62
_EXACT = 2.0 ** 53
_LOW63 = 0x7FFFFFFFFFFFFFFF


def _residuals(ints: list[int], order: int) -> tuple[int, list[int]]:
    """(base, signed residuals): x - min for order 0, wrapped differences otherwise."""
    if order == 0:
        base = min(ints)
        return base, [x - base for x in ints]
    d = ints
    for _ in range(order):
        d = [fmt.wrap64(b - a) for a, b in zip(d, d[1:])]
    return 0, d


def _gcd(res: list[int]) -> int:
    g = 0
    for r in res:
        g = math.gcd(g, r)
        if g == 1:
            break
    return 1 if g == 0 or g > _GCD_MAX else g


def _unsigned(res: list[int], order: int, gcd: int) -> list[int]:
    if order == 0:
        return [r // gcd for r in res]
    return [fmt.zigzag(r // gcd) for r in res]


def analyze(ints: array, order: int) -> tuple[int, int, list[int]]:
    """(base, divisor, histogram of fine bucket symbols) of the residuals at this order."""
    base, res = _residuals(ints.tolist(), order)
    gcd = _gcd(res)
    fine = [0] * fmt.NSYM_FINE
    for u in _unsigned(res, order, gcd):
        fine[fmt.bucket(u, fmt.BUCKET_FINE)[0]] += 1
    return base, gcd, fine


def plan(ints: array) -> tuple[float, int, int, int, int, list[int]]:
    """(estimated bits, order, bucket width, base, divisor, fine histogram): the delta
    order and bucket width that code these integers smallest."""
    n = len(ints)
    if n > fmt.PLAN_FULL:
        # order and width from a sample of runs, base and divisor from every value, the
        # size estimated from the sample; the histogram comes from `encode_body`'s pass
        runs = [ints[a:a + fmt.PLAN_RUN] for a in fmt.plan_runs(n)]
        order, least, m = 0, math.inf, 0
        for o in range(3):
            fine = [0] * fmt.NSYM_FINE
            for run in runs:
                for s, c in enumerate(analyze(run, o)[2]):
                    fine[s] += c
            bits, mo = fmt.istream_cost(fine)
            if bits < least:
                order, least, m = o, bits, mo
        base, res = _residuals(list(ints), order)
        base = base if order == 0 else 0
        if not any(res):
            # every residual 0 (a regular clock, a constant): the histogram is known exactly
            fine = [len(res)] + [0] * (fmt.NSYM_FINE - 1)
            bits, m = fmt.istream_cost(fine)
            return bits, order, m, base, 1, fine
        sampled = fmt.PLAN_RUNS * (fmt.PLAN_RUN - order)
        return least * (n - order) / sampled, order, m, base, _gcd(res), None
    best = None
    for order in range(min(2, n) + 1):
        base, gcd, fine = analyze(ints, order)
        bits, m = fmt.istream_cost(fine)
        if best is None or bits < best[0]:
            best = (bits, order, m, base, gcd, fine)
    return best


def write_table(syms: array, freqs: array) -> bytes:
    """A frequency table: count, then per symbol the gap from the previous one and
    frequency - 1 (left out when one symbol has it all), as varints."""
    w = fmt.Writer()
    w.varint(len(syms))
    prev = -1
    for s, f in zip(syms.tolist(), freqs.tolist()):
        w.varint(s - prev - 1)
        if len(syms) > 1:
            w.varint(f - 1)
        prev = s
    return w.getvalue()


def read_table(data, pos: int, nsym: int) -> tuple[array, array, int]:
    """(frequency, cumulative frequency, position after) of a table from `write_table`."""
    r = fmt.Reader(data)
    r.pos = pos
    count = r.varint(nsym + 1)
    if count == 0:
        raise CodecError("empty frequency table", r.pos)
    pairs = []
    s = -1
    for _ in range(count):
        s += r.varint(nsym) + 1
        f = r.varint(fmt.PROB_SCALE) + 1 if count > 1 else fmt.PROB_SCALE
        if s >= nsym:
            raise CodecError(f"symbol {s} out of range", r.pos)
        pairs.append((s, f))
    if sum(f for _, f in pairs) != fmt.PROB_SCALE:
        raise CodecError("frequencies do not sum to the scale", r.pos)
    freq, cum = fmt.tables(pairs, nsym)
    return freq, cum, r.pos


def encode_body(ints, order: int, base: int, gcd: int, m: int) -> tuple[bytes, bytes, bytes]:
    """(frequency table bytes, rANS bytes, raw bits) of the residuals at width m, the
    frequencies from the residuals themselves (fmt.normalise)."""
    _, res = _residuals(list(ints), order)
    hist: dict[int, int] = {}
    for u in _unsigned(res, order, gcd):
        sym = fmt.bucket(u, m)[0]
        hist[sym] = hist.get(sym, 0) + 1
    pairs = fmt.normalise(dict(sorted(hist.items())))
    table = write_table(array("q", [s for s, _ in pairs]), array("q", [f for _, f in pairs]))
    freq, cum = fmt.tables(pairs, fmt.nsym_of(m))
    rans, extra = encode_ints(ints, order, base, gcd, m, freq, cum)
    return table, rans, extra


def encode_ints(ints, order, base, gcd, m, freq, cum) -> tuple[bytes, bytes]:
    _, res = _residuals(ints.tolist(), order)
    syms = []
    acc = nbits = 0
    extra = bytearray()
    for u in _unsigned(res, order, gcd):
        s, e = fmt.bucket(u, m)
        syms.append(s)
        if e:
            acc |= (u & ((1 << e) - 1)) << nbits
            nbits += e
            while nbits >= 8:
                extra.append(acc & 0xFF)
                acc >>= 8
                nbits -= 8
    if nbits:
        extra.append(acc)
    freq, cum = freq.tolist(), cum.tolist()
    # backwards, so that the decoder reads forwards; two states take turns (even and
    # odd symbols) so that a compiled decoder can work on both at once
    st = [_RANS_L, _RANS_L]
    words = []
    for i in range(len(syms) - 1, -1, -1):
        s = syms[i]
        f = freq[s]
        x = st[i & 1]
        if x >= (f << (32 - fmt.PROB_BITS)):
            words.append(x & 0xFFFF)
            x >>= 16
        st[i & 1] = ((x // f) << fmt.PROB_BITS) + x % f + cum[s]
    words.reverse()
    return struct.pack("<II", *st) + array("H", words).tobytes(), bytes(extra)


def decode_ints(n, order, heads, gcd, m, freq, cum, rans, extra) -> array:
    freq, cum = freq.tolist(), cum.tolist()
    slot_sym = [0] * fmt.PROB_SCALE
    for s, f in enumerate(freq):
        for j in range(cum[s], cum[s] + f):
            slot_sym[j] = s
    if len(rans) < 8 or len(rans) % 2:
        raise CodecError("rANS block has a bad length")
    st = list(struct.unpack_from("<II", rans))
    words = array("H", rans[8:]).tolist()
    pos = 0
    bits = int.from_bytes(extra, "little")
    bitpos = 0
    nbits = 8 * len(extra)
    direct = 2 << m
    count = n - order if order else n
    out = []
    for i in range(count):
        x = st[i & 1]
        slot = x & (fmt.PROB_SCALE - 1)
        s = slot_sym[slot]
        x = freq[s] * (x >> fmt.PROB_BITS) + slot - cum[s]
        if x < _RANS_L:
            if pos >= len(words):
                raise CodecError("rANS block ends early")
            x = (x << 16) | words[pos]
            pos += 1
        st[i & 1] = x
        if s < direct:
            u = s
        else:
            t = s - direct
            e = (t >> m) + 1
            if bitpos + e > nbits:
                raise CodecError("raw bits end early")
            low = (bits >> bitpos) & ((1 << e) - 1)
            bitpos += e
            u = (((1 << m) | (t & ((1 << m) - 1))) << e) | low
        out.append(u)
    if st != [_RANS_L, _RANS_L] or pos != len(words):
        raise CodecError("rANS block does not end where it should (corrupt stream)")
    return array("q", _integrate(out, order, heads, gcd))


def _integrate(us: list[int], order: int, heads: list[int], gcd: int) -> list[int]:
    if order == 0:
        return [fmt.wrap64(heads[0] + u * gcd) for u in us]
    d = [fmt.unzigzag(u) * gcd for u in us]
    if order == 2:
        acc = fmt.wrap64(heads[1] - heads[0])
        first = []
        for dd in d:
            acc = fmt.wrap64(acc + dd)
            first.append(acc)
        d = first
    out = list(heads)
    x = heads[-1]
    for v in d:
        x = fmt.wrap64(x + v)
        out.append(x)
    return out


def dictionary(values: array, limit: int):
    """(distinct values as ordered bit patterns, sorted; index of each value among them),
    or None past `limit` distinct."""
    seen: dict[int, int] = {}
    first = []
    for x in ordered(values).tolist():
        j = seen.get(x)
        if j is None:
            if len(seen) >= limit:
                return None
            j = seen[x] = len(seen)
        first.append(j)
    uniq = sorted(seen)
    rank = [0] * len(uniq)
    for r, x in enumerate(uniq):
        rank[seen[x]] = r
    return array("q", uniq), array("q", [rank[j] for j in first])


def ordered(values) -> array:
    """float64 bit patterns as int64 in the floats' order (-0.0 just below +0.0), NaNs kept."""
    bits = array("q")
    bits.frombytes(array("d", values).tobytes() if not isinstance(values, array) else values.tobytes())
    return array("q", [b ^ _LOW63 if b < 0 else b for b in bits])


def unordered(ints) -> array:
    """The inverse of `ordered`."""
    out = array("d")
    out.frombytes(array("q", [b ^ _LOW63 if b < 0 else b for b in ints]).tobytes())
    return out


def take(values, positions) -> array:
    """values[positions]."""
    return array("d", [values[i] for i in positions])


def decimal_counts(values, sample_size: int, max_exponent: int) -> tuple[int, list[int]]:
    """(sample size, [how many sampled values come back exactly with e digits, for e in
    0..max_exponent]): the sample is the finite values among sample_size evenly spaced ones."""
    n = len(values)
    picks = min(sample_size, n)
    sample = [v for v in (values[j * n // picks] for j in range(picks)) if math.isfinite(v)]
    counts = []
    for e in range(max_exponent + 1):
        p = 10.0 ** e
        count = 0
        for v in sample:
            x = v * p
            if abs(x) < _EXACT:
                q = round(x)
                if q / p == v and not (q == 0 and math.copysign(1.0, v) < 0):
                    count += 1
        counts.append(count)
    return len(sample), counts


def decimal_ints(values: array, e: int) -> tuple[array, array]:
    """values * 10**e as integers where that is exact; positions where it is not."""
    p = 10.0 ** e
    ints, exc = [], []
    prev = 0
    for i, v in enumerate(values.tolist()):
        x = v * p
        if abs(x) < _EXACT:
            q = round(x)
            if q / p == v and not (q == 0 and math.copysign(1.0, v) < 0):
                ints.append(q)
                prev = q
                continue
        ints.append(prev)
        exc.append(i)
    return array("q", ints), array("q", exc)


def decimal_values(ints: array, e: int) -> array:
    p = 10.0 ** e
    return array("d", [q / p for q in ints.tolist()])


def quant_ints(values: array, q: float, max_error: float) -> tuple[array, array]:
    """round(v / q) where that decodes (k * q) within max_error; positions where not."""
    ints, exc = [], []
    prev = 0
    for i, v in enumerate(values.tolist()):
        x = v / q
        if abs(x) < _EXACT:
            k = round(x)
            if abs(float(k) * q - v) <= max_error:
                ints.append(k)
                prev = k
                continue
        ints.append(prev)
        exc.append(i)
    return array("q", ints), array("q", exc)


def deadband(values: array, max_error: float) -> array:
    """Indices kept: each value that strays more than max_error from the last kept one."""
    vs = values.tolist()
    idx = [0] if vs else []
    held = vs[0] if vs else 0.0
    for i in range(1, len(vs)):
        v = vs[i]
        if not (math.isfinite(v) and math.isfinite(held) and abs(v - held) <= max_error):
            idx.append(i)
            held = v
    return array("q", idx)


def swinging_door(ts: array, values: array, max_error: float) -> array:
    """Indices kept by a swinging door of half-width max_error: a segment grows while
    the line from its anchor to the newest point stays inside every earlier point's door."""
    vs, tl = values.tolist(), ts.tolist()
    n = len(vs)
    if n == 0:
        return array("q")
    idx = [0]
    a = 0
    lo, hi = -math.inf, math.inf
    for i in range(1, n):
        v, va = vs[i], vs[a]
        dt = float(fmt.wrap64(tl[i] - tl[a]))
        if not (math.isfinite(v) and math.isfinite(va) and dt > 0):
            if i - 1 != a:
                idx.append(i - 1)
            idx.append(i)
            a, lo, hi = i, -math.inf, math.inf
            continue
        s = (v - va) / dt
        if not lo <= s <= hi:
            idx.append(i - 1)
            a = i - 1
            va = vs[a]
            dt = float(fmt.wrap64(tl[i] - tl[a]))
            lo, hi = -math.inf, math.inf
            if not (math.isfinite(va) and dt > 0):
                idx.append(i)
                a = i
                continue
        lo = max(lo, (v - max_error - va) / dt)
        hi = min(hi, (v + max_error - va) / dt)
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return array("q", idx)


_KERNELS = sys.modules[__name__]


def encode(timestamps, values, *, max_error: float = 0.0) -> bytes:
    """Compress one series; see the module docstring. Raises ValueError on bad input."""
    return fmt.encode(timestamps, values, max_error, _KERNELS)


def decode(data):
    """(timestamps int64 ns, values float64) from `encode`'s bytes; CodecError if invalid."""
    return fmt.decode(data, _KERNELS)
