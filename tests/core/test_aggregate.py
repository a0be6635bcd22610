import math
from array import array

import pytest
from hypothesis import given, settings, strategies as st

pytestmark = pytest.mark.core("aggregate")

FIELDS = ("sid", "start", "count", "min", "max", "sum", "sumsq", "first", "last", "twa", "correction")
BASIC = FIELDS[:9]


def rows(cols, fields=BASIC):
    assert tuple(cols) == FIELDS
    assert cols["sid"].typecode == "q" and cols["count"].typecode == "q" and cols["min"].typecode == "d"
    assert cols["correction"].typecode == "q" and cols["twa"].typecode == "d"
    return list(zip(*(cols[f] for f in fields)))


def test_windows_and_statistics(impl):
    a = impl.Aggregator(10.0)
    for t, v in ((0.0, 3.0), (9.999, 1.0), (5.0, 2.0), (10.0, 7.0)):
        assert a.add(1, t, v)
    assert a.open_windows == 2
    assert rows(a.close(10.0)) == [(1, 0.0, 3, 1.0, 3.0, 6.0, 14.0, 3.0, 1.0)]
    assert rows(a.flush()) == [(1, 10.0, 1, 7.0, 7.0, 7.0, 49.0, 7.0, 7.0)]
    assert rows(a.flush()) == []
    assert a.open_windows == 0


def test_negative_times_and_order_of_output(impl):
    a = impl.Aggregator(1.0)
    a.add(5, -0.5, 1.0)
    a.add(2, -0.5, 2.0)
    a.add(2, 0.5, 3.0)
    assert [(r[0], r[1]) for r in rows(a.flush())] == [(2, -1.0), (5, -1.0), (2, 0.0)]


def test_first_and_last_ties(impl):
    a = impl.Aggregator(10.0)
    for v in (1.0, 2.0, 3.0):
        a.add(1, 5.0, v)
    (r,) = rows(a.flush())
    assert (r[7], r[8]) == (1.0, 3.0)  # first added among ties, last added among ties


def test_lateness_and_late_counting(impl):
    a = impl.Aggregator(10.0, lateness=5.0)
    a.add(1, 1.0, 1.0)
    assert rows(a.close(14.9)) == []  # 0 + 10 + 5 > 14.9: still open
    assert a.add(1, 2.0, 2.0)  # within lateness
    assert len(rows(a.close(15.0))) == 1
    assert not a.add(1, 3.0, 9.0)  # its window is closed: late
    assert a.late == 1
    assert a.add(1, 11.0, 1.0)  # window 10..20 closes at 25
    assert a.open_windows == 1


def test_invalid_values_and_times(impl):
    a = impl.Aggregator(1.0)
    assert not a.add(1, 1.0, math.nan)
    assert not a.add(1, math.inf, 1.0)
    assert not a.add(1, 1e300, 1.0)
    assert a.invalid == 3 and a.open_windows == 0
    assert a.add(1, 1.0, math.inf)


def test_time_weighted_mean(impl):
    a = impl.Aggregator(10.0)
    # 1.0 held from t=0 to 2, 3.0 from 2 to 10: (2*1 + 8*3) / 10
    a.add(1, 0.0, 1.0)
    a.add(1, 2.0, 3.0)
    a.add(1, 1.0, 100.0)  # out of time order: in count and max, not in twa
    (r,) = rows(a.flush(), ("count", "max", "twa"))
    assert r == (3, 100.0, 2.6)
    a.add(2, 5.0, 4.0)  # one reading, held to the end of its window
    assert rows(a.flush(), ("twa",)) == [(4.0,)]


def test_late_policy_correct_emits_a_correction_window(impl):
    a = impl.Aggregator(10.0, late_policy="correct")
    a.add(1, 1.0, 5.0)
    assert rows(a.close(10.0), ("start", "count", "correction")) == [(0.0, 1, 0)]
    assert a.add(1, 2.0, 7.0) and a.add(1, 3.0, 9.0)  # late, but kept
    a.add(1, 15.0, 1.0)
    out = rows(a.close(10.0), ("start", "count", "sum", "min", "correction"))
    assert out == [(0.0, 2, 16.0, 7.0, 1)]  # emitted at once, whatever the watermark
    assert a.late == 2 and a.open_windows == 1
    with pytest.raises(ValueError, match="late_policy"):
        impl.Aggregator(1.0, late_policy="keep")


def test_max_open(impl):
    a = impl.Aggregator(1.0, max_open=3)
    for sid in range(3):
        a.add(sid, 0.0, 1.0)
    a.add(0, 0.5, 1.0)  # an open window: fine
    with pytest.raises(OverflowError, match="max_open"):
        a.add(9, 0.0, 1.0)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"width": -1}, {"width": math.nan}, {"width": 1, "lateness": -1},
                                    {"width": 1, "max_open": 0}])
def test_bad_arguments(impl, kwargs):
    with pytest.raises(ValueError):
        impl.Aggregator(**kwargs)


def test_add_columns_accepts_buffers_and_lists(impl):
    a = impl.Aggregator(10.0)
    assert a.add_columns(array("q", [1, 1, 2]), array("d", [1.0, 2.0, 3.0]), array("d", [1.0, 2.0, 3.0])) == 3
    assert a.add_columns([3], [1.0], [5.0]) == 1
    with pytest.raises(ValueError, match="differ in length"):
        a.add_columns(array("q", [1]), array("d", [1.0, 2.0]), array("d", [1.0]))
    assert [r[0] for r in rows(a.flush())] == [1, 2, 3]


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
events = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5), st.floats(-100, 1000, allow_nan=False), finite | st.just(math.nan)),
    st.tuples(st.just("close"), st.floats(-100, 1100, allow_nan=False)),
), max_size=300)


@settings(max_examples=300, deadline=None)
@given(events, st.sampled_from([0.5, 1.0, 7.0, 60.0]), st.sampled_from([0.0, 0.25, 30.0]),
       st.sampled_from(["drop", "correct"]))
def test_compiled_equals_reference(impls, compiled, evs, width, lateness, policy):
    ref = impls["python"].Aggregator(width, lateness, late_policy=policy)
    fast = compiled.Aggregator(width, lateness, late_policy=policy)
    for ev in evs:
        if ev[0] == "add":
            assert ref.add(*ev[1:]) == fast.add(*ev[1:])
        else:
            assert _bits(ref.close(ev[1])) == _bits(fast.close(ev[1]))
    assert _bits(ref.flush()) == _bits(fast.flush())
    assert (ref.late, ref.invalid, ref.open_windows) == (fast.late, fast.invalid, fast.open_windows)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 400))
def test_compiled_equals_reference_columns_many_series(impls, compiled, n, nseries):
    import random
    rng = random.Random(n * 7919 + nseries)
    sids = array("q", (rng.randrange(nseries) for _ in range(n)))
    ts = array("d", (rng.uniform(0, 100) for _ in range(n)))
    vs = array("d", (rng.gauss(0, 10) for _ in range(n)))
    ref = impls["python"].Aggregator(5.0, 1.0)
    fast = compiled.Aggregator(5.0, 1.0)
    assert ref.add_columns(sids, ts, vs) == fast.add_columns(sids, ts, vs)
    assert _bits(ref.close(50.0)) == _bits(fast.close(50.0))
    assert _bits(ref.flush()) == _bits(fast.flush())


def _bits(cols):
    # compare floats bit for bit (NaN-safe, -0.0 distinct)
    return {k: bytes(v) for k, v in cols.items()}
