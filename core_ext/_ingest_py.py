"""SenML-CBOR payloads straight into columns: the pure-Python reference.

`Parser.parse(payload, now)` walks one SenML pack (RFC 8428, CBOR labels) and
appends its numeric readings to three columns — series id (int64), time
(float64 seconds since the epoch) and value (float64) — and its string, boolean
and data values to `other` as (sid, time, value). Series names (base name +
name) are interned in a table: `names[sid]`.

What it accepts is what RFC 8428 allows in CBOR: base name, time, unit, value and
sum (bn bt bu bv bs), base version, name, unit, value, string/boolean/data value,
sum, time, update time; integer or float numbers; times below 2**28 relative to
`now`; definite or indefinite-length arrays and maps. Unknown labels are
ignored, except text labels ending in "_" (must-understand, §4.4), which are an
error.

Errors: `IngestError(offset, message)` names the byte offset of the offending
item. A payload is taken whole or not at all: on error nothing of it reaches
the columns. Bounds: at most `max_records` records per payload and `max_series`
series in the table (IngestError past them), 16 levels of nesting.
"""
from __future__ import annotations

import math
import struct
from array import array

from gateway.protocol.numbers import (
    SENML_BN,
    SENML_BS,
    SENML_BT,
    SENML_BU,
    SENML_BV,
    SENML_BVER,
    SENML_N,
    SENML_RELATIVE_TIME_LIMIT,
    SENML_S,
    SENML_T,
    SENML_U,
    SENML_UT,
    SENML_V,
    SENML_VB,
    SENML_VD,
    SENML_VS,
)

RELATIVE_TIME_LIMIT = float(SENML_RELATIVE_TIME_LIMIT)
_LABELS = {SENML_BS: "bs", SENML_BV: "bv", SENML_BU: "bu", SENML_BT: "bt", SENML_BN: "bn", SENML_BVER: "bver",
           SENML_N: "n", SENML_U: "u", SENML_V: "v", SENML_VS: "vs", SENML_VB: "vb", SENML_S: "s", SENML_T: "t",
           SENML_UT: "ut", SENML_VD: "vd"}
_BREAK = object()


class IngestError(ValueError):
    """A payload that is not a valid SenML-CBOR pack; `offset` is where, in bytes."""

    def __init__(self, offset: int, message: str):
        self.offset = offset
        super().__init__(f"at byte {offset}: {message}")


def _valid_name(name: bytes) -> bool:
    # RFC 8428 §4.5.1: a letter or digit first; then letters, digits, - : . / _
    if not 0 < len(name) <= 128 or not (chr(name[0]).isalnum() and name[0] < 128):
        return False
    return all(c < 128 and (chr(c).isalnum() or c in b"-:./_") for c in name)


class _Reader:
    """A small CBOR reader over bytes that reports offsets."""

    __slots__ = ("d", "p", "depth")

    def __init__(self, data: bytes):
        self.d, self.p, self.depth = data, 0, 0

    def head(self) -> tuple[int, int, int, int]:
        """(major, info, argument or -1 for indefinite, offset of the item)."""
        d, p = self.d, self.p
        if p >= len(d):
            raise IngestError(p, "truncated: expected a CBOR item")
        ib = d[p]
        major, info = ib >> 5, ib & 31
        if info < 24:
            self.p = p + 1
            return major, info, info, p
        if info > 27:
            if info == 31 and major in (2, 3, 4, 5, 7):
                self.p = p + 1
                return major, info, -1, p
            raise IngestError(p, f"reserved additional information {info}")
        n = 1 << (info - 24)
        if p + 1 + n > len(d):
            raise IngestError(p, "truncated: the item's argument runs past the end")
        self.p = p + 1 + n
        return major, info, int.from_bytes(d[p + 1:p + 1 + n], "big"), p

    def item(self):
        """Any item as a Python value (ints, floats, str, bytes, bool, None, lists, dicts)."""
        major, info, arg, at = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major in (2, 3):
            if arg < 0:
                raise IngestError(at, "indefinite-length strings are not supported")
            end = self.p + arg
            if end > len(self.d):
                raise IngestError(at, "truncated: the string runs past the end")
            raw = self.d[self.p:end]
            self.p = end
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise IngestError(at, "text string is not valid UTF-8") from None
        if major in (4, 5):
            self.depth += 1
            if self.depth > 16:
                raise IngestError(at, "nested more than 16 levels")
            if major == 4:
                out = []
                while arg < 0 or len(out) < arg:
                    x = self.item()
                    if x is _BREAK:
                        if arg >= 0:
                            raise IngestError(self.p - 1, "break inside a definite-length array")
                        break
                    out.append(x)
            else:
                out = {}
                count = 0
                while arg < 0 or count < arg:
                    kat = self.p
                    k = self.item()
                    if k is _BREAK:
                        if arg >= 0:
                            raise IngestError(kat, "break inside a definite-length map")
                        break
                    if isinstance(k, (list, dict)):
                        raise IngestError(kat, "map key must be an integer or a string")
                    if isinstance(k, (bool, float)) or k is None:
                        k = (type(k).__name__, k)  # never a SenML label (in Python False == 0 and 2.0 == 2)
                    v = self.item()
                    if v is _BREAK:
                        raise IngestError(self.p - 1, "break where a map value belongs")
                    out[k] = v
                    count += 1
            self.depth -= 1
            return out
        if major == 6:
            raise IngestError(at, f"tag {arg}: SenML uses no CBOR tags")
        # major 7
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return struct.unpack(">e", arg.to_bytes(2, "big"))[0]
        if info == 26:
            return struct.unpack(">f", arg.to_bytes(4, "big"))[0]
        if info == 27:
            return struct.unpack(">d", arg.to_bytes(8, "big"))[0]
        if arg < 0:
            return _BREAK
        raise IngestError(at, f"unsupported simple value {arg}")


