"""The uplink data batch (versions 1-4) and the schema message, documented in docs/protocol.md §7.

A batch is one CBOR map published on `headrace/v1/<site>/<gateway>/data`. Its
raw readings are compressed with the series codec (core_ext.codec, docs/codec.md),
or in compact columns (columns.py) when the batch is small. Version 3:

    {"v": 3, "gw": "<gateway>", "site": "<site>",
     "schema": [lineage, n_nodes, n_patterns],
     "nodes": [node, ...], "patterns": [[sensor, ...], ...],      (only those the schema lacks)
     "frames": [codec(received ns, seq), codec(node index, pattern index)],
     "sensors": [[sensor, codec(time ns, value), [[node index, count], ...]], ...],
     "other":  [[frame index, sensor, time, value], ...],
     "windows": [[series, width, start, count, min, max, sum, sumsq, first, last, twa, correction], ...]}

Each accepted frame is a row of the frame table: its node, sequence number and
reception time, and its pattern, the sensors of its numeric readings in record
order. The readings of one sensor name, across every node of the batch, make one
codec stream, node after node, each node's readings in frame order, with their
counts. Walking the frames gives every frame's readings back exactly, in record
order: (node, seq) still identifies each frame, and a consumer drops a frame it
has seen (at-least-once delivery made exactly-once). Text, boolean and data
values go in `other`, as they are.

What repeats from batch to batch, the node names and the frames' sensor
patterns, is described once in the schema message, retained on
`headrace/v1/<site>/<gateway>/schema`:

    {"v": 1, "kind": "schema", "gw": "<gateway>", "site": "<site>", "lineage": L,
     "nodes": [node, ...], "patterns": [[sensor, ...], ...]}

A schema only grows (entries are appended, never changed or removed), and its
lineage is a random number drawn when the gateway starts. A batch refers to
the first n_nodes nodes and n_patterns patterns of lineage L; node index i >=
n_nodes is the batch's own `nodes[i - n_nodes]`, and likewise for patterns. Any
schema message of lineage L at least that long decodes the batch, so a
consumer that joins late needs only the retained one. A batch whose schema the
consumer has not seen is an `UnknownSchema` error, never wrong data.

Version 4, what the gateway writes, holds what version 3 does in fewer bytes:
numbered keys (V4_KEYS) and no gateway or site (its schema's lineage names
them); sensor streams without their names and counts (the frame table and the
patterns give them); values' deltas in Exp-Golomb codes; windows in columns
(columns.encode_windows). Version 2 is version 3 with every node and pattern in
the batch (no schema); version 1 spliced the SenML packs as they arrived. All
are still read.

Usage (a consumer):

    decoder = batch.Decoder()
    for topic, payload in messages:                 # schema, data and events topics, in order
        item = decoder.message(topic, payload)      # a schema is kept; a batch is parsed (None: a schema)
        if item is not None:
            for row in batch.rows(item): ...        # or batch.readings(item), batch.frame_ids(item)

or `decoder.feed(schema_payload)` and `decoder.decode(batch_payload)`, or
`batch.decode(payload, schemas=decoder)`; a decoder's `schemas` can be saved
(`decoder.export()`) and loaded (`Decoder(saved)`) by a consumer that restarts.
The gateway side: `Schema(gateway, site)` collects nodes and patterns as
`encode(..., schema=...)` meets them (up to `Schema.MAX_ENTRIES` each; others
travel in the batch); `schema.message()` is what the uplink retains.

Caveats: the gateway publishes a schema before the first batch that refers to
it, on the same connection, QoS 1; a broker forwards one publisher's messages
to a subscriber in that order (mosquitto, NATS). A consumer that reads the
topics through different connections must feed the schema first, or retry a
batch that raised UnknownSchema once the schema arrived.
"""
from __future__ import annotations

import math
import os
from typing import Iterator

import cbor2
from array import array

from core_ext import codec
from core_ext.ingest import Parser, spread_frames
from core_ext.ingest import frame_body as ingest_frame_body
from gateway.runtime.uplink import columns

