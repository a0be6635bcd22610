"""The rule table, pure Python: the reference implementation (the specification).

A `RuleTable` holds rules over series ids, indexed by series id so that a
reading touches only the conditions of its own series. It is evaluated batch
by batch on the columns the ingest parser makes (series id int64, time float64
seconds, value float64) and on the windows the aggregator closes, and returns
what fired as four columns: `(rules, times, states, values)` (array.array of
int64, float64, int64, float64), one row per transition in evaluation order.

Rules (`add_rule(mode, duration=0.0, after=0.0)` returns the rule's index):

* `MODE_ALL` / `MODE_ANY`: a combination of conditions (`add_condition`); the
  rule's condition holds while all (any) of its conditions are on. It raises
  (state `RAISED`) once its condition has held for `duration` seconds, judged at
  the time of a reading or window end that finds it still holding (so `for` in
  event time, never on a timer), and clears (state `CLEARED`) as soon as it no
  longer holds. The value of a transition is the signal that caused it.
* `MODE_STALE`: raises when none of its watched series (`watch`) has had a
  reading for `after` seconds, judged by `check_stale(now)`; clears on the next
  reading of any of them. Staleness runs on the gateway's clock: `eval` takes
  the arrival time `now`, so a node's clock error does not matter. The first
  `check_stale` arms rules that have seen no reading yet (their silence counts
  from then). The value is the silence in seconds.
* `MODE_MIRROR`: reports every reading of its watched series (state
  `READING`, value the reading): how the dispatcher follows its resources.

Conditions (`add_condition(rule, sid, signal, above, level, clear, width=0.0, stat=0)`):
one series id and one signal of it:

* `SIGNAL_VALUE`: the reading's value;
* `SIGNAL_RATE`: (v - v_prev) / (t - t_prev) over consecutive readings of the
  series in time order, per second (a reading not later than the previous one
  is ignored; the first reading only primes it);
* `SIGNAL_WINDOW`: a statistic (`STATS`) of the windows of `width` seconds
  that `eval_windows(width, columns)` is given, at the time the window ends
  (start + width). Correction windows (late data) are skipped.

With `above`, a condition turns on when the signal rises above `level` and off
when it falls to `clear` or below (`clear <= level`: hysteresis `level - clear`);
otherwise it turns on below `level` and off at `clear` or above (`clear >= level`).

Readings with a NaN value or a non-finite time are ignored (counted in
`invalid`), and so is a NaN signal; so are readings of series no rule watches.
Series ids go from 0 to `MAX_SID` (the ingest parser's are dense from 0). Bad
arguments raise ValueError.
"""
from __future__ import annotations

import math
from array import array

MODE_ALL, MODE_ANY, MODE_STALE, MODE_MIRROR = 0, 1, 2, 3
SIGNAL_VALUE, SIGNAL_RATE, SIGNAL_WINDOW = 0, 1, 2
STATS = ("mean", "min", "max", "twa", "first", "last", "count", "sum", "rms")
CLEARED, RAISED, READING = 0, 1, 2
MAX_SID = (1 << 24) - 1  # the compiled index is dense up to the largest series id watched

_NAN = math.nan
# rule fields
_MODE, _DURATION, _AFTER, _NCOND, _NON, _PENDING, _ACTIVE, _LAST = range(8)
# condition fields
_RULE, _SID, _SIGNAL, _ABOVE, _LEVEL, _CLEAR, _WIDTH, _STAT, _ON, _HASPREV, _PREV_T, _PREV_V = range(12)


def _finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))


