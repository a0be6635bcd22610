"""The spool's journal (gateway/runtime/journal.py): what a commit writes, what a restart reads back."""
import asyncio
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.runtime import spool as spool_mod
from gateway.runtime.journal import Journal
from gateway.runtime.spool import KIND_EVENT, KIND_FRAME, PRIO_EVENT, PRIO_FRAME, Spool

SMALL = 1 << 18  # the smallest segment the configuration allows: many segment switches


def run(coro):
    return asyncio.run(coro)


async def everything(s: Spool) -> dict[int, tuple[str, bytes]]:
    rows = await s.read(PRIO_FRAME, 0, 10 ** 6) + await s.read(PRIO_EVENT, 0, 10 ** 6)
    return {rid: (kind, body) for rid, kind, body in rows}


# One script for the child that dies and for the parent that checks: step i commits a frame (and
# every 7th an event) for node n, and every `every`th step deletes the oldest frames the uplink
# would have sent (fewer than were committed: a backlog that moves into SQLite at segment switches,
# or, with no deletes, when the journal holds more than a segment). The child kills itself after step `stop`; the parent replays the same steps in a
# model (ids are given in commit order) to know what was committed and what deleted.
SCRIPT = """
import asyncio, os, random, signal, sys
from gateway.runtime.spool import Spool, PRIO_FRAME
async def main(path, seed, stop, every):
    rng = random.Random(seed)
    s = await Spool.open(path, {small})
    for i in range(stop + 1):
        recs = [("frame", rng.randbytes(rng.randrange(20, 1500)))]
        if i % 7 == 0:
            recs.append(("event", b"e%d" % i))
        await s.commit(recs, {{"n": (i, 1)}})
        if i % every == every - 1:
            rows = await s.read(PRIO_FRAME, 0, rng.randrange(1, 5))
            await s.delete([r[0] for r in rows])
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main(sys.argv[1], *map(int, sys.argv[2:])))
""".format(small=SMALL)


def model(seed: int, stop: int, every: int):
    rng = random.Random(seed)
    committed, deleted, next_id, frames = {}, set(), 1, []
    for i in range(stop + 1):
        recs = [("frame", rng.randbytes(rng.randrange(20, 1500)))]
        if i % 7 == 0:
            recs.append(("event", b"e%d" % i))
        for kind, body in recs:
            committed[next_id] = (kind, body)
            if kind == "frame":
                frames.append(next_id)
            next_id += 1
        if i % every == every - 1:
            n = rng.randrange(1, 5)
            live = [f for f in frames if f not in deleted][:n]
            deleted.update(live)
    return committed, deleted


@pytest.mark.parametrize("seed, every", [(1, 5), (2, 5), (3, 5), (4, 10 ** 6)])
def test_kill_9_keeps_every_commit_and_invents_nothing(tmp_path, seed, every):
    stop = random.Random(seed).randrange(300, 900)  # a few segment switches, some spills to SQLite
    path = tmp_path / "k.sqlite"
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(seed), str(stop), str(every)], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == -9, p.stderr
    committed, deleted = model(seed, stop, every)

    async def check():
        s = await Spool.open(path, SMALL)
        got = await everything(s)
        assert await s.replay_windows() == {"n": (stop, 1)}
        assert await s.last_id() == max(committed)
        assert await s.integrity_check() == "ok"
        await s.close()
        return got
    got = run(check())
    assert set(got) <= set(committed), "records no commit wrote"
    assert set(committed) - deleted <= set(got), "committed records lost"
    assert all(got[rid] == committed[rid] for rid in got)
    # deletes ride the next entry: only those of the last few steps may come back
    assert len(set(got) & deleted) <= 12