def _num(x, at: int, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise IngestError(at, f"{what} must be a number")
    return float(x)


def _resolve(base, rec: dict, label: int, at: int, what: str) -> float:
    """Base value plus the record's value (RFC 8428 §4.1); either may be absent; a lone -0.0 keeps its sign."""
    if label not in rec:
        return base
    value = _num(rec[label], at, what)
    return value if base is None else base + value


class Parser:
    """Parse SenML-CBOR payloads into columns; intern series names."""

    def __init__(self, max_series: int = 100_000, max_records: int = 512):
        self.max_series = max_series
        self.max_records = max_records
        self.names: list[str] = []
        self._ids: dict[bytes, int] = {}
        self.sids = array("q")
        self.times = array("d")
        self.values = array("d")
        self.other: list[tuple[int, float, object]] = []

    def __len__(self) -> int:
        """Numeric readings waiting in the columns."""
        return len(self.sids)

    def series_id(self, name: str) -> int:
        """The id of a series, interned on first use."""
        return self._intern(name.encode(), 0)

    def _intern(self, key: bytes, at: int) -> int:
        sid = self._ids.get(key)
        if sid is None:
            if len(self.names) >= self.max_series:
                raise IngestError(at, f"more than max_series={self.max_series} series")
            sid = self._ids[key] = len(self.names)
            self.names.append(key.decode("ascii"))
        return sid

    def take(self):
        """(sids, times, values, other) gathered so far; the parser starts empty again."""
        out = (self.sids, self.times, self.values, self.other)
        self.sids, self.times, self.values, self.other = array("q"), array("d"), array("d"), []
        return out

    def parse(self, payload, now: float) -> int:
        """Append one pack's readings; returns how many numeric readings it held."""
        data = bytes(payload)
        r = _Reader(data)
        major, _info, count, at = r.head()
        if major != 4:
            raise IngestError(at, "a SenML pack must be an array of records")
        rows: list = []
        other: list = []
        bn, bt, bv, bs = b"", 0.0, None, None
        n = 0
        while count < 0 or n < count:
            rat = r.p
            rec = r.item()
            if rec is _BREAK:
                if count >= 0:
                    raise IngestError(rat, "break inside a definite-length array")
                break
            n += 1
            if n > self.max_records:
                raise IngestError(rat, f"more than max_records={self.max_records} records")
            if not isinstance(rec, dict):
                raise IngestError(rat, f"record {n - 1} is not a map")
            for k in rec:
                if isinstance(k, str) and k.endswith("_"):
                    raise IngestError(rat, f"record {n - 1} has a must-understand label {k!r}")
            if SENML_BN in rec:
                if not isinstance(rec[SENML_BN], str):
                    raise IngestError(rat, f"record {n - 1}: bn must be text")
                bn = rec[SENML_BN].encode()
            if SENML_BT in rec:
                bt = _num(rec[SENML_BT], rat, "bt")
            if SENML_BV in rec:
                bv = _num(rec[SENML_BV], rat, "bv")
            if SENML_BS in rec:
                bs = _num(rec[SENML_BS], rat, "bs")
            kinds = [k for k in (SENML_V, SENML_VS, SENML_VB, SENML_VD, SENML_S) if k in rec]
            if not kinds:
                if bv is None and bs is None:
                    if SENML_N in rec or SENML_T in rec:
                        raise IngestError(rat, f"record {n - 1} has no value")
                    continue  # base fields only
            elif len(kinds) > 1 and kinds != [SENML_V, SENML_S]:
                raise IngestError(rat, f"record {n - 1} has several values")
            name = rec.get(SENML_N, "")
            if not isinstance(name, str):
                raise IngestError(rat, f"record {n - 1}: n must be text")
            full = bn + name.encode()
            if not _valid_name(full):
                raise IngestError(rat, f"record {n - 1}: invalid name {full!r}")
            t = bt + (_num(rec[SENML_T], rat, "t") if SENML_T in rec else 0.0)
            if not math.isfinite(t):
                raise IngestError(rat, f"record {n - 1}: time is not finite")
            if t < RELATIVE_TIME_LIMIT:
                t += now
            if SENML_V in rec or (not kinds and bv is not None):
                rows.append((full, t, _resolve(bv, rec, SENML_V, rat, "v"), rat))
            elif SENML_S in rec or (not kinds and bs is not None):
                rows.append((full, t, _resolve(bs, rec, SENML_S, rat, "s"), rat))
            else:
                k = kinds[0]
                value = rec[k]
                want = {SENML_VS: str, SENML_VB: bool, SENML_VD: bytes}[k]
                if not isinstance(value, want):
                    raise IngestError(rat, f"record {n - 1}: {_LABELS[k]} must be {want.__name__}")
                other.append((full, t, value, rat))
        if r.p != len(data):
            raise IngestError(r.p, "bytes after the end of the pack")
        if not rows and not other:
            raise IngestError(0, "the pack holds no reading")
        # all checks passed: intern in record order, then append (a failure above appended nothing)
        before = len(self.names)
        staged = sorted(rows + other, key=lambda r: r[3])
        try:
            ids = {at: self._intern(full, at) for full, _t, _v, at in staged}
        except IngestError:
            for name in self.names[before:]:
                del self._ids[name.encode()]
            del self.names[before:]
            raise
        for full, t, v, at in rows:
            self.sids.append(ids[at])
            self.times.append(t)
            self.values.append(v)
        self.other.extend((ids[at], t, v) for _f, t, v, at in other)
        return len(rows)


_NS = 1_000_000_000


def spread(cols, times, values) -> None:
    """Reading i of a frame to its series' columns: cols[i][0] gets its time as integer
    nanoseconds (whole seconds times 10^9 plus the rounded fraction: the exact form the
    uplink's batches keep), cols[i][1] its value. `times` and `values` are what `take()`
    gives for one frame; `cols` a pair of lists per reading. The uplink's per-reading loop
    (gateway/runtime/uplink/batch.py), compiled in _ingest. ValueError when the lengths differ."""
    if len(times) != len(cols) or len(values) != len(cols):
        raise ValueError(f"{len(cols)} columns for {len(times)} times and {len(values)} values")
    for col, t, v in zip(cols, times, values):
        sec = int(t)
        col[0].append(sec * _NS + round((t - sec) * _NS))
        col[1].append(v)


def frame_ns(t) -> int:
    """A reception time in seconds as integer nanoseconds, as `spread` gives a reading's."""
    sec = int(t)
    return sec * _NS + round((t - sec) * _NS)


def spread_frames(parser, frames, nodes: dict, known: dict, entry, table) -> list:
    """The uplink batch's per-frame loop (gateway/runtime/uplink/batch.py), compiled in _ingest.

    Each of `frames`, a spooled frame body (CBOR `[node, seq, received, senml]`), is parsed
    with `parser`, which must hold no readings (ValueError). `nodes` maps a node's name to
    its index (a node not in it gets the next one). The frame's numeric readings are spread
    (as `spread` does) to the columns of `known[(node index, sids.tobytes())]`, a pair
    (pattern index, a pair of columns per reading: lists, or arrays of 'q' and 'd') that
    `entry(node index, node, sids)` makes the first time (`sids`: the frame's series ids as `take()` gives them). `table`, four
    lists, gets each frame's row: its reception time in integer nanoseconds (`frame_ns`),
    sequence number, node index and pattern index.

    Returns `[(frame index, node, other), ...]` for the frames with text, boolean or data
    values (`other` as `take()` gives it). Errors of the body (cbor2's, its shape's) and of
    `parse` propagate, with the frames before it already in `table`.
    """
    import cbor2  # the gateway's; the core's other functions run without it

    if len(parser):
        raise ValueError(f"spread_frames needs a parser holding no readings ({len(parser)} waiting)")
    received, seqs, node_col, pattern_col = table
    out = []
    for fi, body in enumerate(frames):
        node, seq, recv, senml = cbor2.loads(body)
        ni = nodes.setdefault(node, len(nodes))
        parser.parse(senml, recv)
        sids, ts, vs, oth = parser.take()
        key = (ni, sids.tobytes())
        found = known.get(key)
        if found is None:
            found = known[key] = entry(ni, node, sids)
        pidx, cols = found
        spread(cols, ts, vs)
        received.append(frame_ns(recv))
        seqs.append(seq)
        node_col.append(ni)
        pattern_col.append(pidx)
        if oth:
            out.append((fi, node, oth))
    return out


def frame_body(node: str, seq: int, received: float, senml: bytes) -> bytes:
    """The spool's body of one accepted frame: CBOR `[node, seq, received, senml]` exactly as
    `cbor2.dumps` writes it (what batch.encode and the sink read back). Compiled in _ingest
    for the gateway's case (a text node, an unsigned sequence number, a finite float time,
    bytes); anything else is cbor2's."""
    import cbor2

    return cbor2.dumps([node, seq, received, senml])