class RuleTable:
    """Rules indexed by series id; see the module docstring."""

    def __init__(self):
        self._rules: list[list] = []
        self._conds: list[list] = []
        self._by_sid: dict[int, list[int]] = {}      # value and rate conditions
        self._win_by_sid: dict[int, list[int]] = {}  # window conditions
        self._watch: dict[int, list[int]] = {}       # stale and mirror rules
        self._watched: set[tuple[int, int]] = set()
        self._stale: list[int] = []
        self.invalid = 0

    @property
    def n_rules(self) -> int:
        return len(self._rules)

    @property
    def n_conditions(self) -> int:
        return len(self._conds)

    def add_rule(self, mode: int, duration: float = 0.0, after: float = 0.0) -> int:
        """A new rule; returns its index. `duration` (seconds >= 0) for MODE_ALL/ANY, `after`
        (seconds > 0) for MODE_STALE."""
        mode = int(mode)
        duration = float(duration)
        after = float(after)
        if mode not in (MODE_ALL, MODE_ANY, MODE_STALE, MODE_MIRROR):
            raise ValueError(f"mode must be MODE_ALL, MODE_ANY, MODE_STALE or MODE_MIRROR, got {mode!r}")
        if not (duration >= 0 and _finite(duration)):
            raise ValueError(f"duration must be zero or a positive number of seconds, got {duration!r}")
        if mode == MODE_STALE and not (after > 0 and _finite(after)):
            raise ValueError(f"a stale rule needs after > 0 seconds, got {after!r}")
        self._rules.append([mode, duration, after, 0, 0, _NAN, 0, _NAN])
        if mode == MODE_STALE:
            self._stale.append(len(self._rules) - 1)
        return len(self._rules) - 1

    def add_condition(self, rule: int, sid: int, signal: int, above: bool, level: float, clear: float,
                      width: float = 0.0, stat: int = 0) -> int:
        """A condition of an all/any rule on series `sid`; returns its index."""
        rule, sid, signal, stat = int(rule), int(sid), int(signal), int(stat)
        level, clear, width = float(level), float(clear), float(width)
        if not 0 <= rule < len(self._rules) or self._rules[rule][_MODE] not in (MODE_ALL, MODE_ANY):
            raise ValueError(f"rule {rule} is not an all/any rule of this table")
        if not 0 <= sid <= MAX_SID:
            raise ValueError(f"series id must be from 0 to {MAX_SID}, got {sid}")
        if signal not in (SIGNAL_VALUE, SIGNAL_RATE, SIGNAL_WINDOW):
            raise ValueError(f"signal must be SIGNAL_VALUE, SIGNAL_RATE or SIGNAL_WINDOW, got {signal}")
        if not (_finite(level) and _finite(clear)):
            raise ValueError(f"level and clear must be finite, got {level!r}, {clear!r}")
        if (above and clear > level) or (not above and clear < level):
            raise ValueError(f"clear {clear} is on the wrong side of level {level} (hysteresis must be >= 0)")
        if signal == SIGNAL_WINDOW:
            if not (width > 0 and _finite(width)):
                raise ValueError(f"a window condition needs width > 0 seconds, got {width!r}")
            if not 0 <= stat < len(STATS):
                raise ValueError(f"stat must be an index into STATS (0 to {len(STATS) - 1}), got {stat}")
        self._conds.append([rule, sid, signal, 1 if above else 0, level, clear, width, stat, 0, 0, 0.0, 0.0])
        cid = len(self._conds) - 1
        index = self._win_by_sid if signal == SIGNAL_WINDOW else self._by_sid
        index.setdefault(sid, []).append(cid)
        self._rules[rule][_NCOND] += 1
        return cid

    def watch(self, rule: int, sid: int) -> bool:
        """Add series `sid` to a stale or mirror rule. False if it was watched already."""
        rule, sid = int(rule), int(sid)
        if not 0 <= rule < len(self._rules) or self._rules[rule][_MODE] not in (MODE_STALE, MODE_MIRROR):
            raise ValueError(f"rule {rule} is not a stale or mirror rule of this table")
        if not 0 <= sid <= MAX_SID:
            raise ValueError(f"series id must be from 0 to {MAX_SID}, got {sid}")
        if (rule, sid) in self._watched:
            return False
        self._watched.add((rule, sid))
        self._watch.setdefault(sid, []).append(rule)
        return True

    def active(self, rule: int) -> bool:
        """True while the rule is raised."""
        return bool(self._rules[int(rule)][_ACTIVE])

    # -- evaluation -----------------------------------------------------------------------

    def eval(self, sids, ts, vs, now: float):
        """Evaluate readings from three equal-length columns that arrived at `now` (seconds,
        the gateway's clock, for staleness); return the transitions."""
        n = len(sids)
        if len(ts) != n or len(vs) != n:
            raise ValueError(f"columns differ in length: {n} ids, {len(ts)} times, {len(vs)} values")
        now = float(now)
        if not _finite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        out = _out()
        by_sid, watch, conds = self._by_sid, self._watch, self._conds
        for i in range(n):
            sid = int(sids[i])
            t = float(ts[i])
            v = float(vs[i])
            if v != v or not _finite(t):
                self.invalid += 1
                continue
            cs = by_sid.get(sid)
            if cs is not None:
                for c in cs:
                    cond = conds[c]
                    if cond[_SIGNAL] == SIGNAL_RATE:
                        if not cond[_HASPREV]:
                            cond[_HASPREV], cond[_PREV_T], cond[_PREV_V] = 1, t, v
                            continue
                        if not t > cond[_PREV_T]:
                            continue
                        s = (v - cond[_PREV_V]) / (t - cond[_PREV_T])
                        cond[_PREV_T], cond[_PREV_V] = t, v
                    else:
                        s = v
                    self._update(cond, s, t, out)
            ws = watch.get(sid)
            if ws is not None:
                for r in ws:
                    rule = self._rules[r]
                    if rule[_MODE] == MODE_MIRROR:
                        _emit(out, r, t, READING, v)
                        continue
                    last = rule[_LAST]
                    if last != last or now > last:
                        rule[_LAST] = now
                    if rule[_ACTIVE]:
                        rule[_ACTIVE] = 0
                        _emit(out, r, now, CLEARED, now - last)
        return out

    def eval_windows(self, width: float, cols: dict):
        """Evaluate closed windows of `width` seconds, as the aggregator's columns."""
        width = float(width)
        sids, starts = cols["sid"], cols["start"]
        n = len(sids)
        out = _out()
        for i in range(n):
            if cols["correction"][i]:
                continue
            cs = self._win_by_sid.get(int(sids[i]))
            if cs is None:
                continue
            t = float(starts[i]) + width
            for c in cs:
                cond = self._conds[c]
                if cond[_WIDTH] != width:
                    continue
                self._update(cond, _stat(cond[_STAT], cols, i), t, out)
        return out

    def check_stale(self, now: float):
        """Raise the stale rules silent for their `after` seconds at `now` (the gateway's clock)."""
        now = float(now)
        if not _finite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        out = _out()
        for r in self._stale:
            rule = self._rules[r]
            last = rule[_LAST]
            if last != last:
                rule[_LAST] = now  # armed: silence counts from the first check
            elif not rule[_ACTIVE] and now - last >= rule[_AFTER]:
                rule[_ACTIVE] = 1
                _emit(out, r, now, RAISED, now - last)
        return out

    def _update(self, cond: list, s: float, t: float, out) -> None:
        if s != s:
            return
        rule = self._rules[cond[_RULE]]
        if cond[_ABOVE]:
            if not cond[_ON] and s > cond[_LEVEL]:
                cond[_ON] = 1
                rule[_NON] += 1
            elif cond[_ON] and s <= cond[_CLEAR]:
                cond[_ON] = 0
                rule[_NON] -= 1
        else:
            if not cond[_ON] and s < cond[_LEVEL]:
                cond[_ON] = 1
                rule[_NON] += 1
            elif cond[_ON] and s >= cond[_CLEAR]:
                cond[_ON] = 0
                rule[_NON] -= 1
        holds = rule[_NON] == rule[_NCOND] if rule[_MODE] == MODE_ALL else rule[_NON] > 0
        if holds:
            if rule[_PENDING] != rule[_PENDING]:
                rule[_PENDING] = t
            if not rule[_ACTIVE] and t - rule[_PENDING] >= rule[_DURATION]:
                rule[_ACTIVE] = 1
                _emit(out, cond[_RULE], t, RAISED, s)
        else:
            rule[_PENDING] = _NAN
            if rule[_ACTIVE]:
                rule[_ACTIVE] = 0
                _emit(out, cond[_RULE], t, CLEARED, s)


def _stat(stat: int, cols: dict, i: int) -> float:
    name = STATS[stat]
    if name == "mean":
        return cols["sum"][i] / cols["count"][i]
    if name == "rms":
        return math.sqrt(cols["sumsq"][i] / cols["count"][i])
    return float(cols[name][i])


def _out():
    return array("q"), array("d"), array("q"), array("d")


def _emit(out, rule: int, t: float, state: int, value: float) -> None:
    out[0].append(rule)
    out[1].append(t)
    out[2].append(state)
    out[3].append(value)
