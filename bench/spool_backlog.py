"""The spool's thread CPU a record while the uplink is behind: the backlog in chunks against
the same backlog a row a record.

    python bench/spool_backlog.py [--records 120000] [--lag 0,10000,30000,60000] [--rounds 3]

Commits of 64 frames of 150 bytes (the journal, 4 MiB segments), and an uplink that reads
and deletes 1,024 at a time whenever more than `lag` + 1,024 wait: with a lag under a
segment's worth of records the journal holds the backlog, above it SQLite does. Two layouts
alternate round by round in one process, on the same disk:

  chunks   the spool as it is: what moves from the journal goes a chunk of up to 256
           records a row (`chunks`);
  rows     the same spool with its records moved a row a record into the `records`
           table, as it did before chunks (the rows are then read and deleted there).

Prints the spool thread's CPU time a record (commit, read and delete; the best round and
all rounds) of each, and chunks ÷ rows. Nothing else differs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.runtime.spool import JOURNAL_BYTES, Spool  # noqa: E402


class RowSpool(Spool):
    """The baseline: a record a row in `records` when the journal's records move to SQLite."""

    def _spill(self, floor: int) -> None:
        rows = [(rid, prio, kind, body, created) for prio, recs in self._mem.items()
                for rid, (kind, body, created) in recs.items() if rid <= floor]
        with self._transaction("journal spill") as db:
            db.executemany("INSERT INTO records (id, prio, kind, body, created) VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_floor', ?)",
                       (max(floor, self._floor),))
        self._floor = max(floor, self._floor)
        self._jreplay = {}
        self._mem_pop_many([row[0] for row in rows])
        for _rid, prio, _kind, body, _created in rows:
            self._rows[prio] += 1
            self._bytes[prio] += len(body)
            self._sql_rows[prio] += 1


def one(cls, where: Path, records: int, lag: int, size: int, journal_bytes: int = JOURNAL_BYTES) -> dict:
    """CPU seconds a record of the spool's work (run here on this thread, as the spool's thread does)."""
    path = where / f"{cls.__name__}-{lag}.sqlite"

    async def opened():
        return await cls.open(path, journal_bytes)
    spool = asyncio.run(opened())
    recs = [("frame", os.urandom(size)) for _ in range(64)]
    cpu = {"commit": 0.0, "read": 0.0, "delete": 0.0}
    after = committed = 0
    while committed < records:
        t = time.thread_time()
        spool._commit(recs, {"n1": (committed, 1)})
        cpu["commit"] += time.thread_time() - t
        committed += len(recs)
        while spool._depth()[0] > lag + 1024:
            t = time.thread_time()
            rows = spool._read(0, after, 1024)
            cpu["read"] += time.thread_time() - t
            after = rows[-1][0]
            t = time.thread_time()
            spool._delete([r[0] for r in rows])
            cpu["delete"] += time.thread_time() - t
    spool._close()
    spool._thread.stop()
    for p in where.iterdir():
        p.unlink()
    return {k: v / records for k, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=120_000)
    ap.add_argument("--lag", default="0,10000,30000,60000", help="records the uplink stays behind, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=150, help="bytes a frame")
    ap.add_argument("--dir", default=None, help="where the spools go (default: a temporary folder)")
    ap.add_argument("--journal-bytes", type=int, default=JOURNAL_BYTES, help="the journal's segment size")
    args = ap.parse_args()
    lags = [int(x) for x in args.lag.split(",")]
    print(f"spool thread CPU a record: commits of 64 frames of {args.size} B, {args.records} records, "
          f"the uplink reading 1,024 at a time; {args.rounds} rounds, the layouts alternated")
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        where = Path(d)
        for lag in lags:
            got: dict[str, list[dict]] = {"chunks": [], "rows": []}
            for r in range(args.rounds):
                for name, cls in (("chunks", Spool), ("rows", RowSpool)) if r % 2 == 0 else (
                        ("rows", RowSpool), ("chunks", Spool)):
                    got[name].append(one(cls, where, args.records, lag, args.size, args.journal_bytes))
                print(f"  lag {lag}: round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            best = {name: min(runs, key=lambda x: sum(x.values())) for name, runs in got.items()}
            for name, b in best.items():
                all_us = ", ".join(f"{sum(x.values()) * 1e6:.2f}" for x in got[name])
                print(f"lag {lag:>6}  {name:<6} {sum(b.values()) * 1e6:6.2f} µs a record (commit {b['commit'] * 1e6:.2f}, "
                      f"read {b['read'] * 1e6:.2f}, delete {b['delete'] * 1e6:.2f}); rounds: {all_us}")
            ratio = sum(best["chunks"].values()) / sum(best["rows"].values())
            print(f"lag {lag:>6}  chunks ÷ rows {ratio:.2f}")


if __name__ == "__main__":
    main()