VERSION = 4
VERSIONS = (1, 2, 3, 4)  # read; events batches are version 1 (gateway/runtime/uplink/events.py)
TABLE_FRAMES = 64  # frames in a batch up to which it is in compact columns and DEFLATEd (columns.py)
SCHEMA_VERSION = 1
SCHEMA_VERSIONS = (1,)
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


# The spool body of one accepted frame, frame_body(node, seq, received, senml): CBOR
# [node, seq, received, senml] as cbor2 writes it, in C for the gateway's frames (one a frame
# on the event loop)
frame_body = ingest_frame_body


def window_body(series: str, width: float, start: float, count: int, vmin: float, vmax: float,
                vsum: float, sumsq: float, first: float, last: float, twa: float, correction: int) -> bytes:
    # floats in their shortest exact form (RFC 8949 §4.2.2): a sensor's quantised values
    # fit half or single precision, so a window is about a third smaller
    return cbor2.dumps([series, width, start, count, vmin, vmax, vsum, sumsq, first, last, twa, correction],
                       canonical=True)


class Schema:
    """The gateway's side of the schema message: node names and sensor patterns, append only.

    `encode(..., schema=s)` adds what it meets (up to MAX_ENTRIES nodes and as many
    patterns; past that, entries travel in each batch, as in version 2). After an
    encode, `changed` says whether the schema grew since `message()` was last taken:
    the uplink then publishes the new message (retained) before the batch.
    """

    MAX_ENTRIES = 4096

    def __init__(self, gateway: str, site: str, lineage: int | None = None):
        self.gateway, self.site = gateway, site
        # 53 bits: an exact integer in every JSON and CBOR consumer
        self.lineage = lineage if lineage is not None else int.from_bytes(os.urandom(7), "big") >> 3
        self.nodes: list[str] = []
        self.patterns: list[tuple[str, ...]] = []
        self._node_ix: dict[str, int] = {}
        self._pattern_ix: dict[tuple, int] = {}
        self._published = (0, 0)

    @property
    def id(self) -> list[int]:
        """[lineage, nodes, patterns]: what a batch encoded now refers to."""
        return [self.lineage, len(self.nodes), len(self.patterns)]

    @property
    def changed(self) -> bool:
        return (len(self.nodes), len(self.patterns)) != self._published

    def node(self, name: str) -> int | None:
        i = self._node_ix.get(name)
        if i is None and len(self.nodes) < self.MAX_ENTRIES:
            i = self._node_ix[name] = len(self.nodes)
            self.nodes.append(name)
        return i

    def pattern(self, sensors: tuple) -> int | None:
        i = self._pattern_ix.get(sensors)
        if i is None and len(self.patterns) < self.MAX_ENTRIES:
            i = self._pattern_ix[sensors] = len(self.patterns)
            self.patterns.append(sensors)
        return i

    def message(self) -> bytes:
        """The schema message (CBOR), as the uplink retains it; marks it published."""
        self._published = (len(self.nodes), len(self.patterns))
        return cbor2.dumps({"v": SCHEMA_VERSION, "kind": "schema", "gw": self.gateway, "site": self.site,
                            "lineage": self.lineage, "nodes": self.nodes, "patterns": [list(p) for p in self.patterns]})


