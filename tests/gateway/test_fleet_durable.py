"""What the gateway's decisions know survives it: demands, dispatches in progress and queued
commands are rows of the spool, committed with the events that changed them, and restored.

The rig wires the real roles as the service does (event sink, ledger, downlink, dispatcher,
pipeline over a real SQLite spool); a "crash" stops the pipeline without its shutdown drain
and closes the spool, which is what the spool holds after a kill -9 at that point."""
from __future__ import annotations

import asyncio
import json

from gateway import config
from gateway.decisions.dispatch import ACCEPTED, ASSIGNED, OPEN, Dispatcher
from gateway.decisions.downlink import Downlink
from gateway.decisions.events import EventSink
from gateway.decisions.ledger import Ledger
from gateway.decisions.rules import RuleEngine
from gateway.runtime.ingest import Ingest
from gateway.runtime.metrics import Metrics
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.registry import Registry
from gateway.runtime.spool import Spool
from gateway.errors import SpoolError

RES = [{"id": "mech1", "capabilities": ["mechanic"], "home": [0.0, 0.0], "node": "m1"},
       {"id": "mech2", "capabilities": ["mechanic"], "home": [50.0, 0.0], "node": "m2"}]


class Gw:
    """The decision roles over one spool, wired as gateway/runtime/service.py wires them."""

    def __init__(self, data_dir, resources=RES):
        self.cfg = config.from_dict({"gateway": {"data_dir": str(data_dir)}, "resources": resources,
                                     "dispatch": {"accept_timeout": 100}})

    async def start(self, run=True):
        reg = Registry()
        for n in ("m1", "m2"):
            reg.add(n, bytes(32))
        self.spool = await Spool.open(self.cfg.spool_path)
        self.metrics = Metrics()
        self.events = EventSink(self.metrics)
        self.ledger = Ledger()
        self.downlink = Downlink(reg, ledger=self.ledger)
        self.dispatcher = Dispatcher(self.cfg, self.events.emit, self.downlink, self.metrics, ledger=self.ledger)
        ingest = Ingest(reg, await self.spool.replay_windows())
        self.rules = RuleEngine(self.cfg.rules, self.cfg.resources, ingest.parser, self.events.emit, self.dispatcher,
                                self.metrics)  # mirrors the resources' nodes: accept, done … move dispatches on
        self.pipe = Pipeline(self.cfg, ingest, self.spool, self.metrics, rules=self.rules, downlink=self.downlink,
                             events=self.events, ledger=self.ledger)
        rows = await self.spool.decisions()
        self.restored = self.dispatcher.restore(rows), self.downlink.restore(rows)
        self.task = asyncio.create_task(self.pipe.run()) if run else None
        return self

    async def committed(self):
        """Wait until everything changed so far is in the spool: the ledger's open epoch when
        something waits for a commit (its rows and the queued events go in the commit that
        closes it), else the last one taken (a commit may still be running), is durable."""
        waiting = self.ledger.dirty or bool(self.pipe._events)
        made = self.ledger.epoch if waiting else self.ledger.epoch - 1

        async def durable():
            while made >= 0 and not self.ledger.durable(made):
                self.pipe.committed.clear()
                await self.pipe.committed.wait()
        await asyncio.wait_for(durable(), 10)

    async def crash(self):
        if self.task is None:
            return await self.spool.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.spool.close()


def run(coro):
    asyncio.run(coro)


def test_a_dispatch_and_its_command_carry_on_after_a_crash(tmp_path):
    async def main():
        gw = await Gw(tmp_path).start()
        a = gw.dispatcher.submit("mechanic", at=(1.0, 0.0), priority=5)
        assert gw.dispatcher.tick(gw.dispatcher.clock()) == 1
        assert gw.dispatcher.demands[a.id].resource == "mech1"
        # the dispatch command waits until the row that records it is committed
        assert gw.downlink.pending("m1")[0].cmd == "dispatch"
        assert gw.downlink.for_ack("m1") == []
        await gw.committed()
        (cmd,) = gw.downlink.for_ack("m1")
        assert (cmd.cmd, cmd.args["demand"]) == ("dispatch", a.id)
        b = gw.dispatcher.submit("mechanic", at=(60.0, 0.0), priority=3)
        c = gw.dispatcher.submit("mechanic", at=(70.0, 0.0), priority=2)
        gw.dispatcher.tick(gw.dispatcher.clock())
        assert gw.dispatcher.demands[b.id].resource == "mech2" and gw.dispatcher.demands[c.id].state == OPEN
        gw.dispatcher.accept(b.id, "mech2")
        await gw.committed()
        await gw.crash()

        gw2 = await Gw(tmp_path).start()
        assert gw2.restored == (3, 2)
        d = gw2.dispatcher.demands
        assert (d[a.id].state, d[a.id].resource, d[a.id].attempt) == (ASSIGNED, "mech1", 1)
        assert (d[b.id].state, d[b.id].resource) == (ACCEPTED, "mech2")
        assert d[c.id].state == OPEN
        assert d[a.id].since == a.since  # its accept timeout runs on, not from the restart
        # nobody is dispatched twice: both mechanics are busy, the open demand waits
        assert gw2.dispatcher.tick(gw2.dispatcher.clock()) == 0
        # the dispatch that was in flight rides again, under its own id (the node answers a repeat
        # without applying it twice); nothing new was queued for it
        assert [(x.id, x.cmd) for x in gw2.downlink.for_ack("m1")] == [(f"dispatch-{a.id}", "dispatch")]
        # the steps go on: done frees mech2, which takes the demand that waited
        gw2.dispatcher.done(b.id, "mech2")
        assert gw2.dispatcher.tick(gw2.dispatcher.clock()) == 1
        assert gw2.dispatcher.demands[c.id].resource == "mech2"
        # ids never repeat across the restart
        assert gw2.dispatcher.submit("mechanic", at=(0, 0)).id > c.id
        await gw2.committed()
        await gw2.crash()

        gw3 = await Gw(tmp_path).start()
        assert set(gw3.dispatcher.demands) == {a.id, c.id} | {max(gw3.dispatcher.demands)}
        assert b.id not in gw3.dispatcher.demands  # done: its row went with its event
        await gw3.crash()
    run(main())


