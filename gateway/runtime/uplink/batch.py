"""The uplink data batch (version 2), documented in docs/protocol.md §7.

A batch is one CBOR map published on `headrace/v1/<site>/<gateway>/data`. Its
raw readings are compressed with the series codec (core_ext.codec, docs/codec.md):

    {"v": 2, "gw": "<gateway>", "site": "<site>",
     "nodes": [node, ...], "patterns": [[sensor, ...], ...],
     "frames": [codec(received ns, seq), codec(node index, pattern index)],
     "sensors": [[sensor, codec(time ns, value), [[node index, count], ...]], ...],
     "other":  [[frame index, sensor, time, value], ...],
     "windows": [[series, width, start, count, min, max, sum, sumsq, first, last, twa, correction], ...]}

Each accepted frame is a row of the frame table: its node, sequence number and
reception time, and its pattern, the sensors of its numeric readings in record
order (nodes repeat one pattern frame after frame, so it is stored once). The
readings of one sensor name, across every node of the batch, make one codec
stream (sensors of one name share units and precision, and one stream a name
keeps the per-stream cost low when a batch holds one frame from each of
hundreds of nodes), node after node, each node's readings in frame order, with
their counts. Walking the frames gives every frame's readings back exactly, in
record order: (node, seq) still identifies each frame, and a consumer drops a
frame it has seen (at-least-once delivery made exactly-once). Text, boolean
and data values go in `other`, as they are.

Version 1 batches (the SenML packs spliced as they arrived) are still read.
"""
from __future__ import annotations

import math
from typing import Iterator

import cbor2
from array import array

from core_ext import codec
from core_ext.ingest import Parser

VERSION = 2
VERSIONS = (1, 2)  # read; events batches are version 1 (gateway/runtime/uplink/events.py)
NS = 1_000_000_000
WINDOW_FIELDS = ("series", "width", "start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa",
                 "correction")


def cbor_head(major: int, n: int) -> bytes:
    """A CBOR head (RFC 8949 §3): major type and count, for splicing encoded items."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def _ns(t: float) -> int:
    """Seconds to integer nanoseconds, exactly enough that `_seconds` gives t back."""
    sec = int(t)
    return sec * NS + round((t - sec) * NS)


def _seconds(ns) -> list[float]:
    # ns: the int64 numpy array a decoded codec stream gives
    return (ns // NS + (ns % NS) / NS).tolist()


def _sensor(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def frame_body(node: str, seq: int, received: float, senml: bytes) -> bytes:
    """Spool body of one accepted frame."""
    return cbor2.dumps([node, seq, received, senml])


def window_body(series: str, width: float, start: float, count: int, vmin: float, vmax: float,
                vsum: float, sumsq: float, first: float, last: float, twa: float, correction: int) -> bytes:
    return cbor2.dumps([series, width, start, count, vmin, vmax, vsum, sumsq, first, last, twa, correction])


def encode(gateway: str, site: str, frames: list[bytes], windows: list[bytes]) -> bytes:
    """One batch from spooled frame and window bodies: frames parsed again and their
    numeric readings compressed per series; windows spliced as they are."""
    parser = Parser()
    nodes: dict[str, int] = {}
    patterns: dict[tuple, int] = {}
    series: dict[tuple[int, str], tuple[list, list]] = {}
    received, seqs, node_col, pattern_col, other = [], [], [], [], []
    # a node sends one pattern frame after frame: its sensors, its pattern index and its
    # columns are looked up once per (node, series ids), not per reading
    known: dict[tuple[int, bytes], tuple[int, list]] = {}
    for fi, body in enumerate(frames):
        node, seq, recv, senml = cbor2.loads(body)
        ni = nodes.setdefault(node, len(nodes))
        parser.parse(senml, recv)
        sids, ts, vs, oth = parser.take()
        entry = known.get((ni, sids.tobytes()))
        if entry is None:
            prefix = node + "/"
            pattern = tuple(_sensor(parser.names[sid], prefix) for sid in sids)
            entry = known[(ni, sids.tobytes())] = (patterns.setdefault(pattern, len(patterns)),
                                                   [series.setdefault((ni, s), ([], [])) for s in pattern])
        pidx, cols = entry
        for col, t, v in zip(cols, ts, vs):
            sec = int(t)  # _ns(t), inline: this loop runs for every reading of the batch
            col[0].append(sec * NS + round((t - sec) * NS))
            col[1].append(v)
        if oth:
            prefix = node + "/"
            other += [[fi, _sensor(parser.names[sid], prefix), t, v] for sid, t, v in oth]
        received.append(_ns(recv))
        seqs.append(seq)
        node_col.append(ni)
        pattern_col.append(pidx)
    body = {
        "v": VERSION, "gw": gateway, "site": site,
        "nodes": list(nodes), "patterns": [list(p) for p in patterns],
        # array.array, not numpy: the gateway encodes batches without numpy loaded (13 MB less)
        "frames": [codec.encode(array("q", received), array("d", seqs)),
                   codec.encode(array("q", node_col), array("d", pattern_col))],
        "sensors": _sensor_streams(series),
        "other": other,
    }
    head = cbor2.dumps(body)
    # the map gets one more entry, spliced: the windows as spooled, not re-encoded
    return b"".join([cbor_head(5, len(body) + 1), head[1:], cbor2.dumps("windows"), cbor_head(4, len(windows)), *windows])


def _sensor_streams(series: dict[tuple[int, str], tuple[list, list]]) -> list:
    by_sensor: dict[str, list[int]] = {}
    for ni, sensor in series:
        by_sensor.setdefault(sensor, []).append(ni)
    out = []
    for sensor, nodes in by_sensor.items():
        ts: list[int] = []
        vs: list[float] = []
        counts = []
        for ni in nodes:
            t, v = series[(ni, sensor)]
            ts += t
            vs += v
            counts.append([ni, len(t)])
        out.append([sensor, codec.encode(array("q", ts), array("d", vs)), counts])
    return out


class BatchError(ValueError):
    """Not a headrace batch, or a version this decoder does not know."""


def decode(data: bytes) -> dict:
    """Parse a batch into a dict (its codec streams still compressed; `readings()`
    opens them); raise BatchError with what is wrong."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:
        raise BatchError(f"not CBOR: {exc}") from None
    if not hasattr(obj, "get") or "v" not in obj:
        raise BatchError("not a headrace batch: expected a CBOR map with a 'v' key")
    if obj["v"] not in VERSIONS:
        raise BatchError(f"batch version {obj['v']!r} is not supported by this decoder (knows {VERSIONS})")
    return obj


