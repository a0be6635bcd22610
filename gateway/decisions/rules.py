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
import time

from core_ext import rules as core

from gateway.config.rules import Rule

log = logging.getLogger("headrace.rules")

MIRROR_FIELDS = ("x", "y", "battery", "available", "accept", "decline", "done")
_SIGNAL = {"threshold": core.SIGNAL_VALUE, "rate": core.SIGNAL_RATE, "window": core.SIGNAL_WINDOW}


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


