"""The spool: a durable FIFO of uplink records, a journal in front of SQLite (WAL, synchronous=FULL).

A frame's readings and its node's replay window are committed in one
transaction; only then is the node acked. A commit is one entry of the journal
(gateway/runtime/journal.py: an O_DIRECT, O_DSYNC write of a few sectors); the
records it holds stay in memory until the uplink deletes them, and move into
SQLite only when they are still waiting when their journal segment is about to
be written again, when the journal holds more than a segment's worth (the
uplink is down), or when the commit is too large for it. What moves from the
journal goes a chunk of records a row (the `chunks` table: up to CHUNK_RECORDS
records of one class), so a backlog costs about what keeping up does; the others
go a row a record (`records`). Commits that change
the decisions' rows (gateway/decisions/ledger.py) go to SQLite directly. So at
the usual rates SQLite is not written at all, and the disk gets each record
once, in sectors, instead of as pages of the WAL and of the database. The uplink deletes records only after
the broker's PUBACK. So a `kill -9` at any moment loses nothing that was acked,
and at worst re-sends what was published but not yet deleted (consumers dedup by
(node, seq)).

All SQLite work runs on one dedicated thread (`Spool` methods are coroutines),
so a slow fsync on an SD card never stalls the event loop. The one exception is
a small commit (at most QUICK_RECORDS records, no decisions) that fits the
journal's current segment as it is, while the spool's thread has nothing to do
and the journal's writes have taken under QUICK_SECONDS (2 ms) on average: it is
written from the caller's thread, since the hop to the spool's thread and back
cost as much CPU as the write. A slow disk keeps every commit on the thread.

Record classes and priorities: events (2) go up before windows (1) before raw
frames (0).

Configuration: `[spool] journal_bytes`, the size of each of the two journal
segments (4 MiB by default; 0 turns the journal off: every commit is a SQLite
transaction, as before). A spool opened with another size folds its journal into
SQLite first.

Overflow policy (`enforce`): records older than their class's TTL go first;
then, while the spool holds more than its quota of bytes, the oldest raw frames,
then the oldest windows. Events are never dropped. Every drop is counted by the
caller and reported on the `state` topic.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import queue
import sqlite3
import sys
import threading
import time
from array import array
from pathlib import Path

from gateway.errors import SpoolError
from gateway.runtime.journal import Journal

PRIO_EVENT = 2
PRIO_WINDOW = 1
PRIO_FRAME = 0
KIND_FRAME = "frame"
KIND_WINDOW = "window"
KIND_EVENT = "event"
PRIORITY = {KIND_EVENT: PRIO_EVENT, KIND_WINDOW: PRIO_WINDOW, KIND_FRAME: PRIO_FRAME}
KIND_OF = {v: k for k, v in PRIORITY.items()}
_DROP_CHUNK = 500
# Records that move from the journal into SQLite (a backlog) go as chunks: one row holds up to
# CHUNK_RECORDS records of one class, CHUNK_BYTES of bodies at most. A row a record cost the
# spool's thread about 12 µs a record more than the journal (an INSERT, a SELECT and a DELETE,
# each stepped a row at a time, the GIL given up and taken back around each step), so a gateway
# that fell a second behind needed a third of a core more to catch up; a chunk costs about 1 µs.
CHUNK_RECORDS = 256
CHUNK_BYTES = 64 << 10
CACHE_CHUNKS = 8  # chunks kept decoded in memory, the most recently used (they are read in order)
_BIG_ENDIAN = sys.byteorder == "big"  # chunk arrays are stored little-endian
# SQLite page size of a new spool, bytes. A commit of a few frames touches about three
# pages (the records' last leaf, the index's, the node's replay row): 1 KiB pages write a
# quarter of what 4 KiB pages do to the WAL per commit.
PAGE_SIZE = 1024
# Size of each of the journal's two segments, bytes (`[spool] journal_bytes`). At 2000 frames a
# second a segment lasts about 10 s, well past the uplink's batch delay, so what a segment held is
# long published when it is written again and nothing moves to SQLite.
JOURNAL_BYTES = 4 << 20
# A small commit is written from the event loop's own thread, as one journal entry, when the spool's
# thread has nothing to do and such writes have been quick: the hop to the thread and back (a queue,
# a future, a wake-up of each thread, the GIL handed over and back, the loop's self-pipe) cost
# about as much CPU as the O_DSYNC write of a sector or two. Slower storage (an SD card's sync
# can take 1-20 ms) keeps every write on the spool's thread, so the loop never waits on it.
QUICK_RECORDS = 32  # records at most in a commit written from the caller's thread
QUICK_SECONDS = 0.002  # the recent journal writes' time (a moving average) must be under this
_FLOOR = "journal_floor"  # meta key: journal records with ids up to this are in SQLite or gone
# a replay window into SQLite as merge_windows() does: the newer by its top, one top's bitmaps or'ed
# (SQLite evaluates every SET expression on the row as it was)
_MERGE_REPLAY = """INSERT INTO replay (node, top, bitmap) VALUES (?, ?, ?)
ON CONFLICT (node) DO UPDATE SET
    bitmap = CASE WHEN excluded.top = replay.top THEN replay.bitmap | excluded.bitmap ELSE excluded.bitmap END,
    top = excluded.top
