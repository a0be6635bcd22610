"""Compact columns for small batches (versions 3 and 4, docs/protocol.md §7).

The series codec (core_ext.codec) spends about 40 bytes a stream on its
headers and tables, which pays off over hundreds of values; a batch of a few
seconds at a few frames a second holds tens. For those, version 3 writes each
column as variable-length integers (LEB128 of the zigzag value: 0 → 0, -1 → 1,
1 → 2 …), and the batch as a whole is then DEFLATE-compressed:

* times: integers of 10^-e seconds (e = 3, 6 or 9: the coarsest that gives every
  time back exactly), first the value, then delta-of-delta; and, when needed, a
  column of corrections in units in the last place (-4 … 4) from the double
  nearest that decimal to the time itself;
* values: integers q with v = q / 10^k or v = q · 2^-k (the scale that gives
  every value back exactly), first the value, then deltas (in version 4 as
  Exp-Golomb codes, `golomb`: a few bits for a small delta, where a varint
  takes a byte that DEFLATE's fixed Huffman code spends 8 bits or more on); a
  series with any other value (noise in every bit, NaN, infinities, -0.0) stays
  a codec stream;
* the frame table: reception times in milliseconds (deltas), sequence numbers
  as the difference to the node's previous frame of the batch plus one (0 for
  consecutive frames), node and pattern indexes;
* windows (version 4, `encode_windows`): a scale per group of fields, one run
  of varints per window, and the fields no scale gives back as doubles.

Caveats: the reception time of a frame (gateway metadata) is kept to the
millisecond; readings' times and values are exact.
"""
from __future__ import annotations

import math
import struct
import zlib

SMALL = 256  # values in a series up to which the compact form is used
_MAX_INFLATED = 64 << 20  # a deflated batch larger than this is refused (a "zip bomb" is bad input)
_TIME_EXPS = (3, 6, 9)
_MAX_ULPS = 4
_DECIMAL = 10
_BINARY = 2


class ColumnError(ValueError):
    """Compact columns that do not decode (truncated, overlong, or disagreeing counts)."""


def varints(ints) -> bytes:
    out = bytearray()
    for v in ints:
        u = (v << 1) ^ (v >> 63) if -(1 << 63) <= v < (1 << 63) else _too_big(v)
        while u >= 0x80:
            out.append(u & 0x7F | 0x80)
            u >>= 7
        out.append(u)
    return bytes(out)


def _too_big(v):
    raise OverflowError(f"{v} does not fit 64 bits")


def unvarints(data: bytes, n: int) -> list[int]:
    """Exactly n zigzag varints from data; ColumnError if there are fewer, more, or one is too long."""
    if not isinstance(data, (bytes, bytearray)):
        raise ColumnError(f"a column must be a byte string, got {type(data).__name__}")
    out = []
    u = shift = 0
    for b in data:
        u |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
            if shift > 63:
                raise ColumnError("a varint longer than 10 bytes")
            continue
        out.append((u >> 1) ^ -(u & 1))
        u = shift = 0
    if shift or len(out) != n:
        raise ColumnError(f"a column holds {len(out)} whole values, {n} expected")
    return out


_MAX_GOLOMB_K = 62


