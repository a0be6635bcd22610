"""The spool's backlog in SQLite: records the journal no longer holds go there a chunk a row
(gateway/runtime/spool.py `chunks`). Every operation the spool has, run at random against a model
(a dict of what is waiting), with chunks small enough that reads, deletes, expiries and quota drops
cut them anywhere."""
import asyncio
import random
import sqlite3
import time as real_time
import types

import pytest

from gateway.runtime import spool as spool_mod
from gateway.runtime.spool import (KIND_EVENT, KIND_FRAME, KIND_WINDOW, PRIO_EVENT, PRIO_FRAME, PRIO_WINDOW,
                                   PRIORITY, Spool)

SMALL = 1 << 18  # the smallest journal segment the configuration allows
KINDS = (KIND_FRAME, KIND_FRAME, KIND_FRAME, KIND_WINDOW, KIND_EVENT)


@pytest.fixture
def clock(monkeypatch):
    """The spool's wall clock (a record's spool time), moved by hand; its monotonic clock stays."""
    now = [1.7e9]
    monkeypatch.setattr(spool_mod, "time", types.SimpleNamespace(time=lambda: now[0], monotonic=real_time.monotonic))
    return now


def _rows_in(path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


async def _everything(s: Spool) -> dict[int, tuple[str, bytes]]:
    out = {}
    for prio in PRIORITY.values():
        out.update({rid: (kind, body) for rid, kind, body in await s.read(prio, 0, 10 ** 7)})
    return out


def _stats(model: dict) -> dict:
    out = {k: {"records": 0, "bytes": 0} for k in PRIORITY}
    for kind, body, _t in model.values():
        out[kind]["records"] += 1
        out[kind]["bytes"] += len(body)
    return out


@pytest.mark.parametrize("seed, cache", [(seed, 3) for seed in range(6)] + [(6, 0)])
def test_every_operation_against_a_model(tmp_path, monkeypatch, clock, seed, cache):
    # cache: chunks kept decoded (0: every use reads its row again)
    monkeypatch.setattr(spool_mod, "CHUNK_RECORDS", 7)
    monkeypatch.setattr(spool_mod, "CACHE_CHUNKS", cache)
    rng = random.Random(seed)
    path = tmp_path / "m.sqlite"
    model: dict[int, tuple[str, bytes, float]] = {}  # id -> (kind, body, spool time)
    cursor = {p: 0 for p in PRIORITY.values()}  # the uplink's read position per class
    seen = {"chunks": 0, "records": 0, "expired": 0, "quota": 0}

    async def main():
        s = await Spool.open(path, SMALL)
        next_id = 1
        for step in range(700):
            op = rng.random()
            if op < 0.55:  # a commit; one in twenty carries a decision (it goes to the records table)
                recs = [(rng.choice(KINDS), rng.randbytes(rng.randrange(1, 2500))) for _ in range(rng.randrange(1, 9))]
                decisions = {("demand", str(step)): b"{}"} if rng.random() < 0.05 else None
                await s.commit(recs, {"n": (step, 1)}, decisions)
                for kind, body in recs:
                    model[next_id] = (kind, body, clock[0])
                    next_id += 1
            elif op < 0.75:  # the uplink: read on from its cursor, delete what it read
                prio = rng.choice(list(PRIORITY.values()))
                rows = await s.read(prio, cursor[prio], rng.randrange(1, 40))
                expect = sorted(rid for rid, rec in model.items() if PRIORITY[rec[0]] == prio and rid > cursor[prio])
                assert [r[0] for r in rows] == expect[:len(rows)] and (rows or not expect)
                assert all(model[rid][:2] == (kind, body) for rid, kind, body in rows)
                if rows:
                    cursor[prio] = rows[-1][0]
                    await s.delete([r[0] for r in rows])
                    for rid, _k, _b in rows:
                        del model[rid]
            elif op < 0.83:  # deletes anywhere: some waiting, some long gone, one twice
                ids = rng.sample(sorted(model), min(len(model), rng.randrange(1, 30))) if model else []
                await s.delete(ids + [next_id + 3] + ids[:1])
                for rid in ids:
                    del model[rid]
            elif op < 0.88:
                clock[0] += rng.choice((0.5, 5.0, 30.0))
            elif op < 0.92:  # expiry of one class
                kind = rng.choice((KIND_FRAME, KIND_WINDOW))
                ttl = rng.choice((1.0, 20.0, 60.0))
                dropped = await s.enforce(10 ** 12, {kind: ttl})
                old = [rid for rid, rec in model.items() if rec[0] == kind and rec[2] < clock[0] - ttl]
                assert dropped == ({(kind, "ttl"): len(old)} if old else {})
                for rid in old:
                    del model[rid]
                seen["expired"] += len(old)
            elif op < 0.95:  # the quota: the oldest frames, then the oldest windows, never events
                total = sum(len(rec[1]) for rec in model.values())
                quota = int(total * rng.uniform(0.6, 1.0))
                dropped = await s.enforce(quota, {})
                want: dict = {}
                for kind in (KIND_FRAME, KIND_WINDOW):
                    for rid in sorted(r for r, rec in model.items() if rec[0] == kind):
                        if total <= quota:
                            break
                        total -= len(model.pop(rid)[1])
                        want[(kind, "quota")] = want.get((kind, "quota"), 0) + 1
                assert dropped == want
                seen["quota"] += sum(want.values())
            elif op < 0.97:
                await s._run(s._fold)
            else:  # a restart (the uplink reads from the start again)
                await s.close()
                s = await Spool.open(path, SMALL)
                cursor.update({p: 0 for p in cursor})
            assert s.stats() == _stats(model), (step, op)
            seen["chunks"] = max(seen["chunks"], sum(s._chunk_rows.values()))
            seen["records"] = max(seen["records"], sum(s._sql_rows.values()))
        got = await _everything(s)
        oldest = await s.oldest_by_kind()
        await s.close()
        return got, oldest

    got, oldest = asyncio.run(main())
    assert got == {rid: rec[:2] for rid, rec in model.items()}
    for kind in PRIORITY:
        times = [rec[2] for rec in model.values() if rec[0] == kind]
        assert oldest.get(kind) == (min(times) if times else None)
    # the run went where it was meant to: chunks, the records table, expiries and quota drops
    assert seen["chunks"] > 50 and seen["records"] and seen["expired"] and seen["quota"], seen

    async def reopen():
        s = await Spool.open(path, SMALL)
        again, stats = await _everything(s), s.stats()
        assert await s.integrity_check() == "ok"
        await s.close()
        return again, stats
    again, stats = asyncio.run(reopen())
    assert again == got and stats == _stats(model)


def test_a_backlog_is_a_row_a_chunk_and_reads_back_in_order(tmp_path):
    """No uplink: three journal segments' worth of frames and events. What the journal cannot hold is
    in SQLite a chunk of one class a row, none in the records table; it reads back in order from any
    point, in pieces that cut the chunks anywhere, and deletes that empty a chunk remove its row."""
    path = tmp_path / "b.sqlite"
    rng = random.Random(3)
    bodies = {}

    async def main():
        s = await Spool.open(path, SMALL)
        rid = 1
        while rid < 3 * SMALL // 300:
            recs = [(KIND_EVENT if rng.random() < 0.1 else KIND_FRAME, rng.randbytes(rng.randrange(100, 500)))
                    for _ in range(16)]
            await s.commit(recs, {})
            for rec in recs:
                bodies[rid] = rec
                rid += 1
        chunked = dict(s._chunk_rows)
        rows_before = _rows_in(path, "chunks")
        frames = []
        after = 0
        while rows := await s.read(PRIO_FRAME, after, 100):
            frames += rows
            after = rows[-1][0]
        middle = frames[len(frames) // 3][0]
        tail = await s.read(PRIO_FRAME, middle, 10 ** 6)
        await s.delete([r[0] for r in frames[:len(frames) // 2]])
        await s.close()
        return chunked, rows_before, frames, middle, tail

    chunked, rows_before, frames, middle, tail = asyncio.run(main())
    n_frames = sum(1 for kind, _ in bodies.values() if kind == KIND_FRAME)
    assert chunked[PRIO_FRAME] > n_frames // 3 and chunked[PRIO_EVENT] > 0
    assert [(r[0], r[1], r[2]) for r in frames] == [(i, k, b) for i, (k, b) in bodies.items() if k == KIND_FRAME]
    assert tail == [r for r in frames if r[0] > middle]
    assert _rows_in(path, "records") == 0
    # a row a chunk of up to CHUNK_RECORDS records and CHUNK_BYTES (here about 200 records)
    total = sum(chunked.values())
    assert total // spool_mod.CHUNK_RECORDS <= rows_before <= total // 100 + 2, (total, rows_before)
    # deleting the older half of the frames emptied the chunks that held them: their rows went
    assert _rows_in(path, "chunks") <= rows_before - (n_frames // 2) // spool_mod.CHUNK_RECORDS + 1

def test_a_chunk_row_reads_back_what_was_written(tmp_path):
    recs = {5: (KIND_FRAME, b"", 1.5), 9: (KIND_FRAME, b"\x00" * 70000, -2.0), 2 ** 40: (KIND_FRAME, b"x", 1e9)}
    row = spool_mod._chunk_row(recs)
    assert row[:5] == (2 ** 40, 3, 70001, -2.0, 1e9)
    assert spool_mod._chunk_records(KIND_FRAME, *row[5:]) == recs
    assert row[5][:8] == (5).to_bytes(8, "little")  # stored little-endian whatever the machine
