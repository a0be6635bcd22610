"""`[[rules]]` in gateway.toml: validated into `Rule`s, which `gateway.decisions.rules.RuleEngine`
compiles into the core's rule table. The operator's guide is docs/matching.md; the
engine's module docstring shows every key."""
from __future__ import annotations

import math
from dataclasses import dataclass

from core_ext.rules import STATS

from gateway.config.problems import Problems
from gateway.config.zones import position
from gateway.errors import ConfigError
from gateway.protocol.names import NODE_NAME, RULE_NAME, SERIES_NAME

KINDS = ("threshold", "rate", "window", "stale")
SEVERITIES = ("info", "warning", "critical")
_RULE_KEYS = {"name", "kind", "series", "node", "above", "below", "hysteresis", "for", "width", "stat", "after",
              "all", "any", "emit", "severity", "need", "priority", "at", "zone"}
_COND_KEYS = {"kind", "series", "above", "below", "hysteresis", "width", "stat"}


@dataclass(frozen=True)
class Condition:
    series: str
    kind: str = "threshold"   # threshold | rate | window
    above: bool = True
    level: float = 0.0
    hysteresis: float = 0.0
    width: float = 0.0
    stat: str = "mean"

    @property
    def clear(self) -> float:
        return self.level - self.hysteresis if self.above else self.level + self.hysteresis


@dataclass(frozen=True)
class Rule:
    name: str
    mode: str = "all"                  # all | any | stale
    conditions: tuple = ()
    duration: float = 0.0
    after: float = 0.0
    node: str = ""                     # the node the rule watches
    series: str = ""                   # stale: one series (else every series of the node)
    emit: str = "alarm"                # alarm | demand
    severity: str = "warning"
    need: str = ""
    priority: int = 5
    at: tuple | None = None
    zone: str = ""


def _num(raw: dict, key: str, where: str, example: str, low: float = -math.inf, strict: bool = False) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or (strict and value == low):
        bound = f" {'>' if strict else '>='} {low:g}" if low > -math.inf else ""
        raise ConfigError(f"{where} {key}", f"must be a number{bound}, got {value!r}", f"write {key} = {example}")
    return float(value)


def _condition(raw, where: str, kind_default: str = "threshold") -> Condition:
    if not isinstance(raw, dict):
        raise ConfigError(where, f"a condition is a table, got {raw!r}", 'write {series = "pump1/temp", above = 80}')
    extra = set(raw) - _COND_KEYS
    if extra:
        raise ConfigError(f"{where} {sorted(extra)[0]}", "unknown key in a condition",
                          f"valid keys: {', '.join(sorted(_COND_KEYS))}")
    kind = raw.get("kind", kind_default)
    if kind not in ("threshold", "rate", "window"):
        raise ConfigError(f"{where} kind", f"{kind!r} is not a condition kind",
                          'use "threshold", "rate" or "window" (staleness is a rule of its own)')
    series = raw.get("series")
    if not isinstance(series, str) or not SERIES_NAME.match(series):
        raise ConfigError(f"{where} series", f"must name a series as node/sensor, got {series!r}",
                          'write series = "pump1/vib"')
    if ("above" in raw) == ("below" in raw):
        raise ConfigError(f"{where} above", "give exactly one of above or below",
                          "write above = 7.1 (raise when the signal rises above) or below = … (falls below)")
    above = "above" in raw
    level = _num(raw, "above" if above else "below", where, "7.1")
    hyst = _num(raw, "hysteresis", where, "0.5", low=0.0) if "hysteresis" in raw else 0.0
    width, stat = 0.0, "mean"
    if kind == "window":
        if "width" not in raw:
            raise ConfigError(f"{where} width", "a window condition needs the window width",
                              "write width = 60 (seconds; one of [aggregate] widths)")
        width = _num(raw, "width", where, "60", low=0.0, strict=True)
        stat = raw.get("stat", "mean")
        if stat not in STATS:
            raise ConfigError(f"{where} stat", f"{stat!r} is not a window statistic",
                              f"use one of: {', '.join(STATS)}")
    else:
        for key in ("width", "stat"):
            if key in raw:
                raise ConfigError(f"{where} {key}", f"only window conditions take {key}",
                                  'write kind = "window", or remove it')
    return Condition(series, kind, above, level, hyst, width, stat)


