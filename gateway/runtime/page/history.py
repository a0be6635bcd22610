"""The sparklines' memory: each node's latest readings, sampled every few seconds.

Usage: `History(period=3.0, points=100)`; `sample(pipeline, now)` every `period`
seconds (the status page does); `view(["pump1"])` gives the samples as JSON.

A sample holds the values of a node's newest frame when that frame is new since
the sample before, else nothing (a gap): a silent node's line stops. The latest
value, not a mean: enough to see a trend, and it costs nothing on the hot path
(the pipeline keeps the newest frame of each node anyway).

Caveats: values are kept as float32, 4 bytes a sample: 100 samples of 8 sensors
on 1,000 nodes take 3.2 MB. Nodes gone from the pipeline are forgotten.
"""
from __future__ import annotations

import math
from array import array

NAN = float("nan")


class History:
    def __init__(self, period: float = 3.0, points: int = 100):
        self.period, self.points = period, points
        self.count = 0                                  # samples taken; the next goes to slot count % points
        self.times = array("d", [NAN] * points)         # when each slot was sampled (s since the epoch)
        self.series: dict[str, dict[str, array]] = {}  # node -> sensor -> ring of values
        self._seen: dict[str, object] = {}             # node -> the frame sampled last (identity)

    def sample(self, pipeline, now: float) -> None:
        slot = self.count % self.points
        self.count += 1
        self.times[slot] = now
        for name, st in pipeline.nodes.items():
            rings = self.series.get(name)
            if rings is None:
                rings = self.series[name] = {}
            got = set()
            if st.last_rows is not None and st.last_rows is not self._seen.get(name):
                self._seen[name] = st.last_rows
                for series, (_t, value) in pipeline.node_last(name).items():
                    sensor = series.split("/", 1)[-1]
                    ring = rings.get(sensor)
                    if ring is None:
                        ring = rings[sensor] = array("f", [NAN] * self.points)
                    ring[slot] = value
                    got.add(sensor)
            for sensor, ring in rings.items():
                if sensor not in got:  # no new frame, or a sensor this frame lacks: a gap
                    ring[slot] = NAN
        for name in [n for n in self.series if n not in pipeline.nodes]:
            del self.series[name]
            self._seen.pop(name, None)

    def _order(self) -> list[int]:
        n = min(self.count, self.points)
        first = self.count - n
        return [(first + i) % self.points for i in range(n)]

    def view(self, nodes: list[str]) -> dict:
        """{"period", "t": [sample times, oldest first], "nodes": {node: {sensor: [value or None]}}}."""
        order = self._order()
        out = {}
        for name in nodes:
            rings = self.series.get(name)
            if rings is not None:
                out[name] = {s: [_short(ring[i]) for i in order] for s, ring in sorted(rings.items())}
        return {"period": self.period, "t": [round(self.times[i], 3) for i in order], "nodes": out}


def _short(v: float):
    """4 significant digits (the samples are float32 anyway); None for a gap."""
    return None if math.isnan(v) else float(f"{v:.4g}")
