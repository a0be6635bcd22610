"""core_ext.rules: each rule kind on both implementations, and the two agree on random tables."""
import math
import struct
from array import array

import pytest
from hypothesis import given, settings, strategies as st

pytestmark = pytest.mark.core("rules")


def run(table, readings, now=0.0):
    sids, ts, vs = (array("q", [r[0] for r in readings]), array("d", [r[1] for r in readings]),
                    array("d", [r[2] for r in readings]))
    return rows(table.eval(sids, ts, vs, now))


def rows(out):
    r, t, s, v = out
    assert r.typecode == "q" and t.typecode == "d" and s.typecode == "q" and v.typecode == "d"
    return list(zip(r, t, s, v))


def windows(entries):
    """Aggregator-style columns from (sid, start, count, min, max, sum, sumsq, first, last, twa, correction)."""
    names = ("sid", "start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa", "correction")
    return {n: array("q" if n in ("sid", "count", "correction") else "d", [e[i] for e in entries])
            for i, n in enumerate(names)}


def test_threshold_with_hysteresis(impl):
    t = impl.RuleTable()
    r = t.add_rule(impl.MODE_ALL)
    t.add_condition(r, 3, impl.SIGNAL_VALUE, True, 7.1, 6.6)
    got = run(t, [(3, 1, 7.0), (3, 2, 7.1), (3, 3, 7.2), (3, 4, 6.7), (3, 5, 8.0), (3, 6, 6.6), (3, 7, 6.0)])
    assert got == [(r, 3.0, impl.RAISED, 7.2), (r, 6.0, impl.CLEARED, 6.6)]
    assert not t.active(r)
    # below, no hysteresis: on under the level, off at the level
    b = t.add_rule(impl.MODE_ALL)
    t.add_condition(b, 4, impl.SIGNAL_VALUE, False, 1.0, 1.0)
    assert run(t, [(4, 1, 0.5), (4, 2, 1.0)]) == [(b, 1.0, impl.RAISED, 0.5), (b, 2.0, impl.CLEARED, 1.0)]


def test_minimum_duration_in_event_time(impl):
    t = impl.RuleTable()
    r = t.add_rule(impl.MODE_ALL, duration=5.0)
    t.add_condition(r, 0, impl.SIGNAL_VALUE, True, 10.0, 9.0)
    # holds from t=1; a dip above the clear level keeps it; raised at the first reading >= 6
    assert run(t, [(0, 1, 11.0), (0, 3, 9.5), (0, 5.9, 12.0)]) == []
    assert run(t, [(0, 6, 12.0)]) == [(r, 6.0, impl.RAISED, 12.0)]
    # falling to the clear level resets the pending time
    t2 = impl.RuleTable()
    r2 = t2.add_rule(impl.MODE_ALL, duration=5.0)
    t2.add_condition(r2, 0, impl.SIGNAL_VALUE, True, 10.0, 9.0)
    assert run(t2, [(0, 1, 11.0), (0, 3, 9.0), (0, 4, 11.0), (0, 8.5, 11.0), (0, 9, 11.0)]) == \
        [(r2, 9.0, impl.RAISED, 11.0)]


def test_rate_of_change(impl):
    t = impl.RuleTable()
    r = t.add_rule(impl.MODE_ALL)
    t.add_condition(r, 1, impl.SIGNAL_RATE, True, 0.5, 0.1)
    # the first reading primes; rates 0.25, 1.0 (raise), a reading out of order is ignored, 0.0 (clear)
    got = run(t, [(1, 0, 10.0), (1, 4, 11.0), (1, 5, 12.0), (1, 4.5, 99.0), (1, 7, 12.0)])
    assert got == [(r, 5.0, impl.RAISED, 1.0), (r, 7.0, impl.CLEARED, 0.0)]
    falling = t.add_rule(impl.MODE_ALL)
    t.add_condition(falling, 2, impl.SIGNAL_RATE, False, -2.0, -1.0)
    assert run(t, [(2, 0, 50.0), (2, 1, 45.0)]) == [(falling, 1.0, impl.RAISED, -5.0)]


