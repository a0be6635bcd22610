"""Command answers kept for the broker (gateway/runtime/uplink/answers.py): rows in the ledger
until sent, restored in order after a restart, bounded."""
from __future__ import annotations

import json

from gateway.decisions.ledger import Ledger
from gateway.runtime.uplink import answers as mod
from gateway.runtime.uplink.answers import CommandAnswers


def rows_of(ledger):
    _, rows = ledger.take()
    return [("answer", k[1], v) for k, v in rows.items() if v is not None], [k[1] for k, v in rows.items() if v is None]


def test_answers_wait_until_sent_and_come_back_in_order_after_a_restart():
    ledger = Ledger()
    a = CommandAnswers(ledger)
    keys = [a.add("n1", {"id": f"c{i}", "status": "applied"}) for i in range(12)]
    a.sent(keys[3])
    kept, deleted = rows_of(ledger)
    assert len(kept) == 11 and deleted == [f"{keys[3]:012d}"]
    assert json.loads(kept[0][2]) == ["n1", {"id": "c0", "status": "applied"}]
    b = CommandAnswers(Ledger())
    assert b.restore(list(reversed(kept))) == 11
    assert [ans["id"] for _, _, ans in b.waiting()] == [f"c{i}" for i in range(12) if i != 3]  # oldest first
    assert b.add("n2", {"id": "new", "status": "queued"}) == keys[-1] + 1  # numbering goes on
    b.sent(12345)  # an unknown key: nothing


def test_answers_beyond_the_bound_drop_the_oldest(monkeypatch):
    monkeypatch.setattr(mod, "MAX_WAITING", 3)
    ledger = Ledger()
    a = CommandAnswers(ledger)
    for i in range(5):
        a.add("n", {"id": str(i), "status": "failed"})
    assert [ans["id"] for _, _, ans in a.waiting()] == ["2", "3", "4"] and a.dropped == 2
    kept, deleted = rows_of(ledger)
    assert len(kept) == 3 and len(deleted) == 2


def test_a_queued_answer_waits_for_the_commands_commit():
    """`queued` is answered only once the command's row is committed, so a kill -9 between the
    two cannot lose a command the cloud was told is queued; a rejection is answered at once."""
    import asyncio

    from gateway import config
    from gateway.decisions.downlink import Downlink
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.registry import Registry
    from gateway.runtime.uplink.mqtt import MqttUplink

    reg = Registry()
    reg.add("m1", bytes(32))
    ledger = Ledger()
    up = MqttUplink(config.from_dict({}), None, asyncio.Event(), Metrics(), Downlink(reg, ledger=ledger))

    def statuses():
        return [(node, ans["id"], ans["status"]) for _, node, ans in up.answers.waiting()]
    up._command(up.topic_cmd + "m1", json.dumps({"id": "c-1", "cmd": "identify", "args": {"seconds": 5}}).encode())
    assert statuses() == []
    epoch, rows = ledger.take()
    assert json.loads(rows[("commands", "m1")]) == [["c-1", "identify", {"seconds": 5}]]
    assert statuses() == []  # taken, not yet committed
    ledger.committed(epoch)
    assert statuses() == [("m1", "c-1", "queued")]
    up._command(up.topic_cmd + "m1", json.dumps({"id": "c-2", "cmd": "nope"}).encode())
    assert statuses()[1:] == [("m1", "c-2", "rejected")]


def test_a_command_that_is_not_queued_is_answered_after_what_its_submit_marked():
    """A fleet command (a loan) has no queue row: its answer waits for the ledger's open epoch,
    which holds what its submit changed; with nothing waiting for a commit, it goes at once."""
    from gateway.decisions.downlink import Downlink
    from gateway.runtime.registry import Registry

    ledger = Ledger()
    downlink = Downlink(Registry(), ledger=ledger)
    ledger.mark("loan", "gw2/9", lambda: {"resource": "mech2"})  # what Loans.submit marks
    done = []
    downlink.when_durable(lambda: done.append("l-1"))
    assert done == []
    epoch, _rows = ledger.take()
    ledger.committed(epoch)
    assert done == ["l-1"]
    downlink.when_durable(lambda: done.append("l-2"))  # another, with nothing marked
    assert done == ["l-1", "l-2"]