def test_a_torn_last_entry_loses_only_that_commit(tmp_path):
    path = tmp_path / "t.sqlite"

    async def write():
        s = await Spool.open(path, SMALL)
        for i in range(10):
            await s.commit([(KIND_FRAME, b"f%d" % i)], {"n": (i, 1)})
        j = s._journal
        return j.paths[j.cur], j.pos  # no close: as if the process died here
    seg, end = run(write())
    data = bytearray(seg.read_bytes())
    data[end - 512 + 20] ^= 0xFF  # damage the payload of the last entry (each entry is one sector here)
    seg.write_bytes(bytes(data))

    async def check():
        s = await Spool.open(path, SMALL)
        got = await everything(s)
        windows = await s.replay_windows()
        await s.commit([(KIND_FRAME, b"again")], {"n": (9, 1)})  # written over the torn entry
        await s.close()
        s = await Spool.open(path, SMALL)
        again = await everything(s)
        await s.close()
        return got, windows, again
    got, windows, again = run(check())
    assert [body for _, body in got.values()] == [b"f%d" % i for i in range(9)]
    assert windows == {"n": (8, 1)}
    assert [body for _, body in again.values()] == [b"f%d" % i for i in range(9)] + [b"again"]


def test_decisions_commits_go_to_sqlite_in_order_with_the_journal(tmp_path):
    path = tmp_path / "d.sqlite"

    async def main():
        s = await Spool.open(path, SMALL)
        await s.commit([(KIND_FRAME, b"a")], {"n": (1, 1)})
        await s.commit([(KIND_EVENT, b"dispatch")], {"n": (2, 3)}, {("demand", "7"): b"{}"})
        await s.commit([(KIND_FRAME, b"b")], {})
        first = [(r[0], r[2]) for r in await s.read(PRIO_FRAME, 0, 10)]
        await s.close()
        s = await Spool.open(path, SMALL)
        frames = [(r[0], r[2]) for r in await s.read(PRIO_FRAME, 0, 10)]
        events = [(r[0], r[2]) for r in await s.read(PRIO_EVENT, 0, 10)]
        rows = await s.decisions()
        windows = await s.replay_windows()
        await s.close()
        return first, frames, events, rows, windows
    first, frames, events, rows, windows = run(main())
    assert first == frames == [(1, b"a"), (3, b"b")]
    assert events == [(2, b"dispatch")] and rows == [("demand", "7", b"{}")]
    assert windows == {"n": (2, 3)}  # SQLite's newer window, not the journal's older one


@pytest.mark.parametrize("size", [0, 2 * SMALL], ids=["off", "resized"])
def test_a_journal_turned_off_or_resized_is_folded_into_sqlite(tmp_path, size):
    path = tmp_path / "f.sqlite"

    async def main():
        s = await Spool.open(path, SMALL)
        for i in range(20):
            await s.commit([(KIND_FRAME, b"f%d" % i)], {"n": (i, 1)})
        await s.delete([1, 2, 3])
        await s.close()
        s = await Spool.open(path, size)
        got = await everything(s)
        windows = await s.replay_windows()
        await s.commit([(KIND_FRAME, b"next")], {"n": (20, 1)})
        last = await s.last_id()
        await s.close()
        return got, windows, last
    got, windows, last = run(main())
    assert sorted(got) == list(range(4, 21)) and windows == {"n": (19, 1)} and last == 21
    assert [p.name for p in tmp_path.iterdir() if "journal" in p.name] == (
        [] if not size else ["f.sqlite-journal0", "f.sqlite-journal1"])
    assert all(p.stat().st_size == size for p in tmp_path.iterdir() if "journal" in p.name)


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def test_a_small_commit_writes_a_sector_or_two(tmp_path):
    # what the disk is sent for a commit of one 160-byte frame: one or two 512-byte sectors,
    # not the 4 KiB pages of a SQLite commit (with synchronous=FULL, about 12 KB here)
    if not Path("/proc/self/io").exists():
        pytest.skip("no /proc/self/io on this system")

    async def main():
        s = await Spool.open(tmp_path / "b.sqlite", SMALL)
        await s.commit([(KIND_FRAME, os.urandom(160))], {"n": (0, 1)})
        before = _write_bytes()
        for i in range(1, 101):
            await s.commit([(KIND_FRAME, os.urandom(160))], {"n": (i, 1)})
        written = _write_bytes() - before
        direct = s._journal._direct
        await s.close()
        return written, direct
    written, direct = run(main())
    if not direct:
        pytest.skip(f"no O_DIRECT on the filesystem of {tmp_path}: a commit costs a page cache page")
    assert written <= 100 * 1024, written