def encode(gateway: str, site: str, frames: list[bytes], windows: list[bytes], schema: Schema | None = None,
           version: int = VERSION) -> bytes:
    """One batch from spooled frame and window bodies: frames parsed again and their
    numeric readings compressed per series. With a `schema`, a batch of `version`
    (4, or 3 as gateways before it wrote) that refers to it (the schema grows with
    what it lacks); without, a self-contained version 2 batch."""
    parser = Parser()
    nodes: dict[str, int] = {}
    patterns: dict[tuple, int] = {}
    series: dict[tuple[int, str], tuple[array, array]] = {}
    received, seqs, node_col, pattern_col, other = [], [], [], [], []
    # a node sends one pattern frame after frame: its sensors, its pattern index and its
    # columns are made once per (node, series ids), by entry(), not per reading

    def entry(ni: int, node: str, sids) -> tuple[int, list]:
        prefix = node + "/"
        cut = len(prefix)
        names = parser.names
        # _sensor(name, prefix) inline: with many nodes this runs for nearly every reading
        pattern = tuple([name[cut:] if name.startswith(prefix) else name for name in [names[sid] for sid in sids]])
        # typed columns: the compiled loop writes each reading's time and value into them in place
        return patterns.setdefault(pattern, len(patterns)), [series.setdefault((ni, s), (array("q"), array("d")))
                                                              for s in pattern]

    # each frame parsed, its readings' times (as _ns) and values to their series, its row to the
    # frame table: compiled, per frame and per reading
    texts = spread_frames(parser, frames, nodes, {}, entry, (received, seqs, node_col, pattern_col))
    for fi, node, oth in texts:
        prefix = node + "/"
        other += [[fi, _sensor(parser.names[sid], prefix), t, v] for sid, t, v in oth]
    if schema is None:
        body = {"v": 2, "gw": gateway, "site": site, "nodes": list(nodes), "patterns": [list(p) for p in patterns],
                # array.array, not numpy: the gateway encodes batches without numpy loaded (13 MB less)
                "frames": [codec.encode(array("q", received), array("d", seqs)),
                           codec.encode(array("q", node_col), array("d", pattern_col))],
                "sensors": _sensor_streams(series)}
        if other:
            body["other"] = other
        return _spliced(body, windows)
    parsed = []
    if version == 4:  # the windows' nodes join the batch's first: the schema's length is the batch's reference
        parsed = [cbor2.loads(w) for w in windows]
        for w in parsed:
            if isinstance(w, list) and w and type(w[0]) is str:
                nodes.setdefault(w[0].partition("/")[0], len(nodes))
    inner: dict = {}
    node_map = _to_schema(list(nodes), schema.node, inner, "nodes", schema)
    pattern_map = _to_schema(list(patterns), schema.pattern, inner, "patterns", schema)
    node_col = [node_map[i] for i in node_col]
    pattern_col = [pattern_map[i] for i in pattern_col]
    if version == 3:  # its streams carry [node index, count] lists: in the schema's indexes
        series = {(node_map[ni], sensor): cols for (ni, sensor), cols in series.items()}
    for key in ("nodes", "patterns"):  # what the schema lacks, indexed after its entries
        inner[key] = [list(x) if isinstance(x, tuple) else x for x in inner[key]]
        if not inner[key]:
            del inner[key]
    small = len(frames) <= TABLE_FRAMES  # compact columns, then DEFLATE; else codec streams only
    if small:
        inner["table"] = columns.encode_table([_seconds_one(r) for r in received], seqs, node_col, pattern_col)
    else:
        inner["frames"] = [codec.encode(array("q", received), array("d", seqs)),
                           codec.encode(array("q", node_col), array("d", pattern_col))]
    streams = _sensor_streams(series, compact=small, version=version, counts=version == 3)
    if version == 3:
        inner["sensors"] = streams
        if other:
            inner["other"] = other
        return _packed({"v": 3, "gw": gateway, "site": site, "schema": schema.id}, inner, windows, small, "deflate")
    # version 4: each sensor's stream alone (its name and counts follow from the frame table and the
    # patterns), windows in columns, keys numbered
    inner["sensors"] = [stream for _sensor, stream, _counts in streams]
    if other:
        inner["other"] = other
    wcols = columns.encode_windows(parsed, lambda node: node_map[nodes[node]])
    if wcols is not None:
        inner["window_columns"] = wcols
        windows = []
    inner = {V4_KEYS[k]: v for k, v in inner.items()}
    return _packed({"v": 4, V4_KEYS["schema"]: schema.id}, inner, windows, small, V4_KEYS["deflate"],
                   V4_KEYS["windows"])


