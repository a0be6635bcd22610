"""The sink's configuration: one TOML file, validated into one frozen object.

    [sink]
    database = "postgresql://headrace@db.example/headrace"  # empty: the SQLite file below
    sqlite = "/var/lib/headrace/cloud.sqlite"
    source = "jetstream"         # or "mqtt" (a persistent session on mosquitto, one site)
    allow = ["gw1", "gw2"]       # gateways whose messages are stored; empty: any
    group = 64                   # messages a transaction at most
    metrics_port = 0             # Prometheus text on 127.0.0.1:PORT/metrics; 0: off
    gateway_timeout = 150.0      # seconds with no `state` message after which a gateway is offline
    node_timeout = 300.0         # seconds with no frame after which a node is offline
    presence_interval = 5.0      # seconds between presence sweeps (sink/presence.py)
    partition = "month"          # PostgreSQL's readings, windows and events by time: "week", "day", "none" (sink/partitions.py)
    keep = ""                    # retention of readings: "90d", "26w"; "" keeps them for ever (PostgreSQL partitions)
    keep_windows = ""            # the same for windows
    keep_events = ""             # and for events

    [jetstream]
    servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
    stream = "HEADRACE"
    replicas = 3
    durable = "sink"             # one durable consumer; every worker pulls from it
    ack_wait = 30.0              # seconds before an unacknowledged message is delivered again

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    client_id = "headrace-sink"  # the persistent session's name
    topic = "headrace/v1/#"      # "$share/sink/headrace/v1/#" for several workers on mosquitto

Errors name the key and the fix (`gateway.errors.ConfigError`); unknown keys are errors, and every
mistake in a file is reported at once (`ConfigErrors`), as the gateway's and the fleet's configs are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.config.problems import Problems, read_toml
from gateway.config.sections import parse_section
from gateway.errors import ConfigError
from sink.partitions import UNITS, keep_seconds

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class SinkSection:
    database: str = ""
    sqlite: str = "/var/lib/headrace/cloud.sqlite"
    source: str = "jetstream"
    allow: tuple[str, ...] = ()
    group: int = 64
    metrics_port: int = 0
    gateway_timeout: float = 150.0
    node_timeout: float = 300.0
    presence_interval: float = 5.0
    partition: str = "month"
    keep: str = ""
    keep_windows: str = ""
    keep_events: str = ""

    def retention(self) -> dict[str, float]:
        """Seconds each table's rows are kept (a table kept for ever is absent)."""
        out = {}
        for table, key in (("readings", "keep"), ("windows", "keep_windows"), ("events", "keep_events")):
            seconds = keep_seconds(getattr(self, key))
            if seconds:
                out[table] = seconds
        return out


@dataclass(frozen=True)
class JetStreamSection:
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "HEADRACE"
    replicas: int = 3
    durable: str = "sink"
    ack_wait: float = 30.0


@dataclass(frozen=True)
class MqttSection:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "headrace-sink"
    topic: str = "headrace/v1/#"


@dataclass(frozen=True)
class SinkConfig:
    sink: SinkSection = field(default_factory=SinkSection)
    jetstream: JetStreamSection = field(default_factory=JetStreamSection)
    mqtt: MqttSection = field(default_factory=MqttSection)

    @property
    def database(self) -> str:
        """Where rows go: the PostgreSQL URL, or the SQLite file when none is given."""
        return self.sink.database or self.sink.sqlite


def from_dict(raw: dict) -> SinkConfig:
    """Validate a parsed table; every mistake is reported at once (`ConfigErrors` when there are several)."""
    known = {"sink": SinkSection, "jetstream": JetStreamSection, "mqtt": MqttSection}
    problems = Problems()
    values = {}
    for name, body in raw.items():
        if name not in known:
            problems.add(ConfigError(f"[{name}]", "unknown section", f"valid sections: {', '.join(known)}"))
            continue
        values[name] = parse_section(known[name], name, body, problems)
    cfg = SinkConfig(**values)
    s, js = cfg.sink, cfg.jetstream
    if s.source not in ("jetstream", "mqtt"):
        problems.add(ConfigError("[sink] source", f"{s.source!r} is not a source",
                                 'write source = "jetstream" or "mqtt"'))
    if not 1 <= s.group <= 10000:
        problems.add(ConfigError("[sink] group", f"{s.group} is out of range", "use 1 to 10000 messages a transaction"))
    if not 0 <= s.metrics_port <= 65535:
        problems.add(ConfigError("[sink] metrics_port", f"{s.metrics_port} is out of range", "use 0 (off) to 65535"))
    for key, low, high in (("gateway_timeout", 1, 86400), ("node_timeout", 1, 30 * 86400),
                           ("presence_interval", 0.1, 3600)):
        value = getattr(s, key)
        if not low <= value <= high:
            problems.add(ConfigError(f"[sink] {key}", f"{value} s is out of range", f"use {low} to {high} seconds"))
    if s.partition not in UNITS:
        problems.add(ConfigError("[sink] partition", f"{s.partition!r} is not a period",
                                 'write partition = "month" (or "week", "day"; "none" for one table)'))
    for key in ("keep", "keep_windows", "keep_events"):
        try:
            seconds = keep_seconds(getattr(s, key))
        except ValueError as exc:
            problems.add(ConfigError(f"[sink] {key}", str(exc), f'write e.g. {key} = "400d" (days) or "8w" (weeks); '
                                     '"" keeps rows for ever'))
            continue
        if seconds and s.partition == "none":
            problems.add(ConfigError(f"[sink] {key}", "needs partitions (partition is \"none\")",
                                     'set partition = "month" (or "week", "day"), or keep = ""'))
        elif 0 < seconds < 86400:
            problems.add(ConfigError(f"[sink] {key}", "keeps nothing", "keep at least 1d"))
    if not js.servers:
        problems.add(ConfigError("[jetstream] servers", "is empty",
                                 'list the cluster, e.g. servers = ["nats://host:4222"]'))
    if not _NAME.match(js.stream) or not _NAME.match(js.durable):
        problems.add(ConfigError("[jetstream] stream", f"{js.stream!r} / {js.durable!r} are not valid names",
                                 "use letters, digits, - and _ for stream and durable"))
    if js.replicas not in (1, 3, 5):
        problems.add(ConfigError("[jetstream] replicas", f"{js.replicas} is not 1, 3 or 5",
                                 "use 3 on a three-node cluster (the stream survives one node), 1 on a single server"))
    if not 1 <= js.ack_wait <= 3600:
        problems.add(ConfigError("[jetstream] ack_wait", f"{js.ack_wait} s is out of range", "use 1 to 3600 seconds"))
    problems.raise_any()
    return cfg


def load(path) -> SinkConfig:
    """Read and validate a TOML file; None gives the defaults."""
    if path is None:
        return from_dict({})
    return from_dict(read_toml(path))