def test_small_commits_on_quick_storage_are_written_from_the_callers_thread(tmp_path):
    """Once journal writes have been quick, a small commit is written without the hop to the
    spool's thread; a large one, a slow disk or a thread with work to do keep the hop. Every
    commit reads back after a restart, whichever way it went."""
    async def main():
        s = await Spool.open(tmp_path / "q.sqlite", SMALL)
        bodies = []

        async def commit(n):
            recs = [(KIND_FRAME, os.urandom(100)) for _ in range(n)]
            bodies.extend(b for _, b in recs)
            await s.commit(recs, {"n": (len(bodies), 1)})
        await commit(1)
        assert s.quick_commits == 0  # the first: its write time is not known yet
        for _ in range(19):
            # quick storage, as the spool measures it (the measure is the disk's: a loaded CI
            # machine's fsync can take longer than QUICK_SECONDS, and the test is not about that)
            s._write_time = 0.0
            await commit(1)
        quick = s.quick_commits
        assert quick == 19
        await commit(spool_mod.QUICK_RECORDS + 1)
        s._write_time = 1.0  # writes have been slow
        await commit(1)
        assert s.quick_commits == quick
        s._write_time = 0.0
        gate = threading.Event()
        busy = s._thread.run(gate.wait)  # the spool's thread has work to do
        assert not s._thread.idle()
        queued = asyncio.ensure_future(commit(1))
        await asyncio.sleep(0.05)
        assert s.quick_commits == quick and not queued.done()  # handed over, behind that work
        gate.set()
        await asyncio.gather(busy, queued)
        assert s._thread.idle()
        s._write_time = 0.0
        await commit(1)
        assert s.quick_commits == quick + 1
        await s.close()
        s = await Spool.open(tmp_path / "q.sqlite", SMALL)
        got = [body for _rid, _kind, body in await s.read(PRIO_FRAME, 0, 1000)]
        await s.close()
        return bodies, got
    bodies, got = run(main())
    assert got == bodies


def test_existing_size_and_recover_of_a_missing_journal(tmp_path):
    assert Journal.existing_size(tmp_path / "none.sqlite") is None
    j = Journal(tmp_path / "none.sqlite", SMALL)
    assert [s.generation for s in j.recover()] == [0, 0] and (j.cur, j.generation, j.pos) == (0, 1, 0)


def test_a_segment_switch_after_a_restart_keeps_sqlites_newer_window(tmp_path):
    # n's window: top 5 in the journal, then top 6 committed to SQLite (a decisions commit). After a
    # restart the journal's older window must not be written over SQLite's when a segment is reused.
    path = tmp_path / "w.sqlite"

    async def main():
        s = await Spool.open(path, SMALL)
        await s.commit([(KIND_FRAME, b"f5")], {"n": (5, 1)})
        await s.commit([(KIND_EVENT, b"dispatch")], {"n": (6, 3)}, {("demand", "1"): b"{}"})
        await s.close()
        s = await Spool.open(path, SMALL)
        for i in range(2 * SMALL // 1024 + 8):  # two segments' worth: the one holding n@5 is written again
            await s.commit([(KIND_FRAME, bytes(900))], {"m": (i, 1)})
            await s.delete([rid for rid, _, _ in await s.read(PRIO_FRAME, 0, 10)])
        switched = s._journal.generation
        await s.close()
        s = await Spool.open(path, SMALL)
        windows = await s.replay_windows()
        await s.close()
        return switched, windows
    switched, windows = run(main())
    assert switched >= 3 and windows["n"] == (6, 3)


def test_a_journal_that_cannot_be_made_leaves_a_working_spool(tmp_path):
    # a segment that cannot be written (here a directory stands where its temporary file goes;
    # on a gateway, a full disk): the spool says why and commits to SQLite, as without a journal
    path = tmp_path / "e.sqlite"
    (tmp_path / "e.sqlite-journal1.new").mkdir()

    async def main():
        s = await Spool.open(path, SMALL)
        error, journal = s.journal_error, s._journal
        await s.commit([(KIND_FRAME, b"f")], {"n": (1, 1)})
        await s.close()
        s = await Spool.open(path, 0)
        got = await everything(s)
        await s.close()
        return error, journal, got
    error, journal, got = run(main())
    assert journal is None and "cannot make the spool's journal" in error and "e.sqlite-journal1.new" in error
    assert list(got.values()) == [(KIND_FRAME, b"f")]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(("journal0", "journal1"))]


