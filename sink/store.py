"""The sink's storage: PostgreSQL (psycopg 3) in production, SQLite when embedded.

Usage: `open_store("postgresql://user@host/db")` or `open_store("/var/lib/headrace/cloud.sqlite")`;
then `store.write(decoded, dead)` per group of broker messages, and only once it
returns, acknowledge them. docs/cloud.md shows the schema and the queries.

One transaction a group: PostgreSQL gets the readings, windows and events by
`COPY` (binary) straight into their tables, in key order, in a savepoint (nearly
always none of the rows is there yet); when the key refuses one (a repeat) the COPY
is rolled back and the rows go by `COPY` into a temporary staging table and
`INSERT … SELECT … ORDER BY key ON CONFLICT DO NOTHING` instead, ordered so that two
workers racing on overlapping batches take their row locks in one order. SQLite
gets `INSERT OR IGNORE` in one transaction. A repeat (redelivery, a batch the
gateway sent again, two workers on one batch) makes no second row. The mirror
tables (gateways, nodes, resources) and the schema messages are upserted in the
same transaction, newer over older; `store.sweep()` marks what fell silent offline
(sink/presence.py). In PostgreSQL `readings`, `windows` and `events` are
partitioned by time, their keys the identity plus the time (sink/partitions.py);
partitions a group needs are made before its transaction, and with `keep`
(retention) those wholly older than it are dropped at start and hourly.

Caveats: a dead letter redelivered before its acknowledgement reached the broker
is stored again unless it carries a stream position (JetStream does; MQTT has none).
Errors: `StoreUnavailable` when the database cannot be reached (the caller keeps the
messages unacknowledged and retries); a deadlock or serialization failure is retried here.
"""
from __future__ import annotations

import json
import logging
import math
import operator
import sqlite3
import threading
import time
from dataclasses import dataclass

from sink import presence
from sink.partitions import TABLES as PARTITIONED, Partitions
from sink.decode import Decoded, DeadLetter

log = logging.getLogger("headrace.sink")

READING_COLS = ("site", "gateway", "node", "seq", "idx", "sensor", "t", "v", "vs", "vb", "vd")
WINDOW_COLS = ("site", "gateway", "key", "node", "sensor", "width", "start", "count", "min", "max", "sum", "sumsq",
               "first", "last", "twa", "correction")
EVENT_COLS = ("site", "gateway", "type", "key", "t", "node", "body")
KEYS = {"readings": ("site", "gateway", "node", "seq", "idx"), "windows": ("site", "gateway", "key"),
        "events": ("site", "gateway", "type", "key")}
COLS = {"readings": READING_COLS, "windows": WINDOW_COLS, "events": EVENT_COLS}
# a group's rows go to PostgreSQL in key order: consecutive rows then land on the same index leaf
# page (already in the CPU's cache), which cut the server's CPU a reading by 10 % with one worker and
# 15 % with two (where each worker's pages are the other's less often: bench/sink.py); and workers
# racing on the same rows take their locks in one order. Python's order of str is the "C" collation's.
SORT_KEY = {name: operator.itemgetter(*(COLS[name].index(c) for c in key)) for name, key in KEYS.items()}
# COPY in PostgreSQL's binary format: floats travel as their 8 bytes (exact, and no text to
# format and parse), which is most of a reading
COPY_TYPES = {
    "readings": ("text", "text", "text", "int8", "int4", "text", "float8", "float8", "text", "bool", "bytea"),
    "windows": ("text", "text", "bytea", "text", "text", "float8", "float8", "int8", "float8", "float8", "float8",
                "float8", "float8", "float8", "float8", "bool"),
    "events": ("text", "text", "text", "text", "float8", "text", "jsonb"),
}

