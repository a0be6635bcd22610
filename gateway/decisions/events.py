"""The event sink: alarms, demands and dispatches from the rules and the dispatcher
to the spool (`event` records, uplinked on `events` ahead of bulk data), the
metrics, the log and whoever watches (the demo's terminal view).

An event is a dict with `type` (`alarm`, `demand`, `dispatch`) and `t` (seconds);
docs/protocol.md §8 lists the fields. `emit` never blocks: the body joins the
pipeline's next group commit (the Pipeline made with `events=` this sink routes it).
"""
from __future__ import annotations

import collections
import logging

from gateway.runtime.uplink.events import event_body

log = logging.getLogger("headrace.events")


class EventSink:
    def __init__(self, metrics, keep: int = 200):
        self.metrics = metrics
        self.recent: collections.deque = collections.deque(maxlen=keep)
        self.listeners: list = []  # callables taking each event, e.g. a terminal view
        self._commit = None

    def route(self, commit) -> None:
        """Where event bodies go to be spooled: the pipeline's next group commit (it routes
        itself here when it is made with this sink)."""
        self._commit = commit

    def emit(self, event: dict) -> None:
        if self._commit is None:
            raise RuntimeError("EventSink.emit before a pipeline was made with this sink: the event would be lost")
        self._commit(event_body(event))
        self.metrics.inc("headrace_events_total", type=event["type"])
        self.recent.append(event)
        log.info("event %s", event)
        for listener in self.listeners:
            listener(event)