def test_window_statistics(impl):
    t = impl.RuleTable()
    mean = t.add_rule(impl.MODE_ALL)
    t.add_condition(mean, 5, impl.SIGNAL_WINDOW, True, 7.1, 6.5, width=60.0, stat=impl.STATS.index("mean"))
    rms = t.add_rule(impl.MODE_ALL)
    t.add_condition(rms, 5, impl.SIGNAL_WINDOW, True, 5.0, 5.0, width=10.0, stat=impl.STATS.index("rms"))
    w60 = windows([(5, 0.0, 4, 6.0, 9.0, 30.0, 230.0, 6.0, 9.0, 7.4, 0),
                   (7, 0.0, 1, 99.0, 99.0, 99.0, 9801.0, 99.0, 99.0, 99.0, 0)])
    assert rows(t.eval_windows(60.0, w60)) == [(mean, 60.0, impl.RAISED, 7.5)]
    # a correction window is skipped; the 10 s condition ignores 60 s windows and the reverse
    late = windows([(5, 0.0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1)])
    assert rows(t.eval_windows(60.0, late)) == []
    w10 = windows([(5, 60.0, 4, 6.0, 9.0, 30.0, 230.0, 6.0, 9.0, 7.4, 0)])
    assert rows(t.eval_windows(10.0, w10)) == [(rms, 70.0, impl.RAISED, math.sqrt(230.0 / 4))]
    assert rows(t.eval_windows(60.0, windows([(5, 60.0, 2, 1.0, 2.0, 3.0, 5.0, 1.0, 2.0, 1.5, 0)]))) == \
        [(mean, 120.0, impl.CLEARED, 1.5)]
    with pytest.raises(ValueError):
        t.add_condition(mean, 5, impl.SIGNAL_WINDOW, True, 1.0, 1.0, width=0.0)
    with pytest.raises(ValueError):
        t.add_condition(mean, 5, impl.SIGNAL_WINDOW, True, 1.0, 1.0, width=10.0, stat=len(impl.STATS))


def test_every_statistic(impl):
    t = impl.RuleTable()
    ids = {}
    for i, name in enumerate(impl.STATS):
        ids[t.add_rule(impl.MODE_ALL)] = name
        t.add_condition(i, 0, impl.SIGNAL_WINDOW, True, -1e9, -1e9, width=1.0, stat=i)
    got = rows(t.eval_windows(1.0, windows([(0, 0.0, 4, 1.0, 4.0, 10.0, 30.0, 2.0, 3.0, 2.75, 0)])))
    expect = {"mean": 2.5, "min": 1.0, "max": 4.0, "twa": 2.75, "first": 2.0, "last": 3.0, "count": 4.0,
              "sum": 10.0, "rms": math.sqrt(7.5)}
    assert {ids[r]: v for r, _t, _s, v in got} == expect


def test_all_and_any_over_series_of_a_node(impl):
    t = impl.RuleTable()
    both = t.add_rule(impl.MODE_ALL, duration=1.0)
    t.add_condition(both, 0, impl.SIGNAL_VALUE, True, 80.0, 75.0)    # temp
    t.add_condition(both, 1, impl.SIGNAL_VALUE, True, 5.0, 4.5)      # pressure
    either = t.add_rule(impl.MODE_ANY)
    t.add_condition(either, 0, impl.SIGNAL_VALUE, True, 90.0, 90.0)
    t.add_condition(either, 1, impl.SIGNAL_VALUE, True, 6.0, 6.0)
    got = run(t, [(0, 1, 85.0), (1, 2, 5.5), (1, 2.5, 5.6), (1, 3, 5.7), (1, 4, 6.5), (0, 5, 70.0), (1, 6, 5.0)])
    assert got == [(both, 3.0, impl.RAISED, 5.7), (either, 4.0, impl.RAISED, 6.5),
                   (both, 5.0, impl.CLEARED, 70.0), (either, 6.0, impl.CLEARED, 5.0)]