# PostgreSQL types; SQLite takes the same DDL with its own affinities (_table_ddl). Names (site,
# gateway, node, sensor, …) compare byte by byte (collation "C"): they are identifiers, not prose, and
# a key of four names is compared on every index insert, where the database's default collation
# (strcoll) cost 12 % of the server's CPU a reading (bench/sink.py)
_C = 'COLLATE "C"'
SCHEMA = {
    "readings": f"""site text {_C} NOT NULL, gateway text {_C} NOT NULL, node text {_C} NOT NULL, seq bigint NOT NULL,
        idx integer NOT NULL, sensor text {_C} NOT NULL, t double precision NOT NULL, v double precision,
        vs text, vb boolean, vd bytea""",
    "windows": f"""site text {_C} NOT NULL, gateway text {_C} NOT NULL, key bytea NOT NULL, node text {_C} NOT NULL,
        sensor text {_C} NOT NULL, width double precision NOT NULL, start double precision NOT NULL,
        count bigint NOT NULL, min double precision, max double precision, sum double precision,
        sumsq double precision, first double precision, last double precision, twa double precision,
        correction boolean NOT NULL""",
    "events": f"""site text {_C} NOT NULL, gateway text {_C} NOT NULL, type text {_C} NOT NULL, key text {_C} NOT NULL,
        t double precision NOT NULL, node text {_C}, body JSON NOT NULL""",
}
MIRROR = [
    """CREATE TABLE IF NOT EXISTS gateways (site text NOT NULL, gateway text NOT NULL, online boolean NOT NULL,
        since double precision, at double precision NOT NULL, state JSON NOT NULL, PRIMARY KEY (site, gateway))""",
    """CREATE TABLE IF NOT EXISTS nodes (site text NOT NULL, gateway text NOT NULL, node text NOT NULL,
        last_seen double precision, last_seq bigint, last_values JSON NOT NULL, PRIMARY KEY (site, gateway, node))""",
    """CREATE TABLE IF NOT EXISTS resources (site text NOT NULL, gateway text NOT NULL, resource text NOT NULL,
        demand bigint, state text, t double precision, PRIMARY KEY (site, gateway, resource))""",
]  # and the presence columns (sink/presence.py), added by `_presence_columns` to new and old tables alike
# the mirror's upserts, written once: `?` placeholders (psycopg: %s), {merge} the JSON merge of each engine
GATEWAY_UPSERT = """INSERT INTO gateways (site, gateway, online, since, at, state, why, changed)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway) DO UPDATE
    SET online = excluded.online, since = excluded.since, at = excluded.at, state = excluded.state, why = excluded.why,
        changed = CASE WHEN gateways.online = excluded.online AND gateways.changed IS NOT NULL THEN gateways.changed
                       ELSE excluded.changed END
    WHERE excluded.at >= gateways.at"""
DISPATCH_UPSERT = """INSERT INTO resources (site, gateway, resource, demand, state, t) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (site, gateway, resource) DO UPDATE SET demand = excluded.demand, state = excluded.state, t = excluded.t
    WHERE excluded.t >= resources.t OR resources.t IS NULL"""
RESOURCE_UPSERT = """INSERT INTO resources (site, gateway, resource, free, node, free_at, online, why, changed)
    VALUES (?, ?, ?, ?, ?, ?, TRUE, 'online', ?) ON CONFLICT (site, gateway, resource) DO UPDATE
    SET free = excluded.free, node = excluded.node, free_at = excluded.free_at
    WHERE resources.free_at IS NULL OR excluded.free_at >= resources.free_at"""
NODE_UPSERT = """INSERT INTO nodes (site, gateway, node, last_seen, last_seq, last_values, heard, online, why, changed)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway, node) DO UPDATE
    SET last_seen = excluded.last_seen, last_seq = excluded.last_seq, last_values = {merge},
        heard = CASE WHEN nodes.heard IS NULL OR excluded.heard > nodes.heard THEN excluded.heard ELSE nodes.heard END
    WHERE nodes.last_seen IS NULL OR excluded.last_seen >= nodes.last_seen"""