WHERE excluded.top >= replay.top"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    prio    INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    body    BLOB    NOT NULL,
    created REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS records_prio_id ON records (prio DESC, id);
-- records moved from the journal, a row per chunk of one class: ids (int64), spool times
-- (float64) and body lengths (uint32) as little-endian arrays, the bodies one after another
CREATE TABLE IF NOT EXISTS chunks (
    prio    INTEGER NOT NULL,
    first   INTEGER NOT NULL,
    last    INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    oldest  REAL    NOT NULL,
    newest  REAL    NOT NULL,
    ids     BLOB    NOT NULL,
    times   BLOB    NOT NULL,
    sizes   BLOB    NOT NULL,
    bodies  BLOB    NOT NULL,
    PRIMARY KEY (prio, first)
);
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

    def __init__(self, path: Path, journal_bytes: int | None = JOURNAL_BYTES):
        self.path = Path(path)
        self._thread = SpoolThread()
        self._db: sqlite3.Connection | None = None
        self._journal_bytes = journal_bytes
        self._journal: Journal | None = None
        # rows and bytes per priority, both tiers, kept exact by every write (one scan at open)
        self._rows = {p: 0 for p in PRIORITY.values()}
        self._bytes = {p: 0 for p in PRIORITY.values()}
        self._sql_rows = {p: 0 for p in PRIORITY.values()}  # of them in SQLite's records table
        self._chunk_rows = {p: 0 for p in PRIORITY.values()}  # of them in SQLite's chunks
        # the chunks: per priority their keys (the first id each was written with) in order, and
        # per (prio, first) [last id, records, bytes, oldest, newest spool time]
        self._chunk_firsts: dict[int, list[int]] = {p: [] for p in PRIORITY.values()}
        self._chunk_info: dict[tuple[int, int], list] = {}
        self._cache: dict[tuple[int, int], dict[int, tuple[str, bytes, float]]] = {}  # decoded chunks
        # the journal's records not yet in SQLite: per priority id -> (kind, body, created), and
        # their ids in order (deleted ones are skipped, and dropped from the list now and then)
        self._mem: dict[int, dict[int, tuple[str, bytes, float]]] = {p: {} for p in PRIORITY.values()}
        self._mem_ids: dict[int, list[int]] = {p: [] for p in PRIORITY.values()}
        self._mem_bytes = 0
        self._deleted: list[int] = []  # journal records deleted since its last entry
        self._jreplay: dict[str, tuple[int, int]] = {}  # replay windows the journal holds newer than SQLite
        self._floor = 0
        self._next_id = 1
        self._write_time = QUICK_SECONDS  # the journal entries' write time, a moving average; seconds
        self.quick_commits = 0  # commits written from the caller's thread (the rest on the spool's)
        self.journal_error: str | None = None  # why the journal configured could not be made

    @classmethod
    async def open(cls, path: str | Path, journal_bytes: int | None = JOURNAL_BYTES) -> "Spool":
        """`journal_bytes`: the journal's segment size (0: no journal; None: the journal found
        beside the spool, if any, as it is: for tools that read a spool)."""
        spool = cls(Path(path), journal_bytes)
        await spool._run(spool._open)
        return spool

    async def _run(self, fn, *args):
        return await self._thread.run(fn, *args)

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
            self._rows[prio], self._bytes[prio], self._sql_rows[prio] = n, size, n
        for prio, first, last, n, size, oldest, newest in db.execute(
                "SELECT prio, first, last, n, bytes, oldest, newest FROM chunks ORDER BY prio, first"):
            self._chunk_firsts[prio].append(first)
            self._chunk_info[(prio, first)] = [last, n, size, oldest, newest]
            self._rows[prio] += n
            self._bytes[prio] += size
            self._chunk_rows[prio] += n
        self._db = db
        self._floor = self._get_meta(_FLOOR, 0)
        row = db.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0), "
                         "coalesce((SELECT max(id) FROM records), 0), "
                         "coalesce((SELECT max(last) FROM chunks), 0))").fetchone()
        self._next_id = max(row[0], self._floor) + 1
        found = Journal.existing_size(self.path)
        size = found if self._journal_bytes is None else self._journal_bytes
        if found:
            self._journal = Journal(self.path, found)
            self._load(self._journal.recover())
            if size != found:  # turned off, or resized: what the journal holds goes to SQLite
                self._fold()
                self._journal.remove()
                self._journal = None
            else:
                self._journal.create()  # a segment lost while it was being made
        if size and self._journal is None:
            journal = Journal(self.path, size)
            try:
                journal.create()
                self._journal = journal
            except OSError as exc:  # a full disk, say: the spool still works, as before the journal
                with contextlib.suppress(OSError):
                    journal.remove()
                self.journal_error = (f"cannot make the spool's journal beside {self.path} ({exc}); every commit "
                                      "goes to SQLite until a restart makes it (free disk space)")

    def _load(self, segments) -> None:
        """The journal's records, replay windows and deletes, oldest segment first."""
        deleted = []
        for seg in segments:
            for first, created, records, replay, gone in seg.entries:
                skip = max(0, self._floor - first + 1)  # ids up to the floor are in SQLite or gone
                self._mem_add_many(first + skip, records[skip:], created)
                self._next_id = max(self._next_id, first + len(records))
                for node, top, bitmap in replay:
                    old = self._jreplay.get(node)
                    self._jreplay[node] = (top, bitmap) if old is None else merge_windows(old, (top, bitmap))
                deleted += gone
        self._mem_pop_many([rid for a, b in deleted for rid in range(a, b + 1)])

    def _mem_add_many(self, first: int, recs: list, created: float) -> None:
        """Keep records [[prio, body]] in memory, ids from `first` on, in one loop (the spool's thread
        holds the GIL through it: a call a record had been most of its cost)."""
        mem, mem_ids, rows, size = self._mem, self._mem_ids, self._rows, self._bytes
        added = 0
        for rid, (prio, body) in enumerate(recs, first):
            mem[prio][rid] = (KIND_OF[prio], body, created)
            ids = mem_ids[prio]
            if ids and rid < ids[-1]:
                bisect.insort(ids, rid)
            else:
                ids.append(rid)
            rows[prio] += 1
            n = len(body)
            size[prio] += n
            added += n
        self._mem_bytes += added

    def _mem_pop_many(self, ids) -> list[int]:
        """Drop the ids' records from memory, in one loop; returns the ids not in memory (in SQLite,
        or gone), in order. The class that held the last id is tried first: the uplink deletes a
        batch of one class."""
        mem, rows, size = self._mem, self._rows, self._bytes
        rest: list[int] = []
        hit, hit_prio, freed = None, 0, 0
        touched = set()
        for rid in ids:
            rec = hit.pop(rid, None) if hit is not None else None
            if rec is None:
                for prio, recs in mem.items():
                    rec = recs.pop(rid, None)
                    if rec is not None:
                        hit, hit_prio = recs, prio
                        touched.add(prio)
                        break
                else:
                    rest.append(rid)
                    continue
            rows[hit_prio] -= 1
            n = len(rec[1])
            size[hit_prio] -= n
            freed += n
        self._mem_bytes -= freed
        for prio in touched:
            recs, mids = mem[prio], self._mem_ids[prio]
            if len(mids) > 2 * len(recs) + 64:
                self._mem_ids[prio] = [i for i in mids if i in recs]
        return rest

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._close)
            self._db = None
        self._thread.stop()

    def _close(self) -> None:
        if self._journal is not None:
            with contextlib.suppress(OSError, SpoolError):  # lost deletes only mean records sent again
                self._write_deletes()
            self._journal.close()
        self._db.close()

    # -- writes ---------------------------------------------------------------------------

    async def commit(self, records: list[tuple[str, bytes]], replay: dict[str, tuple[int, int]],
                     decisions: dict[tuple[str, str], bytes | None] | None = None) -> None:
        """Append records [(kind, body)], store replay windows {node: (top, bitmap)} and the
        decisions' rows {(kind, key): JSON bytes, or None to delete} (gateway/decisions/ledger.py),
        atomically.

        Raises SpoolError (disk full, I/O error); then nothing was written.
        """
        if (not decisions and self._journal is not None and len(records) <= QUICK_RECORDS
                and self._write_time < QUICK_SECONDS and self._thread.idle()
                and self._commit_journal(records, replay, quick=True)):
            self.quick_commits += 1
            return
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
        if self._journal is not None and not decisions and self._commit_journal(records, replay):
            return
        now, first = time.time(), self._next_id
        rows = [(first + k, PRIORITY[kind], kind, body, now) for k, (kind, body) in enumerate(records)]
        with self._transaction("commit") as db:
            db.executemany("INSERT INTO records (id, prio, kind, body, created) VALUES (?, ?, ?, ?, ?)", rows)
            if replay:
                db.executemany("INSERT OR REPLACE INTO replay (node, top, bitmap) VALUES (?, ?, ?)",
                               [(node, top, _to_signed(bitmap)) for node, (top, bitmap) in replay.items()])
            if decisions:
                db.executemany("INSERT OR REPLACE INTO decisions (kind, key, body) VALUES (?, ?, ?)",
                               [(k, key, body) for (k, key), body in decisions.items() if body is not None])
                db.executemany("DELETE FROM decisions WHERE kind = ? AND key = ?",
                               [(k, key) for (k, key), body in decisions.items() if body is None])
        self._next_id += len(rows)
        for _rid, prio, _kind, body, _now in rows:
            self._rows[prio] += 1
            self._bytes[prio] += len(body)
            self._sql_rows[prio] += 1
        for node in replay:
            self._jreplay.pop(node, None)  # SQLite holds the newest now

    def _commit_journal(self, records, replay, quick: bool = False) -> bool:
        """One journal entry; False when it is too large for the journal (SQLite takes it). With
        `quick` (written from the caller's thread), also False, with nothing done, when it would
        need more than its own write: a switch of segments or a fold into SQLite."""
        j = self._journal
        if not records and not replay:
            return True  # nothing new to make durable (duplicates); deletes wait for a commit
        now, first = time.time(), self._next_id
        recs = [[PRIORITY[kind], body] for kind, body in records]
        if quick and self._mem_bytes + sum(len(body) for _prio, body in recs) > j.size:
            return False  # it would fold the journal into SQLite
        rep = [[node, top, bitmap] for node, (top, bitmap) in replay.items()]
        payload = j.encode(first, now, recs, rep, _runs(self._deleted))
        if j.too_big(payload):
            return False
        if not j.fits(payload):
            if quick:
                return False
            self._switch()
            payload = j.encode(first, now, recs, rep, _runs(self._deleted))
            if not j.fits(payload):  # the deletes carried over are too many: they only save resends
                self._deleted = []
                payload = j.encode(first, now, recs, rep, [])
        self._append(payload, first, now, recs, replay)
        return True

    def _append(self, payload: bytes, first: int, now: float, recs: list, replay: dict) -> None:
        """Write a commit's journal entry, then keep its records in memory."""
        j = self._journal
        started = time.monotonic()
        try:
            j.append(payload, first, len(recs))
        except OSError as exc:
            raise SpoolError(f"spool commit failed ({j.paths[j.cur]}): {exc}") from exc
        finally:
            took = time.monotonic() - started
            self._write_time += (took - self._write_time) / 4
        self._deleted = []
        self._next_id += len(recs)
        self._mem_add_many(first, recs, now)
        self._jreplay.update(replay)
        if self._mem_bytes > j.size:  # the uplink is not keeping up: SQLite holds the backlog
            # this commit is durable already: a failed fold (disk full) is tried again next time,
            # and a segment that has to be written again fails its commit before writing
            with contextlib.suppress(SpoolError):
                self._fold()

    def _switch(self) -> None:
        """Before the journal writes its older segment again: what is still waiting of it goes to
        SQLite, with the newest replay windows; the deletes of the segment it keeps are carried
        into the first entry of the new one."""
        j = self._journal
        lo, hi = j.ranges[j.next_segment()]
        self._spill(hi if hi is not None else self._floor)
        clo, chi = j.ranges[j.cur]
        if clo is not None:
            live = {rid for recs in self._mem.values() for rid in recs if clo <= rid <= chi}
            self._deleted = [rid for rid in range(clo, chi + 1) if rid not in live] + [
                rid for rid in self._deleted if not clo <= rid <= chi]
        self._deleted = [rid for rid in self._deleted if rid > self._floor]
        j.switch()

    def _fold(self) -> None:
        """Every record the journal holds to SQLite (the journal's entries stay, below the floor)."""
        self._spill(self._next_id - 1)
        self._deleted = []

    def _spill(self, floor: int) -> None:
        """The journal's records with ids up to `floor` (as chunks), its replay windows and the new
        floor to SQLite."""
        chunks, cuts = [], {}
        for prio, recs in self._mem.items():
            mids = self._mem_ids[prio]
            cut = cuts[prio] = bisect.bisect_right(mids, floor)
            part: dict[int, tuple[str, bytes, float]] = {}
            size = 0
            for rid in mids[:cut]:
                rec = recs.get(rid)
                if rec is None:  # deleted
                    continue
                if part and (len(part) >= CHUNK_RECORDS or size + len(rec[1]) > CHUNK_BYTES):
                    chunks.append((prio, next(iter(part)), part))
                    part, size = {}, 0
                part[rid] = rec
                size += len(rec[1])
            if part:
                chunks.append((prio, next(iter(part)), part))
        rows = [(prio, first) + _chunk_row(part) for prio, first, part in chunks]
        with self._transaction("journal spill") as db:
            db.executemany("INSERT INTO chunks (prio, first, last, n, bytes, oldest, newest, ids, times, sizes, bodies) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            # never over a newer window (a commit that went to SQLite after the journal's last entry)
            db.executemany(_MERGE_REPLAY, [(node, top, _to_signed(bitmap))
                                           for node, (top, bitmap) in self._jreplay.items()])
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_FLOOR, max(floor, self._floor)))
        self._floor = max(floor, self._floor)
        self._jreplay = {}
        for prio, cut in cuts.items():  # out of memory: the counts of rows and bytes stay
            recs, mids = self._mem[prio], self._mem_ids[prio]
            for rid in mids[:cut]:
                recs.pop(rid, None)
            del mids[:cut]
        for (prio, first, part), row in zip(chunks, rows):
            firsts = self._chunk_firsts[prio]
            if firsts and first < firsts[-1]:
                bisect.insort(firsts, first)
            else:
                firsts.append(first)
            self._chunk_info[(prio, first)] = list(row[2:7])
            self._chunk_rows[prio] += row[3]
            self._mem_bytes -= row[4]

    # -- chunks ---------------------------------------------------------------------------

    def _thaw(self, prio: int, first: int) -> dict[int, tuple[str, bytes, float]]:
        """A chunk's records {id: (kind, body, created)} in id order, decoded once and kept while
        recently used. Callers do not change the dict: `_chunks_remove` replaces it."""
        key = (prio, first)
        recs = self._cache.pop(key, None)
        if recs is None:
            ids, times, sizes, bodies = self._db.execute(
                "SELECT ids, times, sizes, bodies FROM chunks WHERE prio = ? AND first = ?", key).fetchone()
            recs = _chunk_records(KIND_OF[prio], ids, times, sizes, bodies)
        self._cache[key] = recs
        if len(self._cache) > CACHE_CHUNKS:
            del self._cache[next(iter(self._cache))]
        return recs

    def _chunk_of(self, rid: int) -> tuple[int, int] | None:
        """The key of the chunk that holds record `rid`, or None."""
        for prio, firsts in self._chunk_firsts.items():
            i = bisect.bisect_right(firsts, rid) - 1
            if i >= 0 and rid <= self._chunk_info[(prio, firsts[i])][0] and rid in self._thaw(prio, firsts[i]):
                return prio, firsts[i]
        return None

    def _chunks_remove(self, gone: dict[tuple[int, int], set[int] | None]) -> dict[int, int]:
        """Remove records from chunks, {key: their ids, or None for all}, in one transaction (no
        fsync of its own: the next commit's makes it durable); returns {prio: records removed}."""
        rows, dead, after = [], [], {}
        for key, rids in gone.items():
            if rids is None:
                dead.append(key)
                after[key] = (None, self._chunk_info[key][1], self._chunk_info[key][2], None)
                continue
            recs = self._thaw(*key)
            left = {rid: rec for rid, rec in recs.items() if rid not in rids}
            n = len(recs) - len(left)
            if not n:
                continue
            row = _chunk_row(left) if left else None
            after[key] = (left, n, self._chunk_info[key][2] - (row[2] if left else 0), row)
            if left:
                rows.append(row + key)
            else:
                dead.append(key)
        if not after:
            return {}
        with self._transaction("delete") as db:
            db.executemany("DELETE FROM chunks WHERE prio = ? AND first = ?", dead)
            db.executemany("UPDATE chunks SET last = ?, n = ?, bytes = ?, oldest = ?, newest = ?, ids = ?, times = ?, "
                           "sizes = ?, bodies = ? WHERE prio = ? AND first = ?", rows)
        removed: dict[int, int] = {}
        for key, (left, n, size, row) in after.items():
            prio = key[0]
            removed[prio] = removed.get(prio, 0) + n
            self._rows[prio] -= n
            self._bytes[prio] -= size
            self._chunk_rows[prio] -= n
            self._cache.pop(key, None)
            if left:
                self._cache[key] = left
                self._chunk_info[key] = list(row[:5])
            else:
                firsts = self._chunk_firsts[prio]
                del firsts[bisect.bisect_left(firsts, key[1])]
                del self._chunk_info[key]
        while len(self._cache) > CACHE_CHUNKS:
            del self._cache[next(iter(self._cache))]
        return removed

    def _write_deletes(self) -> None:
        """An entry of the journal's deletes alone (at close), so a restart does not send them again."""
        j = self._journal
        if not self._deleted or j is None:
            return
        payload = j.encode(self._next_id, time.time(), [], [], _runs(self._deleted))
        if j.fits(payload) and not j.too_big(payload):
            j.append(payload, self._next_id, 0)
            self._deleted = []

    async def delete(self, ids: list[int]) -> None:
        """Remove records the broker has acknowledged."""
        await self._run(self._delete, ids)

    def _delete(self, ids) -> None:
        # Journal records go from memory; their deletes ride the journal's next entry (lost in a
        # crash, they only mean a batch sent again: delivery is at least once anyway). An id given
        # twice is deleted once (its second look, not found, had dropped it from that entry).
        ids = list(dict.fromkeys(ids))
        if self._journal is not None and max(ids, default=0) > self._floor:  # the journal's ids are above it
            rest = self._mem_pop_many(ids)
            if rest:
                gone = set(rest)
                self._deleted += [rid for rid in ids if rid not in gone]
            else:
                self._deleted += ids
            ids = rest
        if not ids:
            return
        if any(self._chunk_rows.values()):
            by_chunk: dict[tuple[int, int], set[int]] = {}
            rest, key, recs = [], None, {}
            for rid in ids:
                if rid not in recs:  # a batch's ids mostly lie in one chunk, then the next
                    key = self._chunk_of(rid)
                    if key is None:
                        rest.append(rid)
                        recs = {}
                        continue
                    recs = self._thaw(*key)
                by_chunk.setdefault(key, set()).add(rid)
            self._with_lazy_sync(lambda: self._chunks_remove(by_chunk))
            ids = rest
        if not ids:
            return
        # a batch's ids are mostly consecutive: one statement a run of them, not one an id
        # (the spool thread holds the GIL between statements, which the event loop waits for).
        self._with_lazy_sync(lambda: self._write_deleting(
            [("DELETE FROM records WHERE id BETWEEN ? AND ? RETURNING prio, length(body)", run)
             for run in _runs(ids)]))

    def _with_lazy_sync(self, fn):
        """Run fn's deletes with synchronous=NORMAL. A delete needs no fsync of its own: lost in a
        crash, it only means a batch sent again (delivery is at least once anyway), and the next
        commit's fsync makes it durable, the WAL being written in order. At low rates this halves
        the fsyncs."""
        db = self._db
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            return fn()
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
            self._sql_rows[prio] -= 1
        return gone

    async def enforce(self, quota_bytes: int, ttl: dict[str, float]) -> dict[tuple[str, str], int]:
        """Apply the overflow policy; returns {(kind, reason): records dropped}, reason 'ttl' or 'quota'."""
        return await self._run(self._enforce, quota_bytes, ttl)

    def _enforce(self, quota_bytes, ttl):
        dropped: dict[tuple[str, str], int] = {}
        now = time.time()
        for kind, seconds in ttl.items():
            prio = PRIORITY[kind]
            if seconds and self._rows[prio]:
                old = [rid for rid, rec in self._mem[prio].items() if rec[2] < now - seconds]
                self._mem_pop_many(old)
                self._deleted += old
                gone = self._write_deleting([("DELETE FROM records WHERE prio = ? AND created < ? "
                                              "RETURNING prio, length(body)", (prio, now - seconds))]) \
                    if self._sql_rows[prio] else []
                expired = self._chunks_expire(prio, now - seconds) if self._chunk_rows[prio] else 0
                if gone or old or expired:
                    dropped[(kind, "ttl")] = len(gone) + len(old) + expired
        if sum(self._bytes.values()) > quota_bytes and self._mem_bytes:
            self._fold()  # the oldest are chosen in SQLite
        for prio in (PRIO_FRAME, PRIO_WINDOW):  # never events
            while (excess := sum(self._bytes.values()) - quota_bytes) > 0 and self._rows[prio]:
                # the oldest of the chunks and of the records table (rows there come from commits
                # that bypassed the journal: their ids may fall between a chunk's)
                firsts = self._chunk_firsts[prio]
                low = next(iter(self._thaw(prio, firsts[0]))) if firsts else None
                if low is not None:
                    row = self._db.execute("SELECT min(id) FROM records WHERE prio = ?", (prio,)).fetchone() \
                        if self._sql_rows[prio] else (None,)
                    if row[0] is None or low < row[0]:
                        n = self._chunks_drop_oldest(prio, firsts[0], excess, row[0])
                        key = (KIND_OF[prio], "quota")
                        dropped[key] = dropped.get(key, 0) + n
                        continue
                ids = []
                for rid, size in self._db.execute(
                        "SELECT id, length(body) FROM records WHERE prio = ? AND id < ? ORDER BY id LIMIT ?",
                        (prio, self._next_id if low is None else low, _DROP_CHUNK)):
                    ids.append(rid)
                    excess -= size
                    if excess <= 0:
                        break
                gone = self._write_deleting(
                    [("DELETE FROM records WHERE id = ? RETURNING prio, length(body)", (i,)) for i in ids])
                key = (KIND_OF[prio], "quota")
                dropped[key] = dropped.get(key, 0) + len(gone)
        return dropped

    def _chunks_expire(self, prio: int, before: float) -> int:
        """Remove the class's chunk records spooled before `before`; returns how many."""
        gone: dict[tuple[int, int], set[int] | None] = {}
        for first in self._chunk_firsts[prio]:
            key = (prio, first)
            _last, _n, _size, oldest, newest = self._chunk_info[key]
            if newest < before:
                gone[key] = None
            elif oldest < before:
                gone[key] = {rid for rid, rec in self._thaw(*key).items() if rec[2] < before}
        return self._chunks_remove(gone).get(prio, 0) if gone else 0

    def _chunks_drop_oldest(self, prio: int, first: int, excess: int, below: int | None) -> int:
        """Drop the chunk's oldest records, those with ids under `below` (if given), until `excess`
        bytes are gone; returns how many."""
        key = (prio, first)
        if below is None and self._chunk_info[key][2] <= excess:
            return self._chunks_remove({key: None}).get(prio, 0)
        rids = set()
        for rid, rec in self._thaw(*key).items():
            if below is not None and rid > below:
                break
            rids.add(rid)
            excess -= len(rec[1])
            if excess <= 0:
                break
        return self._chunks_remove({key: rids}).get(prio, 0)

    # -- reads ----------------------------------------------------------------------------

    async def read(self, prio: int, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Records of one priority with id > after_id, oldest first: [(id, kind, body)]."""
        return await self._run(self._read, prio, after_id, limit)

    def _read(self, prio, after_id, limit):
        rows = []
        if limit <= 0:
            return rows
        recs, ids = self._mem[prio], self._mem_ids[prio]
        for rid in ids[bisect.bisect_right(ids, after_id):]:
            rec = recs.get(rid)
            if rec is not None:
                rows.append((rid, rec[0], rec[1]))
                if len(rows) >= limit:
                    break
        firsts = self._chunk_firsts[prio]
        if firsts:  # chunk ids are all below the journal's, in order
            got = []
            for first in firsts[max(0, bisect.bisect_right(firsts, after_id) - 1):]:
                if self._chunk_info[(prio, first)][0] <= after_id:
                    continue
                got += [(rid, rec[0], rec[1]) for rid, rec in self._thaw(prio, first).items() if rid > after_id]
                if len(got) >= limit:
                    break
            rows = got + rows
        if self._sql_rows[prio]:
            rows += self._db.execute("SELECT id, kind, body FROM records WHERE prio = ? AND id > ? ORDER BY id "
                                     "LIMIT ?", (prio, after_id, limit)).fetchall()
            rows.sort()
        return rows[:limit]

    async def depth(self) -> tuple[int, int]:
        """(records waiting, bytes waiting)."""
        return await self._run(self._depth)

    def _depth(self):
        return sum(self._rows.values()), sum(self._bytes.values())

    async def oldest(self) -> float | None:
        """When the oldest record waiting was spooled (seconds since the epoch), or None."""
        return await self._run(self._oldest)

    def _oldest(self):
        found = self._oldest_by_kind().values()
        return min(found) if found else None

    async def oldest_by_kind(self) -> dict[str, float]:
        """{kind: when its oldest record waiting was spooled}, kinds with records only."""
        return await self._run(self._oldest_by_kind)

    def _oldest_by_kind(self) -> dict[str, float]:
        out = {}
        for prio, recs in self._mem.items():
            for rid in self._mem_ids[prio]:
                if rid in recs:
                    out[KIND_OF[prio]] = recs[rid][2]
                    break
        for prio, firsts in self._chunk_firsts.items():
            if firsts:  # the first chunk holds the class's oldest, as the journal's first id does
                t = self._chunk_info[(prio, firsts[0])][3]
                out[KIND_OF[prio]] = min(t, out.get(KIND_OF[prio], t))
        if any(self._sql_rows.values()):
            for kind, t in self._db.execute("SELECT kind, min(created) FROM records GROUP BY kind"):
                out[kind] = min(t, out.get(kind, t))
        return out

    def stats(self) -> dict[str, dict[str, int]]:
        """Rows and bytes waiting per kind (exact; no query)."""
        return {KIND_OF[p]: {"records": self._rows[p], "bytes": self._bytes[p]} for p in self._rows}

    async def replay_windows(self) -> dict[str, tuple[int, int]]:
        """Committed replay windows {node: (top, bitmap)}."""
        return await self._run(self._replay_windows)

    def _replay_windows(self):
        rows = self._db.execute("SELECT node, top, bitmap FROM replay").fetchall()
        out = {node: (top, bitmap & (2**64 - 1)) for node, top, bitmap in rows}
        for node, window in self._jreplay.items():
            out[node] = merge_windows(out[node], window) if node in out else window
        return out

    async def decisions(self) -> list[tuple[str, str, bytes]]:
        """The decisions' committed rows [(kind, key, JSON bytes)], read once at start."""
        return await self._run(self._decisions)

    def _decisions(self):
        return self._db.execute("SELECT kind, key, body FROM decisions ORDER BY kind, key").fetchall()

    async def last_id(self) -> int:
        """The id of the newest record waiting, or of the last one ever spooled; 0 for none."""
        return await self._run(self._last_id)

    def _last_id(self) -> int:
        return self._next_id - 1

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


class SpoolThread:
    """The one thread that does the spool's I/O. `await run(fn, *args)` is what
    `loop.run_in_executor` on a one-worker pool does, with a third less CPU a call: a
    commit is a call, and at low rates the calls' fixed costs are a good part of a frame's."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # jobs handed over (counted by the caller's thread) and finished (by the spool's thread):
        # one writer each, so no lock; equal when the spool's thread has nothing to do
        self._handed = 0
        self._finished = 0

    def idle(self) -> bool:
        """Whether every job handed over has run (the spool's state is the caller's to use)."""
        return self._handed == self._finished

    def run(self, fn, *args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="spool", daemon=True)
            self._thread.start()
        self._handed += 1
        self._queue.put((loop, fut, fn, args))
        return fut

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            loop, fut, fn, args = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the caller, as an executor does
                result, error = None, exc
            self._finished += 1
            try:
                loop.call_soon_threadsafe(_resolve, fut, result, error)
            except RuntimeError:  # the caller's loop is closed: nobody waits for this
                pass
            del job, fut, result, error

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def _resolve(fut: asyncio.Future, result, error) -> None:
    if fut.cancelled():
        return
    if error is None:
        fut.set_result(result)
    else:
        fut.set_exception(error)


def merge_windows(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The newer of two replay windows (top, bitmap) of one node: a window's top only grows, and
    its bitmap keeps every number it saw; two with one top are merged."""
    if a[0] != b[0]:
        return a if a[0] > b[0] else b
    return a[0], a[1] | b[1]


def _runs(ids) -> list[tuple[int, int]]:
    """Runs of consecutive integers in ids, as (first, last): [3, 4, 5, 9, 1] -> (1, 1), (3, 5), (9, 9)."""
    s = sorted(set(ids))
    if not s:
        return []
    if s[-1] - s[0] == len(s) - 1:
        return [(s[0], s[-1])]  # the usual: a batch's ids, consecutive
    out: list[tuple[int, int]] = []
    start = prev = s[0]
    for i in s:  # a tuple made a run, not an id
        if i > prev + 1:
            out.append((start, prev))
            start = i
        prev = i
    out.append((start, prev))
    return out


def _to_signed(bitmap: int) -> int:
    # SQLite integers are signed 64-bit
    return bitmap - 2**64 if bitmap >= 2**63 else bitmap


def _le(a: array) -> bytes:
    if _BIG_ENDIAN:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _chunk_row(recs: dict[int, tuple[str, bytes, float]]) -> tuple:
    """(last, n, bytes, oldest, newest, ids, times, sizes, bodies) of a chunk's row; `recs`
    {id: (kind, body, created)} in id order, not empty."""
    vals = recs.values()
    times = array("d", [rec[2] for rec in vals])
    sizes = array("I", [len(rec[1]) for rec in vals])
    bodies = b"".join([rec[1] for rec in vals])
    return (next(reversed(recs)), len(recs), len(bodies), min(times), max(times),
            _le(array("q", recs)), _le(times), _le(sizes), bodies)


def _chunk_records(kind: str, ids: bytes, times: bytes, sizes: bytes, bodies: bytes) -> dict:
    """A chunk row's arrays back into {id: (kind, body, created)}."""
    arrays = []
    for code, raw in (("q", ids), ("d", times), ("I", sizes)):
        a = array(code)
        a.frombytes(raw)
        if _BIG_ENDIAN:
            a.byteswap()
        arrays.append(a)
    recs, pos = {}, 0
    for rid, created, n in zip(*arrays):
        recs[rid] = (kind, bodies[pos:pos + n], created)
        pos += n
    return recs
