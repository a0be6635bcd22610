"""The sparklines' rings (gateway/runtime/page/history.py): gaps, late sensors, wrap-around."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.runtime.page.history import History


class _Status:
    def __init__(self):
        self.last_rows = None


class _Frames:
    """What History reads of the pipeline: `nodes` (each with its newest frame's identity) and
    `node_last(node)` (series -> (time, value) of that frame)."""

    def __init__(self):
        self.nodes: dict[str, _Status] = {}
        self.last: dict[str, dict] = {}

    def frame(self, node: str, **values):
        self.nodes.setdefault(node, _Status()).last_rows = object()
        self.last[node] = {f"{node}/{s}": (0.0, v) for s, v in values.items()}

    def node_last(self, node: str) -> dict:
        return self.last[node]


def test_samples_gaps_late_sensors_and_wrap_around():
    p, h = _Frames(), History(period=1.0, points=4)
    p.frame("a", t=1.5)
    h.sample(p, 10.0)
    h.sample(p, 11.0)                  # no new frame: a gap
    p.frame("a", t=2.5, rh=40.0)       # a sensor that comes later
    p.frame("b", v=7.0)
    h.sample(p, 12.0)
    p.frame("a", rh=41.0)              # t missing from this frame: a gap in t only
    h.sample(p, 13.0)
    v = h.view(["a", "b", "nobody"])
    assert v["t"] == [10.0, 11.0, 12.0, 13.0] and set(v["nodes"]) == {"a", "b"}
    assert v["nodes"]["a"] == {"rh": [None, None, 40.0, 41.0], "t": [1.5, None, 2.5, None]}
    assert v["nodes"]["b"] == {"v": [None, None, 7.0, None]}
    p.frame("a", t=3.25)
    h.sample(p, 14.0)                  # the fifth sample overwrites the first
    v = h.view(["a"])
    assert v["t"] == [11.0, 12.0, 13.0, 14.0]
    assert v["nodes"]["a"] == {"rh": [None, 40.0, 41.0, None], "t": [None, 2.5, None, 3.25]}
    assert v["nodes"]["a"]["t"][3] == 3.25 and not any(isinstance(x, float) and math.isnan(x)
                                                       for x in v["nodes"]["a"]["rh"])
    del p.nodes["b"]                   # a node gone from the pipeline is forgotten
    h.sample(p, 15.0)
    assert h.view(["b"])["nodes"] == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["frame", "sample", "gone"]),
                          st.dictionaries(st.sampled_from(["t", "rh", "v", "p"]), st.integers(-50, 50), max_size=3)),
                max_size=40))
def test_nodes_that_come_go_and_grow_read_as_a_plain_model(ops):
    # the columns (shared rows, slots and blocks used again) against a dict of samples per node and sensor
    p, h, points = _Frames(), History(period=1.0, points=3), 3
    model: dict[str, dict[str, dict[int, float]]] = {}
    fresh: set[str] = set()
    taken = 0
    for node, op, values in ops:
        if op == "frame":
            p.frame(node, **{s: v / 4 for s, v in values.items()})
            fresh.add(node)
        elif op == "gone" and node in p.nodes:
            del p.nodes[node], p.last[node]
            fresh.discard(node)
        elif op == "sample":
            h.sample(p, float(taken))
            for name in [n for n in model if n not in p.nodes]:
                del model[name]
            for name in p.nodes:
                model.setdefault(name, {})
            for name in fresh:
                for series, (_t, v) in p.last[name].items():
                    model[name].setdefault(series.split("/", 1)[-1], {})[taken] = v
            fresh.clear()
            taken += 1
    view = h.view(list("abcd"))
    shown = range(max(0, taken - points), taken)
    assert view["t"] == [float(i) for i in shown]
    assert view["nodes"] == {n: {s: [got.get(i) for i in shown] for s, got in sorted(sensors.items())}
                             for n, sensors in model.items()}
