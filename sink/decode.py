"""The sink's decode step: one broker message → the rows it stores, or a dead letter.

Usage: `Decoder(allow=("gw1", "gw2")).decode(topic, payload)` returns a `Decoded`
(readings, windows, events, or a gateway's state) or raises `DeadLetter` with a
reason (`undecodable`, `version`, `not_allowed`, `topic`). The batch format is read
with the gateway's own decoder (`gateway.runtime.uplink.batch` and `events`, the
code behind `headrace decode`), never a copy of it, so the sink reads every batch
version the gateway writes as soon as that decoder does.

Topics (or NATS subjects, with `.` for `/`): `headrace/v1/<site>/<gateway>/<kind>`,
kind `data`, `events`, `schema` or `state`; anything else is a dead letter (`topic`).
A `schema` message (retained: the node and sensor-name patterns that version 3 and 4
data batches refer to) is kept by the decoder and stored by the sink (table
`schemas`, so that a worker that restarts, or another worker, reads it again:
`Decoder.load`); a batch whose schema the worker has not seen, in memory, in
the database or (JetStream) in the stream, is a dead letter (`schema`), its bytes kept.

Identity: a reading is (site, gateway, node, seq, index in frame); a window is
its fields' digest; an event is its type and the key docs/protocol.md §8 gives
(alarm: rule+state+t; demand: id; dispatch: demand+state+attempt). The stores
insert on these keys and ignore repeats, which makes at-least-once delivery
exactly once at rest.

Caveats: a batch that decodes only in part is a dead letter as a whole: its
readings are not stored at all, never half of them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field

import cbor2

from gateway.runtime.uplink import batch as batch_format
from gateway.runtime.uplink import events as events_format

KINDS = ("data", "events", "schema", "state")

log = logging.getLogger("headrace.sink")


class DeadLetter(Exception):
    """A message the sink cannot store: `reason` is a metric label, `detail` says why."""

    def __init__(self, reason: str, detail: str, site: str = "", gateway: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.site, self.gateway = reason, detail, site, gateway


@dataclass
class Decoded:
    """What one message adds. Row tuples are in the stores' column order (`store.py`)."""

    kind: str
    site: str
    gateway: str
    readings: list = field(default_factory=list)  # (site, gw, node, seq, idx, sensor, t, v, vs, vb, vd)
    frames: int = 0
    windows: list = field(default_factory=list)   # (site, gw, key, node, sensor, width, start, count, ...)
    events: list = field(default_factory=list)    # (site, gw, type, key, t, node, body json)
    state: dict | None = None                     # the gateway's retained state (JSON)
    nodes: dict = field(default_factory=dict)     # node -> (last time, last seq, {sensor: last value}, heard)
    resources: dict = field(default_factory=dict)  # resource -> (demand, state, t), from dispatch events
    presence: dict = field(default_factory=dict)   # resource -> (free, node, t), from resource events
    schema: tuple | None = None                   # a schema message: (lineage, nodes, patterns, its bytes)


def split_topic(topic: str) -> tuple[str, str, str]:
    """(site, gateway, kind) of an MQTT topic or a NATS subject; DeadLetter('topic') if not ours."""
    parts = topic.replace(".", "/").split("/") if "/" not in topic else topic.split("/")
    if len(parts) != 5 or parts[:2] != ["headrace", "v1"] or parts[4] not in KINDS:
        raise DeadLetter("topic", f"{topic!r} is not headrace/v1/<site>/<gateway>/(data|events|schema|state)")
    return parts[2], parts[3], parts[4]


def _value_columns(value):
    """(v, vs, vb, vd): a reading's value in the column of its kind."""
    if isinstance(value, bool):
        return None, None, value, None
    if isinstance(value, (int, float)):
        return float(value), None, None, None
    if isinstance(value, str):
        return None, value, None, None
    if isinstance(value, (bytes, bytearray)):
        return None, None, None, bytes(value)
    return None, json.dumps(value, default=str), None, None


def event_key(event: dict) -> str:
    """The identity of an event within its gateway (docs/protocol.md §8)."""
    kind = event.get("type")
    if kind == "alarm":
        return f"{event.get('rule')}|{event.get('state')}|{event.get('t')!r}"
    if kind == "demand":
        return f"{event.get('id')}"
    if kind == "dispatch":
        return f"{event.get('demand')}|{event.get('state')}|{event.get('attempt')}"
    return hashlib.blake2b(cbor2.dumps(event, canonical=True), digest_size=16).hexdigest()