def _packed(envelope: dict, inner: dict, windows: list[bytes], small: bool, deflate_key, windows_key="windows"):
    """The batch: the envelope with the inner map DEFLATEd (small batches, when that is smaller), or both merged."""
    # version 3 always has its windows key, version 4 only when its windows are not in columns
    plain = _spliced(inner, windows, windows_key) if windows or windows_key == "windows" else cbor2.dumps(inner)
    if small:
        packed = columns.deflate(plain)
        if len(packed) + 3 + len(cbor2.dumps(deflate_key)) < len(plain):  # the key and the byte string's head
            envelope[deflate_key] = packed
            return cbor2.dumps(envelope)
    # codec streams, which DEFLATE cannot shrink (and it would cost CPU and memory); both maps have
    # fewer than 24 entries: a one-byte head each, replaced by the merged map's
    head = cbor2.dumps(envelope)
    return cbor_head(5, len(envelope) + (plain[0] & 31)) + head[1:] + plain[1:]


def _spliced(body: dict, windows: list[bytes], key="windows") -> bytes:
    head = cbor2.dumps(body)
    # the map gets one more entry, spliced: the windows as spooled, not re-encoded
    return b"".join([cbor_head(5, len(body) + 1), head[1:], cbor2.dumps(key), cbor_head(4, len(windows)), *windows])


def _seconds_one(ns: int) -> float:
    return ns // NS + (ns % NS) / NS


def _to_schema(items: list, add, body: dict, key: str, schema: Schema) -> list[int]:
    """Batch-local index -> index in the schema, or past it into body[key] (the batch's own)."""
    body[key] = []
    out = [add(x) for x in items]
    base = len(schema.nodes) if key == "nodes" else len(schema.patterns)
    for i, x in enumerate(items):
        if out[i] is None:
            out[i] = base + len(body[key])
            body[key].append(x)
    return out


def _sensor_streams(series: dict[tuple[int, str], tuple[array, array]], compact: bool = False, version: int = 2,
                    counts: bool = True) -> list:
    """[sensor, stream, [[node index, count], ...]] for each sensor, in the order the series show
    them, each sensor's nodes likewise (the order the decoder walks the frames in). `counts`
    False (version 4, which leaves them out): no lists, just the streams' places."""
    by_sensor: dict[str, tuple[array, array, list]] = {}
    # one pass over the series, each one's columns appended where its sensor's go: with many
    # nodes a batch holds nearly a series a reading, and this loop runs for each
    for (ni, sensor), (t, v) in series.items():
        acc = by_sensor.get(sensor)
        if acc is None:
            acc = by_sensor[sensor] = (array("q"), array("d"), [])
        acc[0].extend(t)
        acc[1].extend(v)
        if counts:
            acc[2].append([ni, len(t)])
    out = []
    for sensor, (ts, vs, ncounts) in by_sensor.items():
        stream = columns.encode_series(ts, vs, version) if compact and len(ts) <= columns.SMALL else None
        if stream is None:
            stream = codec.encode(ts, vs)
        out.append([sensor, stream, ncounts])
    return out


class BatchError(ValueError):
    """Not a headrace batch, or a version this decoder does not know."""


class UnknownSchema(BatchError):
    """A version 3 or 4 batch refers to a schema the decoder has not been given (or a shorter one)."""

    def __init__(self, gw, site, ref):
        self.gw, self.site, self.ref = gw, site, ref
        who, topic = ((f"of gateway {gw!r} (site {site!r})", f"headrace/v1/{site}/{gw}/schema") if gw is not None
                      else ("", "headrace/v1/<site>/<gateway>/schema of the batch's gateway"))
        super().__init__(f"batch {who} refers to schema {ref!r} ([lineage, nodes, patterns]), which this decoder "
                         f"has not seen: feed it the retained message of {topic} first")


def _loads(data: bytes):
    try:
        obj = cbor2.loads(data)
    except Exception as exc:
        raise BatchError(f"not CBOR: {exc}") from None
    if not hasattr(obj, "get") or "v" not in obj:
        raise BatchError("not a headrace batch: expected a CBOR map with a 'v' key")
    return obj