def test_staleness_on_the_gateway_clock(impl):
    t = impl.RuleTable()
    node = t.add_rule(impl.MODE_STALE, after=30.0)
    assert t.watch(node, 4) and t.watch(node, 5) and not t.watch(node, 5)
    assert rows(t.check_stale(1000.0)) == []          # armed: silence counts from here
    assert rows(t.check_stale(1029.0)) == []
    assert rows(t.check_stale(1030.0)) == [(node, 1030.0, impl.RAISED, 30.0)]
    assert rows(t.check_stale(1040.0)) == []          # raised once
    # a reading of any watched series clears it; its own time does not matter, its arrival does
    assert run(t, [(6, 1.0, 1.0)], now=1041.0) == []
    assert run(t, [(5, 1.0, 1.0)], now=1042.0) == [(node, 1042.0, impl.CLEARED, 42.0)]
    assert rows(t.check_stale(1071.0)) == []
    assert rows(t.check_stale(1072.0)) == [(node, 1072.0, impl.RAISED, 30.0)]
    with pytest.raises(ValueError):
        t.add_rule(impl.MODE_STALE, after=0.0)


def test_mirror_reports_every_reading(impl):
    t = impl.RuleTable()
    m = t.add_rule(impl.MODE_MIRROR)
    t.watch(m, 9)
    assert run(t, [(9, 1, 3.0), (8, 1, 4.0), (9, 2, -1.5)]) == [(m, 1.0, impl.READING, 3.0),
                                                                 (m, 2.0, impl.READING, -1.5)]


def test_invalid_readings_and_arguments(impl):
    t = impl.RuleTable()
    r = t.add_rule(impl.MODE_ALL)
    t.add_condition(r, 0, impl.SIGNAL_VALUE, True, 1.0, 1.0)
    assert run(t, [(0, 1, math.nan), (0, math.inf, 5.0), (0, math.nan, 5.0), (-1, 1, 5.0), (10**12, 1, 5.0)]) == []
    assert t.invalid == 3
    assert run(t, [(0, 1, math.inf)]) == [(r, 1.0, impl.RAISED, math.inf)]
    with pytest.raises(ValueError, match="wrong side"):
        t.add_condition(r, 0, impl.SIGNAL_VALUE, True, 1.0, 2.0)
    with pytest.raises(ValueError, match="wrong side"):
        t.add_condition(r, 0, impl.SIGNAL_VALUE, False, 1.0, 0.5)
    with pytest.raises(ValueError):
        t.add_condition(r, -1, impl.SIGNAL_VALUE, True, 1.0, 1.0)
    with pytest.raises(ValueError, match="series id"):
        t.add_condition(r, impl.MAX_SID + 1, impl.SIGNAL_VALUE, True, 1.0, 1.0)
    with pytest.raises(ValueError):
        t.add_condition(r, 0, 7, True, 1.0, 1.0)
    with pytest.raises(ValueError):
        t.add_condition(r, 0, impl.SIGNAL_VALUE, True, math.nan, 1.0)
    with pytest.raises(ValueError):
        t.add_condition(99, 0, impl.SIGNAL_VALUE, True, 1.0, 1.0)
    with pytest.raises(ValueError):
        t.watch(r, 0)  # not a stale or mirror rule
    with pytest.raises(ValueError):
        t.add_rule(9)
    with pytest.raises(ValueError):
        t.eval(array("q", [0]), array("d", []), array("d", [1.0]), 0.0)
    with pytest.raises(ValueError):
        t.eval(array("q"), array("d"), array("d"), math.nan)
    assert rows(t.eval([], [], [], 0.0)) == []
    assert (t.n_rules, t.n_conditions) == (1, 1)