def _json_safe(obj):
    """NaN and infinities (no JSON, and PostgreSQL's jsonb refuses them) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _heard(received):
    """A frame's receive time at its gateway (the gateway's clock), or None if it is not a time."""
    if isinstance(received, (int, float)) and not isinstance(received, bool) and math.isfinite(received):
        return float(received)
    return None


def _finite(x):
    return x if not (isinstance(x, float) and math.isnan(x)) else None


class Decoder:
    """Decodes messages for the stores; `allow` (gateway ids, empty = any) is the allow-list.

    `decode_batch` is the one call into the gateway's batch format: when the format
    grows (a schema message that batches refer to, say), the change is made there."""

    def __init__(self, allow: tuple[str, ...] = ()):
        self.allow = frozenset(allow)
        self.schemas = batch_format.Decoder()  # the schema messages seen, for version 3 and 4 batches

    def decode(self, topic: str, payload: bytes) -> Decoded:
        site, gw, kind = split_topic(topic)
        if self.allow and gw not in self.allow:
            raise DeadLetter("not_allowed", f"gateway {gw!r} is not in the sink's allow-list", site, gw)
        try:
            if kind == "state":
                return self._state(site, gw, payload)
            if kind == "schema":
                obj = self.schemas.feed(payload)
                return Decoded("schema", site, gw, schema=(int(obj["lineage"]), len(obj["nodes"]),
                                                           len(obj["patterns"]), bytes(payload)))
            obj = self.decode_batch(payload)
            if kind == "events":
                return self._events(site, gw, obj)
            return self._data(site, gw, obj)
        except DeadLetter as dl:
            dl.site, dl.gateway = site, gw
            raise
        except batch_format.UnknownSchema as exc:
            raise DeadLetter("schema", str(exc), site, gw) from None
        except batch_format.BatchError as exc:
            reason = "version" if "version" in str(exc) and "not supported" in str(exc) else "undecodable"
            raise DeadLetter(reason, str(exc), site, gw) from None

    def load(self, payloads) -> int:
        """Take schema messages kept elsewhere (the store's `schemas` table); the number taken.
        One that no longer parses is logged and left out (its batches become dead letters)."""
        n = 0
        for payload in payloads:
            try:
                self.schemas.feed(payload)
                n += 1
            except batch_format.BatchError as exc:
                log.warning("a stored schema message does not parse, left out: %s", exc)
        return n

    def decode_batch(self, payload: bytes) -> dict:
        """A data or events batch, any version the gateway writes (BatchError if not; UnknownSchema
        for a version 3 or 4 batch whose schema message has not come)."""
        return self.schemas.decode(payload)

    def _state(self, site, gw, payload) -> Decoded:
        try:
            state = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DeadLetter("undecodable", f"state is not JSON: {exc}") from None
        if not isinstance(state, dict) or not isinstance(state.get("online"), bool):
            raise DeadLetter("undecodable", "state must be a JSON object with a boolean 'online'")
        return Decoded("state", site, gw, state=state)

    def _data(self, site, gw, obj) -> Decoded:
        out = Decoded("data", site, gw)
        append = out.readings.append
        last: dict = {}
        # runs for every reading of every batch: floats (nearly all) take the short branch
        for node, seq, received, frame in batch_format.readings(obj):
            out.frames += 1
            for idx, (sensor, t, value) in enumerate(frame):
                if type(value) is float:
                    append((site, gw, node, seq, idx, sensor, t, value, None, None, None))
                else:
                    append((site, gw, node, seq, idx, sensor, t, *_value_columns(value)))
            last[node] = (seq, frame, received)
        for node, (seq, frame, received) in last.items():  # the mirror: each node's last frame of the batch
            values = {s: v.hex() if isinstance(v, (bytes, bytearray)) else v for s, _t, v in frame}
            out.nodes[node] = (max((t for _s, t, _v in frame), default=None), seq, values, _heard(received))
        windows = obj.get("windows", ())
        if not isinstance(windows, (list, tuple)):
            raise batch_format.BatchError("inconsistent batch: windows must be a list")
        out.windows = [self._window(site, gw, w) for w in windows]
        return out

    def _window(self, site, gw, w):
        # the gateway's own check and field names (batch.rows), then the stored columns
        row = next(batch_format.rows({"gw": gw, "v": 2, "windows": [w]}))
        series, width, start, count, vmin, vmax, vsum, sumsq, first, last, twa, corr = w
        key = hashlib.blake2b(cbor2.dumps([series, width, start, count, vmin, vmax, vsum, sumsq, first, last,
                                           twa, corr]), digest_size=16).digest()
        return (site, gw, key, row["node"], row["sensor"], float(width), float(start), int(count),
                _finite(float(vmin)), _finite(float(vmax)), float(vsum), float(sumsq), _finite(float(first)),
                _finite(float(last)), _finite(float(twa)), bool(corr))

    def _events(self, site, gw, obj) -> Decoded:
        out = Decoded("events", site, gw)
        evs = obj.get("events")
        if not isinstance(evs, (list, tuple)):
            raise DeadLetter("undecodable", "an events batch needs an 'events' list")
        for row in events_format.rows(obj):
            event = {k: v for k, v in row.items() if k != "gw"}
            kind = event.get("type")
            if not isinstance(kind, str):
                raise DeadLetter("undecodable", f"an event without a type: {event!r:.80}")
            t = event.get("t")
            if not isinstance(t, (int, float)) or isinstance(t, bool):  # the gateway gives every event one
                raise DeadLetter("undecodable", f"an event without a time 't': {event!r:.80}")
            t = float(t)
            node = event.get("node") if isinstance(event.get("node"), str) else None
            body = json.dumps(_json_safe(event), default=lambda o: o.hex() if isinstance(o, bytes) else str(o),
                              sort_keys=True)
            out.events.append((site, gw, kind, event_key(event), t, node, body))
            if kind == "resource" and event.get("id") is not None:
                res = str(event["id"])
                prev = out.presence.get(res)
                if prev is None or (t or 0) >= (prev[2] or 0):
                    node = event.get("node")
                    out.presence[res] = (bool(event.get("free")), node if isinstance(node, str) and node else None,
                                         t)
            if kind == "dispatch" and event.get("resource") is not None:
                res = str(event["resource"])
                prev = out.resources.get(res)
                if prev is None or (t or 0) >= (prev[2] or 0):
                    out.resources[res] = (event.get("demand"), event.get("state"), t)
        return out
