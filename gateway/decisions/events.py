"""The event sink: alarms, demands and dispatches from the rules and the dispatcher
to the spool (`event` records, uplinked on `events` ahead of bulk data), the
metrics, the log and whoever watches (the demo's terminal view).

An event is a dict with `type` (`alarm`, `demand`, `dispatch`) and `t` (seconds);
docs/protocol.md §8 lists the fields. `emit` never blocks: the body joins the
pipeline's next group commit.
"""
from __future__ import annotations

import collections
import logging

from gateway.runtime.uplink.events import event_body

log = logging.getLogger("headrace.events")


class EventSink:
    def __init__(self, pipeline, metrics, keep: int = 200):
        self.pipeline, self.metrics = pipeline, metrics
        self.recent: collections.deque = collections.deque(maxlen=keep)
        self.listeners: list = []  # callables taking each event, e.g. a terminal view

    def emit(self, event: dict) -> None:
        self.pipeline.add_event(event_body(event))
        self.metrics.inc("headrace_events_total", type=event["type"])
        self.recent.append(event)
        log.info("event %s", event)
        for listener in self.listeners:
            listener(event)
