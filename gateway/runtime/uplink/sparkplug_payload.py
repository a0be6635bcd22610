"""Sparkplug B 3.0 payloads: headrace's spool records as Sparkplug metrics (docs/sparkplug.md).

The classes come from the Sparkplug B protobuf schema (`sparkplug_b.proto`, compiled
by protoc into `sparkplug_b_pb2.py`, run by the `protobuf` package); nothing here
encodes protobuf by hand.

Usage: a `Catalog` names every metric once and gives it an alias, per edge node;
`node_birth`, `device_birth`, `device_data` and `death` build payloads from it,
`readings_of`, `window_metrics` and `event_metrics` turn spooled bodies into
(name, datatype, time ms, value) tuples, `command_of` reads an NCMD/DCMD metric.

Caveats: Sparkplug times are whole milliseconds since the epoch: a reading's time
loses what it had below a millisecond. A metric keeps the datatype of its first
value; a later value of another type is sent as the first type when it converts
(int to double), else as a metric of its own name with a `/<type>` suffix.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import cbor2

from gateway.runtime.uplink import batch
from gateway.runtime.uplink.sparkplug_b_pb2 import Payload

NAMESPACE = "spBv1.0"
# Data types, Sparkplug 3.0 §6.4.16
INT32, INT64, UINT64, DOUBLE, BOOLEAN, STRING, BYTES = 3, 4, 8, 10, 11, 12, 17
METRIC_BDSEQ = "bdSeq"
METRIC_REBIRTH = "Node Control/Rebirth"
METRIC_COMMAND_RESULT = "Commands/result"
# A command metric per downlink command: DCMD writes it, the value is the command's one argument
COMMAND_METRICS = {
    "Commands/set_period": ("set_period", "period_ms", INT64),
    "Commands/set_batch": ("set_batch", "batch", INT64),
    "Commands/identify": ("identify", "seconds", INT64),
    "Commands/reboot": ("reboot", None, BOOLEAN),
    "Commands/json": (None, None, STRING),  # a whole command object, as on headrace's cmd/<node>
}
WINDOW_STATS = ("count", "min", "max", "mean", "twa")
EVENT_METRICS = ("Events/demand", "Events/dispatch")


def now_ms() -> int:
    return int(time.time() * 1000)


def ms(seconds: float) -> int:
    """Seconds since the epoch to Sparkplug's whole milliseconds (rounded)."""
    return int(round(seconds * 1000))


def datatype_of(value) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float)):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, (bytes, bytearray)):
        return BYTES
    raise TypeError(f"no Sparkplug datatype for {type(value).__name__}")


def set_value(metric, datatype: int, value) -> None:
    """Put a value in the metric's oneof field for its datatype (or mark it null)."""
    if value is None:
        metric.is_null = True
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype in (STRING,):
        metric.string_value = value
    elif datatype == BYTES:
        metric.bytes_value = bytes(value)
    elif datatype in (INT64, UINT64):
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # Int64 goes two's complement in a uint64
    elif datatype == INT32:
        metric.int_value = int(value) & 0xFFFFFFFF
    else:
        raise ValueError(f"datatype {datatype} is not one headrace sends")


def value_of(metric):
    """The Python value of a received metric (NCMD/DCMD), None when it has none."""
    which = metric.WhichOneof("value")
    if which is None or metric.is_null:
        return None
    value = getattr(metric, which)
    if which == "long_value" and metric.datatype in (1, 2, 3, 4) and value >= 1 << 63:
        value -= 1 << 64
    if which == "int_value" and metric.datatype in (1, 2, 3) and value >= 1 << 31:
        value -= 1 << 32
    return value


@dataclass
class Metric:
    name: str
    alias: int
    datatype: int
    last: tuple[int, object] | None = None  # (time ms, value) last sent, for births


@dataclass
class Device:
    name: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    born: bool = False
    born_with: frozenset = frozenset()  # the metric names its last DBIRTH declared


class Catalog:
    """Every metric of the edge node and its devices, with aliases unique across the edge
    node (Sparkplug 3.0 §6.4.10). Aliases live as long as the process: every birth restates them."""

    def __init__(self, node_metrics: list[tuple[str, int]]):
        self._next = 0
        self.node: dict[str, Metric] = {}
        self.devices: dict[str, Device] = {}
        for name, datatype in node_metrics:
            self.node_metric(name, datatype)

    def _alias(self) -> int:
        self._next += 1
        return self._next

    def node_metric(self, name: str, datatype: int) -> Metric:
        m = self.node.get(name)
        if m is None:
            m = self.node[name] = Metric(name, self._alias(), datatype)
        return m

    def device(self, name: str) -> Device:
        d = self.devices.get(name)
        if d is None:
            d = self.devices[name] = Device(name)
            for metric, (_cmd, _arg, datatype) in COMMAND_METRICS.items():
                self.device_metric(d, metric, datatype)
            self.device_metric(d, METRIC_COMMAND_RESULT, STRING)
        return d

    def device_metric(self, device: Device, name: str, datatype: int) -> Metric:
        m = device.metrics.get(name)
        if m is None:
            m = device.metrics[name] = Metric(name, self._alias(), datatype)
        return m

    def by_alias(self, device: Device | None, alias: int) -> Metric | None:
        metrics = self.node if device is None else device.metrics
        return next((m for m in metrics.values() if m.alias == alias), None)