def golomb(ints) -> bytes:
    """Zigzag values in Exp-Golomb codes of order k (k: the one giving the fewest bits), bit
    by bit: k in the first byte, then each value u as w = u + 2^k, written as bitlen(w) - k - 1
    zero bits and w; the last byte padded with zeros. Small values cost a few bits, not a
    byte as a varint does: DEFLATE's fixed Huffman code gives a byte 8 bits or more."""
    us = [(v << 1) ^ (v >> 63) if -(1 << 63) <= v < (1 << 63) else _too_big(v) for v in ints]
    # Past k = bitlen(largest u) every u is below 2^k and costs k + 2 bits, more with each k: the
    # first fewest is at or below it, so only those k are tried (a column of small deltas: a
    # dozen sums over the values instead of 62; it ran on the event loop for every batch)
    top = min(_MAX_GOLOMB_K, max(us, default=0).bit_length() + 1)
    k = min(range(top), key=lambda k: sum(2 * (u + (1 << k)).bit_length() - k for u in us))
    acc = nbits = 0
    for u in us:
        w = u + (1 << k)
        length = 2 * w.bit_length() - k - 1  # the zeros, then w
        acc = acc << length | w
        nbits += length
    pad = -nbits % 8
    acc <<= pad  # zeros: every code holds a one, so the padding never reads as a value
    return bytes([k]) + acc.to_bytes((nbits + pad) // 8, "big")


def ungolomb(data: bytes, n: int) -> list[int]:
    """Exactly n values from `golomb`'s bytes; ColumnError if there are fewer or more, or one is too long."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ColumnError("a Golomb column must be a non-empty byte string")
    k = data[0]
    if k >= _MAX_GOLOMB_K:
        raise ColumnError(f"a Golomb column of order {k}")
    bits = bin(int.from_bytes(b"\x01" + data[1:], "big"))[3:]  # the leading 1 keeps the leading zeros
    out, pos = [], 0
    for _ in range(n):
        one = bits.find("1", pos)
        zeros = one - pos
        if one < 0 or zeros > 64:
            raise ColumnError(f"a Golomb column holds fewer than {n} values")
        end = one + zeros + k + 1
        if end > len(bits):
            raise ColumnError(f"a Golomb column holds fewer than {n} values")
        u = int(bits[one:end], 2) - (1 << k)
        out.append((u >> 1) ^ -(u & 1))
        pos = end
    if len(bits) - pos >= 8 or "1" in bits[pos:]:
        raise ColumnError(f"a Golomb column holds more than {n} values")
    return out


def _dod(q: list[int]) -> list[int]:
    if len(q) < 2:
        return list(q)
    return [q[0], q[1] - q[0]] + [q[i] - 2 * q[i - 1] + q[i - 2] for i in range(2, len(q))]


def _undod(d: list[int]) -> list[int]:
    out = d[:2]
    if len(d) > 1:
        out[1] = d[0] + d[1]
        delta = d[1]
        for x in d[2:]:
            delta += x
            out.append(out[-1] + delta)
    return out


def _delta(q: list[int]) -> list[int]:
    return q[:1] + [q[i] - q[i - 1] for i in range(1, len(q))]


def _undelta(d: list[int]) -> list[int]:
    out, acc = [], 0
    for x in d:
        acc += x
        out.append(acc)
    return out


def _time(q: int, e: int) -> float:
    # as batch._seconds does for nanoseconds: whole seconds plus the fraction
    unit = 10 ** e
    return q // unit + (q % unit) / unit


def encode_series(times_ns: list[int], values: list[float], version: int = 4) -> list | None:
    """[e, [base, k], times, values] for a series, or None when a value has no exact scale
    (the caller keeps the codec stream). Values' deltas in Golomb codes (version 4) or
    varints (version 3)."""
    scale = _scale(values)
    if scale is None:
        return None
    base, k = scale
    if base == _DECIMAL:
        q = [round(v * 10 ** k) for v in values]
    else:
        q = [int(math.ldexp(v, k)) for v in values]
    seconds = [_time(t, 9) for t in times_ns]  # what a decoder of the codec stream would give
    for e in _TIME_EXPS:
        div = 10 ** (9 - e)
        tq = [(t + div // 2) // div for t in times_ns]
        ulps = [_ulps(_time(q, e), t) for q, t in zip(tq, seconds)]
        if None not in ulps:
            break
    col = [e, [base, k], varints(_dod(tq)), (golomb if version >= 4 else varints)(_delta(q))]
    if any(ulps):
        col.append(varints(ulps))
    return col


def _ulps(near: float, t: float) -> int | None:
    """Steps of one unit in the last place from near to t, if at most _MAX_ULPS: a node's time
    is its base time plus an offset, both in milliseconds, added in floating point, so it
    often lies an ulp or two beside the double nearest to its millisecond."""
    sign = 1 if t > near else -1
    k = 0
    while near != t and k < _MAX_ULPS:
        near = math.nextafter(near, t)
        k += 1
    return sign * k if near == t else None


def _step(x: float, k: int) -> float:
    target = math.inf if k > 0 else -math.inf
    for _ in range(abs(k)):
        x = math.nextafter(x, target)
    return x


def decode_series(col, n: int, version: int = 4) -> tuple[list[float], list[float]]:
    """(times in seconds, values) of n readings from an encoded compact series of a batch of `version`."""
    try:
        e, (base, k), tdata, vdata, *rest = col
    except (TypeError, ValueError):
        raise ColumnError("a compact series must be [e, [base, k], times, values(, ulps)]") from None
    if len(rest) > 1:
        raise ColumnError("a compact series must be [e, [base, k], times, values(, ulps)]")
    if e not in _TIME_EXPS or base not in (_DECIMAL, _BINARY) or not isinstance(k, int) or not 0 <= k <= 1074:
        raise ColumnError(f"a compact series with an unknown time unit or scale: {e!r}, {[base, k]!r}")
    ts = [_time(t, e) for t in _undod(unvarints(tdata, n))]
    if rest:
        ulps = unvarints(rest[0], n)
        if any(abs(u) > _MAX_ULPS for u in ulps):
            raise ColumnError(f"a time correction beyond {_MAX_ULPS} units in the last place")
        ts = [_step(t, u) if u else t for t, u in zip(ts, ulps)]
    q = _undelta((ungolomb if version >= 4 else unvarints)(vdata, n))
    vs = [x / 10 ** k for x in q] if base == _DECIMAL else [math.ldexp(float(x), -k) for x in q]
    return ts, vs


def _scale(values: list[float]) -> tuple[int, int] | None:
    """The decimal or binary scale that turns every value into an exact integer, the one
    giving the smaller integers (a sensor quantising to 1/128 is 7 binary digits, not 7
    decimal ones)."""
    for v in values:
        if not math.isfinite(v) or abs(v) >= 2 ** 53 or (v == 0 and math.copysign(1.0, v) < 0):
            return None
    found = []
    for k in range(10):
        s = 10 ** k
        if all(abs(v) * s < 2 ** 53 and round(v * s) / s == v for v in values):
            found.append((10 ** k, _DECIMAL, k))
            break
    for k in range(53):
        if all(abs(math.ldexp(v, k)) < 2 ** 53 and math.ldexp(v, k).is_integer() for v in values):
            found.append((2 ** k, _BINARY, k))
            break
    return min(found)[1:] if found else None


def encode_table(received: list[float], seqs: list[int], nodes: list[int], patterns: list[int]) -> list[bytes]:
    """The frame table: [received ms, seqs, node indexes, pattern indexes], as varint columns."""
    ms = [round(r * 1000) for r in received]
    last: dict[int, int] = {}
    gaps = []
    for ni, s in zip(nodes, seqs):
        gaps.append(s - last[ni] - 1 if ni in last else s)
        last[ni] = s
    return [varints(_delta(ms)), varints(gaps), varints(nodes), varints(patterns)]


def decode_table(table, n: int | None = None) -> tuple[list[float], list[int], list[int], list[int]]:
    """(received s, seqs, node indexes, pattern indexes) of the frame table."""
    if not (isinstance(table, (list, tuple)) and len(table) == 4 and isinstance(table[2], (bytes, bytearray))):
        raise ColumnError("the frame table must be four byte strings")
    if n is None:
        n = sum(1 for b in table[2] if not b & 0x80)
    ms = _undelta(unvarints(table[0], n))
    gaps, nodes, patterns = (unvarints(c, n) for c in table[1:])
    last: dict[int, int] = {}
    seqs = []
    for ni, g in zip(nodes, gaps):
        s = last[ni] + 1 + g if ni in last else g
        seqs.append(s)
        last[ni] = s
    return [m / 1000 for m in ms], seqs, nodes, patterns


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951), no zlib header."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def inflate(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray)):
        raise ColumnError("the deflated part must be a byte string")
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data, _MAX_INFLATED)
    except zlib.error as exc:
        raise ColumnError(f"the deflated part does not inflate: {exc}") from None
    if d.unconsumed_tail:
        raise ColumnError(f"the deflated part inflates to more than {_MAX_INFLATED} bytes")
    if not d.eof:
        raise ColumnError("the deflated part is cut short")
    return out


# -- windows (version 4) ---------------------------------------------------------------------

_WINDOW_FLOATS = (1, 2, 4, 5, 6, 7, 8, 9, 10)  # width, start, min, max, sum, sumsq, first, last, twa
_WINDOW_INTS = (3, 11)  # count, correction
# the fields each scale covers: (width, start), (min, max, first, last), sum, sumsq, twa
_WINDOW_GROUPS = ((1, 2), (4, 5, 8, 9), (6,), (7,), (10,))


def _q(values: list[float], scale) -> list[int]:
    base, k = scale
    return [round(v * 10 ** k) for v in values] if base == _DECIMAL else [int(math.ldexp(v, k)) for v in values]


def _unq(q: int, scale) -> float:
    base, k = scale
    return q / 10 ** k if base == _DECIMAL else math.ldexp(float(q), -k)


def encode_windows(windows: list, node_index) -> list | None:
    """Windows ([series, width, start, count, min, max, sum, sumsq, first, last, twa,
    correction] each) as [n, sensors, scales, rows, doubles]: n windows; the distinct
    sensor names; for each group of fields — (width, start), (min, max, first, last),
    sum, sumsq, twa — a decimal or binary scale that gives each back exactly, or null;
    one run of zigzag varints per window (node index, sensor index, count, correction,
    then the scaled groups' integers: width and start as deltas to the window before,
    min, then max, first and last less min, sum, sumsq, twa); the fields of the groups
    without a scale as doubles (little-endian), window after window. `node_index(name)`
    gives a node's index in the batch. None when a window is not of that form."""
    if not windows:
        return None
    sensors: dict[str, int] = {}
    for w in windows:
        if not (isinstance(w, list) and len(w) == 12 and type(w[0]) is str and "/" in w[0]
                and all(type(w[i]) is float for i in _WINDOW_FLOATS) and all(type(w[i]) is int for i in _WINDOW_INTS)):
            return None
        sensors.setdefault(w[0].partition("/")[2], len(sensors))
    scales, q = [], {}
    for fields in _WINDOW_GROUPS:
        scale = _scale([w[i] for w in windows for i in fields])
        scales.append(list(scale) if scale else None)
        for i in fields:
            q[i] = _q([w[i] for w in windows], scale) if scale else None
    rows, doubles, prev = [], [], (0, 0)
    for j, w in enumerate(windows):
        node, _, sensor = w[0].partition("/")
        rows += [node_index(node), sensors[sensor], w[3], w[11]]
        if q[1]:
            rows += [q[1][j] - prev[0], q[2][j] - prev[1]]
            prev = (q[1][j], q[2][j])
        if q[4]:
            lo = q[4][j]
            rows += [lo, q[5][j] - lo, q[8][j] - lo, q[9][j] - lo]
        rows += [q[i][j] for i in (6, 7, 10) if q[i]]
        doubles += [w[i] for fields, scale in zip(_WINDOW_GROUPS, scales) if not scale for i in fields]
    try:
        packed = varints(rows)
    except OverflowError:  # a count past 64 bits: kept as it is
        return None
    return [len(windows), list(sensors), scales, packed, struct.pack(f"<{len(doubles)}d", *doubles)]


def decode_windows(cols, nodes: list[str]) -> list[list]:
    """The windows back, each a list as `encode_windows` took it."""
    try:
        n, sensors, scales, packed, doubles = cols
        if not (isinstance(n, int) and 0 <= n < 1 << 20 and isinstance(sensors, (list, tuple))
                and all(type(x) is str for x in sensors) and isinstance(doubles, (bytes, bytearray))
                and isinstance(scales, (list, tuple)) and len(scales) == len(_WINDOW_GROUPS)):
            raise ValueError
        scales = [None if sc is None else (sc[0], sc[1]) for sc in scales]
    except (TypeError, ValueError, IndexError, KeyError):
        raise ColumnError("window columns must be [n, sensors, 5 scales, rows, doubles]") from None
    for sc in scales:
        if sc is not None and (sc[0] not in (_DECIMAL, _BINARY) or not isinstance(sc[1], int)
                               or not 0 <= sc[1] <= 1074):
            raise ColumnError(f"window columns with an unknown scale: {sc!r}")
    per_row = 4 + sum(len(f) for f, sc in zip(_WINDOW_GROUPS, scales) if sc)
    raw_fields = [i for f, sc in zip(_WINDOW_GROUPS, scales) if not sc for i in f]
    if len(doubles) != 8 * n * len(raw_fields):
        raise ColumnError(f"window columns hold {len(doubles)} bytes of doubles, {8 * n * len(raw_fields)} expected")
    rows = unvarints(packed, per_row * n)
    raw = struct.unpack(f"<{n * len(raw_fields)}d", doubles)
    out, prev = [], (0, 0)
    tsc, vsc, ssc, qsc, asc = scales
    for j in range(n):
        r = iter(rows[per_row * j:per_row * (j + 1)])
        d = iter(raw[len(raw_fields) * j:len(raw_fields) * (j + 1)])
        ni, si, count, corr = next(r), next(r), next(r), next(r)
        if not (0 <= ni < len(nodes) and 0 <= si < len(sensors)):
            raise ColumnError(f"a window of node {ni} and sensor {si}, which the batch does not name")
        w = [f"{nodes[ni]}/{sensors[si]}", 0.0, 0.0, count, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, corr]
        if tsc:
            prev = (prev[0] + next(r), prev[1] + next(r))
            w[1], w[2] = _unq(prev[0], tsc), _unq(prev[1], tsc)
        if vsc:
            lo = next(r)
            w[4], w[5], w[8], w[9] = (_unq(lo, vsc), _unq(lo + next(r), vsc), _unq(lo + next(r), vsc),
                                      _unq(lo + next(r), vsc))
        for i, sc in ((6, ssc), (7, qsc), (10, asc)):
            if sc:
                w[i] = _unq(next(r), sc)
        for i in raw_fields:
            w[i] = next(d)
        out.append(w)
    return out