def parse_rule(raw, i: int, zones) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"[rules[{i}]]", "must be a table", "write [[rules]] tables")
    name = raw.get("name")
    if not isinstance(name, str) or not RULE_NAME.match(name):
        raise ConfigError(f"[rules[{i}]] name", f"missing or invalid: {name!r}",
                          'write name = "pump1-vibration" (lowercase letters, digits, - _ .)')
    where = f"[rules.{name}]"
    extra = set(raw) - _RULE_KEYS
    if extra:
        raise ConfigError(f"{where} {sorted(extra)[0]}", "unknown key", f"valid keys: {', '.join(sorted(_RULE_KEYS))}")
    kind = raw.get("kind", "threshold")
    if kind not in KINDS:
        raise ConfigError(f"{where} kind", f"{kind!r} is not a rule kind", f"use one of: {', '.join(KINDS)}")
    combo = [k for k in ("all", "any") if k in raw]
    fields: dict = {}
    if kind == "stale":
        for key in ("all", "any", "above", "below", "hysteresis", "width", "stat", "for"):
            if key in raw:
                raise ConfigError(f"{where} {key}", "a stale rule takes no condition",
                                  "give node = … or series = … and after = seconds")
        if ("node" in raw) == ("series" in raw):
            raise ConfigError(f"{where} node", "a stale rule watches one node or one series",
                              'write node = "pump1" (any of its series) or series = "pump1/temp"')
        if "after" not in raw:
            raise ConfigError(f"{where} after", "missing", "write after = 30 (seconds of silence before raising)")
        fields["after"] = _num(raw, "after", where, "30", low=0.0, strict=True)
        if "node" in raw:
            if not isinstance(raw["node"], str) or not NODE_NAME.match(raw["node"]):
                raise ConfigError(f"{where} node", f"{raw['node']!r} is not a node name", 'write node = "pump1"')
            fields.update(mode="stale", node=raw["node"])
        else:
            series = raw["series"]
            if not isinstance(series, str) or not SERIES_NAME.match(series):
                raise ConfigError(f"{where} series", f"must name a series as node/sensor, got {series!r}",
                                  'write series = "pump1/temp"')
            fields.update(mode="stale", series=series, node=series.split("/")[0])
    else:
        if "after" in raw or "node" in raw:
            key = "after" if "after" in raw else "node"
            raise ConfigError(f"{where} {key}", f"only stale rules take {key}",
                              'write kind = "stale", or remove it (conditions name a series)')
        if len(combo) > 1:
            raise ConfigError(f"{where} any", "give all or any, not both", "split it into two rules")
        if combo:
            members = raw[combo[0]]
            for key in ("series", "above", "below", "hysteresis", "width", "stat"):
                if key in raw:
                    raise ConfigError(f"{where} {key}", f"with {combo[0]} = […], conditions go in the list",
                                      f"move {key} into each member table")
            if not isinstance(members, list) or not members:
                raise ConfigError(f"{where} {combo[0]}", "must be a non-empty list of conditions",
                                  f'write {combo[0]} = [{{series = "pump1/temp", above = 80}}, …]')
            conds = tuple(_condition(m, f"{where} {combo[0]}[{j}]", kind) for j, m in enumerate(members))
        else:
            conds = (_condition({k: raw[k] for k in _COND_KEYS if k in raw} | {"kind": kind}, where),)
        nodes = sorted({c.series.split("/")[0] for c in conds})
        if len(nodes) > 1:
            raise ConfigError(f"{where} {combo[0] if combo else 'series'}",
                              f"combines series of several nodes ({', '.join(nodes)})",
                              "combine series of one node only; make one rule per node")
        duration = _num(raw, "for", where, "10", low=0.0) if "for" in raw else 0.0
        fields.update(mode=combo[0] if combo else "all", conditions=conds, duration=duration, node=nodes[0])
    _emit_fields(raw, where, zones, fields)
    return Rule(name=name, **fields)