def test_a_rule_with_an_open_demand_does_not_open_another_after_a_restart(tmp_path):
    class Rule:
        name, need, at, zone, priority = "p1-mech", "mechanic", (5.0, 5.0), "", 7

    async def main():
        gw = await Gw(tmp_path).start()
        gw.dispatcher.demand_from_rule(Rule, 0.0, 9.0)
        await gw.committed()
        await gw.crash()
        gw2 = await Gw(tmp_path).start()
        gw2.dispatcher.demand_from_rule(Rule, 0.0, 9.0)  # the condition still holds after the restart
        assert len(gw2.dispatcher.demands) == 1
        await gw2.crash()
    run(main())


def test_a_resource_removed_across_the_restart_gives_its_demand_back(tmp_path):
    async def main():
        gw = await Gw(tmp_path).start()
        a = gw.dispatcher.submit("mechanic", at=(1.0, 0.0))
        gw.dispatcher.tick(gw.dispatcher.clock())
        assert gw.dispatcher.demands[a.id].resource == "mech1"
        await gw.committed()
        await gw.crash()
        gw2 = await Gw(tmp_path, resources=RES[1:]).start()
        d = gw2.dispatcher.demands[a.id]
        assert d.state == OPEN and "mech1" in d.excluded
        assert gw2.dispatcher.tick(gw2.dispatcher.clock()) == 1 and d.resource == "mech2"
        await gw2.committed()
        await gw2.crash()
    run(main())


def test_a_failed_commit_keeps_the_rows_for_the_next_one(tmp_path):
    async def main():
        gw = await Gw(tmp_path).start()
        real = gw.spool._commit
        fails = []

        def failing(records, replay, decisions=None):
            if not fails:
                fails.append(decisions)
                raise SpoolError("disk full (test)")
            return real(records, replay, decisions)
        gw.spool._commit = failing
        a = gw.dispatcher.submit("mechanic", at=(1.0, 0.0))
        gw.dispatcher.tick(gw.dispatcher.clock())
        await gw.committed()
        assert fails and ("demand", str(a.id)) in fails[0]
        assert [c.cmd for c in gw.downlink.for_ack("m1")] == ["dispatch"]  # durable after the retry
        await gw.crash()
        gw2 = await Gw(tmp_path).start()
        assert gw2.dispatcher.demands[a.id].resource == "mech1"
        await gw2.crash()
    run(main())


def test_ledger_epochs():
    ledger = Ledger()
    woken = []
    ledger.route(lambda: woken.append(1))
    made = ledger.mark("demand", "1", lambda: {"x": 1})
    assert woken and not ledger.durable(made) and ledger.durable(-1)
    epoch, rows = ledger.take()
    assert rows == {("demand", "1"): b'{"x":1}'} and not ledger.durable(made)
    ledger.failed(rows)
    assert ledger.dirty
    epoch2, rows2 = ledger.take()
    assert rows2 == rows and epoch2 == epoch + 1
    ledger.committed(epoch2)
    assert ledger.durable(made)
    done = []
    ledger.after_marked(lambda: done.append("none marked"))  # nothing marked: at once
    ledger.mark("demand", "2", lambda: {"x": 2})
    ledger.after_marked(lambda: done.append("marked"))
    assert done == ["none marked"]
    epoch3, _rows = ledger.take()
    assert done == ["none marked"]  # taken, not yet committed
    ledger.committed(epoch3)
    assert done == ["none marked", "marked"]


