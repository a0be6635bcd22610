"""Tumbling-window aggregation, pure Python: the reference implementation.

A reading (series id, time t in seconds, value v) belongs to the window
`idx = floor(t / width)`, which starts at `idx * width` and closes once a
watermark reaches `start + width + lateness`. Windows accumulate count, min,
max, sum, sum of squares, first (the value at the smallest t; on ties the first
added) and last (the value at the largest t; on ties the last added).

Late-data policy: a reading whose window the highest watermark seen so far has
already closed is dropped and counted in `late`. Readings with a NaN value or a
non-finite time are skipped and counted in `invalid`.

Memory: at most `max_open` windows are open at once; one more raises
OverflowError (the caller closes windows more often or raises the bound). The
compiled module takes 96 bytes per open window, plus a hash table of at most
twice that number of 8-byte slots.
"""
from __future__ import annotations

import math
from array import array

FIELDS = ("sid", "start", "count", "min", "max", "sum", "sumsq", "first", "last")
_IDX_LIMIT = 2.0**62


def _columns():
    return {f: array("q" if f in ("sid", "count") else "d") for f in FIELDS}


class Aggregator:
    """Tumbling windows of `width` seconds, closing `lateness` seconds after they end."""

    def __init__(self, width: float, lateness: float = 0.0, max_open: int = 1_000_000):
        if not (width > 0 and math.isfinite(width)):
            raise ValueError(f"width must be a positive number of seconds, got {width!r}")
        if not (lateness >= 0 and math.isfinite(lateness)):
            raise ValueError(f"lateness must be zero or a positive number of seconds, got {lateness!r}")
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open!r}")
        self.width = float(width)
        self.lateness = float(lateness)
        self.max_open = int(max_open)
        self.late = 0
        self.invalid = 0
        self._high = -math.inf
        # (sid, idx) -> [count, min, max, sum, sumsq, first, first_t, last, last_t]
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
        if start + self.width + self.lateness <= self._high:
            self.late += 1
            return False
        key = (int(sid), idx)
        w = self._open.get(key)
        if w is None:
            if len(self._open) >= self.max_open:
                raise OverflowError(f"more than max_open={self.max_open} windows open: close windows more often "
                                    "or raise max_open")
            self._open[key] = [1, v, v, v, v * v, v, t, v, t]
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
        due = [k for k in self._open if k[1] * self.width + self.width + self.lateness <= watermark]
        return self._emit(due)

    def flush(self) -> dict:
        """Close every open window."""
        return self._emit(list(self._open))

    def _emit(self, keys) -> dict:
        cols = _columns()
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            count, mn, mx, total, sq, first, _ft, last, _lt = self._open.pop(key)
            cols["sid"].append(key[0])
            cols["start"].append(key[1] * self.width)
            cols["count"].append(count)
            cols["min"].append(mn)
            cols["max"].append(mx)
            cols["sum"].append(total)
            cols["sumsq"].append(sq)
            cols["first"].append(first)
            cols["last"].append(last)
        return cols