def _emit_fields(raw: dict, where: str, zones, fields: dict) -> None:
    emit = raw.get("emit", "alarm")
    if emit not in ("alarm", "demand"):
        raise ConfigError(f"{where} emit", f"{emit!r} is not an event", 'write emit = "alarm" or emit = "demand"')
    fields["emit"] = emit
    if emit == "alarm":
        for key in ("need", "priority", "at", "zone"):
            if key in raw:
                raise ConfigError(f"{where} {key}", f"only demand rules take {key}",
                                  'write emit = "demand", or remove it')
        severity = raw.get("severity", "warning")
        if severity not in SEVERITIES:
            raise ConfigError(f"{where} severity", f"{severity!r} is not a severity",
                              f"use one of: {', '.join(SEVERITIES)}")
        fields["severity"] = severity
        return
    if "severity" in raw:
        raise ConfigError(f"{where} severity", "only alarms take a severity", "use priority for demands")
    need = raw.get("need")
    if not isinstance(need, str) or not NODE_NAME.match(need):
        raise ConfigError(f"{where} need", f"a demand needs a capability, got {need!r}", 'write need = "mechanic"')
    priority = raw.get("priority", 5)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
        raise ConfigError(f"{where} priority", f"must be a whole number from 1 to 10, got {priority!r}",
                          "write priority = 5 (10 is the most urgent)")
    if ("at" in raw) == ("zone" in raw):
        raise ConfigError(f"{where} at", "a demand needs a place: at = [x, y] or zone = …, one of them",
                          'write at = [12.0, 4.5] (plant metres) or zone = "pumps"')
    if "zone" in raw:
        if raw["zone"] not in zones.points:
            known = ", ".join(sorted(zones.points)) or "none"
            raise ConfigError(f"{where} zone", f"{raw['zone']!r} is not a zone point",
                              f"declare it in [zones] points, or use one of: {known}")
        fields["zone"] = raw["zone"]
    else:
        fields["at"] = position(raw["at"], f"{where} at", "at = [12.0, 4.5]")
    fields.update(need=need, priority=priority)


def parse(raw, zones, widths: tuple, capabilities: set, problems: Problems) -> tuple[Rule, ...]:
    """Validate the `[[rules]]` list against the zones, the aggregate widths and the resources;
    each rule's mistake is recorded in `problems` and the rule left out."""
    if not isinstance(raw, list):
        problems.add(ConfigError("[rules]", "must be a list of tables", "write each rule as a [[rules]] table"))
        return ()
    out, seen = [], set()
    for i, r in enumerate(raw):
        rule = problems.take(parse_rule, r, i, zones)
        if rule is None:
            continue
        where = f"[rules.{rule.name}]"
        if rule.name in seen:
            problems.add(ConfigError(f"{where} name", "used by two rules", "give every rule its own name"))
            continue
        seen.add(rule.name)
        for c in rule.conditions:
            if c.kind == "window" and c.width not in widths:
                problems.add(ConfigError(f"{where} width", f"no {c.width:g} s windows are made ([aggregate] widths = "
                                         f"{[float(w) for w in widths]})",
                                         f"add {c.width:g} to [aggregate] widths, or use one of those widths"))
        if rule.emit == "demand" and rule.need not in capabilities:
            problems.add(ConfigError(f"{where} need", f"no resource has the capability {rule.need!r}",
                                     "add it to a [[resources]] capabilities list, or fix the name"))
        out.append(rule)
    return tuple(out)


def check_nodes(cfg, registry) -> None:
    """`check-config`: every node a rule or a resource names must be in the registry (a typo
    would make a rule that never fires). The gateway itself does not insist: nodes may be
    provisioned after it starts. Every unknown node is reported (ConfigErrors when several)."""
    problems = Problems()
    for rule in cfg.rules:
        if registry.by_kid(rule.node.encode()) is None:
            key = "node" if rule.mode == "stale" and not rule.series else "series"
            problems.add(ConfigError(f"[rules.{rule.name}] {key}", f"node {rule.node!r} is not in the registry "
                              f"{cfg.gateway.registry}", f"provision it (headrace node provision {rule.node}) "
                              "or fix the name"))
    for res in cfg.resources:
        if res.node and registry.by_kid(res.node.encode()) is None:
            problems.add(ConfigError(f"[resources.{res.id}] node", f"node {res.node!r} is not in the registry "
                              f"{cfg.gateway.registry}", f"provision it (headrace node provision {res.node}) "
                              "or fix the name"))
    problems.raise_any()