def test_rules_added_after_evaluation_are_indexed(impl):
    t = impl.RuleTable()
    a = t.add_rule(impl.MODE_ALL)
    t.add_condition(a, 2, impl.SIGNAL_VALUE, True, 0.0, 0.0)
    assert run(t, [(2, 1, 1.0)]) == [(a, 1.0, impl.RAISED, 1.0)]
    b = t.add_rule(impl.MODE_ALL)
    t.add_condition(b, 50_000, impl.SIGNAL_VALUE, True, 0.0, 0.0)
    m = t.add_rule(impl.MODE_MIRROR)
    t.watch(m, 2)
    assert run(t, [(50_000, 2, 1.0), (2, 3, 2.0)]) == [(b, 2.0, impl.RAISED, 1.0), (m, 3.0, impl.READING, 2.0)]


# -- the two implementations agree ------------------------------------------------------

def _bits(out):
    return [tuple(struct.pack("<q", x) if col in (0, 2) else struct.pack("<d", x) for col, x in enumerate(row))
            for row in zip(*out)]


values = st.one_of(st.floats(-20, 20, allow_nan=False), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 5.0]))
times = st.one_of(st.floats(0, 100, allow_nan=False), st.sampled_from([math.nan, math.inf]))
condition = st.tuples(st.integers(0, 5), st.sampled_from([0, 1, 2]), st.booleans(), st.floats(-10, 10),
                      st.floats(0, 5), st.sampled_from([1.0, 10.0]), st.integers(0, 8))
rule = st.tuples(st.sampled_from([0, 1, 2, 3]), st.sampled_from([0.0, 0.5, 3.0]), st.sampled_from([1.0, 5.0]),
                 st.lists(condition, min_size=1, max_size=3), st.lists(st.integers(0, 6), min_size=1, max_size=3))
reading = st.tuples(st.integers(-1, 7), times, values)
window = st.tuples(st.integers(0, 6), st.floats(0, 100), st.integers(1, 5), values, values, values,
                   st.floats(0, 400), values, values, values, st.sampled_from([0, 0, 0, 1]))
step = st.one_of(st.tuples(st.just("r"), st.lists(reading, max_size=30), st.floats(0, 200)),
                 st.tuples(st.just("w"), st.lists(window, max_size=10), st.sampled_from([1.0, 10.0])),
                 st.tuples(st.just("s"), st.floats(0, 200)))


@settings(max_examples=400, deadline=None)
@given(st.lists(rule, min_size=1, max_size=8), st.lists(step, min_size=1, max_size=12))
def test_compiled_and_reference_agree(impls, compiled, spec, steps):
    tables = {name: impl.RuleTable() for name, impl in impls.items()}
    for table in tables.values():
        for mode, duration, after, conds, watches in spec:
            r = table.add_rule(mode, duration, after)
            if mode in (0, 1):
                for sid, signal, above, level, hyst, width, stat in conds:
                    clear = level - hyst if above else level + hyst
                    table.add_condition(r, sid, signal, above, level, clear, width, stat)
            else:
                for sid in watches:
                    table.watch(r, sid)
    for step in steps:
        outs = {}
        for name, table in tables.items():
            if step[0] == "r":
                rs = step[1]
                outs[name] = table.eval(array("q", [x[0] for x in rs]), array("d", [x[1] for x in rs]),
                                        array("d", [x[2] for x in rs]), step[2])
            elif step[0] == "w":
                outs[name] = table.eval_windows(step[2], windows(step[1]))
            else:
                outs[name] = table.check_stale(step[1])
        assert _bits(outs["cython"]) == _bits(outs["python"]), step
    assert tables["cython"].invalid == tables["python"].invalid
    for r in range(len(spec)):
        assert tables["cython"].active(r) == tables["python"].active(r)
