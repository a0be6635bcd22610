"""The uplink batch format (version 1), documented in docs/protocol.md §7.

A batch is one CBOR map published on `headrace/v1/<site>/<gateway>/data`:

    {"v": 1, "gw": "<gateway>", "site": "<site>",
     "frames":  [[node, seq, received, senml], ...],
     "windows": [[series, width, start, count, min, max, sum, sumsq, first, last, twa, correction], ...]}

`frames` carry each node's verified SenML pack as it arrived (CBOR bytes),
with the (node, seq) that identifies it and the gateway's reception time, which
resolves relative SenML times. A consumer drops a frame it has seen, which makes
the at-least-once uplink exactly-once. Batches are built by splicing the spooled
CBOR bodies, not by re-encoding them.
"""
from __future__ import annotations

import math
from typing import Iterator

import cbor2

from core_ext.ingest import Parser

VERSION = 1
WINDOW_FIELDS = ("series", "width", "start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa",
                 "correction")


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def frame_body(node: str, seq: int, received: float, senml: bytes) -> bytes:
    """Spool body of one accepted frame."""
    return cbor2.dumps([node, seq, received, senml])


def window_body(series: str, width: float, start: float, count: int, vmin: float, vmax: float,
                vsum: float, sumsq: float, first: float, last: float, twa: float, correction: int) -> bytes:
    return cbor2.dumps([series, width, start, count, vmin, vmax, vsum, sumsq, first, last, twa, correction])


def encode(gateway: str, site: str, frames: list[bytes], windows: list[bytes]) -> bytes:
    """Splice spooled bodies into one batch."""
    return b"".join([
        _head(5, 5),
        cbor2.dumps("v"), cbor2.dumps(VERSION),
        cbor2.dumps("gw"), cbor2.dumps(gateway),
        cbor2.dumps("site"), cbor2.dumps(site),
        cbor2.dumps("frames"), _head(4, len(frames)), *frames,
        cbor2.dumps("windows"), _head(4, len(windows)), *windows,
    ])


class BatchError(ValueError):
    """Not a headrace batch, or a version this decoder does not know."""


def decode(data: bytes) -> dict:
    """Parse a batch into a dict; raise BatchError with what is wrong."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:
        raise BatchError(f"not CBOR: {exc}") from None
    if not hasattr(obj, "get") or "v" not in obj:
        raise BatchError("not a headrace batch: expected a CBOR map with a 'v' key")
    if obj["v"] != VERSION:
        raise BatchError(f"batch version {obj['v']!r} is not supported by this decoder (knows {VERSION})")
    return obj


def frame_readings(node: str, received: float, senml: bytes) -> list[tuple[str, float, object]]:
    """(sensor, time, value) of one frame: its numeric readings in record order, then its text,
    boolean and data values in record order. Sensor names lose their 'node/' prefix."""
    parser = Parser()
    parser.parse(senml, received)
    sids, ts, vs, other = parser.take()
    prefix = node + "/"
    names = [n[len(prefix):] if n.startswith(prefix) else n for n in parser.names]
    return [(names[sid], t, v) for sid, t, v in zip(sids, ts, vs)] + [(names[sid], t, v) for sid, t, v in other]


def rows(batch: dict) -> Iterator[dict]:
    """One dict per reading or window, ready for JSON Lines."""
    gw = batch.get("gw")
    for node, seq, received, senml in batch.get("frames", ()):
        for sensor, t, value in frame_readings(node, received, senml):
            if isinstance(value, bytes):
                value = value.hex()
            yield {"gw": gw, "node": node, "seq": seq, "sensor": sensor, "t": t, "v": value}
    for w in batch.get("windows", ()):
        row = dict(zip(WINDOW_FIELDS, w))
        node, _, sensor = row["series"].partition("/")
        count = row["count"]
        mean = row["sum"] / count if count else math.nan
        yield {"gw": gw, "node": node, "sensor": sensor, "window": {"start": row["start"], "width": row["width"]},
               "count": count, "min": row["min"], "max": row["max"], "mean": mean,
               "first": row["first"], "last": row["last"], "sumsq": row["sumsq"], "twa": row["twa"],
               "correction": bool(row["correction"])}
