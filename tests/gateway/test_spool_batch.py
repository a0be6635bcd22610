import asyncio
import subprocess
import sys

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from gateway.runtime.spool import KIND_FRAME, KIND_WINDOW, PRIO_FRAME, PRIO_WINDOW, Spool
from gateway.runtime.uplink import batch


def run(coro):
    return asyncio.run(coro)


def test_commit_read_delete_and_replay(tmp_path):
    async def main():
        s = await Spool.open(tmp_path / "s.sqlite")
        body = batch.frame_body("n1", 4, 1.7e9, cbor2.dumps([{0: "n1/temp", 2: 20.0, 6: 1.5}]))
        await s.commit([(KIND_FRAME, body), (KIND_WINDOW, b"\x80")], {"n1": (4, 2**63 + 1)})
        assert await s.depth() == (2, len(body) + 1)
        rows = await s.read(PRIO_FRAME, 0, 10)
        assert [r[1:] for r in rows] == [(KIND_FRAME, body)]
        assert len(await s.read(PRIO_WINDOW, 0, 10)) == 1
        assert await s.replay_windows() == {"n1": (4, 2**63 + 1)}
        await s.delete([rows[0][0]])
        assert (await s.depth())[0] == 1
        assert await s.integrity_check() == "ok"
        await s.close()
    run(main())


