"""Tumbling-window aggregation, pure Python: the reference implementation.

A reading (series id, time t in seconds, value v) belongs to the window
`idx = floor(t / width)`, which starts at `idx * width` and closes once a
watermark reaches `start + width + lateness`. Windows accumulate count, min,
max, sum, sum of squares, first (the value at the smallest t; on ties the first
added) and last (the value at the largest t; on ties the last added), and the
time-weighted mean `twa`: each value holds from its time until the next
reading's (sample and hold), the last one until the window ends, divided by the
time from the window's first reading to its end. Readings that arrive out of
time order count in every other statistic but not in `twa`.

Late-data policy: a reading whose window the highest watermark seen so far has
already closed is late, counted in `late`, and then either dropped
(`late_policy="drop"`, the default) or gathered into a correction window for
the same start (`late_policy="correct"`), which the next `close` emits with
`correction` = 1 whatever the watermark: a consumer merges it into the window
it already has (count, sum, sumsq add up; min, max combine). Readings with a NaN
value or a non-finite time are skipped and counted in `invalid`.

Memory: at most `max_open` windows are open at once; one more raises
OverflowError (the caller closes windows more often or raises the bound). The
compiled module takes about 150 bytes per open window (136 in a dense array,
4-byte hash slots at most half full): 100,000 series x 3 widths = 300,000 open
windows measured 44 MB of RSS.
"""
from __future__ import annotations

import math
from array import array

FIELDS = ("sid", "start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa", "correction")
_INT_FIELDS = ("sid", "count", "correction")
LATE_POLICIES = ("drop", "correct")
_IDX_LIMIT = 2.0**62


def _columns():
    return {f: array("q" if f in _INT_FIELDS else "d") for f in FIELDS}


class Aggregator:
    """Tumbling windows of `width` seconds, closing `lateness` seconds after they end."""

    def __init__(self, width: float, lateness: float = 0.0, max_open: int = 1_000_000, late_policy: str = "drop"):
        if not (width > 0 and math.isfinite(width)):
            raise ValueError(f"width must be a positive number of seconds, got {width!r}")
        if not (lateness >= 0 and math.isfinite(lateness)):
            raise ValueError(f"lateness must be zero or a positive number of seconds, got {lateness!r}")
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open!r}")
        if late_policy not in LATE_POLICIES:
            raise ValueError(f"late_policy must be 'drop' or 'correct', got {late_policy!r}")
        self.late_policy = late_policy
        self.width = float(width)
        self.lateness = float(lateness)
        self.max_open = int(max_open)
        self.late = 0
        self.invalid = 0
        self._high = -math.inf
        # (sid, idx) -> [count, min, max, sum, sumsq, first, first_t, last, last_t, area, prev_v, prev_t, t0, corr]
        self._open: dict[tuple[int, int], list] = {}

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def add(self, sid: int, t: float, v: float) -> bool:
        """Add one reading. False if it was dropped (late or invalid)."""
        t = float(t)
        v = float(v)
        if v != v or not math.isfinite(t) or abs(t / self.width) >= _IDX_LIMIT:
            self.invalid += 1
            return False
        idx = math.floor(t / self.width)
        start = idx * self.width
        correction = 0
        if start + self.width + self.lateness <= self._high:
            self.late += 1
            if self.late_policy == "drop":
                return False
            correction = 1
        key = (int(sid), idx)
        w = self._open.get(key)
        if w is None:
            if len(self._open) >= self.max_open:
                raise OverflowError(f"more than max_open={self.max_open} windows open: close windows more often "
                                    "or raise max_open")
            self._open[key] = [1, v, v, v, v * v, v, t, v, t, 0.0, v, t, t, correction]
            return True
        w[0] += 1
        if v < w[1]:
            w[1] = v
        if v > w[2]:
            w[2] = v
        w[3] += v
        w[4] += v * v
        if t < w[6]:
            w[5], w[6] = v, t
        if t >= w[8]:
            w[7], w[8] = v, t
        if t >= w[11]:  # in time order: the previous value held until now
            w[9] += w[10] * (t - w[11])
            w[10], w[11] = v, t
        return True

    def add_columns(self, sids, ts, vs) -> int:
        """Add readings from three equal-length columns (int64 ids, float64 times and values)."""
        n = len(sids)
        if len(ts) != n or len(vs) != n:
            raise ValueError(f"columns differ in length: {n} ids, {len(ts)} times, {len(vs)} values")
        add = self.add
        return sum(1 for i in range(n) if add(int(sids[i]), float(ts[i]), float(vs[i])))

    def close(self, watermark: float) -> dict:
        """Close every window with start + width + lateness <= watermark; return them as columns."""
        if watermark > self._high:
            self._high = float(watermark)
        due = [k for k, w in self._open.items()
               if k[1] * self.width + self.width + self.lateness <= watermark or w[13]]
        return self._emit(due)

    def flush(self) -> dict:
        """Close every open window."""
        return self._emit(list(self._open))

    def _emit(self, keys) -> dict:
        cols = _columns()
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            count, mn, mx, total, sq, first, _ft, last, _lt, area, prev_v, prev_t, t0, corr = self._open.pop(key)
            start = key[1] * self.width
            end = start + self.width
            cols["sid"].append(key[0])
            cols["start"].append(start)
            cols["count"].append(count)
            cols["min"].append(mn)
            cols["max"].append(mx)
            cols["sum"].append(total)
            cols["sumsq"].append(sq)
            cols["first"].append(first)
            cols["last"].append(last)
            span = end - t0
            cols["twa"].append((area + prev_v * (end - prev_t)) / span if span > 0 else prev_v)
            cols["correction"].append(corr)
        return cols