def _birth_metric(payload, m: Metric, value=None, at: int | None = None) -> None:
    out = payload.metrics.add()
    out.name, out.alias, out.datatype = m.name, m.alias, m.datatype
    if value is None and m.last is not None:
        at, value = m.last
    if at is not None:
        out.timestamp = at
    set_value(out, m.datatype, value)


def node_birth(catalog: Catalog, bdseq: int) -> Payload:
    """NBIRTH: seq 0, bdSeq, Node Control/Rebirth (false) and every node metric."""
    p = Payload(timestamp=now_ms(), seq=0)
    for m in catalog.node.values():
        if m.name == METRIC_BDSEQ:
            _birth_metric(p, m, bdseq)
        elif m.name == METRIC_REBIRTH:
            _birth_metric(p, m, False)
        else:
            _birth_metric(p, m)
    return p


def death(bdseq: int) -> bytes:
    """NDEATH (the Will, and the last word of a clean stop): bdSeq only, no seq."""
    p = Payload(timestamp=now_ms())
    m = p.metrics.add()
    m.name, m.datatype, m.long_value = METRIC_BDSEQ, INT64, bdseq
    return p.SerializeToString()


def device_birth(device: Device) -> Payload:
    """DBIRTH: every metric the device has (last values sent, or null); seq set by the sender."""
    p = Payload(timestamp=now_ms())
    for m in device.metrics.values():
        _birth_metric(p, m)
    device.born_with = frozenset(device.metrics)
    return p


def data(points, historical: bool, datatypes: bool = False) -> Payload:
    """NDATA/DDATA from [(Metric, time ms, value)], metrics by alias only (§6.4.10); with
    `datatypes`, each metric's datatype too (for hosts that cannot take it from the birth)."""
    p = Payload(timestamp=now_ms())
    for m, at, value in points:
        out = p.metrics.add()
        out.alias, out.timestamp = m.alias, at
        if datatypes:
            out.datatype = m.datatype
        if historical:
            out.is_historical = True
        set_value(out, m.datatype, value)
        m.last = (at, value)
    return p


# -- spool records as metrics ------------------------------------------------------------

def readings_of(body: bytes) -> tuple[str, list[tuple[str, int, int, object]]]:
    """A spooled frame: (node, [(metric name, datatype, time ms, value)]) in the frame's record order."""
    node, _seq, received, senml = cbor2.loads(body)
    return node, [(sensor, datatype_of(v), ms(t), v) for sensor, t, v in batch.frame_readings(node, received, senml)]


def window_metrics(body: bytes) -> tuple[str, list[tuple[str, int, int, object]]]:
    """A spooled window: (node, `Windows/<width>s/<sensor>/<stat>` metrics at the window's end)."""
    series, width, start, count, vmin, vmax, vsum, _sumsq, _first, _last, twa, _corr = cbor2.loads(body)
    node, _, sensor = series.partition("/")
    prefix = f"Windows/{width:g}s/{sensor}/"
    mean = vsum / count if count else math.nan
    at = ms(start + width)
    values = {"count": count, "min": vmin, "max": vmax, "mean": mean, "twa": twa}
    return node, [(prefix + stat, INT64 if stat == "count" else DOUBLE, at, values[stat]) for stat in WINDOW_STATS]


def event_metrics(body: bytes) -> list[tuple[str, int, int, object]]:
    """A spooled event as edge node metrics: an alarm as `Alarms/<rule>/active` and `/value`,
    a demand or dispatch as its JSON text on `Events/demand` or `Events/dispatch`."""
    ev = cbor2.loads(body)
    at = ms(ev.get("t", time.time()))
    if ev.get("type") == "alarm":
        out = [(f"Alarms/{ev['rule']}/active", BOOLEAN, at, ev.get("state") == "raised")]
        if isinstance(ev.get("value"), (int, float)) and not isinstance(ev.get("value"), bool):
            out.append((f"Alarms/{ev['rule']}/value", DOUBLE, at, float(ev["value"])))
        return out
    name = f"Events/{ev.get('type', 'event')}"
    return [(name, STRING, at, json.dumps(ev, separators=(",", ":"), default=str))]


def command_of(name: str, value, cid: str) -> bytes:
    """A DCMD metric as headrace's command JSON, for gateway.decisions.downlink to validate
    as it does `cmd/<node>`. Raises KeyError for a metric that is no command, ValueError
    for a value no command can hold."""
    cmd, arg, _datatype = COMMAND_METRICS[name]
    if cmd is None:
        if not isinstance(value, str):
            raise ValueError(f"{name} takes a JSON command object as a String, got {value!r:.40}")
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        raise ValueError(f"{name} takes a number, got bytes")
    if arg is None:
        if value is not True:
            raise ValueError(f"{name} is written true to run it, got {value!r}")
        return json.dumps({"id": cid, "cmd": cmd}).encode()
    return json.dumps({"id": cid, "cmd": cmd, "args": {arg: value}}).encode()