def is_schema(obj) -> bool:
    return hasattr(obj, "get") and obj.get("kind") == "schema"


def _check_schema(obj) -> dict:
    if obj.get("v") not in SCHEMA_VERSIONS:
        raise BatchError(f"schema version {obj.get('v')!r} is not supported by this decoder (knows {SCHEMA_VERSIONS})")
    lineage, nodes, patterns = obj.get("lineage"), obj.get("nodes"), obj.get("patterns")
    if not (isinstance(lineage, int) and isinstance(nodes, (list, tuple)) and isinstance(patterns, (list, tuple))
            and all(isinstance(n, str) for n in nodes)
            and all(isinstance(p, (list, tuple)) and all(isinstance(x, str) for x in p) for p in patterns)):
        raise BatchError("inconsistent schema message: expected an integer lineage, a list of node names and a "
                         "list of sensor-name lists")
    return obj


class Decoder:
    """Decodes batches of every version, given the schema messages met so far.

    `schemas` maps (gateway, site, lineage) to the longest schema of that lineage
    (a dict as in the schema message). Not thread-safe: one decoder per consumer.
    """

    def __init__(self, saved=()):
        """`saved`: what `export()` gave (schema dicts), or schema messages (bytes)."""
        self.schemas: dict[tuple, dict] = {}
        for sch in saved:
            self.feed(sch if isinstance(sch, (bytes, bytearray, memoryview)) else {"v": SCHEMA_VERSION,
                                                                                  "kind": "schema", **sch})

    def feed(self, payload: bytes | dict) -> dict:
        """Take a schema message (CBOR bytes, or already parsed); returns it. Raises BatchError."""
        obj = _loads(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else payload
        if not is_schema(obj):
            raise BatchError("not a schema message: expected a CBOR map with \"kind\": \"schema\"")
        _check_schema(obj)
        key = (obj.get("gw"), obj.get("site"), obj["lineage"])
        old = self.schemas.get(key)
        if old is None or (len(obj["nodes"]) >= len(old["nodes"]) and len(obj["patterns"]) >= len(old["patterns"])):
            self.schemas[key] = {"gw": obj.get("gw"), "site": obj.get("site"), "lineage": obj["lineage"],
                                 "nodes": list(obj["nodes"]), "patterns": [list(p) for p in obj["patterns"]]}
        return obj

    def decode(self, data: bytes) -> dict:
        """A batch (data or events) with its schema resolved; see `decode`."""
        return decode(data, schemas=self)

    def message(self, topic: str, payload: bytes) -> dict | None:
        """One MQTT message of a gateway's topics: a schema (on `.../schema`) is kept and
        None returned; anything else is decoded as a batch."""
        if topic.endswith("/schema"):
            self.feed(payload)
            return None
        return self.decode(payload)

    def export(self) -> list[dict]:
        """The schemas, to save (CBOR or JSON) and give back to `Decoder()` after a restart."""
        return list(self.schemas.values())

    def resolve(self, obj: dict) -> dict:
        """A parsed version 3 or 4 batch with its `nodes` and `patterns` made whole from its schema
        (and `"resolved": True`)."""
        ref = obj.get("schema")
        if not (isinstance(ref, (list, tuple)) and len(ref) == 3 and all(isinstance(x, int) for x in ref)):
            raise BatchError(f"inconsistent batch: schema must be [lineage, nodes, patterns], got {ref!r:.60}")
        lineage, n_nodes, n_patterns = ref
        if obj.get("v") == 4:  # the batch names no gateway: its lineage (53 random bits) does
            found = [s for key, s in self.schemas.items() if key[2] == lineage]
            if len(found) > 1:
                raise BatchError(f"schema lineage {lineage} is claimed by {len(found)} gateways "
                                 f"({', '.join(repr(s['gw']) for s in found)}): decode their batches with "
                                 f"a decoder per gateway")
            sch = found[0] if found else None
        else:
            sch = self.schemas.get((obj.get("gw"), obj.get("site"), lineage))
        if sch is None or len(sch["nodes"]) < n_nodes or len(sch["patterns"]) < n_patterns:
            raise UnknownSchema(obj.get("gw"), obj.get("site"), list(ref))
        own_nodes, own_patterns = obj.get("nodes", ()), obj.get("patterns", ())
        if not (isinstance(own_nodes, (list, tuple)) and isinstance(own_patterns, (list, tuple))):
            raise BatchError("inconsistent batch: its own nodes and patterns must be lists")
        out = dict(obj)
        if obj.get("v") == 4:
            out["gw"], out["site"] = sch["gw"], sch["site"]
        out["nodes"] = sch["nodes"][:n_nodes] + list(own_nodes)
        out["patterns"] = sch["patterns"][:n_patterns] + list(own_patterns)
        out["resolved"] = True  # nodes and patterns are whole (readings() checks)
        if "window_columns" in out:
            if "windows" in out:
                raise BatchError("inconsistent batch: both windows and window_columns")
            try:
                out["windows"] = columns.decode_windows(out.pop("window_columns"), _tables(out)[0])
            except (columns.ColumnError, ValueError) as exc:
                raise BatchError(f"inconsistent batch: {exc}") from None
        return out


_ENVELOPE = ("v", "gw", "site", "schema")
# version 4 names its keys by number (a key's name cost a reading's worth of bytes and more)
V4_KEYS = {"schema": 1, "deflate": 2, "nodes": 3, "patterns": 4, "table": 5, "frames": 6, "sensors": 7,
           "other": 8, "windows": 9, "window_columns": 10}
_V4_NAMES = {n: k for k, n in V4_KEYS.items()}


def _v4_named(obj: dict) -> dict:
    """A version 4 map (envelope or deflated part) with its numbered keys named."""
    out = {}
    for k, v in obj.items():
        if type(k) is str:
            if k != "v":
                raise BatchError(f"inconsistent batch: version 4 numbers its keys, found {k!r:.40}")
        elif k not in _V4_NAMES:
            raise BatchError(f"inconsistent batch: key {k!r:.40} is not one of version 4's")
        out[_V4_NAMES.get(k, k)] = v
    return out


def _inflated(obj: dict) -> dict:
    try:
        inner = cbor2.loads(columns.inflate(obj["deflate"]))
        if obj["v"] == 4 and hasattr(inner, "get"):
            inner = _v4_named(inner)
    except BatchError:
        raise
    except columns.ColumnError as exc:
        raise BatchError(f"inconsistent batch: {exc}") from None
    except Exception as exc:
        raise BatchError(f"inconsistent batch: the deflated part is not CBOR: {exc}") from None
    if not hasattr(inner, "get") or any(k in inner for k in _ENVELOPE + ("deflate", "resolved")):
        raise BatchError("inconsistent batch: the deflated part must be a map without v, gw, site, schema")
    out = {k: v for k, v in obj.items() if k != "deflate"}
    out.update(inner)
    return out


def decode(data: bytes, schemas: "Decoder | dict | list | None" = None) -> dict:
    """Parse a batch into a dict (its codec streams still compressed; `readings()`
    opens them); raise BatchError with what is wrong. A version 3 or 4 batch needs its
    schema: `schemas` is a Decoder, or what `Decoder.export()` gave, or the schema
    messages (bytes); without it, UnknownSchema. A schema message itself is
    returned as parsed (`is_schema()` tells)."""
    obj = _loads(data)
    if is_schema(obj):
        return _check_schema(obj)
    if obj["v"] not in VERSIONS:
        raise BatchError(f"batch version {obj['v']!r} is not supported by this decoder (knows {VERSIONS})")
    if obj["v"] in (3, 4):
        if obj["v"] == 4:
            obj = _v4_named(obj)
        if "deflate" in obj:
            obj = _inflated(obj)
        if not isinstance(schemas, Decoder):
            schemas = Decoder(schemas.values() if isinstance(schemas, dict) else schemas or ())
        return schemas.resolve(obj)
    return obj


def readings(batch: dict) -> Iterator[tuple[str, int, float, list[tuple[str, float, object]]]]:
    """(node, seq, received, [(sensor, time, value), ...]) per frame, in batch order:
    numeric readings in record order, then text, boolean and data values. Times in
    seconds since the epoch. Raises BatchError on a batch whose parts disagree."""
    _resolved(batch)
    if batch.get("v") == 1:
        for node, seq, received, senml in batch.get("frames", ()):
            yield node, seq, received, frame_readings(node, received, senml)
        return
    try:
        table = _frame_table(batch)
        if table is None:
            return
        received, seqs, node_col, pattern_col = table
        nodes, patterns = _tables(batch)
        cols = {}
        streams = batch.get("sensors", ())
        if batch.get("v") == 4:
            streams = _named_streams(streams, node_col, pattern_col, patterns)
        for sensor, data, counts in streams:
            if isinstance(data, (list, tuple)):  # compact columns (v3, v4)
                ts, vs = columns.decode_series(data, sum(n for _ni, n in counts), batch["v"])
            else:
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


def _named_streams(streams, node_col, pattern_col, patterns) -> list:
    """Version 4's sensor streams with their names and [node index, count] lists, as the
    encoder ordered them: sensors, and each sensor's nodes, in the order the frames first
    show them."""
    if not isinstance(streams, (list, tuple)):
        raise ValueError("sensors must be a list of streams")
    combos: dict[tuple[int, int], int] = {}  # (node, pattern) -> frames, in order of first frame
    for ni, pi in zip(node_col, pattern_col):
        key = (int(ni), int(pi))
        combos[key] = combos.get(key, 0) + 1
    by_sensor: dict[str, dict[int, int]] = {}
    for (ni, pi), n in combos.items():
        for sensor in patterns[pi]:
            counts = by_sensor.setdefault(sensor, {})
            counts[ni] = counts.get(ni, 0) + n
    if len(by_sensor) != len(streams):
        raise ValueError(f"{len(streams)} sensor streams for the {len(by_sensor)} sensors of the frames' patterns")
    return [(sensor, data, list(counts.items())) for (sensor, counts), data in zip(by_sensor.items(), streams)]


def _tables(batch: dict) -> tuple[list, list]:
    """The nodes and patterns tables of a batch (v2, or v3 and v4 once resolved), checked: a
    damaged table is an error, never a reading of node 72."""
    nodes, patterns = batch["nodes"], batch["patterns"]
    if not isinstance(nodes, (list, tuple)) or not all(type(n) is str for n in nodes):
        raise ValueError("the nodes table must be a list of node names")
    if not isinstance(patterns, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and all(type(s) is str for s in p) for p in patterns):
        raise ValueError("the patterns table must be a list of lists of sensor names")
    return nodes, patterns


def _frame_table(batch: dict):
    """(received s, seqs, node indexes, pattern indexes) as lists, or None for no frames."""
    if "table" in batch:
        return columns.decode_table(batch["table"])
    frames = batch.get("frames") or []
    if not frames:
        return None
    received, seqs = codec.decode(frames[0])
    node_col, pattern_col = codec.decode(frames[1])
    return _seconds(received), seqs.tolist(), node_col.tolist(), pattern_col.tolist()


def frame_ids(batch: dict) -> list[tuple[str, int]]:
    """(node, seq) of every frame in a batch, in order, without opening the series."""
    _resolved(batch)
    if batch.get("v") == 1:
        return [(f[0], f[1]) for f in batch.get("frames", ())]
    try:
        table = _frame_table(batch)
        if table is None:
            return []
        _, seqs, node_col, _ = table
        nodes, _ = _tables(batch)
        return [(nodes[int(n)], int(s)) for n, s in zip(node_col, seqs)]
    except (codec.CodecError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise BatchError(f"inconsistent batch: {exc}") from None


def _resolved(batch: dict) -> None:
    if batch.get("v") in (3, 4) and batch.get("resolved") is not True:
        raise BatchError(f"a version {batch.get('v')} batch must be decoded with its schema "
                         f"(batch.decode(payload, schemas=...))")


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
