"""Rules: `[[rules]]` in gateway.toml, compiled into the core's rule table (`core_ext.rules`).

Configuration (docs/matching.md has the operator's guide):

    [[rules]]
    name = "pump1-vibration"          # unique; names the events
    kind = "window"                   # threshold (default) | rate | window | stale
    series = "pump1/vib"              # node/sensor
    width = 60                        # window: one of [aggregate] widths
    stat = "mean"                     # window: mean min max twa first last count sum rms
    above = 7.1                       # or below = …
    hysteresis = 0.5                  # clears at 6.6 (default 0)
    for = 0                           # seconds the condition must hold before raising
    emit = "demand"                   # alarm (default) | demand
    need = "mechanic"                 # demand: the capability asked for
    priority = 8                      # demand: 1 (low) … 10 (urgent), default 5
    zone = "pumps"                    # demand: where (or at = [x, y])

A combination: `all = [{series = "pump1/temp", above = 80}, {series = "pump1/pressure", above = 5}]`
(or `any = …`), each member a threshold, rate or window condition on a series of
one node. Staleness: `kind = "stale"`, `node = "pump1"` (any of its series) or
`series = …`, `after = 30` seconds.

Usage: the service makes one `RuleEngine`; the pipeline hands it the readings and
the closed windows after each commit. Alarms go to the event sink; a demand rule
asks the dispatcher for a resource (one open demand per rule at a time). The
engine also mirrors resource nodes' readings (x, y, battery, available, accept,
decline, done) to the dispatcher through mirror rules of the same table.

Caveats: rules run on readings after their commit; an alarm is spooled with the
next commit, so a crash between the two loses the alarm, never the readings. Rule
state (pending durations, raised alarms) is in memory: after a restart an alarm
that still holds is raised again.
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass

from core_ext import rules as core

from gateway.errors import ConfigError

log = logging.getLogger("headrace.rules")

RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SERIES = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}/[a-z0-9_]{1,32}$")
NODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
KINDS = ("threshold", "rate", "window", "stale")
SEVERITIES = ("info", "warning", "critical")
MIRROR_FIELDS = ("x", "y", "battery", "available", "accept", "decline", "done")
_SIGNAL = {"threshold": core.SIGNAL_VALUE, "rate": core.SIGNAL_RATE, "window": core.SIGNAL_WINDOW}
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


# -- configuration ----------------------------------------------------------------------

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
    if not isinstance(series, str) or not SERIES.match(series):
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
        if stat not in core.STATS:
            raise ConfigError(f"{where} stat", f"{stat!r} is not a window statistic",
                              f"use one of: {', '.join(core.STATS)}")
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
            if not isinstance(raw["node"], str) or not NODE.match(raw["node"]):
                raise ConfigError(f"{where} node", f"{raw['node']!r} is not a node name", 'write node = "pump1"')
            fields.update(mode="stale", node=raw["node"])
        else:
            series = raw["series"]
            if not isinstance(series, str) or not SERIES.match(series):
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
    if not isinstance(need, str) or not NODE.match(need):
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
        from gateway.decisions.zones import _xy
        fields["at"] = _xy(raw["at"], f"{where} at", "at = [12.0, 4.5]")
    fields.update(need=need, priority=priority)


def parse(raw, zones, widths: tuple, capabilities: set) -> tuple[Rule, ...]:
    """Validate the `[[rules]]` list against the zones, the aggregate widths and the resources."""
    if not isinstance(raw, list):
        raise ConfigError("[rules]", "must be a list of tables", "write each rule as a [[rules]] table")
    out, seen = [], set()
    for i, r in enumerate(raw):
        rule = parse_rule(r, i, zones)
        where = f"[rules.{rule.name}]"
        if rule.name in seen:
            raise ConfigError(f"{where} name", "used by two rules", "give every rule its own name")
        seen.add(rule.name)
        for c in rule.conditions:
            if c.kind == "window" and c.width not in widths:
                raise ConfigError(f"{where} width", f"no {c.width:g} s windows are made ([aggregate] widths = "
                                  f"{[float(w) for w in widths]})",
                                  f"add {c.width:g} to [aggregate] widths, or use one of those widths")
        if rule.emit == "demand" and rule.need not in capabilities:
            raise ConfigError(f"{where} need", f"no resource has the capability {rule.need!r}",
                              "add it to a [[resources]] capabilities list, or fix the name")
        out.append(rule)
    return tuple(out)


# -- evaluation -------------------------------------------------------------------------

class RuleEngine:
    """The configured rules over one core rule table; events go to `emit(dict)`."""

    def __init__(self, rules: tuple, resources: tuple, parser, emit, dispatcher=None, metrics=None):
        self.rules, self.parser, self.emit, self.dispatcher, self.metrics = rules, parser, emit, dispatcher, metrics
        self.table = core.RuleTable()
        self._what: list = []            # rule index -> Rule, or (resource id, field) for a mirror
        self._node_stale: dict[str, list[int]] = {}
        self.active: dict[str, dict] = {}  # raised alarms by rule name: the raising event
        self.failures = 0
        for rule in rules:
            self._compile(rule)
        for res in resources:
            if res.node:
                for f in MIRROR_FIELDS:
                    r = self.table.add_rule(core.MODE_MIRROR)
                    self.table.watch(r, parser.series_id(f"{res.node}/{f}"))
                    self._what.append((res.id, f))
        self._bound = 0
        self._bind_new_series()

    def _compile(self, rule: Rule) -> None:
        t = self.table
        if rule.mode == "stale":
            r = t.add_rule(core.MODE_STALE, after=rule.after)
            if rule.series:
                t.watch(r, self.parser.series_id(rule.series))
            else:
                self._node_stale.setdefault(rule.node, []).append(r)
        else:
            r = t.add_rule(core.MODE_ALL if rule.mode == "all" else core.MODE_ANY, duration=rule.duration)
            for c in rule.conditions:
                t.add_condition(r, self.parser.series_id(c.series), _SIGNAL[c.kind], c.above, c.level, c.clear,
                                c.width, core.STATS.index(c.stat))
        self._what.append(rule)

    def _bind_new_series(self) -> None:
        """A node's staleness watches every series of it, also those first seen later."""
        names = self.parser.names
        if not self._node_stale or len(names) == self._bound:
            self._bound = len(names)
            return
        for sid in range(self._bound, len(names)):
            for r in self._node_stale.get(names[sid].split("/", 1)[0], ()):
                self.table.watch(r, sid)
        self._bound = len(names)

    # called by the pipeline after a commit; a failure here must never stop the commits
    def readings(self, sids, ts, vs, now: float) -> None:
        try:
            if len(self.parser.names) != self._bound:
                self._bind_new_series()
            self._fired(self.table.eval(sids, ts, vs, now))
        except Exception:
            self._failed("readings")

    def windows(self, width: float, cols: dict) -> None:
        try:
            self._fired(self.table.eval_windows(width, cols))
        except Exception:
            self._failed("windows")

    def check(self, now: float) -> None:
        """Staleness, on the gateway's clock."""
        try:
            self._fired(self.table.check_stale(now))
        except Exception:
            self._failed("staleness")

    def _failed(self, what: str) -> None:
        self.failures += 1
        log.exception("rule evaluation of %s failed; the rules skip this batch", what)
        if self.metrics is not None:
            self.metrics.inc("headrace_rule_errors_total")

    async def run(self, period: float = 1.0) -> None:
        """Check staleness every `period` seconds; until cancelled."""
        while True:
            self.check(time.time())
            await asyncio.sleep(period)

    def _fired(self, out) -> None:
        rules, times, states, values = out
        for i in range(len(rules)):
            what = self._what[rules[i]]
            if isinstance(what, tuple):
                if self.dispatcher is not None:
                    self.dispatcher.mirror(what[0], what[1], times[i], values[i])
                continue
            self._transition(what, times[i], states[i] == core.RAISED, values[i])

    def _transition(self, rule: Rule, t: float, raised: bool, value: float) -> None:
        if self.metrics is not None:
            self.metrics.inc("headrace_rule_transitions_total", state="raised" if raised else "cleared")
        if rule.emit == "demand":
            if raised and self.dispatcher is not None:
                self.dispatcher.demand_from_rule(rule, t, value)
            return
        event = {"type": "alarm", "rule": rule.name, "state": "raised" if raised else "cleared", "t": t,
                 "value": value, "severity": rule.severity, "node": rule.node}
        if rule.mode == "stale":
            event["signal"] = "silence"
            if rule.series:
                event["series"] = rule.series
        elif len(rule.conditions) == 1:
            c = rule.conditions[0]
            event["series"] = c.series
            event["signal"] = f"{c.stat}/{c.width:g}s" if c.kind == "window" else "value" if c.kind == "threshold" \
                else "rate"
        if raised:
            if rule.name in self.active:
                return  # raised before a reload, and still: one alarm, not two
            self.active[rule.name] = event
        else:
            self.active.pop(rule.name, None)
        self.emit(event)


def check_nodes(cfg, registry) -> None:
    """`check-config`: every node a rule or a resource names must be in the registry (a typo
    would make a rule that never fires). The gateway itself does not insist: nodes may be
    provisioned after it starts."""
    for rule in cfg.rules:
        if registry.by_kid(rule.node.encode()) is None:
            key = "node" if rule.mode == "stale" and not rule.series else "series"
            raise ConfigError(f"[rules.{rule.name}] {key}", f"node {rule.node!r} is not in the registry "
                              f"{cfg.gateway.registry}", f"provision it (headrace node provision {rule.node}) "
                              "or fix the name")
    for res in cfg.resources:
        if res.node and registry.by_kid(res.node.encode()) is None:
            raise ConfigError(f"[resources.{res.id}] node", f"node {res.node!r} is not in the registry "
                              f"{cfg.gateway.registry}", f"provision it (headrace node provision {res.node}) "
                              "or fix the name")