def readings(batch: dict) -> Iterator[tuple[str, int, float, list[tuple[str, float, object]]]]:
    """(node, seq, received, [(sensor, time, value), ...]) per frame, in batch order:
    numeric readings in record order, then text, boolean and data values. Times in
    seconds since the epoch. Raises BatchError on a batch whose parts disagree."""
    if batch.get("v") == 1:
        for node, seq, received, senml in batch.get("frames", ()):
            yield node, seq, received, frame_readings(node, received, senml)
        return
    try:
        frames = batch.get("frames") or []
        if not frames:
            return
        received, seqs = codec.decode(frames[0])
        node_col, pattern_col = codec.decode(frames[1])
        nodes, patterns = batch["nodes"], batch["patterns"]
        cols = {}
        for sensor, data, counts in batch.get("sensors", ()):
            ts, vs = codec.decode(data)
            ts, vs = _seconds(ts), vs.tolist()
            start = 0
            for ni, n in counts:
                cols[(ni, sensor)] = [ts[start:start + n], vs[start:start + n], 0]
                start += n
            if start != len(ts):
                raise ValueError(f"the counts of sensor {sensor!r} do not add up to its stream")
        other: dict[int, list] = {}
        for fi, sensor, t, v in batch.get("other", ()):
            other.setdefault(fi, []).append((sensor, t, v))
        received = _seconds(received)
        for fi in range(len(received)):
            ni = int(node_col[fi])
            out = []
            for sensor in patterns[int(pattern_col[fi])]:
                col = cols[(ni, sensor)]
                out.append((sensor, col[0][col[2]], col[1][col[2]]))
                col[2] += 1
            yield nodes[ni], int(seqs[fi]), received[fi], out + other.get(fi, [])
        if any(col[2] != len(col[0]) for col in cols.values()):
            raise ValueError("a series holds readings no frame's pattern takes")
    except (codec.CodecError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise BatchError(f"inconsistent batch: {type(exc).__name__}: {exc}") from None


def frame_ids(batch: dict) -> list[tuple[str, int]]:
    """(node, seq) of every frame in a batch, in order, without opening the series."""
    if batch.get("v") == 1:
        return [(f[0], f[1]) for f in batch.get("frames", ())]
    frames = batch.get("frames") or []
    if not frames:
        return []
    try:
        _, seqs = codec.decode(frames[0])
        node_col, _ = codec.decode(frames[1])
        return [(batch["nodes"][int(n)], int(s)) for n, s in zip(node_col, seqs)]
    except (codec.CodecError, KeyError, IndexError) as exc:
        raise BatchError(f"inconsistent batch: {exc}") from None


def frame_readings(node: str, received: float, senml: bytes) -> list[tuple[str, float, object]]:
    """(sensor, time, value) of one frame: its numeric readings in record order, then its text,
    boolean and data values in record order. Sensor names lose their 'node/' prefix."""
    parser = Parser()
    parser.parse(senml, received)
    sids, ts, vs, other = parser.take()
    prefix = node + "/"
    names = [_sensor(n, prefix) for n in parser.names]
    return [(names[sid], t, v) for sid, t, v in zip(sids, ts, vs)] + [(names[sid], t, v) for sid, t, v in other]


def rows(batch: dict) -> Iterator[dict]:
    """One dict per reading or window, ready for JSON Lines."""
    gw = batch.get("gw")
    for node, seq, _received, frame in readings(batch):
        for sensor, t, value in frame:
            if isinstance(value, bytes):
                value = value.hex()
            yield {"gw": gw, "node": node, "seq": seq, "sensor": sensor, "t": t, "v": value}
    windows = batch.get("windows", ())
    if not isinstance(windows, (list, tuple)):
        raise BatchError(f"inconsistent batch: windows must be a list, got {type(windows).__name__}")
    for w in windows:
        yield _window_row(gw, w)


def _window_row(gw, w) -> dict:
    if not (isinstance(w, list) and len(w) == len(WINDOW_FIELDS) and isinstance(w[0], str)
            and all(isinstance(x, (int, float)) for x in w[1:])):
        raise BatchError(f"inconsistent batch: a window must be [series, {len(WINDOW_FIELDS) - 1} numbers], "
                         f"got {w!r:.80}")
    row = dict(zip(WINDOW_FIELDS, w))
    node, _, sensor = row["series"].partition("/")
    count = row["count"]
    mean = row["sum"] / count if count else math.nan
    return {"gw": gw, "node": node, "sensor": sensor, "window": {"start": row["start"], "width": row["width"]},
            "count": count, "min": row["min"], "max": row["max"], "mean": mean,
            "first": row["first"], "last": row["last"], "sumsq": row["sumsq"], "twa": row["twa"],
            "correction": bool(row["correction"])}
