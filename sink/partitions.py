"""Time partitions of the sink's tables in PostgreSQL: `readings` and `events` by `t`, `windows` by `start`.

A year of 1,000 nodes is 4 × 10⁹ readings at one 8-reading frame a minute, 25 × 10⁹
at one every 10 s (docs/cloud.md, Sizing). Declarative partitioning by range on
time keeps each index to its period (a month's primary key fits in memory where
a year's does not), lets a query for a time range read only its periods
(partition pruning), and makes retention `DROP TABLE` of a period instead of a
`DELETE` that bloats the table.

Configuration: `[sink] partition = "month"` (the default), `"week"`, `"day"` or
`"none"` (one table, as before; SQLite always has one table). Partitions are named
`<table>_p<YYYYMMDD>` after the (UTC) day their period starts. Retention:
`[sink] keep = "90d"` (readings), `keep_windows`, `keep_events` ("" by default: kept
for ever; a number and `d` or `w`): `Partitions.expire` detaches and drops every
partition wholly older than that, and deletes such rows from the default
partition, at start and hourly, under the same advisory lock as making them.

Exactly once across partitions: PostgreSQL requires a partitioned table's
primary key to include the partition key, so the key is the reading's identity
(site, gateway, node, seq, idx) plus `t` (windows: site, gateway, key plus
`start`). A repeat is the same reading from the same frame bytes, so it has the
same `t`, falls in the same partition and meets its twin there: the key catches
every repeat that the identity alone would (hil_tests/test_cloud_postgres.py
stores repeats on both sides of a partition boundary to show it).

Usage: `PostgresStore` makes the tables partitioned when it creates them, then
before each write `Partitions.missing(table, lo, hi)` names the periods the
group's times need that are not known to exist, and `create(conn, ...)` makes
them (its own short transaction, under an advisory lock: several workers may
try at once). The current period and the next `AHEAD` are made at start, so a
write rarely waits for DDL.

Caveats: rows whose time is more than `BEHIND` seconds old or `FUTURE` seconds
ahead of the sink's clock (a node with a wrong clock) go to `<table>_default`
rather than making a partition each; if such a period later comes into range,
its rows are moved out of the default partition when the period is made. An
existing `readings` or `windows` table made by an older sink without partitions is
left as it is (a warning says so; docs/cloud.md shows how to move it); an
`events` table (small beside them) is moved into a partitioned one at start
(`PostgresStore`). Retention drops whole periods: with `keep = "30d"` and monthly
partitions a reading stays 30 to 61 days. A row older than `keep` that arrives late
(a backlog) goes to the default partition, not a new partition, and the next pass
deletes it.
"""
from __future__ import annotations

import calendar
import datetime as dt
import logging
import re

log = logging.getLogger("headrace.sink")

UNITS = ("month", "week", "day", "none")
TABLES = {"readings": "t", "windows": "start", "events": "t"}  # the partitioned tables and their time columns
AHEAD = 2           # periods made ahead of the current one at start
BEHIND = 400 * 86400.0  # seconds: older rows need no new partition (the default one takes them)
FUTURE = 35 * 86400.0   # seconds ahead of the sink's clock
_MONDAY = 4 * 86400  # 1970-01-05, the first Monday after the epoch
LOCK = 4242015       # advisory lock id for making (and dropping) partitions
LOCK_WAIT = 5.0      # seconds retention waits for a table its writers hold (each for one group's transaction)
_KEEP = re.compile(r"^\s*(\d+)\s*([dw])\s*$")


def keep_seconds(text: str) -> float:
    """`[sink] keep` in seconds: "" (or "0d") is 0, for ever; "400d", "8w"; ValueError otherwise."""
    if not text.strip():
        return 0.0
    m = _KEEP.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a number of days or weeks")
    return int(m.group(1)) * (86400.0 if m.group(2) == "d" else 604800.0)


def bounds(expr: str) -> tuple[float, float] | None:
    """[start, end) of a partition from its bound (pg_get_expr of relpartbound), None for DEFAULT:
    FOR VALUES FROM ('1796083200') TO ('1798761600')."""
    if not expr.startswith("FOR VALUES FROM"):
        return None
    parts = expr.split("'")
    return float(parts[1]), float(parts[3])


