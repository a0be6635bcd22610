"""The pipeline with a real SQLite spool: ack after commit, duplicates, a full disk."""
from __future__ import annotations

import asyncio

import cbor2
import pytest

from gateway.errors import AuthError, SpoolError
from gateway.protocol import cose
from gateway.runtime.spool import PRIO_FRAME, PRIO_WINDOW

async def offer(rig, pipe, msg):
    fut = asyncio.get_running_loop().create_future()
    pipe.offer(msg, "test", lambda ack, err: fut.set_result((ack, err)))
    ack, err = await asyncio.wait_for(fut, 5)
    return (cbor2.loads(cose.parse_mac0(ack).verify(rig.key)) if ack else None), err


def test_ack_after_commit_then_duplicate(pipeline_rig):
    rig = pipeline_rig

    async def main():
        _, spool, pipe, task = await rig.make()
        assert await offer(rig, pipe, rig.frame(1)) == ([1, 1, 0], None)
        # the ack came after the commit: the row is there already
        assert len(await spool.read(PRIO_FRAME, 0, 10)) == 1
        assert await offer(rig, pipe, rig.frame(1)) == ([1, 1, 1], None)
        assert len(await spool.read(PRIO_FRAME, 0, 10)) == 1
        with pytest.raises(AuthError):
            pipe.offer(cose.mac0(bytes(range(32)), b"n1", b"\x80", seq=2), "test", lambda *a: None)
        m = pipe.metrics
        assert m.get("headrace_frames_rejected_total", transport="test", reason="replay") == 1
        assert m.get("headrace_frames_rejected_total", transport="test", reason="auth") == 1
        assert m.get("headrace_frames_accepted_total", transport="test") == 1
        # offered together (one commit group): each transport's frames counted, the node's time set
        futs = [asyncio.get_running_loop().create_future() for _ in range(3)]
        for fut, seq, transport in zip(futs, (2, 3, 4), ("test", "other", "test")):
            pipe.offer(rig.frame(seq), transport, lambda ack, err, fut=fut: fut.set_result(err))
        assert await asyncio.gather(*futs) == [None, None, None]
        assert m.get("headrace_frames_accepted_total", transport="test") == 3
        assert m.get("headrace_frames_accepted_total", transport="other") == 1
        assert m.get("headrace_node_last_seen_seconds", node="n1") == pipe.nodes["n1"].last_seen > 0
        await rig.stop(spool, task)
    asyncio.run(main())


def test_replay_window_survives_restart(pipeline_rig):
    rig = pipeline_rig

    async def main():
        _, spool, pipe, task = await rig.make()
        assert (await offer(rig, pipe, rig.frame(5)))[0] == [1, 5, 0]
        await rig.stop(spool, task)
        _, spool, pipe, task = await rig.make()
        assert (await offer(rig, pipe, rig.frame(5)))[0] == [1, 5, 1]
        assert (await offer(rig, pipe, rig.frame(6)))[0] == [1, 6, 0]
        await rig.stop(spool, task)
    asyncio.run(main())


@pytest.mark.parametrize("journal", [0, 1 << 18], ids=["sqlite", "journal"])
def test_full_disk_nothing_acked_nothing_lost(pipeline_rig, journal):
    # Without the journal the commit that needs a new page fails. With it, commits go to the
    # journal's segments (made in full beforehand, they cannot fill) until one has to be written
    # again while what it held waits for the uplink: that moves into SQLite, which is full.
    rig = pipeline_rig

    async def main():
        _, spool, pipe, task = await rig.make(journal_bytes=journal, commit_interval=0)
        assert (await offer(rig, pipe, rig.frame(1)))[0] == [1, 1, 0]
        pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
        assert spool._db.execute(f"PRAGMA max_page_count = {pages}").fetchone() == (pages,)  # no room to grow
        def big(seq):
            return cose.mac0(rig.key, b"n1", cbor2.dumps([{-2: "n1/", -3: 1.7e9, 0: "s", 3: "x" * 900}]), seq=seq)

        stored, seq = 1, 2
        while True:  # fill the free space of the last page, then the next commit needs a page: disk full
            ack, err = await offer(rig, pipe, big(seq))
            if err is not None:
                break
            assert ack == [1, seq, 0]
            stored, seq = stored + 1, seq + 1
            assert seq < (1000 if journal else 20), "the page limit never hit"
        assert ack is None and isinstance(err, SpoolError) and "full" in str(err)
        assert pipe.metrics.get("headrace_spool_errors_total") == 1
        spool._db.execute("PRAGMA max_page_count = 1073741823")  # space again: the node's resend is accepted
        assert (await offer(rig, pipe, big(seq)))[0] == [1, seq, 0]
        assert len(await spool.read(PRIO_FRAME, 0, 10000)) == stored + 1
        await rig.stop(spool, task)
    asyncio.run(main())


def test_windows_closed_into_spool(pipeline_rig):
    rig = pipeline_rig

    async def main():
        _, spool, pipe, task = await rig.make()
        for seq, v in enumerate((1.0, 3.0, 2.0)):
            await offer(rig, pipe, rig.frame(seq, v, t=1_700_000_000.0 + seq))
        assert pipe.close_windows(1_700_000_100.0) == 1
        for _ in range(100):
            rows = await spool.read(PRIO_WINDOW, 0, 10)
            if rows:
                break
            await asyncio.sleep(0.01)
        series, width, start, count, vmin, vmax, vsum, sumsq, first, last, twa, corr = cbor2.loads(rows[0][2])
        assert (series, width, start, count, vmin, vmax, vsum, sumsq, first, last, corr) == \
            ("n1/temp", 10.0, 1_700_000_000.0, 3, 1.0, 3.0, 6.0, 14.0, 1.0, 2.0, 0)
        assert twa == (1.0 * 1 + 3.0 * 1 + 2.0 * 8) / 10
        await rig.stop(spool, task)
    asyncio.run(main())


