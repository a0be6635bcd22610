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
