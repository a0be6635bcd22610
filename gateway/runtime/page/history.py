"""The sparklines' memory: each node's latest readings, sampled every few seconds.

Usage: `History(period=3.0, points=100)`; `sample(pipeline, now)` every `period`
seconds (the status page does); `view(["pump1"])` gives the samples as JSON.

A sample holds the values of a node's newest frame when that frame is new since
the sample before, else nothing (a gap): a silent node's line stops. The latest
value, not a mean: enough to see a trend, and it costs nothing on the hot path
(the pipeline keeps the newest frame of each node anyway).

Caveats: values are kept as float32, 4 bytes a sample, all of a node's sensors in
one array (sensor i's ring at [i * points, (i + 1) * points)): 100 samples of 8
sensors on 1,000 nodes take 3.2 MB, and about 200 bytes a node more. Nodes gone
from the pipeline are forgotten.
"""
from __future__ import annotations

import math
import sys
from array import array

NAN = float("nan")


class _Node:
    """One node's rings: its sensors' names, in the order they first came, and their samples."""

    __slots__ = ("sensors", "values", "seen")

    def __init__(self):
        self.sensors: tuple[str, ...] = ()
        self.values = array("f")
        self.seen: object = None  # the frame sampled last (identity)


class History:
    def __init__(self, period: float = 3.0, points: int = 100):
        self.period, self.points = period, points
        self.count = 0                                  # samples taken; the next goes to slot count % points
        self.times = array("d", [NAN] * points)         # when each slot was sampled (s since the epoch)
        self.series: dict[str, _Node] = {}              # node -> its rings
        self._gap = array("f", [NAN] * points)

    def sample(self, pipeline, now: float) -> None:
        points = self.points
        slot = self.count % points
        self.count += 1
        self.times[slot] = now
        for name, st in pipeline.nodes.items():
            node = self.series.get(name)
            if node is None:
                node = self.series[name] = _Node()
            values = node.values
            for i in range(slot, len(values), points):  # a gap unless this frame has the sensor
                values[i] = NAN
            if st.last_rows is not None and st.last_rows is not node.seen:
                node.seen = st.last_rows
                for series, (_t, value) in pipeline.node_last(name).items():
                    sensor = series.split("/", 1)[-1]
                    try:
                        i = node.sensors.index(sensor)
                    except ValueError:
                        i = len(node.sensors)
                        node.sensors += (sys.intern(sensor),)  # one copy of each name for all nodes
                        values.extend(self._gap)
                    values[i * points + slot] = value
        for name in [n for n in self.series if n not in pipeline.nodes]:
            del self.series[name]

    def _order(self) -> list[int]:
        n = min(self.count, self.points)
        first = self.count - n
        return [(first + i) % self.points for i in range(n)]

    def view(self, nodes: list[str]) -> dict:
        """{"period", "t": [sample times, oldest first], "nodes": {node: {sensor: [value or None]}}}."""
        order = self._order()
        out = {}
        for name in nodes:
            node = self.series.get(name)
            if node is not None:
                base = {s: i * self.points for i, s in enumerate(node.sensors)}
                out[name] = {s: [_short(node.values[base[s] + i]) for i in order] for s in sorted(base)}
        return {"period": self.period, "t": [round(self.times[i], 3) for i in order], "nodes": out}


def _short(v: float):
    """4 significant digits (the samples are float32 anyway); None for a gap."""
    return None if math.isnan(v) else float(f"{v:.4g}")