def period(t: float, unit: str) -> tuple[float, float]:
    """[start, end) in seconds since the epoch of the period (UTC) that holds `t`."""
    if unit == "day":
        lo = (t // 86400) * 86400
        return lo, lo + 86400
    if unit == "week":
        lo = ((t - _MONDAY) // 604800) * 604800 + _MONDAY
        return lo, lo + 604800
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    lo = calendar.timegm((d.year, d.month, 1, 0, 0, 0))
    hi = calendar.timegm((d.year + d.month // 12, d.month % 12 + 1, 1, 0, 0, 0))
    return float(lo), float(hi)


def name(table: str, lo: float) -> str:
    return f"{table}_p{dt.datetime.fromtimestamp(lo, dt.timezone.utc):%Y%m%d}"


class Partitions:
    """Which periods exist, per table; makes the missing ones."""

    def __init__(self, unit: str, keep: dict[str, float] | None = None):
        """`keep`: seconds to keep each table's rows (absent or 0: for ever)."""
        if unit not in UNITS:
            raise ValueError(f"partition unit {unit!r} is not one of {UNITS}")
        self.unit = unit
        self.keep = {t: k for t, k in (keep or {}).items() if k > 0}
        self.tables: set[str] = set()     # the tables that are partitioned in this database
        self.known: set[tuple[str, float]] = set()  # (table, period start) that exist

    def parent_ddl(self, table: str, body: str, key: tuple[str, ...]) -> list[str]:
        """The partitioned table and its default partition."""
        col = TABLES[table]
        return [f"CREATE TABLE IF NOT EXISTS {table} ({body}, PRIMARY KEY ({', '.join(key + (col,))})) "
                f"PARTITION BY RANGE ({col})",
                f"CREATE TABLE IF NOT EXISTS {table}_default PARTITION OF {table} DEFAULT"]

    def load(self, conn) -> None:
        """Which of the tables are partitioned, and their partitions (at start)."""
        rows = conn.execute("""SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid)
            FROM pg_inherits JOIN pg_class parent ON parent.oid = inhparent JOIN pg_class child ON child.oid = inhrelid
            WHERE parent.relname = ANY(%s) AND parent.relkind = 'p'""", (list(TABLES),)).fetchall()
        self.tables = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'p'", (list(TABLES),)).fetchall()}
        for parent, _child, bound in rows:
            b = bounds(bound)
            if b is not None:
                self.known.add((parent, b[0]))

    def missing(self, table: str, lo: float, hi: float, now: float) -> list[tuple[float, float]]:
        """The periods that rows with times in [lo, hi] need and that are not known to exist
        (only those within BEHIND, or the table's `keep` if shorter, and FUTURE of `now`; others go
        to the default partition)."""
        if table not in self.tables or lo != lo or hi != hi:  # not partitioned; NaN
            return []
        lo, hi = max(lo, now - min(BEHIND, self.keep.get(table, BEHIND))), min(hi, now + FUTURE)
        out = []
        t = lo
        while t <= hi:
            p = period(t, self.unit)
            if (table, p[0]) not in self.known:
                out.append(p)
            t = p[1]
        return out

    def ahead(self, now: float) -> list[tuple[str, float, float]]:
        """(table, start, end) of the current period and the next AHEAD ones not known to exist."""
        out = []
        for table in sorted(self.tables):
            t = now
            for _ in range(AHEAD + 1):
                p = period(t, self.unit)
                if (table, p[0]) not in self.known:
                    out.append((table, *p))
                t = p[1]
        return out

    def create(self, conn, table: str, lo: float, hi: float, errors) -> None:
        """Make one period's partition, in its own transaction (`conn` in autocommit). Rows of the
        period already in the default partition are moved into it."""
        part = name(table, lo)
        col = TABLES[table]
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            exists = conn.execute("SELECT 1 FROM pg_class WHERE relname = %s", (part,)).fetchone()
            if not exists:
                try:
                    with conn.transaction():
                        conn.execute(f"CREATE TABLE {part} PARTITION OF {table} FOR VALUES FROM ({lo!r}) TO ({hi!r})")
                except errors.CheckViolation:  # the default partition holds rows of the period
                    conn.execute(f"CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                    moved = conn.execute(f"WITH gone AS (DELETE FROM {table}_default WHERE {col} >= %s AND {col} < %s "
                                         f"RETURNING *) INSERT INTO {part} SELECT * FROM gone", (lo, hi)).rowcount
                    conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ({lo!r}) TO ({hi!r})")
                    log.warning("partition %s made; %d rows moved into it from %s_default", part, moved, table)
                else:
                    log.info("partition %s made for [%s, %s)", part, lo, hi)
        self.known.add((table, lo))

    def expire(self, conn, now: float, errors) -> list[tuple[str, int, int]]:
        """Retention: for each table with a `keep`, detach and drop the partitions wholly older than
        `now - keep`, and delete such rows from its default partition; one transaction a table
        (`conn` in autocommit), under the advisory lock that making partitions takes, so workers
        never race on it. Waits at most 5 s for the table (its writers hold it for a transaction
        each): if they hold it longer the pass leaves that table (logged; the next pass tries
        again). `errors` is psycopg.errors. Returns (table, partitions dropped, rows deleted) of
        each table done."""
        out = []
        for table in sorted(self.tables & set(self.keep)):
            try:
                gone, deleted = self._expire_table(conn, table, now - self.keep[table])
            except errors.LockNotAvailable:
                log.warning("retention: %s stayed busy for %.0f s; left to the next pass", table, LOCK_WAIT)
                continue
            for lo in gone:  # once committed: a rolled-back pass dropped nothing
                self.known.discard((table, lo))
            out.append((table, len(gone), deleted))
        return out

    def _expire_table(self, conn, table: str, cutoff: float) -> tuple[list[float], int]:
        """One table's pass: (starts of the partitions dropped, rows deleted from the default one)."""
        col = TABLES[table]
        days = self.keep[table] / 86400
        gone = []
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_WAIT * 1000)}ms'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            rows = conn.execute("""SELECT child.relname, pg_get_expr(child.relpartbound, child.oid)
                FROM pg_inherits JOIN pg_class parent ON parent.oid = inhparent
                JOIN pg_class child ON child.oid = inhrelid WHERE parent.relname = %s
                ORDER BY child.relname""", (table,)).fetchall()
            for part, bound in rows:
                b = bounds(bound)
                if b is None or b[1] > cutoff:
                    continue
                conn.execute(f"ALTER TABLE {table} DETACH PARTITION {part}")
                conn.execute(f"DROP TABLE {part}")
                gone.append(b[0])
                log.info("retention: partition %s [%s, %s) dropped (%s keeps %.0f days)",
                         part, b[0], b[1], table, days)
            deleted = max(conn.execute(f"DELETE FROM {table}_default WHERE {col} < %s", (cutoff,)).rowcount, 0)
            if deleted:
                log.info("retention: %d rows older than %.0f days deleted from %s_default", deleted, days, table)
        return gone, deleted
