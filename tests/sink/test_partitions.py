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


def test_keep_and_bounds():
    from sink.partitions import bounds, keep_seconds

    assert keep_seconds("") == 0 and keep_seconds("0d") == 0
    assert keep_seconds("400d") == 400 * 86400 and keep_seconds(" 8w ") == 8 * 604800
    for bad in ("1y", "-3d", "2.5d", "d", "30"):
        with pytest.raises(ValueError):
            keep_seconds(bad)
    assert bounds("FOR VALUES FROM ('1796083200') TO ('1798761600')") == (1796083200.0, 1798761600.0)
    assert bounds("DEFAULT") is None
    # no partition is made for rows older than the table keeps (they would be dropped at once)
    p = Partitions("month", {"readings": 40 * 86400.0, "windows": 0.0})
    p.tables = {"readings", "windows"}
    now = utc(2026, 12, 5)
    assert p.keep == {"readings": 40 * 86400.0}
    assert p.missing("readings", utc(2026, 9, 10), utc(2026, 9, 20), now) == []
    assert p.missing("readings", utc(2026, 10, 20), utc(2026, 10, 30), now) == [(utc(2026, 10, 1), utc(2026, 11, 1))]
    assert p.missing("windows", utc(2026, 9, 10), utc(2026, 9, 20), now) == [(utc(2026, 9, 1), utc(2026, 10, 1))]


def test_keep_config():
    from gateway.errors import ConfigError
    from sink.config import from_dict

    s = from_dict({"sink": {"keep": "90d", "keep_events": "104w"}}).sink
    assert s.retention() == {"readings": 90 * 86400.0, "events": 104 * 604800.0}
    assert from_dict({}).sink.retention() == {}  # the default keeps everything
    with pytest.raises(ConfigError) as e:
        from_dict({"sink": {"keep": "3 months"}})
    assert e.value.key == "[sink] keep"
    with pytest.raises(ConfigError) as e:  # ConfigErrors, when there are several, is one too
        from_dict({"sink": {"keep_windows": "0w", "keep": "30d", "partition": "none"}})
    assert "needs partitions" in str(e.value)
    with pytest.raises(ConfigError):
        from_dict({"sink": {"keep": "0d", "keep_events": "0w", "keep_windows": "5h"}})


def test_keep_on_sqlite_keeps_every_row(tmp_path, caplog):
    """Retention drops PostgreSQL's partitions; the embedded SQLite file has none, and says so."""
    import logging

    from sink.store import open_store

    with caplog.at_level(logging.WARNING, "headrace.sink"):
        store = open_store(str(tmp_path / "cloud.sqlite"), keep={"readings": 90 * 86400.0})
    try:
        assert store.kind == "sqlite"
        assert "keep applies to PostgreSQL's partitions" in caplog.text
    finally:
        store.close()
