"""The ledger: what the gateway's decisions know, kept in the spool beside the events.

Open demands and dispatches in progress (the dispatcher), the commands waiting for
each node (the downlink) and the loans are rows of the spool's `decisions` table,
one row a thing: `(kind, key) -> JSON`. A role that changes a thing marks its key
here with a function that renders the row as it is *then* (or None: the row goes).
The pipeline's next group commit takes every marked row and writes it in the same
SQLite transaction as the events the change emitted, so the spool never holds an
event without the state it describes, nor the reverse. At start the service reads
the rows back and hands them to each role's `restore`.

Usage:

    ledger = Ledger()
    ledger.mark("demand", "17", lambda: json_of_demand_17_or_None)
    epoch, rows = ledger.take()        # the pipeline, just before a commit
    ledger.committed(epoch)            # ... after it; or ledger.failed(rows) when it failed
    ledger.durable(made)               # was what was marked at epoch `made` committed?
    ledger.after(made, fn)             # fn() once it is (now if it already is)
    ledger.after_marked(fn)            # fn() once what is marked now is committed

A command the dispatcher queues for a node must not leave before the row that
records it is durable (after a `kill -9` the gateway would not know the node got
it): the downlink holds each command until `durable(epoch it was made at)`.

Caveats: rows are small JSON documents rewritten whole on each change; the dispatcher
changes a demand a handful of times in its life, so this costs a few hundred bytes a
step, in a commit that happens anyway.
"""
from __future__ import annotations

import json
from typing import Callable

Row = Callable[[], object]  # renders the row's JSON value now, or None to delete it


class Ledger:
    def __init__(self):
        self._marked: dict[tuple[str, str], Row] = {}
        self.epoch = 0    # marks made now belong to this epoch; take() closes it
        self._durable = 0  # every epoch below this one is committed
        self._wake = None
        self._after: list[tuple[int, Callable[[], None]]] = []  # (epoch, fn) waiting for its commit

    def route(self, wake) -> None:
        """`wake()` is called on each mark (the pipeline's committer: a change alone is worth a commit)."""
        self._wake = wake

    def mark(self, kind: str, key: str, row: Row) -> int:
        """Note that (kind, key) changed; `row()` renders it at the next commit. Returns the epoch."""
        self._marked[(kind, key)] = row
        if self._wake is not None:
            self._wake()
        return self.epoch

    @property
    def dirty(self) -> bool:
        return bool(self._marked)

    def take(self) -> tuple[int, dict[tuple[str, str], bytes | None]]:
        """Close the current epoch: its rows rendered as JSON bytes (None: delete)."""
        marked, self._marked = self._marked, {}
        epoch = self.epoch
        self.epoch += 1
        rows = {}
        for key, row in marked.items():
            value = row()
            rows[key] = None if value is None else json.dumps(value, separators=(",", ":")).encode()
        return epoch, rows

    def committed(self, epoch: int) -> None:
        self._durable = max(self._durable, epoch + 1)
        if self._after:
            due = [fn for made, fn in self._after if made < self._durable]
            self._after = [(made, fn) for made, fn in self._after if made >= self._durable]
            for fn in due:
                fn()

    def failed(self, rows: dict) -> None:
        """A commit failed: its rows go with the next one, unless marked again since."""
        for key, body in rows.items():
            self._marked.setdefault(key, (lambda b=body: None if b is None else json.loads(b)))
        if rows and self._wake is not None:
            self._wake()

    def durable(self, made: int) -> bool:
        """True once what was marked at epoch `made` is committed (made < 0: restored, durable)."""
        return made < self._durable

    def after_marked(self, fn: Callable[[], None]) -> None:
        """Call `fn()` once what is marked now (the open epoch) is committed; now when nothing is
        marked. For an answer that must not leave before the change it reports is durable."""
        self.after(self.epoch if self._marked else -1, fn)

    def after(self, made: int, fn: Callable[[], None]) -> None:
        """Call `fn()` once what was marked at epoch `made` is committed: now if it is already,
        else right after that commit (e.g. forget a thing only once its successor is on disk)."""
        if self.durable(made):
            fn()
        else:
            self._after.append((made, fn))


def restore_rows(rows, kind: str) -> list[tuple[str, object]]:
    """[(key, value)] of one kind from the spool's rows [(kind, key, body)]."""
    return [(key, json.loads(body)) for k, key, body in rows if k == kind]
