"""`python -m sink.fleet_service --config fleet.toml`: the cloud's fleet dispatcher as a process.

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
import queue
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

import paho.mqtt.client as paho

from gateway.errors import ConfigError
from gateway.runtime.uplink import batch, events as event_batch
from sink.fleet import FLEET_EVENTS, FleetDispatcher, FleetMirror
from sink.fleet_map import SiteMap

log = logging.getLogger("headrace.fleet")
_KEYS = {"site": str, "site_map": str, "database": str, "tick": float, "ask_timeout": float, "mqtt": dict}
_MQTT_KEYS = ("host", "port", "client_id")


def load(path) -> dict:
    """The validated configuration; ConfigError naming the key and the fix."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}", "check the path given with --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}", "fix the syntax at the line shown") from None
    cfg = {"site": "", "site_map": "", "database": "", "tick": 0.25, "ask_timeout": 10.0,
           "mqtt": {"host": "127.0.0.1", "port": 1883, "client_id": ""}}
    for key, value in raw.items():
        kind = _KEYS.get(key)
        if kind is None:
            raise ConfigError(key, "unknown key", f"valid keys: {', '.join(_KEYS)}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind):
            raise ConfigError(key, f"must be a {kind.__name__}, got {value!r}", f"see the example in {__name__}")
        if key == "mqtt":
            extra = set(value) - set(_MQTT_KEYS)
            if extra:
                raise ConfigError(f"[mqtt] {sorted(extra)[0]}", "unknown key", f"valid keys: {', '.join(_MQTT_KEYS)}")
            value = {**cfg["mqtt"], **value}
        cfg[key] = value
    if not cfg["site"]:
        raise ConfigError("site", "missing", 'write site = "plant" (the [gateway] site of its gateways)')
    return cfg


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
        site_map = SiteMap.load(cfg["site_map"]) if cfg["site_map"] else None
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
        self.client.connect(self.cfg["mqtt"]["host"], self.cfg["mqtt"]["port"])
        self.client.loop_start()
        try:
            if not self._subscribed.wait(30):
                raise ConnectionError(f"no SUBACK from {self.cfg['mqtt']['host']}:{self.cfg['mqtt']['port']} in 30 s")
            if self.cfg["database"]:
                rows = stored_events(self.cfg["database"], self.cfg["site"])
                self.publish(self.mirror.rebuild(rows))
                log.info("fleet mirror rebuilt from %d stored events: %d resources, %d escalated, %d loans",
                         len(rows), len(self.mirror.resources), len(self.mirror.escalated), len(self.mirror.loans))
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

    def stop(self, *_args) -> None:
        self._stop.set()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="headrace's fleet dispatcher (one a site)")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        service = FleetService(load(args.config))
    except ConfigError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
