"""Command answers that wait for the broker: every answer on `cmd_result/<node>` (queued,
rejected, applied, failed, expired; an update's applied or failed) is kept until the broker
has acknowledged it (PUBACK), durably, so an outcome reached while the broker is away or
just before a `kill -9` reaches the cloud when the uplink is back.

Configuration: none; on with the downlink's ledger (gateway/decisions/ledger.py).

Usage (the MQTT uplink):

    answers = CommandAnswers(ledger)
    answers.restore(rows)                  # at start: the spool's decisions rows
    key = answers.add(node, answer)        # then publish it if connected, and on PUBACK:
    answers.sent(key)
    for key, node, answer in answers.waiting(): ...   # after each (re)connect, oldest first

Each answer is a row of the spool's `decisions` table (kind `answer`, key its number),
written by the pipeline's next group commit (a mark wakes the committer) and deleted the
same way once the broker has it; no answer is dropped by the spool's quota or TTL.

Caveats: delivery is at least once, as for events: an answer published whose PUBACK was
lost (a broken connection, a kill -9) is published again; the cloud keys answers by
(`id`, `status`). An answer made and published in the same instant the gateway dies,
before its row was committed, is published once and not kept (the broker has it).
`MAX_WAITING` bounds what waits: past it the oldest goes, counted by the caller.
"""
from __future__ import annotations

from gateway.decisions.ledger import restore_rows

KIND = "answer"
MAX_WAITING = 10_000  # answers kept for an absent broker (a few hundred bytes each)


class CommandAnswers:
    def __init__(self, ledger=None):
        self.ledger = ledger
        self._waiting: dict[int, tuple[str, dict]] = {}  # number -> (node, answer), in order
        self._next = 1
        self.dropped = 0

    def _key(self, n: int) -> str:
        return f"{n:012d}"  # the rows sort by key: restored oldest first

    def _mark(self, n: int) -> None:
        if self.ledger is not None:
            entry = self._waiting.get(n)
            self.ledger.mark(KIND, self._key(n), lambda: None if entry is None else list(entry))

    def add(self, node: str, answer: dict) -> int:
        """Keep an answer until sent(); returns its key."""
        n = self._next
        self._next += 1
        self._waiting[n] = (node, answer)
        self._mark(n)
        while len(self._waiting) > MAX_WAITING:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._mark(oldest)
            self.dropped += 1
        return n

    def sent(self, key: int) -> None:
        """The broker acknowledged the answer: forget it."""
        if self._waiting.pop(key, None) is not None:
            self._mark(key)

    def waiting(self) -> list[tuple[int, str, dict]]:
        """[(key, node, answer)] not yet acknowledged by the broker, oldest first."""
        return [(n, node, answer) for n, (node, answer) in self._waiting.items()]

    def restore(self, rows) -> int:
        """The answers a previous run left waiting, from the spool's rows [(kind, key, body)]."""
        for key, value in sorted(restore_rows(rows, KIND)):
            try:
                n, (node, answer) = int(key), value
            except (ValueError, TypeError):
                continue
            self._waiting[n] = (node, answer)
            self._next = max(self._next, n + 1)
        return len(self._waiting)