def test_a_loan_and_a_borrowed_dispatch_carry_on_after_a_crash(tmp_path):
    from gateway.decisions.loans import Loans

    async def main():
        gw = await Gw(tmp_path).start()
        gw.dispatcher.fleet = config.from_dict({"fleet": {"enabled": True}}).fleet
        loans = Loans(gw.dispatcher, gw.events.emit, gw.downlink)
        loans.submit(json.dumps({"id": "l-1", "cmd": "lend", "args": {
            "resource": "mech2", "gateway": "gw2", "demand": 9, "need": "mechanic", "at": [1, 2],
            "priority": 5}}).encode())
        b = gw.dispatcher.submit("mechanic", at=(1.0, 0.0))
        loans.submit(json.dumps({"id": "b-1", "cmd": "borrowed", "args": {
            "demand": b.id, "gateway": "gw3", "resource": "m9"}}).encode())
        await gw.committed()
        await gw.crash()
        gw2 = await Gw(tmp_path).start()
        lent = [d for d in gw2.dispatcher.demands.values() if d.loan]
        assert [(d.loan, d.resource, d.state) for d in lent] == [("gw2/9", "mech2", ASSIGNED)]
        assert gw2.dispatcher.resources["mech2"].demand == lent[0].id  # still on loan: not given away here
        borrowed = gw2.dispatcher.demands[b.id]
        assert (borrowed.state, borrowed.resource, borrowed.remote) == (ASSIGNED, "gw3/m9", "gw3")
        assert gw2.dispatcher.tick(gw2.dispatcher.clock()) == 0
        await gw2.crash()
    run(main())


def test_a_nodes_report_is_acked_only_once_its_effect_is_durable(tmp_path):
    """m1 reports `done`: when its ack comes, the demand's row is already gone from the spool,
    so a kill -9 right after the ack cannot bring back a dispatch the node finished."""
    import sqlite3
    import time

    import cbor2

    from gateway.protocol import cose

    async def main():
        gw = await Gw(tmp_path).start()
        a = gw.dispatcher.submit("mechanic", at=(1.0, 0.0))
        gw.dispatcher.tick(gw.dispatcher.clock())
        gw.dispatcher.accept(a.id, "mech1")
        await gw.committed()
        frame = cose.mac0(bytes(32), b"m1", cbor2.dumps([{-2: "m1/", -3: time.time(), 0: "done", 2: float(a.id)}]),
                          seq=1)
        acked = asyncio.get_running_loop().create_future()

        def on_ack(ack, err):
            with sqlite3.connect(gw.cfg.spool_path) as db:  # what a restart would read, at ack time
                rows = db.execute("SELECT key FROM decisions WHERE kind = 'demand'").fetchall()
            acked.set_result((ack, err, rows))
        gw.pipe.offer(frame, "test", on_ack)
        ack, err, rows = await asyncio.wait_for(acked, 5)
        assert err is None and ack is not None
        assert a.id not in gw.dispatcher.demands and rows == []
        await gw.crash()
    run(main())


def test_a_demand_posted_over_http_is_answered_once_it_is_in_the_spool(tmp_path, monkeypatch):
    """POST /demands answers after the commit that holds the demand: while the pipeline
    commits nothing, no answer (503 after DURABLE_WAIT); once it commits, 201, and the
    demand is in the spool, so a kill -9 right after the answer loses nothing."""
    from gateway.runtime import http
    from tests.gateway.test_http_demands import post

    async def main():
        gw = await Gw(tmp_path).start(run=False)  # no commits yet
        server = http.StatusServer(config.HttpSection(port=0), gw)
        await server.start()
        url = f"http://127.0.0.1:{server.port}/demands"
        try:
            monkeypatch.setattr(http, "DURABLE_WAIT", 0.3)
            code, err = await asyncio.to_thread(post, url, b'{"need": "mechanic", "at": [1, 2]}')
            assert code == 503 and "not yet in the spool" in err["error"] and err["made"]["state"] == "open"
            first = err["made"]["id"]
            monkeypatch.setattr(http, "DURABLE_WAIT", 10.0)
            asked = asyncio.create_task(asyncio.to_thread(post, url, b'{"need": "mechanic", "at": [3, 4]}'))
            await asyncio.sleep(0.3)
            assert not asked.done()  # held: nothing committed yet
            gw.task = asyncio.create_task(gw.pipe.run())
            code, d = await asyncio.wait_for(asked, 10)
            assert code == 201 and d["state"] == "open"
            kept = {key for kind, key, _body in await gw.spool.decisions() if kind == "demand"}
            assert {str(first), str(d["id"])} <= kept
            # nothing to commit (a refused demand): answered at once
            code, err = await asyncio.to_thread(post, url, b'{"need": "welder", "at": [1, 2]}')
            assert code == 422
        finally:
            await server.stop()
            await gw.crash()
    run(main())
