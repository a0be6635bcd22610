"""`[[resources]]` in gateway.toml: what the dispatcher can send (gateway/decisions/dispatch.py;
docs/matching.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.config.problems import Problems
from gateway.config.zones import position
from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME

_RESOURCE_KEYS = ("id", "capabilities", "home", "speed", "node")


@dataclass(frozen=True)
class Resource:
    id: str
    capabilities: tuple = ()
    home: tuple = (0.0, 0.0)
    speed: float = 1.0
    node: str = ""


def parse(raw, problems: Problems) -> tuple[Resource, ...]:
    """Validate the `[[resources]]` list; each resource's mistake is recorded in `problems` and it is left out."""
    if not isinstance(raw, list):
        problems.add(ConfigError("[resources]", "must be a list of tables",
                                 "write each resource as a [[resources]] table"))
        return ()
    out, ids, nodes = [], set(), set()
    for i, r in enumerate(raw):
        resource = problems.take(_resource, r, i, ids, nodes)
        if resource is not None:
            out.append(resource)
    return tuple(out)


def _resource(r, i: int, ids: set, nodes: set) -> Resource:
    if not isinstance(r, dict):
        raise ConfigError(f"[resources[{i}]]", "must be a table", "write [[resources]] tables")
    rid = r.get("id")
    if not isinstance(rid, str) or not NODE_NAME.match(rid):
        raise ConfigError(f"[resources[{i}]] id", f"missing or invalid: {rid!r}",
                          'write id = "mech1" (lowercase letters, digits, - or _)')
    where = f"[resources.{rid}]"
    extra = set(r) - set(_RESOURCE_KEYS)
    if extra:
        raise ConfigError(f"{where} {sorted(extra)[0]}", "unknown key", f"valid keys: {', '.join(_RESOURCE_KEYS)}")
    if rid in ids:
        raise ConfigError(f"{where} id", "used by two resources", "give every resource its own id")
    ids.add(rid)
    caps = r.get("capabilities")
    if not isinstance(caps, list) or not caps or not all(isinstance(c, str) and NODE_NAME.match(c) for c in caps):
        raise ConfigError(f"{where} capabilities", f"must be a non-empty list of names, got {caps!r}",
                          'write capabilities = ["mechanic"]')
    if "home" not in r:
        raise ConfigError(f"{where} home", "missing", "write home = [x, y] (plant metres)")
    home = position(r["home"], f"{where} home", "home = [2.0, 3.0]")
    speed = r.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not (0 < speed < math.inf):
        raise ConfigError(f"{where} speed", f"must be a positive number of metres per second, got {speed!r}",
                          "write speed = 1.4 (walking) or 3.0 (a forklift)")
    node = r.get("node", "")
    if node and (not isinstance(node, str) or not NODE_NAME.match(node)):
        raise ConfigError(f"{where} node", f"{node!r} is not a node name", 'write node = "mech1"')
    if node and node in nodes:
        raise ConfigError(f"{where} node", f"node {node!r} already mirrors another resource",
                          "give each resource its own node")
    nodes.add(node)
    return Resource(rid, tuple(caps), home, float(speed), node)