# the gateways' schema messages (docs/protocol.md §7), the longest of each lineage: a worker that
# restarts, or one that meets a batch whose schema went to another worker, reads them here
SCHEMAS = """CREATE TABLE IF NOT EXISTS schemas (site text NOT NULL, gateway text NOT NULL, lineage bigint NOT NULL,
    nodes integer NOT NULL, patterns integer NOT NULL, at double precision NOT NULL, message bytea NOT NULL,
    PRIMARY KEY (site, gateway, lineage))"""
SCHEMA_UPSERT = """INSERT INTO schemas VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, gateway, lineage) DO UPDATE
    SET nodes = excluded.nodes, patterns = excluded.patterns, at = excluded.at, message = excluded.message
    WHERE excluded.nodes >= schemas.nodes AND excluded.patterns >= schemas.patterns"""


def _schema_rows(items) -> list[tuple]:
    """(site, gateway, lineage, nodes, patterns, at, message) of the group's schema messages."""
    return [(d.site, d.gateway, *d.schema[:3], time.time(), d.schema[3]) for d in items if d.schema is not None]


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the write; nothing of the group was stored."""


class StoreRejected(Exception):
    """The database refused the rows themselves (a value it cannot hold, e.g. a NUL character in
    text); nothing of the group was stored. Written again one message at a time, the one at
    fault becomes a dead letter."""


@dataclass
class Written:
    """What one write stored: new rows, and repeats that were already there."""

    readings: int = 0
    duplicates: int = 0
    windows: int = 0
    events: int = 0
    dead: int = 0


@dataclass
class Dead:
    """A dead letter to park: where it came from, why, and its bytes."""

    topic: str
    position: str | None
    error: DeadLetter
    payload: bytes
    source: str = ""


def _table_ddl(name: str, body: str, json_type: str, bytes_type: str) -> str:
    key = ", ".join(KEYS[name])
    body = body.replace("JSON", json_type).replace("bytea", bytes_type)
    if bytes_type != "bytea":  # SQLite: its own binary collation is the default
        body = body.replace(f" {_C}", "")
    return f"CREATE TABLE IF NOT EXISTS {name} ({body}, PRIMARY KEY ({key}))"


def _merge_nodes(items: list[Decoded]) -> dict:
    out: dict = {}
    for d in items:
        for node, (t, seq, values, heard) in d.nodes.items():
            k = (d.site, d.gateway, node)
            prev = out.get(k)
            if prev is None or (t is not None and (prev[0] is None or t >= prev[0])):
                if prev is not None and prev[3] is not None and (heard is None or prev[3] > heard):
                    heard = prev[3]
                out[k] = (t, seq, {**(prev[2] if prev else {}), **values}, heard)
    return out


def _mirror_rows(items: list[Decoded], now: float, node_timeout: float) -> dict[str, list[tuple]]:
    """The mirror's upserts of a group, by statement; nodes in key order (workers lock them in one order)."""
    gateways, dispatch, resources = [], [], []
    for d in items:
        if d.state is not None:
            at = d.state.get("at")
            at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else now  # the Will has none
            gateways.append((d.site, d.gateway, d.state["online"], d.state.get("since"), at, _json(d.state),
                             presence.gateway_why(d.state), at))
        dispatch += [(d.site, d.gateway, res, demand, state, t) for res, (demand, state, t) in d.resources.items()]
        resources += [(d.site, d.gateway, res, free, node, t, now) for res, (free, node, t) in d.presence.items()]
    nodes = []
    for (site, gw, node), (t, seq, values, heard) in sorted(_merge_nodes(items).items()):
        fresh = heard is not None and heard >= now - node_timeout
        nodes.append((site, gw, node, t, seq, _json(values), heard, fresh, "data" if fresh else "silent", now))
    return {"gateways": gateways, "dispatch": dispatch, "resources": resources, "nodes": nodes}


