"""The periods of PostgreSQL's time partitions (sink/partitions.py); the partitions themselves on a
real PostgreSQL are in hil_tests/test_cloud_postgres.py."""
from __future__ import annotations

import calendar
import datetime as dt

import pytest

from sink.partitions import BEHIND, FUTURE, Partitions, name, period


def utc(*args) -> float:
    return float(calendar.timegm(dt.datetime(*args).timetuple()))


def test_periods_and_names():
    t = utc(2026, 12, 31, 23, 59, 59)
    assert period(t, "month") == (utc(2026, 12, 1), utc(2027, 1, 1))  # the year rolls over
    assert period(utc(2027, 1, 1), "month") == (utc(2027, 1, 1), utc(2027, 2, 1))  # a boundary opens its own
    assert period(utc(2028, 2, 29, 12), "month") == (utc(2028, 2, 1), utc(2028, 3, 1))
    assert period(t, "day") == (utc(2026, 12, 31), utc(2027, 1, 1))
    lo, hi = period(t, "week")  # weeks start on Monday
    assert dt.datetime.fromtimestamp(lo, dt.timezone.utc).weekday() == 0 and hi - lo == 7 * 86400 and lo <= t < hi
    assert period(utc(2026, 12, 28), "week")[0] == utc(2026, 12, 28)  # that Monday itself
    assert name("readings", utc(2026, 12, 1)) == "readings_p20261201"


def test_missing_periods_are_bounded_by_the_clock():
    p = Partitions("month")
    p.tables = {"readings"}
    now = utc(2026, 12, 5)
    assert p.missing("readings", utc(2026, 11, 30), utc(2026, 12, 2), now) == [
        (utc(2026, 11, 1), utc(2026, 12, 1)), (utc(2026, 12, 1), utc(2027, 1, 1))]
    p.known.add(("readings", utc(2026, 12, 1)))
    assert p.missing("readings", utc(2026, 12, 2), utc(2026, 12, 3), now) == []
    # a node's clock years off: no partition for it (the default one takes its rows)
    assert p.missing("readings", now - BEHIND - 86400 * 40, now - BEHIND - 86400 * 35, now) == []
    assert p.missing("readings", now + FUTURE + 86400 * 40, now + FUTURE + 86400 * 90, now) == []
    assert p.missing("readings", float("nan"), float("nan"), now) == []
    assert p.missing("windows", now, now, now) == []  # not partitioned in this database
    assert [(t, lo) for t, lo, _hi in p.ahead(now)] == [("readings", utc(2027, 1, 1)), ("readings", utc(2027, 2, 1))]


def test_unknown_unit():
    from gateway.errors import ConfigError
    from sink.config import from_dict

    with pytest.raises(ValueError):
        Partitions("year")
    with pytest.raises(ConfigError) as e:
        from_dict({"sink": {"partition": "year"}})
    assert e.value.key == "[sink] partition"
    assert from_dict({"sink": {"partition": "none"}}).sink.partition == "none"
