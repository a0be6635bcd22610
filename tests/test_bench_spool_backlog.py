"""bench/spool_backlog.py compares like with like: its baseline moves the same records a row a
record into the records table, and reads and deletes back what the spool itself does."""
import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from bench.spool_backlog import RowSpool
from gateway.runtime.spool import PRIO_FRAME, Spool

SMALL = 1 << 18


def _backlog(cls, path):
    async def main():
        s = await cls.open(path, SMALL)
        bodies = [os.urandom(150 + i % 50) for i in range(4000)]
        for i in range(0, len(bodies), 64):
            await s.commit([("frame", b) for b in bodies[i:i + 64]], {"n": (i, 1)})
        first = await s.read(PRIO_FRAME, 0, 1500)
        await s.delete([r[0] for r in first[:1000]])
        rest = await s.read(PRIO_FRAME, 0, 10 ** 6)
        stats = s.stats()
        await s.close()
        with sqlite3.connect(path) as db:
            tables = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("records", "chunks")}
        return bodies, first, rest, stats, tables
    return asyncio.run(main())


def test_the_baseline_keeps_a_backlog_a_row_a_record_and_gives_back_the_same(tmp_path):
    chunks = _backlog(Spool, tmp_path / "c.sqlite")
    rows = _backlog(RowSpool, tmp_path / "r.sqlite")
    for bodies, first, rest, stats, _tables in (chunks, rows):
        assert [r[2] for r in first] == bodies[:1500] and [r[2] for r in rest] == bodies[1000:]
        assert stats["frame"] == {"records": 3000, "bytes": sum(map(len, bodies[1000:]))}
    assert chunks[4]["records"] == 0 and 0 < chunks[4]["chunks"] < 30
    assert rows[4]["chunks"] == 0 and rows[4]["records"] > 1000


def test_the_bench_prints_both_layouts_and_their_ratio(tmp_path):
    p = subprocess.run([sys.executable, "bench/spool_backlog.py", "--records", "6000", "--lag", "0,3000", "--rounds", "1",
                        "--journal-bytes", str(SMALL), "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr
    for lag in (0, 3000):
        assert f"lag {lag:>6}  chunks ÷ rows " in p.stdout
        assert f"lag {lag:>6}  rows " in p.stdout and f"lag {lag:>6}  chunks " in p.stdout
