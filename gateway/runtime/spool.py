"""The spool: a durable FIFO of uplink records in SQLite (WAL, synchronous=FULL).

A frame's readings and its node's replay window are committed in one
transaction; only then is the node acked. The uplink deletes records only after
the broker's PUBACK. So a `kill -9` at any moment loses nothing that was acked,
and at worst re-sends what was published but not yet deleted (consumers dedup by
(node, seq)).

All SQLite work runs on one dedicated thread (`Spool` methods are coroutines),
so a slow fsync on an SD card never stalls the event loop.

Record classes and priorities: events (2) go up before windows (1) before raw
frames (0).

Overflow policy (`enforce`): records older than their class's TTL go first;
then, while the spool holds more than its quota of bytes, the oldest raw frames,
then the oldest windows. Events are never dropped. Every drop is counted by the
caller and reported on the `state` topic.
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.errors import SpoolError

PRIO_EVENT = 2
PRIO_WINDOW = 1
PRIO_FRAME = 0
KIND_FRAME = "frame"
KIND_WINDOW = "window"
KIND_EVENT = "event"
PRIORITY = {KIND_EVENT: PRIO_EVENT, KIND_WINDOW: PRIO_WINDOW, KIND_FRAME: PRIO_FRAME}
KIND_OF = {v: k for k, v in PRIORITY.items()}
_DROP_CHUNK = 500
# SQLite page size of a new spool, bytes. A commit of a few frames touches about three
# pages (the records' last leaf, the index's, the node's replay row): 1 KiB pages write a
# quarter of what 4 KiB pages do to the WAL per commit.
PAGE_SIZE = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    prio    INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    body    BLOB    NOT NULL,
    created REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS records_prio_id ON records (prio DESC, id);
CREATE TABLE IF NOT EXISTS replay (
    node   TEXT PRIMARY KEY,
    top    INTEGER NOT NULL,
    bitmap INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


class Spool:
    """Durable FIFO. Open with `await Spool.open(path)`; close with `await spool.close()`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._db: sqlite3.Connection | None = None
        # rows and bytes per priority, kept exact by every write (one scan at open)
        self._rows = {p: 0 for p in PRIORITY.values()}
        self._bytes = {p: 0 for p in PRIORITY.values()}

    @classmethod
    async def open(cls, path: str | Path) -> "Spool":
        spool = cls(Path(path))
        await spool._run(spool._open)
        return spool

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Before the first table exists (later it is a no-op: a spool keeps the page size it was
        # made with). Each commit appends every page it touched to the WAL, so at low rates the
        # bytes written to flash per commit are a few pages, whatever the commit holds.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        for prio, n, size in db.execute(
                "SELECT prio, count(*), coalesce(sum(length(body)), 0) FROM records GROUP BY prio"):
            self._rows[prio], self._bytes[prio] = n, size
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    # -- writes ---------------------------------------------------------------------------

    async def commit(self, records: list[tuple[str, bytes]], replay: dict[str, tuple[int, int]],
                     decisions: dict[tuple[str, str], bytes | None] | None = None) -> None:
        """Append records [(kind, body)], store replay windows {node: (top, bitmap)} and the
        decisions' rows {(kind, key): JSON bytes, or None to delete} (gateway/decisions/ledger.py),
        atomically.

        Raises SpoolError (disk full, I/O error); then nothing was written.
        """
        await self._run(self._commit, records, replay, decisions)

    @contextlib.contextmanager
    def _transaction(self, what: str):
        """BEGIN IMMEDIATE … COMMIT; on any SQLite error roll back and raise SpoolError."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise SpoolError(f"spool {what} failed ({self.path}): {exc}") from exc

    def _commit(self, records, replay, decisions=None) -> None:
        now = time.time()
        with self._transaction("commit") as db:
            db.executemany("INSERT INTO records (prio, kind, body, created) VALUES (?, ?, ?, ?)",
                           [(PRIORITY[kind], kind, body, now) for kind, body in records])
            if replay:
                db.executemany("INSERT OR REPLACE INTO replay (node, top, bitmap) VALUES (?, ?, ?)",
                               [(node, top, _to_signed(bitmap)) for node, (top, bitmap) in replay.items()])
            if decisions:
                db.executemany("INSERT OR REPLACE INTO decisions (kind, key, body) VALUES (?, ?, ?)",
                               [(k, key, body) for (k, key), body in decisions.items() if body is not None])
                db.executemany("DELETE FROM decisions WHERE kind = ? AND key = ?",
                               [(k, key) for (k, key), body in decisions.items() if body is None])
        for kind, body in records:
            self._rows[PRIORITY[kind]] += 1
            self._bytes[PRIORITY[kind]] += len(body)

    async def delete(self, ids: list[int]) -> None:
        """Remove records the broker has acknowledged."""
        await self._run(self._delete, ids)

    def _delete(self, ids) -> None:
        # a batch's ids are mostly consecutive: one statement a run of them, not one an id
        # (the spool thread holds the GIL between statements, which the event loop waits for).
        # A delete needs no fsync of its own: lost in a crash, it only means a batch sent
        # again (delivery is at least once anyway), and the next commit's fsync makes it
        # durable, the WAL being written in order. At low rates this halves the fsyncs.
        db = self._db
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._write_deleting([("DELETE FROM records WHERE id BETWEEN ? AND ? RETURNING prio, length(body)", run)
                                  for run in _runs(ids)])
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _write_deleting(self, statements) -> list[tuple[int, int]]:
        """Run DELETE … RETURNING prio, length(body) statements in one transaction; keep the counts."""
        gone = []
        with self._transaction("delete") as db:
            for sql, args in statements:
                gone += db.execute(sql, args).fetchall()
        for prio, size in gone:
            self._rows[prio] -= 1
            self._bytes[prio] -= size
        return gone

    async def enforce(self, quota_bytes: int, ttl: dict[str, float]) -> dict[tuple[str, str], int]:
        """Apply the overflow policy; returns {(kind, reason): records dropped}, reason 'ttl' or 'quota'."""
        return await self._run(self._enforce, quota_bytes, ttl)

    def _enforce(self, quota_bytes, ttl):
        dropped: dict[tuple[str, str], int] = {}
        now = time.time()
        for kind, seconds in ttl.items():
            if seconds and self._rows[PRIORITY[kind]]:
                gone = self._write_deleting([("DELETE FROM records WHERE prio = ? AND created < ? "
                                              "RETURNING prio, length(body)", (PRIORITY[kind], now - seconds))])
                if gone:
                    dropped[(kind, "ttl")] = len(gone)
        for prio in (PRIO_FRAME, PRIO_WINDOW):  # never events
            while (excess := sum(self._bytes.values()) - quota_bytes) > 0 and self._rows[prio]:
                ids = []
                for rid, size in self._db.execute(
                        "SELECT id, length(body) FROM records WHERE prio = ? ORDER BY id LIMIT ?", (prio, _DROP_CHUNK)):
                    ids.append(rid)
                    excess -= size
                    if excess <= 0:
                        break
                gone = self._write_deleting(
                    [("DELETE FROM records WHERE id = ? RETURNING prio, length(body)", (i,)) for i in ids])
                key = (KIND_OF[prio], "quota")
                dropped[key] = dropped.get(key, 0) + len(gone)
        return dropped

    # -- reads ----------------------------------------------------------------------------

    async def read(self, prio: int, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Records of one priority with id > after_id, oldest first: [(id, kind, body)]."""
        return await self._run(self._read, prio, after_id, limit)

    def _read(self, prio, after_id, limit):
        cur = self._db.execute(
            "SELECT id, kind, body FROM records WHERE prio = ? AND id > ? ORDER BY id LIMIT ?", (prio, after_id, limit))
        return cur.fetchall()

    async def depth(self) -> tuple[int, int]:
        """(records waiting, bytes waiting)."""
        return await self._run(self._depth)

    def _depth(self):
        return sum(self._rows.values()), sum(self._bytes.values())

    async def oldest(self) -> float | None:
        """When the oldest record waiting was spooled (seconds since the epoch), or None."""
        return await self._run(self._oldest)

    def _oldest(self):
        # records are spooled in id order, so the smallest id is the oldest: one index probe
        row = self._db.execute("SELECT created FROM records ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def stats(self) -> dict[str, dict[str, int]]:
        """Rows and bytes waiting per kind (exact; no query)."""
        return {KIND_OF[p]: {"records": self._rows[p], "bytes": self._bytes[p]} for p in self._rows}

    async def replay_windows(self) -> dict[str, tuple[int, int]]:
        """Committed replay windows {node: (top, bitmap)}."""
        return await self._run(self._replay_windows)

    def _replay_windows(self):
        rows = self._db.execute("SELECT node, top, bitmap FROM replay").fetchall()
        return {node: (top, bitmap & (2**64 - 1)) for node, top, bitmap in rows}

    async def decisions(self) -> list[tuple[str, str, bytes]]:
        """The decisions' committed rows [(kind, key, JSON bytes)], read once at start."""
        return await self._run(self._decisions)

    def _decisions(self):
        return self._db.execute("SELECT kind, key, body FROM decisions ORDER BY kind, key").fetchall()

    async def last_id(self) -> int:
        """The id of the newest record waiting, or of the last one ever spooled; 0 for none."""
        return await self._run(self._last_id)

    def _last_id(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        return row[0] if row else 0

    async def get_meta(self, key: str, default: int | None = None) -> int | None:
        """A small durable integer the uplink keeps beside the records (Sparkplug's bdSeq)."""
        return await self._run(self._get_meta, key, default)

    def _get_meta(self, key, default):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    async def set_meta(self, key: str, value: int) -> None:
        """Store `value` under `key`, durably (synchronous=FULL) before returning; SpoolError on failure."""
        await self._run(self._set_meta, key, value)

    def _set_meta(self, key, value) -> None:
        with self._transaction("meta") as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    async def integrity_check(self) -> str:
        return await self._run(lambda: self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _runs(ids) -> list[tuple[int, int]]:
    """Runs of consecutive integers in ids, as (first, last): [3, 4, 5, 9, 1] -> (1, 1), (3, 5), (9, 9)."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _to_signed(bitmap: int) -> int:
    # SQLite integers are signed 64-bit
    return bitmap - 2**64 if bitmap >= 2**63 else bitmap
