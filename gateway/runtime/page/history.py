"""The sparklines' memory: each node's latest readings, sampled every few seconds.

Usage: `History(period=3.0, points=100)`; `sample(pipeline, now)` every `period`
seconds (the status page does); `view(["pump1"])` gives the samples as JSON.

A sample holds the values of a node's newest frame when that frame is new since
the sample before, else nothing (a gap): a silent node's line stops. The latest
value, not a mean: enough to see a trend, and it costs nothing on the hot path
(the pipeline keeps the newest frame of each node anyway).

Caveats: values are kept as float32, 4 bytes a sample, in one array for all
nodes (a node's sensors in one block of rows, sensor i's ring at row first + i):
100 samples of 8 sensors on 1,000 nodes take 3.2 MB, and about 100 bytes a
node more (its slot in a few columns). Nodes gone from the pipeline are
forgotten; their rows and slots are used again.
"""
from __future__ import annotations

import math
import sys
from array import array

NAN = float("nan")


class History:
    def __init__(self, period: float = 3.0, points: int = 100):
        self.period, self.points = period, points
        self.count = 0                                  # samples taken; the next goes to slot count % points
        self.times = array("d", [NAN] * points)         # when each slot was sampled (s since the epoch)
        # Per node, columns instead of an object and an array a node (docs/performance.md, Memory):
        self.values = array("f")                        # every ring; row r at [r * points, (r + 1) * points)
        self._slot: dict[str, int] = {}                 # node -> its index in the columns below
        self._first = array("l")                        # its block's first row
        self._sensors: list[tuple[str, ...]] = []       # its sensors' names, in the order they first came
        self._seen: list[object] = []                   # the frame sampled last (identity)
        self._free_slots: list[int] = []
        self._free_rows: dict[int, list[int]] = {}      # rows in a block -> first rows of free blocks
        self._names: dict[tuple, tuple] = {}            # one tuple for each set of names, shared by the nodes
        self._gap = array("f", [NAN] * points)

    def sample(self, pipeline, now: float) -> None:
        points = self.points
        slot = self.count % points
        self.count += 1
        self.times[slot] = now
        values = self.values
        for name, st in pipeline.nodes.items():
            k = self._slot.get(name)
            if k is None:
                k = self._new(name)
            base = self._first[k] * points
            for i in range(base + slot, base + len(self._sensors[k]) * points, points):
                values[i] = NAN  # a gap unless this frame has the sensor
            if st.last_rows is not None and st.last_rows is not self._seen[k]:
                self._seen[k] = st.last_rows
                for series, (_t, value) in pipeline.node_last(name).items():
                    sensor = series.split("/", 1)[-1]
                    try:
                        i = self._sensors[k].index(sensor)
                    except ValueError:
                        i = len(self._sensors[k])
                        self._add_sensor(k, sensor)
                        base = self._first[k] * points
                    values[base + i * points + slot] = value
        for name in [n for n in self._slot if n not in pipeline.nodes]:
            self._forget(name)

    def _new(self, name: str) -> int:
        if self._free_slots:
            k = self._free_slots.pop()
        else:
            k = len(self._sensors)
            self._first.append(0)
            self._sensors.append(())
            self._seen.append(None)
        self._slot[name] = k
        return k

    def _forget(self, name: str) -> None:
        k = self._slot.pop(name)
        n = len(self._sensors[k])
        if n:
            self._free_rows.setdefault(n, []).append(self._first[k])
        self._first[k], self._sensors[k], self._seen[k] = 0, (), None
        self._free_slots.append(k)

    def _add_sensor(self, k: int, sensor: str) -> None:
        """Node k's block moves to one of a row more; the new row is all gaps."""
        points, old, n = self.points, self._first[k], len(self._sensors[k])
        free = self._free_rows.get(n + 1)
        if free:
            first = free.pop()
        else:
            first = len(self.values) // points
            for _ in range(n + 1):
                self.values.extend(self._gap)
        if n:
            self.values[first * points:(first + n) * points] = self.values[old * points:(old + n) * points]
            self._free_rows.setdefault(n, []).append(old)
        self.values[(first + n) * points:(first + n + 1) * points] = self._gap
        names = self._sensors[k] + (sys.intern(sensor),)  # one copy of each name for all nodes
        self._sensors[k] = self._names.setdefault(names, names)
        self._first[k] = first

    def _order(self) -> list[int]:
        n = min(self.count, self.points)
        first = self.count - n
        return [(first + i) % self.points for i in range(n)]

    def view(self, nodes: list[str]) -> dict:
        """{"period", "t": [sample times, oldest first], "nodes": {node: {sensor: [value or None]}}}."""
        order = self._order()
        out = {}
        values, points = self.values, self.points
        for name in nodes:
            k = self._slot.get(name)
            if k is not None:
                first = self._first[k]
                base = {s: (first + i) * points for i, s in enumerate(self._sensors[k])}
                out[name] = {s: [_short(values[base[s] + i]) for i in order] for s in sorted(base)}
        return {"period": self.period, "t": [round(self.times[i], 3) for i in order], "nodes": out}


def _short(v: float):
    """4 significant digits (the samples are float32 anyway); None for a gap."""
    return None if math.isnan(v) else float(f"{v:.4g}")