def test_the_default_commit_window_bounds_commits(pipeline_rig):
    rig = pipeline_rig

    async def main():
        cfg, spool, pipe, task = await rig.make()
        assert cfg.spool.commit_interval == 0.025
        loop = asyncio.get_running_loop()
        acks = []
        start = loop.time()
        for seq in range(1, 61):  # a frame every 2 ms: 500 frames/s
            pipe.offer(rig.frame(seq), "test", lambda ack, err: acks.append((ack is not None, err)))
            await asyncio.sleep(0.002)
        while len(acks) < 60 and loop.time() - start < 10:
            await asyncio.sleep(0.005)
        elapsed = loop.time() - start
        assert acks == [(True, None)] * 60
        commits = pipe.metrics.get("headrace_spool_commits_total")
        # one commit at most per window (and the first at once); without it, one per frame here
        assert 2 <= commits <= elapsed / cfg.spool.commit_interval + 1, (commits, elapsed)
        assert pipe.metrics.get("headrace_payload_bytes_total") == 60 * len(cose.parse_mac0(rig.frame(1)).payload)
        await rig.stop(spool, task)
    asyncio.run(main())


def test_the_commit_window_grows_at_low_rates_within_the_ack_wait(pipeline_rig):
    rig = pipeline_rig

    async def main():
        cfg, spool, pipe, task = await rig.make()
        assert (cfg.spool.commit_interval, cfg.spool.ack_wait) == (0.025, 0.04)
        window = pipe.window
        assert window(0.025, 0.04, 0.002) == pytest.approx(0.036)  # a quick cycle: a longer window
        assert window(0.025, 0.04, 0.010) == 0.025  # a slow one: never below commit_interval
        assert window(0.025, 0.04, 0.001) == 0.025  # and it is remembered for a while
        for _ in range(40):
            w = window(0.025, 0.04, 0.001)
        assert 0.037 < w <= 0.038
        assert window(0.025, 0, 0.001) == 0.025  # ack_wait 0: the window is commit_interval
        assert window(1.0, 0.04, 0.001) == 1.0  # worn flash: a long window stays as set
        assert window(0, 0.04, 0.001) == 0  # no window stays none
        assert window(0.025, 0.04, 0.001, back_to_back=True) == 0.025  # a node in two groups running
        await rig.stop(spool, task)
    asyncio.run(main())


def test_a_node_sending_back_to_back_keeps_the_window_short(pipeline_rig):
    """One node with one request out at a time (CoAP) sends its next frame as soon as the last
    is acked: its frames are in every group, and a window grown at a low rate would slow it to one
    frame a window (the growth itself: the test above)."""
    rig = pipeline_rig

    async def main():
        cfg, spool, pipe, task = await rig.make()
        loop = asyncio.get_running_loop()

        async def stop_and_wait(frames: int) -> None:
            for seq in range(frames):
                done = loop.create_future()
                pipe.offer(rig.frame(seq), "test", lambda ack, err: done.set_result(err))
                assert await asyncio.wait_for(done, 5) is None

        await stop_and_wait(20)
        assert pipe._back_to_back and pipe.last_window == cfg.spool.commit_interval
        await rig.stop(spool, task)
    asyncio.run(main())


def test_node_rate_over_the_last_minute():
    from gateway.runtime.pipeline import NodeStatus
    st = NodeStatus()
    for i in range(30):
        st.count(6000.0 + i)          # 30 frames in minute 100
    assert st.rate(6059.0) == pytest.approx(30 / 60)
    st.count(6060.0)                  # minute 101 starts: the last one weighs what is left of it
    assert st.rate(6090.0) == pytest.approx((1 + 30 * 0.5) / 60)
    assert st.rate(6150.0) == pytest.approx(1 * (1 - 0.5) / 60)
    assert st.rate(6300.0) == 0.0     # silent for minutes


def test_a_full_group_waiting_is_committed_at_once_not_after_the_window(pipeline_rig):
    # A burst of four groups offered in one turn of the loop: the commits after the first three
    # each find a full group waiting and start at once (counted); the window would have capped
    # the rate at commit_max_frames a window. After the fourth, nothing waits: the window again
    rig = pipeline_rig

    async def main():
        cfg, spool, pipe, task = await rig.make(commit_max_frames=64, commit_interval=0.5, ack_wait=0)
        acks = []
        for seq in range(1, 4 * 64 + 1):
            pipe.offer(rig.frame(seq), "test", lambda ack, err: acks.append(err))
        loop = asyncio.get_running_loop()
        started = loop.time()
        while len(acks) < 4 * 64 and loop.time() - started < 30:
            await asyncio.sleep(0.005)
        took = loop.time() - started
        assert acks == [None] * (4 * 64)
        m = pipe.metrics
        assert m.get("headrace_spool_commits_total") == 4
        assert m.get("headrace_spool_commits_behind_total") == 3
        assert took < 2 * cfg.spool.commit_interval, took  # with the window after each: 1.5 s at least
        pipe.offer(rig.frame(4 * 64 + 1), "test", lambda ack, err: acks.append(err))
        while len(acks) < 4 * 64 + 1 and loop.time() - started < 30:
            await asyncio.sleep(0.005)
        assert m.get("headrace_spool_commits_total") == 5 and m.get("headrace_spool_commits_behind_total") == 3
        assert len(await spool.read(PRIO_FRAME, 0, 1000)) == 4 * 64 + 1
        await rig.stop(spool, task)
    asyncio.run(main())
