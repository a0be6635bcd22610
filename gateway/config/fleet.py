"""`[fleet]` in gateway.toml: escalation and loans between the gateways of a site
(gateway/decisions/loans.py; docs/matching.md, "Across gateways").

    [fleet]
    enabled = true                                  # off by default: the gateway matches only its own
    escalate_after = 60                             # seconds a demand may wait unassigned; 0: never by time
    # or per need: escalate_after = { mechanic = 20, lift = 120 }  (a need not listed: never by time)
    remote = ["electrician"]                        # needs no resource here has, asked of the fleet at once

A demand for a need no local resource has is escalated at once (`remote` lets such
demands be opened at all); any other waits `escalate_after` seconds unassigned first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.config.problems import Problems
from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME

_KEYS = ("enabled", "escalate_after", "remote")


@dataclass(frozen=True)
class FleetSection:
    enabled: bool = False
    escalate_after: float = 60.0                      # every need, when `after_by_need` is empty
    after_by_need: dict = field(default_factory=dict)  # need -> seconds, when given as a table
    remote: tuple = ()

    def after(self, need: str) -> float:
        """Seconds a demand for `need` may wait unassigned before it is escalated (inf: never by time)."""
        seconds = self.after_by_need.get(need, math.inf) if self.after_by_need else self.escalate_after
        return seconds if seconds > 0 else math.inf

    def __hash__(self):
        return hash((self.enabled, self.escalate_after, tuple(sorted(self.after_by_need.items())), self.remote))


def _seconds(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise ConfigError(where, f"must be a number of seconds >= 0, got {value!r}",
                          "write escalate_after = 60 (0: escalate only what no resource here can do)")
    return float(value)


def parse(raw, problems: Problems) -> FleetSection:
    """Validate `[fleet]`; each mistake is recorded in `problems` and its default kept."""
    if not isinstance(raw, dict):
        problems.add(ConfigError("[fleet]", "must be a table", "write a [fleet] header with enabled = true under it"))
        return FleetSection()
    values: dict = {}
    for key in sorted(set(raw) - set(_KEYS)):
        problems.add(ConfigError(f"[fleet] {key}", "unknown key", f"valid keys: {', '.join(_KEYS)}"))
    if "enabled" in raw:
        if isinstance(raw["enabled"], bool):
            values["enabled"] = raw["enabled"]
        else:
            problems.add(ConfigError("[fleet] enabled", f"must be true or false, got {raw['enabled']!r}",
                                     "write enabled = true"))
    after = raw.get("escalate_after")
    if isinstance(after, dict):
        table = {}
        for need, seconds in after.items():
            if not NODE_NAME.match(need):
                problems.add(ConfigError(f"[fleet] escalate_after.{need}", "is not a capability name",
                                         'write escalate_after = { mechanic = 20 }'))
                continue
            s = problems.take(_seconds, seconds, f"[fleet] escalate_after.{need}")
            if s is not None:
                table[need] = s
        values["after_by_need"] = table
    elif after is not None:
        s = problems.take(_seconds, after, "[fleet] escalate_after")
        if s is not None:
            values["escalate_after"] = s
    remote = raw.get("remote", [])
    if not isinstance(remote, list) or not all(isinstance(n, str) and NODE_NAME.match(n) for n in remote):
        problems.add(ConfigError("[fleet] remote", f"must be a list of capability names, got {remote!r}",
                                 'write remote = ["electrician"]'))
    else:
        values["remote"] = tuple(remote)
    return FleetSection(**values)