def _json(obj) -> str:
    """JSON that PostgreSQL's jsonb takes: NaN and infinities (which it refuses) become null."""
    try:
        return json.dumps(obj, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_no_nan(obj), default=str)


def _no_nan(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _schemas_sql(site, gateway) -> tuple[str, tuple]:
    if site is None:
        return "SELECT message FROM schemas ORDER BY site, gateway, lineage", ()
    return "SELECT message FROM schemas WHERE site = ? AND gateway = ? ORDER BY lineage", (site, gateway)


def open_store(url: str, gateway_timeout: float = presence.GATEWAY_TIMEOUT,
               node_timeout: float = presence.NODE_TIMEOUT, partition: str = "month",
               keep: dict[str, float] | None = None):
    """A PostgreSQL store for a postgresql:// (or postgres://) URL, else an SQLite file; the
    timeouts (seconds) are presence's (sink/presence.py), `partition` and `keep` (seconds a table's
    rows are kept: retention) PostgreSQL's (sink/partitions.py)."""
    if url.startswith(("postgresql://", "postgres://")) or url.startswith("host=") or " dbname=" in url:
        return PostgresStore(url, gateway_timeout=gateway_timeout, node_timeout=node_timeout, partition=partition,
                             keep=keep)
    if keep:
        log.warning("[sink] keep applies to PostgreSQL's partitions; the SQLite file %s keeps every row", url)
    return SqliteStore(url, gateway_timeout=gateway_timeout, node_timeout=node_timeout)


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode. Safe for several threads of one process."""

    kind = "sqlite"

    def __init__(self, path: str, gateway_timeout: float = presence.GATEWAY_TIMEOUT,
                 node_timeout: float = presence.NODE_TIMEOUT):
        self.path = path
        self.timeouts = {"gateway_timeout": gateway_timeout, "node_timeout": node_timeout}
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for name, body in SCHEMA.items():
            self._db.execute(_table_ddl(name, body, "TEXT", "BLOB"))
        for ddl in MIRROR:
            self._db.execute(ddl.replace("JSON", "TEXT"))
        for table, cols in presence.COLUMNS.items():  # a table made by an older sink lacks them
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in cols:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        self._db.execute(SCHEMAS.replace("bytea", "BLOB"))
        self._db.execute("""CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,
            received_at REAL NOT NULL, source TEXT, topic TEXT NOT NULL, position TEXT, reason TEXT NOT NULL,
            detail TEXT NOT NULL, payload BLOB NOT NULL, UNIQUE (topic, position))""")
        self._db.execute("CREATE INDEX IF NOT EXISTS readings_series ON readings (site, gateway, node, sensor, t)")

    def write(self, items: list[Decoded], dead: list[Dead] = ()) -> Written:
        out = Written()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for name, attr in (("readings", "readings"), ("windows", "windows"), ("events", "events")):
                    rows = [r for d in items for r in getattr(d, attr)]
                    if not rows:
                        continue
                    before = db.total_changes
                    marks = ", ".join("?" * len(COLS[name]))
                    db.executemany(f"INSERT OR IGNORE INTO {name} ({', '.join(COLS[name])}) VALUES ({marks})", rows)
                    new = db.total_changes - before
                    if name == "readings":
                        out.readings, out.duplicates = new, len(rows) - new
                    else:
                        setattr(out, name, new)
                self._mirror(db, items)
                for d in dead:
                    before = db.total_changes
                    db.execute("INSERT OR IGNORE INTO dead_letters (received_at, source, topic, position, reason, "
                               "detail, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (time.time(), d.source, d.topic, d.position, d.error.reason, d.error.detail,
                                d.payload))
                    out.dead += db.total_changes - before
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                db.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite: {exc}") from None
            except (sqlite3.DataError, sqlite3.IntegrityError, ValueError, OverflowError) as exc:
                db.execute("ROLLBACK")
                raise StoreRejected(f"SQLite refused the rows: {exc}") from None
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def _mirror(self, db, items: list[Decoded]) -> None:
        for row in _schema_rows(items):
            db.execute(SCHEMA_UPSERT, row)
        now = time.time()
        rows = _mirror_rows(items, now, self.timeouts["node_timeout"])
        for name, sql in (("gateways", GATEWAY_UPSERT), ("dispatch", DISPATCH_UPSERT),
                          ("resources", RESOURCE_UPSERT),
                          ("nodes", NODE_UPSERT.format(merge="json_patch(nodes.last_values, excluded.last_values)"))):
            if rows[name]:
                db.executemany(sql, rows[name])
        if rows["gateways"]:  # a gateway came or went: what runs behind it, at once
            self._sweep(db, now)

    def _sweep(self, db, now: float) -> int:
        changed = db.total_changes
        for sql in presence.sweep_statements("sqlite"):
            db.execute(sql, {"now": now, **self.timeouts})
        return db.total_changes - changed

    def sweep(self, now: float | None = None) -> int:
        """Presence from silence (sink/presence.py), in one transaction; the rows changed."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                n = self._sweep(db, time.time() if now is None else now)
                db.execute("COMMIT")
                return n
            except sqlite3.OperationalError as exc:
                db.execute("ROLLBACK")
                raise StoreUnavailable(f"SQLite: {exc}") from None
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def schemas(self, site: str | None = None, gateway: str | None = None) -> list[bytes]:
        """The stored schema messages (of one gateway, given site and gateway), to feed a decoder."""
        return [bytes(m) for m, in self.query(*_schemas_sql(site, gateway))]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresStore:
    """PostgreSQL through psycopg 3: COPY into staging, one idempotent INSERT a table a group."""

    kind = "postgresql"
    RETRIES = 5

    def __init__(self, url: str, connect_timeout: float = 10.0, gateway_timeout: float = presence.GATEWAY_TIMEOUT,
                 node_timeout: float = presence.NODE_TIMEOUT, partition: str = "month",
                 keep: dict[str, float] | None = None):
        """`keep`: seconds each partitioned table's rows are kept ({"readings": 90 * 86400}; absent: for
        ever): older partitions are dropped at start and hourly (sink/partitions.py, `expire`)."""
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.timeouts = {"gateway_timeout": gateway_timeout, "node_timeout": node_timeout}
        self.partitions = Partitions(partition, keep)
        self.expired: list[tuple[str, int, int]] = []  # retention passes not yet taken (`take_expired`)
        self.keys = dict(KEYS)
        self._ahead_at = 0.0
        self.connect_timeout = connect_timeout
        self._conn = None
        self._lock = threading.Lock()
        with self._lock:
            self._connect()
            for attempt in range(self.RETRIES):
                try:
                    self._setup(partition)
                    break
                except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable) as exc:
                    # DDL of a first start or an upgrade met the running workers' writes
                    if attempt == self.RETRIES - 1:
                        raise
                    log.warning("setting up the tables met the running workers (%s); again", type(exc).__name__)
                    time.sleep(0.2 * (attempt + 1))
            self._make_ahead()
            self._expire()

    def _missing(self, kind: str, name: str, table: str = "") -> bool:
        """Whether an index (kind "index") or a column of `table` (kind "column") is still to make:
        asked first, as ALTER TABLE … ADD COLUMN IF NOT EXISTS and CREATE INDEX IF NOT EXISTS lock
        the table even when there is nothing to do, and the running workers' writes wait (or deadlock)."""
        if kind == "index":
            return self._conn.execute("SELECT to_regclass(%s) IS NULL", (f"public.{name}",)).fetchone()[0]
        return self._conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                  "AND attname = %s AND NOT attisdropped)", (f"public.{table}", name)).fetchone()[0]

    def _setup(self, partition: str) -> None:
        """The tables, their partitions' parents, the mirror, and the indexes; what exists is left alone."""
        migrate_events = False
        with self._conn.transaction():
            # two workers starting at once must not race on CREATE TABLE IF NOT EXISTS
            self._conn.execute("SELECT pg_advisory_xact_lock(4242014)")
            for name, body in SCHEMA.items():
                exists = self._conn.execute("SELECT relkind FROM pg_class WHERE relname = %s "
                                            "AND relnamespace = 'public'::regnamespace", (name,)).fetchone()
                if name in PARTITIONED and partition != "none" and exists is None:
                    for ddl in self.partitions.parent_ddl(name, body.replace("JSON", "jsonb"), KEYS[name]):
                        self._conn.execute(ddl)
                elif name == "events" and partition != "none" and exists[0] != "p":
                    migrate_events = True
                else:
                    self._conn.execute(_table_ddl(name, body, "jsonb", "bytea"))
                    if name in PARTITIONED and partition != "none" and exists[0] != "p":
                        log.warning("table %s was made without partitions by an older sink: kept as it is "
                                    "(docs/cloud.md, Sizing, shows how to move it)", name)
            self.partitions.load(self._conn)
            if migrate_events:
                self._partition_events()
            for name in self.partitions.tables:  # the partition key is part of the primary key
                self.keys[name] = KEYS[name] + (PARTITIONED[name],)
            for ddl in MIRROR:
                self._conn.execute(ddl.replace("JSON", "jsonb"))
            for table, cols in presence.COLUMNS.items():  # a table made by an older sink lacks them
                for name, kind in cols:
                    if self._missing("column", name, table):
                        self._conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}")
            self._conn.execute(SCHEMAS)
            self._conn.execute("""CREATE TABLE IF NOT EXISTS dead_letters (id bigserial PRIMARY KEY,
                received_at timestamptz NOT NULL DEFAULT now(), source text, topic text NOT NULL, position text,
                reason text NOT NULL, detail text NOT NULL, payload bytea NOT NULL, UNIQUE (topic, position))""")
            # a series over time (what a chart asks for) from one index; plant-wide time ranges
            # from a BRIN index on t (readings arrive roughly in time order: a few pages a year)
            for index, ddl in (("readings_series", "ON readings (site, gateway, node, sensor, t)"),
                               ("readings_t", "ON readings USING brin (t)"), ("events_t", "ON events (t)")):
                if self._missing("index", index):
                    self._conn.execute(f"CREATE INDEX IF NOT EXISTS {index} {ddl}")

    def _partition_events(self) -> None:
        """An `events` table made without partitions (by an older sink): renamed, a partitioned one
        made in its place with the partitions its rows need, the rows moved, the old table dropped;
        in the start-up transaction, so a failure leaves the old table as it was. An event without
        a time (none is written since) cannot be in a table partitioned by time: if there are
        such, the old table is kept, renamed `events_unpartitioned`, with a warning."""
        conn = self._conn
        conn.execute("ALTER TABLE events RENAME TO events_unpartitioned")
        for index in ("events_pkey", "events_t"):  # index names are the schema's: the new table's are the same
            if not self._missing("index", index):
                conn.execute(f"ALTER INDEX {index} RENAME TO {index.replace('events', 'events_unpartitioned')}")
        for ddl in self.partitions.parent_ddl("events", SCHEMA["events"].replace("JSON", "jsonb"), KEYS["events"]):
            conn.execute(ddl)
        self.partitions.tables.add("events")
        lo, hi = conn.execute("SELECT min(t), max(t) FROM events_unpartitioned").fetchone()
        if lo is not None:
            for plo, phi in self.partitions.missing("events", lo, hi, time.time()):
                self.partitions.create(conn, "events", plo, phi, self._psycopg.errors)
        cols = ", ".join(EVENT_COLS)
        moved = conn.execute(f"INSERT INTO events ({cols}) SELECT {cols} FROM events_unpartitioned "
                             "WHERE t IS NOT NULL").rowcount
        left = conn.execute("SELECT count(*) FROM events_unpartitioned WHERE t IS NULL").fetchone()[0]
        if left:
            log.warning("events: %d rows moved into the partitioned table; %d without a time are left in "
                        "events_unpartitioned (drop it when they are not needed)", moved, left)
        else:
            conn.execute("DROP TABLE events_unpartitioned")
            log.warning("events: the table made without partitions by an older sink is now partitioned by t "
                        "(%d rows moved)", moved)

    def _make_ahead(self) -> None:
        """The current period's partitions and the next ones (rows of the next month find theirs made)."""
        for table, lo, hi in self.partitions.ahead(time.time()):
            self.partitions.create(self._conn, table, lo, hi, self._psycopg.errors)
        self._ahead_at = time.monotonic()

    def _make_partitions(self, items) -> None:
        """The partitions the group's rows need, before its transaction (rare: a new period)."""
        now = time.time()
        for table in self.partitions.tables:
            col = COLS[table].index(PARTITIONED[table])
            rows = [r[col] for d in items for r in getattr(d, table)]
            if rows:
                for lo, hi in self.partitions.missing(table, min(rows), max(rows), now):
                    self.partitions.create(self._conn, table, lo, hi, self._psycopg.errors)

    def _connect(self) -> None:
        try:
            self._conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout)
        except self._psycopg.OperationalError as exc:
            self._conn = None
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}".strip()) from None

    def write(self, items: list[Decoded], dead: list[Dead] = ()) -> Written:
        """Store a group in one transaction; StoreUnavailable if the database is away."""
        return self._retrying(lambda: self._write(items, dead))

    def _retrying(self, work):
        """`work()` (one transaction) under the lock, reconnecting first if need be; a deadlock or a
        serialization failure is tried again; StoreUnavailable, StoreRejected as `write` says."""
        errors = self._psycopg.errors
        with self._lock:
            for attempt in range(self.RETRIES):
                try:
                    if self._conn is None or self._conn.closed:
                        self._connect()
                    return work()
                except (errors.DeadlockDetected, errors.SerializationFailure):
                    time.sleep(0.01 * (attempt + 1))
                except self._psycopg.OperationalError as exc:
                    self._drop()
                    raise StoreUnavailable(f"PostgreSQL: {exc}".strip()) from None
                except self._psycopg.InterfaceError as exc:
                    self._drop()
                    raise StoreUnavailable(f"PostgreSQL connection: {exc}".strip()) from None
                except (self._psycopg.DataError, self._psycopg.IntegrityError, ValueError) as exc:
                    raise StoreRejected(f"PostgreSQL refused the rows: {exc}".strip()) from None
            raise StoreUnavailable(f"deadlocked {self.RETRIES} times in a row")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def _write(self, items, dead) -> Written:
        out = Written()
        conn = self._conn
        if self.partitions.tables:
            self._make_partitions(items)
        with conn.transaction():
            cur = conn.cursor()
            for name in ("readings", "windows", "events"):
                rows = [r for d in items for r in getattr(d, name)]
                if not rows:
                    continue
                new = self._insert(cur, name, rows)
                if name == "readings":
                    out.readings, out.duplicates = new, len(rows) - new
                else:
                    setattr(out, name, new)
            self._mirror(cur, items)
            for d in dead:
                cur.execute("INSERT INTO dead_letters (source, topic, position, reason, detail, payload) "
                            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (d.source, d.topic, d.position, d.error.reason, d.error.detail, d.payload))
                out.dead += cur.rowcount
        return out

    def _copy(self, cur, table: str, name: str, rows: list[tuple]) -> None:
        with cur.copy(f"COPY {table} ({', '.join(COLS[name])}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES[name])
            for r in rows:
                copy.write_row(r)

    def _insert(self, cur, name: str, rows: list[tuple]) -> int:
        """The group's rows of one table, each once; the rows inserted. Nearly always none of them
        is there yet: so they go by `COPY` straight into the table first, in a savepoint
        (PostgreSQL inserts a COPY's rows a page at a time, with one WAL record a page: half the
        server's CPU of an INSERT … SELECT from staging, which inserts and logs row by row). Only
        when that meets a row already stored (a repeat: the unique key refuses it, and the whole
        COPY is rolled back) do the rows go by COPY into a temporary staging table and
        `INSERT … SELECT … ORDER BY key ON CONFLICT DO NOTHING`, ordered by the key so that
        workers racing on the same rows take their locks in one order."""
        rows.sort(key=SORT_KEY[name])
        try:
            with self._conn.transaction():
                self._copy(cur, name, name, rows)
                return len(rows)
        except self._psycopg.errors.UniqueViolation:
            pass
        # a temporary table lives as long as its connection (asked for each time: this path is rare, and
        # one made in a transaction that was then rolled back is gone)
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{name} (LIKE {name} INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS")
        self._copy(cur, f"stage_{name}", name, rows)
        key, cols = ", ".join(self.keys[name]), ", ".join(COLS[name])
        cur.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM stage_{name} ORDER BY {key} "
                    f"ON CONFLICT ({key}) DO NOTHING")
        return cur.rowcount

    def _mirror(self, cur, items: list[Decoded]) -> None:
        for row in _schema_rows(items):
            cur.execute(SCHEMA_UPSERT.replace("?", "%s"), row)
        now = time.time()
        rows = _mirror_rows(items, now, self.timeouts["node_timeout"])
        for name, sql in (("gateways", GATEWAY_UPSERT), ("dispatch", DISPATCH_UPSERT),
                          ("resources", RESOURCE_UPSERT),
                          ("nodes", NODE_UPSERT.format(merge="nodes.last_values || excluded.last_values"))):
            if rows[name]:
                cur.executemany(sql.replace("?", "%s"), rows[name])
        if rows["gateways"]:  # a gateway came or went: what runs behind it, at once
            self._sweep(cur, now)

    def _sweep(self, cur, now: float) -> int:
        n = 0
        for sql in presence.sweep_statements("psycopg"):
            cur.execute(sql, {"now": now, **self.timeouts})
            n += max(cur.rowcount, 0)
        return n

    def sweep(self, now: float | None = None) -> int:
        """Presence from silence (sink/presence.py), in one transaction; the rows changed."""
        def run() -> int:
            if self.partitions.tables and time.monotonic() - self._ahead_at > 3600:
                self._make_ahead()  # a long-running worker makes next month's before it comes
                self._expire()
            with self._conn.transaction():
                return self._sweep(self._conn.cursor(), time.time() if now is None else now)
        return self._retrying(run)

    def _expire(self) -> None:
        """Retention (sink/partitions.py, `expire`); a table whose writers kept it busy is left to
        the next pass, an hour later."""
        if self.partitions.keep:
            self.expired += self.partitions.expire(self._conn, time.time(), self._psycopg.errors)

    def take_expired(self) -> list[tuple[str, int, int]]:
        """The retention passes since the last call: (table, partitions dropped, rows deleted)."""
        with self._lock:
            out, self.expired = self.expired, []
        return out

    def query(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._connect()
            return self._conn.execute(sql.replace("?", "%s"), args).fetchall()

    def schemas(self, site: str | None = None, gateway: str | None = None) -> list[bytes]:
        """The stored schema messages (of one gateway, given site and gateway), to feed a decoder."""
        try:
            return [bytes(m) for m, in self.query(*_schemas_sql(site, gateway))]
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
            with self._lock:
                self._drop()
            raise StoreUnavailable(f"PostgreSQL: {exc}".strip()) from None

    def close(self) -> None:
        with self._lock:
            self._drop()