def test_survives_kill_9(tmp_path):
    # a child commits then dies by SIGKILL before any clean close; the data is there
    code = f"""
import asyncio, os, signal, sys
from gateway.runtime.spool import Spool, KIND_FRAME
async def main():
    s = await Spool.open({str(tmp_path / 'k.sqlite')!r})
    for i in range(50):
        await s.commit([(KIND_FRAME, bytes([i]))], {{"n": (i, 1)}})
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert p.returncode == -9

    async def check():
        s = await Spool.open(tmp_path / "k.sqlite")
        assert (await s.depth())[0] == 50
        assert await s.replay_windows() == {"n": (49, 1)}
        assert await s.integrity_check() == "ok"
        await s.close()
    run(check())


def test_batch_round_trip_and_rows():
    f = batch.frame_body("pump1", 7, 1700000000.0, cbor2.dumps([{-2: "pump1/", 0: "temp", 2: 21.5}, {0: "ok", 4: True}]))
    w = batch.window_body("pump1/temp", 10.0, 1700000000.0, 3, 1.0, 3.0, 6.0, 14.0, 1.0, 3.0, 2.5, 0)
    data = batch.encode("gw1", "site1", [f] * 30, [w])
    assert cbor2.loads(data)["v"] == 2
    rows = list(batch.rows(batch.decode(data)))
    assert rows[0] == {"gw": "gw1", "node": "pump1", "seq": 7, "sensor": "temp", "t": 1700000000.0, "v": 21.5}
    assert len(rows) == 61
    assert rows[-1]["mean"] == 2.0 and rows[-1]["window"] == {"start": 1700000000.0, "width": 10.0}


def test_batch_gives_every_frame_back_exactly_and_smaller_than_the_packs(sample_frames):
    frames = sample_frames()
    bodies = [batch.frame_body(*f) for f in frames]
    data = batch.encode("gw1", "site1", bodies, [])
    got = list(batch.readings(batch.decode(data)))
    assert [(g[0], g[1], g[2]) for g in got] == [(f[0], f[1], f[2]) for f in frames]
    for (node, seq, received, senml), (_, _, _, readings) in zip(frames, got):
        assert readings == batch.frame_readings(node, received, senml)  # values and times exact, same order
    assert batch.frame_ids(batch.decode(data)) == [(f[0], f[1]) for f in frames]
    spliced = sum(len(b) for b in bodies)
    assert len(data) * 4 < spliced, (len(data), spliced)


def test_a_batch_of_many_nodes_one_frame_each_is_small():
    frames = []
    for i in range(500):  # one frame from each of 500 nodes, as a soak with 1000 nodes makes
        recs = [{-2: f"n{i:03d}/", -3: 1.7e9 + i, 0: "temp", 2: 20 + (i % 40) / 8}]
        recs += [{0: ["temp", "vib"][j % 2], 6: j / 8, 2: (i * 7 + j) % 97 / 4} for j in range(1, 8)]
        frames.append((f"n{i:03d}", i, 1.7e9 + i + 0.01, cbor2.dumps(recs)))
    bodies = [batch.frame_body(*f) for f in frames]
    data = batch.encode("gw1", "site1", bodies, [])
    assert len(data) * 3 < sum(len(b) for b in bodies)
    assert [r[3] for r in batch.readings(batch.decode(data))] == [batch.frame_readings(f[0], f[2], f[3]) for f in frames]


def test_version_1_batches_still_read(sample_frames):
    node, seq, received, senml = sample_frames(1)[0]
    v1 = cbor2.dumps({"v": 1, "gw": "g", "site": "s", "frames": [[node, seq, received, senml]], "windows": []})
    got = list(batch.readings(batch.decode(v1)))
    assert got == [(node, seq, received, batch.frame_readings(node, received, senml))]
    assert batch.frame_ids(batch.decode(v1)) == [(node, seq)]


def test_inconsistent_batch_is_a_batch_error(sample_frames):
    data = batch.decode(batch.encode("gw1", "site1", [batch.frame_body(*f) for f in sample_frames(5)], []))
    data["patterns"][0] = data["patterns"][0] + ["temp"]  # a pattern that takes more than its series holds
    with pytest.raises(batch.BatchError, match="inconsistent"):
        list(batch.readings(data))
    data = batch.decode(batch.encode("gw1", "site1", [batch.frame_body(*f) for f in sample_frames(5)], []))
    data["sensors"][0][1] = data["sensors"][0][1][:-3]  # a stream cut short
    with pytest.raises(batch.BatchError, match="inconsistent"):
        list(batch.readings(data))
    data = batch.decode(batch.encode("gw1", "site1", [batch.frame_body(*f) for f in sample_frames(5)], []))
    data["sensors"][0][2][0][1] += 1  # counts that do not add up
    with pytest.raises(batch.BatchError, match="inconsistent"):
        list(batch.readings(data))


@pytest.mark.parametrize("data, msg", [(b"\xff", "not CBOR"), (cbor2.dumps([1]), "not a headrace batch"),
                                       (cbor2.dumps({"v": 99}), "version 99")])
def test_batch_errors(data, msg):
    with pytest.raises(batch.BatchError, match=msg):
        batch.decode(data)


def test_overflow_policy_ttl_then_quota_never_events(tmp_path):
    from gateway.runtime.spool import KIND_EVENT, PRIO_EVENT

    async def main():
        s = await Spool.open(tmp_path / "q.sqlite")
        await s.commit([(KIND_EVENT, b"e" * 100)] * 5 + [(KIND_WINDOW, b"w" * 100)] * 10
                       + [(KIND_FRAME, b"f" * 100)] * 30, {})
        assert s.stats() == {"event": {"records": 5, "bytes": 500}, "window": {"records": 10, "bytes": 1000},
                             "frame": {"records": 30, "bytes": 3000}}
        assert await s.enforce(10_000, {KIND_FRAME: 0, KIND_WINDOW: 0, KIND_EVENT: 0}) == {}
        dropped = await s.enforce(2_000, {KIND_FRAME: 0, KIND_WINDOW: 0, KIND_EVENT: 0})
        assert dropped == {("frame", "quota"): 25}  # the oldest, just enough to get under the quota
        assert s.stats()["event"]["records"] == 5 and s.stats()["window"]["records"] == 10
        dropped = await s.enforce(200, {KIND_FRAME: 0, KIND_WINDOW: 0, KIND_EVENT: 0})
        assert dropped == {("frame", "quota"): 5, ("window", "quota"): 10}
        assert s.stats()["event"] == {"records": 5, "bytes": 500}  # events are never dropped
        # TTL: everything written "now" is younger than 1 hour, older than -1 s
        await s.commit([(KIND_FRAME, b"x")] * 3, {})
        assert await s.enforce(10**9, {KIND_FRAME: 3600, KIND_WINDOW: 0, KIND_EVENT: 0}) == {}
        await asyncio.sleep(0.05)
        assert await s.enforce(10**9, {KIND_FRAME: 0.01, KIND_WINDOW: 0, KIND_EVENT: 0}) == {("frame", "ttl"): 3}
        # the counters stay exact across a reopen
        await s.close()
        s = await Spool.open(tmp_path / "q.sqlite")
        assert s.stats()["event"] == {"records": 5, "bytes": 500} and await s.depth() == (5, 500)
        assert len(await s.read(PRIO_EVENT, 0, 10)) == 5
        await s.close()
    run(main())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_damage_to_a_batch_is_a_batch_error(sample_frames, data):
    """Parts replaced by other CBOR values, or cut: rows() gives rows or a BatchError, nothing else."""
    frames = sample_frames(3)
    w = batch.window_body("pump1/temp", 10.0, 1700000000.0, 3, 1.0, 3.0, 6.0, 14.0, 1.0, 3.0, 2.5, 0)
    good = batch.decode(batch.encode("gw1", "site1", [batch.frame_body(*f) for f in frames], [w]))
    key = data.draw(st.sampled_from(sorted(good)))
    junk = st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.text(max_size=5),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    bad = dict(good)
    if isinstance(good[key], list) and good[key] and data.draw(st.booleans()):
        part = list(good[key])
        part[data.draw(st.integers(0, len(part) - 1))] = data.draw(junk)
        bad[key] = part
    else:
        bad[key] = data.draw(junk)
    try:
        rows = list(batch.rows(bad))
    except batch.BatchError:
        return
    for row in rows:  # or what it gives is readings and windows of the right kinds, never junk as data
        assert type(row["node"]) is str and type(row["sensor"]) is str, row
        if "window" in row:
            assert all(_number(row[k]) for k in ("count", "min", "max", "mean", "first", "last", "sumsq", "twa")), row
            assert all(_number(v) for v in row["window"].values()), row
        else:
            assert type(row["seq"]) is int and _number(row["t"]), row
            assert isinstance(row["v"], (int, float, str, bool)), row


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@pytest.mark.parametrize("table,value", [("nodes", ["pump1", None, "tank3"]), ("nodes", b"HRZ"),
                                         ("patterns", [["temp"], 7]), ("patterns", [["temp", 3]])])
def test_a_damaged_name_table_is_a_batch_error(sample_frames, table, value):
    # found by the test above once it took only readings of the right kinds: a node named
    # None or 72 came out as data
    good = batch.decode(batch.encode("gw1", "site1", [batch.frame_body(*f) for f in sample_frames(3)], []))
    bad = {**good, table: value}
    with pytest.raises(batch.BatchError, match="table"):
        list(batch.rows(bad))
    with pytest.raises(batch.BatchError, match="table"):
        batch.frame_ids({**good, "nodes": [None, 72, "x"]})
