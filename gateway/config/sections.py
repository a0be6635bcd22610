"""The sections of gateway.toml: one frozen dataclass each, their keys checked by type and range."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME

from gateway.config.problems import Problems, read_toml



@dataclass(frozen=True)
class SerialPort:
    path: str
    baudrate: int = 115200


@dataclass(frozen=True)
class GatewaySection:
    id: str = "gw1"
    site: str = "site1"
    data_dir: str = "/var/lib/headrace"
    registry: str = "/etc/headrace/nodes.toml"
    log_level: str = "info"


@dataclass(frozen=True)
class SerialSection:
    ports: tuple[SerialPort, ...] = ()


@dataclass(frozen=True)
class CoapSection:
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 5683
    dedup_seconds: float = 8.0
    dedup_max: int = 16384
    receive_buffer: int = 4194304  # SO_RCVBUF, bytes: bursts wait in the kernel instead of being dropped
    batch: int = 32  # datagrams a recvmmsg and answers a sendmmsg; 0: asyncio's endpoint, one a call


@dataclass(frozen=True)
class MqttSection:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str = ""
    password: str = ""
    keepalive: int = 30
    inflight: int = 32
    batch_records: int = 256
    batch_delay: float = 4.0
    schema: bool = True
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    reconnect_max: float = 30.0


@dataclass(frozen=True)
class JetStreamSection:
    """The uplink to a NATS JetStream cluster instead of MQTT (gateway/runtime/uplink/jetstream.py)."""
    enabled: bool = False
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "HEADRACE"
    replicas: int = 3
    inflight: int = 32
    timeout: float = 10.0
    batch_records: int = 256
    batch_delay: float = 0.2
    reconnect_max: float = 30.0
    schema: bool = True


@dataclass(frozen=True)
class AggregateSection:
    widths: tuple[float, ...] = (10.0,)
    lateness: float = 2.0
    late_policy: str = "drop"
    max_open: int = 1_000_000


@dataclass(frozen=True)
class SpoolSection:
    commit_interval: float = 0.025
    ack_wait: float = 0.04
    commit_max_frames: int = 512
    journal_bytes: int = 4 << 20
    max_bytes: int = 1 << 30
    ttl_frames: float = 7 * 86400.0
    ttl_windows: float = 30 * 86400.0
    ttl_events: float = 0.0
    check_interval: float = 10.0


@dataclass(frozen=True)
class HttpSection:
    """The status page and API. Bound to loopback it may stay open; bound elsewhere it needs
    a `token` (sent as `Authorization: Bearer …`, or once as `?token=` by a browser) or TLS
    client certificates (`tls_client_ca`)."""
    bind: str = "127.0.0.1"
    port: int = 9108
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""


@dataclass(frozen=True)
class DispatchSection:
    tick: float = 0.25
    accept_timeout: float = 60.0
    done_timeout: float = 3600.0
    min_battery: float = 20.0
    max_open: int = 10000


@dataclass(frozen=True)
class SparkplugSection:
    """`[sparkplug]`: the uplink speaks Sparkplug B 3.0 instead of headrace's own format
    (docs/sparkplug.md)."""
    enabled: bool = False
    group_id: str = "headrace"
    edge_node_id: str = ""  # default: the gateway's id
    primary_host_id: str = ""  # "": publish without waiting for a host application's STATE
    device_timeout: float = 60.0  # seconds of silence after which a node's device gets a DDEATH
    qos: int = 1  # births and data: 1 keeps store and forward (deleted after PUBACK); 0 as Sparkplug 3.0 asks
    datatypes: bool = False  # datatypes in NDATA/DDATA too: hosts that read values without the birth need them


@dataclass(frozen=True)
class UpdateSection:
    """`[update]`: node updates (docs/installer.md, Updating nodes). Off until `public_key`
    names the release public key (release.pub from `headrace release keygen`)."""
    public_key: str = ""  # the release public key's file; "" turns node updates off
    block_size: int = 512  # bytes a block (RFC 7959: 16 to 1024; a serial frame holds 512 at most)
    rate: float = 4096.0  # bytes a second to one node at most: its data frames keep the rest of the link
    stall: float = 20.0  # seconds without a block request before the release is offered to the node again


_SPARKPLUG_ID = re.compile(r"^[^/+#]{1,64}$")


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection = field(default_factory=GatewaySection)
    serial: SerialSection = field(default_factory=SerialSection)
    coap: CoapSection = field(default_factory=CoapSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    jetstream: JetStreamSection = field(default_factory=JetStreamSection)
    aggregate: AggregateSection = field(default_factory=AggregateSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    http: HttpSection = field(default_factory=HttpSection)
    dispatch: DispatchSection = field(default_factory=DispatchSection)
    sparkplug: SparkplugSection = field(default_factory=SparkplugSection)
    update: UpdateSection = field(default_factory=UpdateSection)
    fleet: object = None  # gateway/config/fleet.py's FleetSection (escalation and loans); filled by from_dict
    # rules, resources and zones: parsed by gateway/config/rules.py, resources.py, zones.py
    rules: tuple = ()
    resources: tuple = ()
    zones: object = None

    @property
    def spool_path(self) -> Path:
        return Path(self.gateway.data_dir) / "spool.sqlite"

    @property
    def topic_root(self) -> str:
        return f"headrace/v1/{self.gateway.site}/{self.gateway.id}/"

    def replace(self, **sections) -> "Config":
        """A copy with some sections changed: cfg.replace(mqtt={"port": 1884})."""
        changed = {}
        for name, values in sections.items():
            changed[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changed)


def _check(section: str, key: str, value, kind, default):
    where = f"[{section}] {key}"
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, got {value!r}", f"write {key} = {str(default).lower()}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"must be an integer, got {value!r}", f"write {key} = {default}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, f"must be a number, got {value!r}", f"write {key} = {default}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"must be a string, got {value!r}", f'write {key} = "{default}"')
        return value
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(where, f"must be a list of strings, got {value!r}", f'write {key} = ["…", "…"]')
        return tuple(value)
    return value


def parse_section(cls, name: str, raw: dict, problems: Problems):
    """One [section] table into its dataclass; a wrong key is recorded and its default kept."""
    if not isinstance(raw, dict):
        problems.add(ConfigError(f"[{name}]", "must be a table", f"write a [{name}] header with keys under it"))
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            problems.add(ConfigError(f"[{name}] {key}", "unknown key", f"valid keys: {', '.join(fields)}"))
            continue
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = {"bool": bool, "int": int, "float": float, "str": str, "tuple[str, ...]": tuple}.get(str(f.type))
        checked = problems.take(_check, name, key, value, kind, default, default=problems)
        if checked is not problems:
            values[key] = checked
    return cls(**values)


def _serial(raw, problems: Problems) -> SerialSection:
    if not isinstance(raw, dict):
        problems.add(ConfigError("[serial]", "must be a table",
                                 "write [[serial.ports]] tables with path = \"/dev/ttyUSB0\""))
        return SerialSection()
    for key in sorted(set(raw) - {"ports"}):
        problems.add(ConfigError(f"[serial] {key}", "unknown key", "list ports as [[serial.ports]] tables"))
    ports = []
    for i, p in enumerate(raw.get("ports", [])):
        if not isinstance(p, dict) or "path" not in p:
            problems.add(ConfigError(f"[serial.ports[{i}]] path", "missing", 'write path = "/dev/ttyUSB0"'))
            continue
        ports.append(parse_section(SerialPort, f"serial.ports[{i}]", p, problems))
    return SerialSection(ports=tuple(ports))


def _aggregate(raw, problems: Problems) -> AggregateSection:
    body = dict(raw) if isinstance(raw, dict) else raw
    widths = body.pop("widths", None) if isinstance(body, dict) else None
    section = parse_section(AggregateSection, "aggregate", body, problems)
    if widths is not None:
        if not isinstance(widths, list) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                   for w in widths):
            problems.add(ConfigError("[aggregate] widths", f"must be a list of numbers, got {widths!r}",
                                     "write widths = [10, 60]"))
        else:
            section = dataclasses.replace(section, widths=tuple(float(w) for w in widths))
    return section


def _jetstream(raw, problems: Problems) -> JetStreamSection:
    body = dict(raw) if isinstance(raw, dict) else raw
    servers = body.pop("servers", None) if isinstance(body, dict) else None
    section = parse_section(JetStreamSection, "jetstream", body, problems)
    if servers is not None:
        if not isinstance(servers, list) or not servers or not all(isinstance(x, str) for x in servers):
            problems.add(ConfigError("[jetstream] servers", f"must be a list of URLs, got {servers!r}",
                                     'write servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]'))
        else:
            section = dataclasses.replace(section, servers=tuple(servers))
    return section


def _validate(cfg: Config):
    """Checks across keys and ranges, each yielding its ConfigError (all of them are reported)."""
    g = cfg.gateway
    for key in ("id", "site"):
        if not NODE_NAME.match(getattr(g, key)):
            yield ConfigError(f"[gateway] {key}", f"{getattr(g, key)!r} is not a valid name",
                              "use 1-32 lowercase letters, digits, - or _, starting with a letter or digit")
    if g.log_level not in ("debug", "info", "warning", "error"):
        yield ConfigError("[gateway] log_level", f"{g.log_level!r} is not a level", "use debug, info, warning or error")
    for section, key, low, high in (("coap", "port", 0, 65535), ("mqtt", "port", 1, 65535), ("http", "port", 0, 65535),
                                    ("mqtt", "keepalive", 5, 3600), ("mqtt", "inflight", 1, 65535),
                                    ("mqtt", "batch_records", 1, 100000), ("spool", "commit_max_frames", 1, 100000)):
        value = getattr(getattr(cfg, section), key)
        if not low <= value <= high:
            yield ConfigError(f"[{section}] {key}", f"{value} is out of range", f"use a value from {low} to {high}")
    if not 0 <= cfg.spool.commit_interval <= 1:
        yield ConfigError("[spool] commit_interval", f"{cfg.spool.commit_interval} s is out of range",
                          "use 0 to 1 second (longer delays every ack to the nodes)")
    if not 0 <= cfg.spool.ack_wait <= 1:
        yield ConfigError("[spool] ack_wait", f"{cfg.spool.ack_wait} s is out of range",
                          "use 0 (the window is commit_interval) to 1 second")
    if cfg.spool.journal_bytes and not 1 << 18 <= cfg.spool.journal_bytes <= 1 << 30:
        yield ConfigError("[spool] journal_bytes", f"{cfg.spool.journal_bytes} bytes is out of range",
                          "use 0 (no journal: every commit a SQLite transaction) or 262144 to 1073741824")
    if cfg.spool.max_bytes < 1 << 20:
        yield ConfigError("[spool] max_bytes", f"{cfg.spool.max_bytes} bytes is too small",
                          "give at least 1048576 (1 MiB); size it for the longest uplink outage to ride out")
    for key in ("ttl_frames", "ttl_windows", "ttl_events"):
        if getattr(cfg.spool, key) < 0:
            yield ConfigError(f"[spool] {key}", "must not be negative", f"write {key} = 0 to keep records until sent")
    if not 0.1 <= cfg.spool.check_interval <= 3600:
        yield ConfigError("[spool] check_interval", f"{cfg.spool.check_interval} s is out of range", "use 0.1 to 3600")
    if not 1 <= cfg.coap.dedup_seconds <= 300:
        yield ConfigError("[coap] dedup_seconds", f"{cfg.coap.dedup_seconds} s is out of range",
                          "use 1 to 300 seconds (repeats older than this are answered by the replay window)")
    if not 64 <= cfg.coap.dedup_max <= 10_000_000:
        yield ConfigError("[coap] dedup_max", f"{cfg.coap.dedup_max} exchanges is out of range",
                          "use 64 to 10000000 (about 200 bytes each, twice over: two generations)")
    if not 0 <= cfg.coap.receive_buffer <= 1 << 30:
        yield ConfigError("[coap] receive_buffer", f"{cfg.coap.receive_buffer} bytes is out of range",
                          "use 0 (the system's default) to 1073741824 bytes")
    if not 0 <= cfg.coap.batch <= 1024:
        yield ConfigError("[coap] batch", f"{cfg.coap.batch} datagrams is out of range",
                          "use 0 (a system call a datagram, through asyncio) to 1024 datagrams a call")
    if not 1 <= cfg.mqtt.reconnect_max <= 3600:
        yield ConfigError("[mqtt] reconnect_max", f"{cfg.mqtt.reconnect_max} s is out of range",
                          "use 1 to 3600 seconds between reconnection attempts at the most")
    if cfg.mqtt.batch_delay < 0 or cfg.mqtt.batch_delay > 60:
        yield ConfigError("[mqtt] batch_delay", f"{cfg.mqtt.batch_delay} s is out of range", "use 0 to 60 seconds")
    if not cfg.aggregate.widths or any(w <= 0 for w in cfg.aggregate.widths):
        yield ConfigError("[aggregate] widths", f"{list(cfg.aggregate.widths)} is invalid",
                          "list positive window widths in seconds, e.g. widths = [10, 60]")
    if cfg.aggregate.late_policy not in ("drop", "correct"):
        yield ConfigError("[aggregate] late_policy", f"{cfg.aggregate.late_policy!r} is not a policy",
                          'write late_policy = "drop" (count and drop late readings) or "correct" (emit corrections)')
    if cfg.aggregate.max_open < 1000:
        yield ConfigError("[aggregate] max_open", f"{cfg.aggregate.max_open} is too small",
                          "allow at least one open window per series and width (about 150 bytes each)")
    if cfg.aggregate.lateness < 0:
        yield ConfigError("[aggregate] lateness", "must not be negative", "write lateness = 2.0")
    j = cfg.jetstream
    for key, low, high in (("replicas", 1, 5), ("inflight", 1, 65535), ("timeout", 0.5, 600),
                           ("batch_records", 1, 100000), ("batch_delay", 0, 60), ("reconnect_max", 1, 3600)):
        if not low <= getattr(j, key) <= high:
            yield ConfigError(f"[jetstream] {key}", f"{getattr(j, key)} is out of range", f"use {low} to {high}")
    d = cfg.dispatch
    for key, low, high in (("tick", 0.01, 10), ("accept_timeout", 1, 86400), ("done_timeout", 1, 30 * 86400),
                           ("min_battery", 0, 100), ("max_open", 1, 1_000_000)):
        if not low <= getattr(d, key) <= high:
            yield ConfigError(f"[dispatch] {key}", f"{getattr(d, key)} is out of range", f"use {low} to {high}")
    yield from _validate_sparkplug(cfg)
    u = cfg.update
    if u.block_size not in (16, 32, 64, 128, 256, 512):
        yield ConfigError("[update] block_size", f"{u.block_size} is not a block size",
                          "use 16, 32, 64, 128, 256 or 512 bytes (RFC 7959 sizes that fit a serial frame)")
    if not 64 <= u.rate <= 10_000_000:
        yield ConfigError("[update] rate", f"{u.rate} bytes/s is out of range",
                          "use 64 to 10000000 bytes a second (a 115200 baud line carries about 11500)")
    if not 2 <= u.stall <= 3600:
        yield ConfigError("[update] stall", f"{u.stall} s is out of range", "use 2 to 3600 seconds")
    if u.public_key and not os.path.exists(u.public_key):
        yield ConfigError("[update] public_key", f"file {u.public_key} does not exist",
                          "copy release.pub from the release machine (headrace release keygen) and give its path")
    tls = (cfg.mqtt.tls_cert, cfg.mqtt.tls_key)
    if any(tls) and not all(tls):
        yield ConfigError("[mqtt] tls_cert", "a client certificate needs its key and the reverse",
                          "set both tls_cert and tls_key, or neither")
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(cfg.mqtt, key)
        if path and not os.path.exists(path):
            yield ConfigError(f"[mqtt] {key}", f"file {path} does not exist", "give the path of a PEM file")
    yield from _validate_http(cfg.http)


TOKEN_MIN = 16  # characters of [http] token


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an interface address: reachable from elsewhere


def _validate_http(h: HttpSection):
    """The [http] access checks, each yielding its ConfigError."""
    if h.token and (len(h.token) < TOKEN_MIN or not all(33 <= ord(c) < 127 for c in h.token)):
        yield ConfigError("[http] token", f"must be at least {TOKEN_MIN} printable ASCII characters without spaces",
                          "write token = \"…\" with the output of: python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(24))'")
    if bool(h.tls_cert) != bool(h.tls_key):
        yield ConfigError("[http] tls_cert", "a server certificate needs its key and the reverse",
                          "set both tls_cert and tls_key, or neither")
    if h.tls_client_ca and not h.tls_cert:
        yield ConfigError("[http] tls_client_ca", "client certificates need TLS: no tls_cert and tls_key",
                          "set tls_cert and tls_key (the gateway's certificate and key) too")
    for key in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(h, key)
        if path and not os.path.exists(path):
            yield ConfigError(f"[http] {key}", f"file {path} does not exist", "give the path of a PEM file")
    if h.port and not is_loopback(h.bind) and not (h.token or h.tls_client_ca):
        yield ConfigError("[http] bind", f"{h.bind!r} is reachable from the network, and neither a token nor client "
                          "certificates guard the status page and the API (whoever reaches it may open demands)",
                          'set token = "<a long random string>" (or tls_client_ca with tls_cert and tls_key), '
                          'or bind = "127.0.0.1"')


def _validate_sparkplug(cfg: Config):
    sp = cfg.sparkplug
    if sp.enabled and cfg.jetstream.enabled:
        yield ConfigError("[sparkplug] enabled", "Sparkplug B goes over MQTT, and [jetstream] is enabled too",
                          "enable one uplink: [sparkplug] (MQTT, Sparkplug B) or [jetstream]")
    for key in ("group_id", "edge_node_id", "primary_host_id"):
        value = getattr(sp, key)
        if (value or key == "group_id") and not _SPARKPLUG_ID.match(value):
            yield ConfigError(f"[sparkplug] {key}", f"{value!r} is not a Sparkplug id",
                              "use 1-64 characters without '/', '+' or '#' (they are MQTT topic levels)"
                              + ("; leave it out to use the gateway's id" if key == "edge_node_id" else ""))
    if sp.qos not in (0, 1):
        yield ConfigError("[sparkplug] qos", f"{sp.qos} is not 0 or 1",
                          "write qos = 1 (records leave the spool after the broker's PUBACK) or qos = 0")
    if not 1 <= sp.device_timeout <= 86400:
        yield ConfigError("[sparkplug] device_timeout", f"{sp.device_timeout} s is out of range",
                          "use 1 to 86400 seconds: longer than a node's period between frames")


def from_dict(raw: dict) -> Config:
    """Validate a parsed TOML document into a Config; every mistake found is reported at once
    (one as a ConfigError, several as ConfigErrors)."""
    from gateway.config import fleet, resources, rules, zones

    problems = Problems()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    values = {}
    for name, body in raw.items():
        if name not in sections:
            problems.add(ConfigError(f"[{name}]", "unknown section", f"valid sections: {', '.join(sections)}"))
        elif name == "serial":
            values[name] = _serial(body, problems)
        elif name == "jetstream":
            values[name] = _jetstream(body, problems)
        elif name == "aggregate":
            values[name] = _aggregate(body, problems)
        elif name == "fleet":
            values[name] = fleet.parse(body, problems)
        elif name not in ("rules", "resources", "zones"):  # those after the sections they refer to, below
            values[name] = parse_section(sections[name].default_factory, name, body, problems)
    values["zones"] = problems.take(zones.parse, raw["zones"], default=zones.ZoneMap()) if "zones" in raw \
        else zones.ZoneMap()
    values["resources"] = resources.parse(raw.get("resources", []), problems)
    widths = values["aggregate"].widths if "aggregate" in values else AggregateSection().widths
    values.setdefault("fleet", fleet.FleetSection())
    remote = set(values["fleet"].remote) if values["fleet"].enabled else set()  # asked of other gateways
    values["rules"] = rules.parse(raw.get("rules", []), values["zones"], widths,
                                  {c for r in values["resources"] for c in r.capabilities} | remote, problems)
    cfg = Config(**values)
    for error in _validate(cfg):
        problems.add(error)
    problems.raise_any()
    return cfg


def load(path: str | os.PathLike | None) -> Config:
    """Read and validate a TOML file; None gives the embedded defaults."""
    if path is None:
        return from_dict({})
    return from_dict(read_toml(path))
