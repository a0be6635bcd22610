"""Advice on a valid configuration: settings that run but deserve a look.

Usage: `config_warnings(cfg)` gives one sentence per finding, naming the key and
what to do. `headrace gateway check-config` prints them after its summary; the
status page shows them in its gateway panel. Unlike errors, they never stop the
gateway.
"""
from __future__ import annotations

from gateway.config.sections import is_loopback


def config_warnings(cfg) -> list[str]:
    """Settings that run but deserve a look: one sentence each, naming the key and what to do."""
    out = []
    h = cfg.http
    if not is_loopback(h.bind) and h.token and not h.tls_cert:
        out.append(f"[http] bind = {h.bind!r} with a token over plain HTTP: the token crosses the network in "
                   "clear; set tls_cert and tls_key")
    if not cfg.serial.ports and not cfg.coap.enabled:
        out.append("no transport: no [[serial.ports]] and [coap] enabled = false; no node can reach this gateway")
    elif cfg.coap.enabled and is_loopback(cfg.coap.bind) and not cfg.serial.ports:
        out.append(f"[coap] bind = {cfg.coap.bind!r}: only nodes on this machine reach it; "
                   'set bind = "0.0.0.0" for nodes on the plant network')
    if cfg.mqtt.password and not cfg.mqtt.tls_ca and not is_loopback(cfg.mqtt.host):
        out.append(f"[mqtt] password sent in clear to {cfg.mqtt.host}: set tls_ca")
    if cfg.spool.ttl_frames and cfg.spool.ttl_frames < 3600:
        out.append(f"[spool] ttl_frames = {cfg.spool.ttl_frames:g} s: readings are dropped after an uplink "
                   "outage of less than an hour")
    sp = cfg.sparkplug
    if sp.enabled and not sp.primary_host_id:
        out.append("[sparkplug] primary_host_id is empty: data goes to the broker whether or not a host listens, "
                   "and leaves the spool; name the SCADA's host id so the spool keeps it while the host is away")
    if sp.enabled and sp.qos == 0:
        out.append("[sparkplug] qos = 0: records leave the spool once written to the socket; a broker that fails "
                   "before delivering them loses them (qos = 1 waits for its PUBACK)")
    return out
