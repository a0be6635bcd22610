"""`headrace fleet run --config fleet.toml`: the cloud's fleet dispatcher as a process
(`python -m sink.fleet_service --config fleet.toml` is the same; `headrace fleet check-config`
validates the file and its site map, and exits).

Configuration (`fleet.toml`):

    site = "plant"                       # the site whose gateways it matches
    site_map = "/etc/headrace/site.toml" # sink/fleet_map.py's format; "" for straight lines
    database = "postgresql://…"         # the sink's database: the mirror is rebuilt from its events ("" : none)
    tick = 0.25                          # seconds between assignment rounds
    ask_timeout = 10.0                   # seconds a lender may take to answer a lend
    [mqtt]
    host = "127.0.0.1"
    port = 1883
    client_id = ""                       # the persistent session's name; default headrace-fleet-<site>

Usage: one process a site. It subscribes to `headrace/v1/<site>/+/events` (a persistent
session: the broker keeps what comes while it restarts; what came before its first
start is in the database it rebuilds from), applies
each event to the fleet mirror, publishes the fleet commands on
`headrace/v1/<site>/<gateway>/cmd/_fleet` (QoS 1), and every `tick` assigns the
escalated demands (sink/fleet.py). At start it subscribes first, then rebuilds
from the database's events, then takes what arrived meanwhile (a repeat is
dropped by its key), so no event falls between the two.

Caveats: MQTT brokers only (mosquitto, or NATS's MQTT listener); one instance a
site (two would each lend, and the gateways refuse the loser: safe, not useful).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import signal
import sys
import threading
import time

import paho.mqtt.client as paho

from gateway.config.problems import Problems, read_toml
from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME
from gateway.runtime.uplink import batch, events as event_batch
from sink.fleet import FLEET_EVENTS, FleetDispatcher, FleetMirror
from sink.fleet_map import SiteMap

log = logging.getLogger("headrace.fleet")
_DEFAULTS = {"site": "", "site_map": "", "database": "", "tick": 0.25, "ask_timeout": 10.0,
             "mqtt": {"host": "127.0.0.1", "port": 1883, "client_id": ""}}
_FIXES = {"site": 'write site = "plant" (the [gateway] site of its gateways)',
          "site_map": 'write site_map = "/etc/headrace/site.toml", or "" for straight-line travel',
          "database": 'write database = "postgresql://sink@db/headrace" (or the sink\'s SQLite file), or ""',
          "tick": "write tick = 0.25 (seconds between assignment rounds, more than 0)",
          "ask_timeout": "write ask_timeout = 10.0 (seconds a lender may take to answer, more than 0)",
          "mqtt": "write [mqtt] with host, port and client_id"}


def load(path) -> dict:
    """The validated configuration (the site map read and checked too). Every mistake is
    reported at once, each naming the key and the fix (`ConfigErrors` when there are several)."""
    return from_dict(read_toml(path))


def from_dict(raw: dict) -> dict:
    """`load` for a table already parsed."""
    problems = Problems()
    cfg = {**_DEFAULTS, "mqtt": dict(_DEFAULTS["mqtt"])}
    for key, value in raw.items():
        if key not in _DEFAULTS:
            problems.add(ConfigError(key, "unknown key", f"valid keys: {', '.join(_DEFAULTS)}"))
            continue
        if key == "mqtt":
            problems.take(_mqtt, value, cfg["mqtt"])
            continue
        kind = type(_DEFAULTS[key])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is float and not (math.isfinite(value) and value > 0)):
            problems.add(ConfigError(key, f"must be a {'number of seconds > 0' if kind is float else 'string'}, "
                                          f"got {value!r}", _FIXES[key]))
            continue
        cfg[key] = value
    if not cfg["site"]:
        if "site" not in raw:
            problems.add(ConfigError("site", "missing", _FIXES["site"]))
    elif not NODE_NAME.match(cfg["site"]):
        problems.add(ConfigError("site", f"{cfg['site']!r} is not a site name (a-z, 0-9, _ and -, up to 32)",
                                 "use the [gateway] site of its gateways"))
    if cfg["site_map"]:
        try:
            cfg["site_map_parsed"] = SiteMap.load(cfg["site_map"])
        except ConfigError as exc:
            for e in getattr(exc, "errors", [exc]):  # the file's own keys, within the site map
                where = "site_map" if e.key == cfg["site_map"] else f"site_map {cfg['site_map']}: {e.key}"
                problems.add(ConfigError(where, e.problem if where != "site_map" else f"{e.key}: {e.problem}",
                                         e.fix))
    problems.raise_any()
    return cfg


def _mqtt(value, into: dict) -> None:
    if not isinstance(value, dict):
        raise ConfigError("mqtt", f"must be a table, got {value!r}", _FIXES["mqtt"])
    for key, v in value.items():
        if key not in into:
            raise ConfigError(f"[mqtt] {key}", "unknown key", f"valid keys: {', '.join(into)}")
        if key == "port":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
                raise ConfigError("[mqtt] port", f"must be a TCP port 1-65535, got {v!r}", "write port = 1883")
        elif not isinstance(v, str) or (key == "host" and not v):
            raise ConfigError(f"[mqtt] {key}", f"must be a{' non-empty' if key == 'host' else ''} string, got {v!r}",
                              'write host = "broker.plant"' if key == "host" else
                              'write client_id = "headrace-fleet-plant" (or leave it out)')
        into[key] = v


def stored_events(database: str, site: str) -> list[tuple[str, dict]]:
    """The site's fleet events from the sink's database, oldest first."""
    from sink.store import open_store

    store = open_store(database)
    try:
        marks = ", ".join("?" for _ in FLEET_EVENTS)
        rows = store.query(f"SELECT gateway, body FROM events WHERE site = ? AND type IN ({marks}) ORDER BY t",
                           (site, *FLEET_EVENTS))
    finally:
        store.close()
    return [(gw, body if isinstance(body, dict) else json.loads(body)) for gw, body in rows]


class FleetService:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        site_map = cfg.get("site_map_parsed") or (SiteMap.load(cfg["site_map"]) if cfg["site_map"] else None)
        self.mirror = FleetMirror()
        self.dispatcher = FleetDispatcher(self.mirror, site_map, ask_timeout=cfg["ask_timeout"])
        self.inbox: queue.Queue = queue.Queue(maxsize=100000)
        self.root = f"headrace/v1/{cfg['site']}/"
        # a persistent session: while this process restarts, the broker keeps the events for it
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, clean_session=False,
                                  client_id=cfg["mqtt"]["client_id"] or f"headrace-fleet-{cfg['site']}")
        self.client.on_connect = lambda c, *a: c.subscribe(self.root + "+/events", qos=1)
        self.client.on_message = self._message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self._stop = threading.Event()

    def _message(self, _client, _userdata, msg) -> None:
        gateway = msg.topic[len(self.root):].split("/", 1)[0]
        try:
            rows = list(event_batch.rows(batch.decode(msg.payload)))
        except Exception as exc:  # a bad batch is the sink's dead letter, not ours to stop on
            log.warning("events of %s not decoded: %s", gateway, exc)
            return
        for e in rows:
            if e.get("type") in FLEET_EVENTS:
                self.inbox.put((gateway, e))

    def publish(self, commands) -> None:
        for gateway, cmd in commands:
            self.client.publish(f"{self.root}{gateway}/cmd/_fleet", json.dumps(cmd), qos=1)
            log.info("%s %s to %s: %s", cmd["cmd"], cmd["id"], gateway, cmd["args"])

    def run(self) -> None:
        host, port = self.cfg["mqtt"]["host"], self.cfg["mqtt"]["port"]
        # connect in paho's thread, which retries: a broker not up yet (or gone) is waited for
        self.client.reconnect_delay_set(1, 10)
        self.client.connect_async(host, port)
        self.client.loop_start()
        try:
            waited = 0
            while not self._subscribed.wait(10):
                if self._stop.is_set():
                    return
                waited += 10
                log.warning("no broker at %s:%d yet (%d s): retrying; check [mqtt] host and port", host, port, waited)
            # no lending before the mirror is whole: a database not there yet is waited for
            while self.cfg["database"] and not self.rebuild():
                if self._stop.wait(5):
                    return
            print("fleet dispatcher running", flush=True)
            while not self._stop.is_set():
                deadline = time.monotonic() + self.cfg["tick"]
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        gateway, e = self.inbox.get(timeout=left)
                    except queue.Empty:
                        break
                    self.publish(self.mirror.apply(gateway, e))
                self.publish(self.dispatcher.tick(time.time()))
        finally:
            self.client.loop_stop()
            self.client.disconnect()

    def rebuild(self) -> bool:
        """The mirror from the sink's database; False (logged, with the database named) if it cannot be read."""
        try:
            rows = stored_events(self.cfg["database"], self.cfg["site"])
        except Exception as exc:  # psycopg's and sqlite3's errors alike: the operator reads which
            log.warning("cannot read the sink's database %s (%s: %s): the fleet mirror is not rebuilt; retrying in "
                        "5 s (check database in the fleet config, and that the sink has created it)",
                        self.cfg["database"], type(exc).__name__, exc)
            return False
        self.publish(self.mirror.rebuild(rows))
        log.info("fleet mirror rebuilt from %d stored events: %d resources, %d escalated, %d loans",
                 len(rows), len(self.mirror.resources), len(self.mirror.escalated), len(self.mirror.loans))
        return True

    def stop(self, *_args) -> None:
        self._stop.set()


def check(path) -> str:
    """One line saying what a valid fleet.toml sets up; ConfigError(s) otherwise."""
    cfg = load(path)
    site_map = cfg.get("site_map_parsed")
    where = (f"site map {cfg['site_map']}: {len(site_map.gateways)} gateways, {len(site_map.zones.points)} points"
             if site_map else "no site map (straight-line travel)")
    return (f"{path}: OK: site {cfg['site']}, {where}, "
            f"{'rebuilds from ' + cfg['database'] if cfg['database'] else 'no database (nothing rebuilt at start)'}, "
            f"MQTT {cfg['mqtt']['host']}:{cfg['mqtt']['port']}, tick {cfg['tick']:g} s")


def serve(cfg: dict) -> int:
    """Run until SIGTERM or SIGINT."""
    service = FleetService(cfg)
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    service.run()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="headrace's fleet dispatcher (one a site)")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"headrace fleet: {exc}", file=sys.stderr)
        return 2
    return serve(cfg)


if __name__ == "__main__":
    sys.exit(main())
