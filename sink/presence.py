"""Presence in the mirror: whether each gateway, node and resource is online, and why.

Configuration (`[sink]` in sink.toml): `gateway_timeout` (seconds, 150: a gateway
whose last `state` message is older is offline; gateways send one every 60 s,
and NATS has no Last Will), `node_timeout` (seconds, 300: a node whose last
frame reached its gateway longer ago is offline), `presence_interval` (seconds
between sweeps, 5).

Usage: the stores run `sweep_statements()` in the transaction that stores a
`state` message (a gateway that goes takes its nodes and resources with it at
once) and, from the sink's loop, every `presence_interval` (`store.sweep()`);
the sweep is idempotent, so several workers may run it at once. Columns, in
`gateways`, `nodes` and `resources`: `online` (boolean), `why` (what set it) and
`changed` (seconds since the epoch, when `online` last changed); `nodes.heard`
is when its last frame reached its gateway, `resources.node` the node it is
mirrored from and `resources.free` whether it is free (from `resource` events).

The rules, the same in PostgreSQL and SQLite:

| row | online when | offline, `why` |
|---|---|---|
| gateway | its last `state` message says `online` (`why` `state`) | `will` (the broker's Last Will: the gateway vanished), `clean` (it said so, stopping), `silent` (no `state` for `gateway_timeout`) |
| node | its gateway is not offline and a frame of it reached the gateway within `node_timeout` (`data`) | `gateway` (its gateway is offline), `silent` |
| resource | its gateway is not offline and, if it is mirrored from a node (the `resource` event's `node`), that node is online (`online`) | `gateway`, `node` |

Caveats: times are compared across clocks: a gateway's `at` and a frame's
receive time are the gateway's clock, `now` the sink's (keep them in NTP). A node
turns online at once when it first appears, and otherwise at the next sweep.
A gateway that never sent a `state` message is not offline (nothing says so).
"""
from __future__ import annotations

GATEWAY_TIMEOUT = 150.0  # seconds: 2.5 state intervals of a gateway (60 s)
NODE_TIMEOUT = 300.0  # seconds
INTERVAL = 5.0  # seconds between sweeps

# columns of the mirror tables for presence; the stores add them to tables made by an older sink too
COLUMNS = {
    "gateways": (("why", "text"), ("changed", "double precision")),
    "nodes": (("heard", "double precision"), ("online", "boolean"), ("why", "text"),
              ("changed", "double precision")),
    "resources": (("node", "text"), ("free", "boolean"), ("free_at", "double precision"), ("online", "boolean"),
                  ("why", "text"), ("changed", "double precision")),
}

_GW_OFF = ("EXISTS (SELECT 1 FROM gateways g WHERE g.site = {t}.site AND g.gateway = {t}.gateway "
           "AND NOT g.online)")
_NODE_OFF = ("{t}.node IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.site = {t}.site "
             "AND n.gateway = {t}.gateway AND n.node = {t}.node AND n.online)")

# in order: gateways first, then the nodes behind them, then the resources on those
_SWEEP = (
    "UPDATE gateways SET online = FALSE, why = 'silent', changed = :now "
    "WHERE online AND at < :now - :gateway_timeout",
    "UPDATE nodes SET online = FALSE, why = 'gateway', changed = :now "
    f"WHERE online IS NOT FALSE AND {_GW_OFF.format(t='nodes')}",
    "UPDATE nodes SET online = FALSE, why = 'silent', changed = :now "
    f"WHERE online IS NOT FALSE AND NOT {_GW_OFF.format(t='nodes')} "
    "AND (heard IS NULL OR heard < :now - :node_timeout)",
    "UPDATE nodes SET online = TRUE, why = 'data', changed = :now "
    f"WHERE online IS NOT TRUE AND NOT {_GW_OFF.format(t='nodes')} AND heard >= :now - :node_timeout",
    "UPDATE resources SET online = FALSE, why = 'gateway', changed = :now "
    f"WHERE online IS NOT FALSE AND {_GW_OFF.format(t='resources')}",
    "UPDATE resources SET online = FALSE, why = 'node', changed = :now "
    f"WHERE online IS NOT FALSE AND NOT {_GW_OFF.format(t='resources')} AND {_NODE_OFF.format(t='resources')}",
    "UPDATE resources SET online = TRUE, why = 'online', changed = :now "
    f"WHERE online IS NOT TRUE AND NOT {_GW_OFF.format(t='resources')} "
    f"AND NOT ({_NODE_OFF.format(t='resources')})",
)


def gateway_why(state: dict) -> str:
    """`why` of a gateway's `state` message: `state` (online), `clean` (its own last word), `will`."""
    if state.get("online"):
        return "state"
    return "clean" if state.get("clean") else "will"


def _bind(sql: str, style: str) -> str:
    """Named parameters as the driver takes them: `:name` (sqlite3) or `%(name)s` (psycopg)."""
    if style == "sqlite":
        return sql
    for name in ("now", "gateway_timeout", "node_timeout", "site", "gateway"):
        sql = sql.replace(f":{name}", f"%({name})s")
    return sql


def sweep_statements(style: str) -> list[str]:
    """The sweep's statements, with named parameters now, gateway_timeout and node_timeout."""
    return [_bind(sql, style) for sql in _SWEEP]