def test_one_delete_of_every_class_in_memory_and_in_sqlite_keeps_the_counts_exact(tmp_path):
    """A delete's ids from memory (frames, windows and events mixed, in any order), from SQLite (a
    fold moved them) and ids no longer anywhere: the rest is exactly what was not deleted, the
    counts of rows and bytes are those a fresh open scans, and a restart agrees."""
    rng = random.Random(7)
    kinds = ("frame", "window", "event")

    async def scenario():
        s = await Spool.open(tmp_path / "s.db", SMALL)
        bodies: dict[int, tuple[str, bytes]] = {}
        next_id = 1
        for i in range(300):
            recs = [(rng.choice(kinds), rng.randbytes(rng.randrange(1, 700))) for _ in range(rng.randrange(1, 6))]
            await s.commit(recs, {"n": (i, 1)})
            for rec in recs:
                bodies[next_id] = rec
                next_id += 1
            if i == 150:
                await s._run(s._fold)  # the first half in SQLite, the second in memory
        assert s._chunk_rows[PRIO_FRAME] and s._mem[PRIO_FRAME]
        gone = rng.sample(sorted(bodies), len(bodies) // 2)
        await s.delete(gone + [next_id + 5, gone[0]])  # one id nowhere, one twice
        for rid in gone:
            del bodies[rid]
        counts = s.stats()
        rows = await s.read(PRIO_FRAME, 0, 10 ** 6) + await s.read(spool_mod.PRIO_WINDOW, 0, 10 ** 6) \
            + await s.read(PRIO_EVENT, 0, 10 ** 6)
        await s.close()
        again = await Spool.open(tmp_path / "s.db", SMALL)
        counts_again = again.stats()
        rows_again = await everything(again) | {rid: (k, b) for rid, k, b in
                                                await again.read(spool_mod.PRIO_WINDOW, 0, 10 ** 6)}
        await again.close()
        return bodies, counts, rows, counts_again, rows_again

    bodies, counts, rows, counts_again, rows_again = run(scenario())
    assert {rid: (kind, body) for rid, kind, body in rows} == bodies == rows_again
    expect = {k: {"records": 0, "bytes": 0} for k in kinds}
    for kind, body in bodies.values():
        expect[kind]["records"] += 1
        expect[kind]["bytes"] += len(body)
    assert counts == expect == counts_again


@pytest.mark.parametrize("seed", range(20))
def test_runs_of_ids_against_the_obvious_loop(seed):
    """`_runs` (a journal entry's deletes, a SQLite delete's statements) against a plain walk."""
    rng = random.Random(seed)
    ids = [rng.randrange(1, 60) for _ in range(rng.randrange(0, 50))]
    expect: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if expect and i == expect[-1][1] + 1:
            expect[-1] = (expect[-1][0], i)
        else:
            expect.append((i, i))
    assert spool_mod._runs(ids) == expect
    assert spool_mod._runs([3, 4, 5, 9, 1]) == [(1, 1), (3, 5), (9, 9)]
