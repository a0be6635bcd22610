"""The events batch (version 1), documented in docs/protocol.md §8.

Rule and dispatcher events are spooled as `event` records (priority 2: sent
before any window or frame, never dropped by the spool quota) and published on
`headrace/v1/<site>/<gateway>/events` as one CBOR map:

    {"v": 1, "gw": "<gateway>", "site": "<site>", "events": [event, ...]}

Each event is a CBOR map with text keys, its `type` first: `alarm`, `demand` or
`dispatch` (fields in docs/protocol.md). Like data batches, the spooled bodies
are spliced in without re-encoding; `batch.decode` reads the envelope and
`rows()` yields the events.
"""
from __future__ import annotations

from typing import Iterator

import cbor2

from gateway.runtime.uplink.batch import cbor_head

VERSION = 1  # the envelope's version, shared with data batches (batch.decode checks it)


def event_body(event: dict) -> bytes:
    """Spool body of one event."""
    return cbor2.dumps(event)


def encode(gateway: str, site: str, events: list[bytes]) -> bytes:
    """Splice spooled event bodies into one events batch."""
    return b"".join([
        cbor_head(5, 4),
        cbor2.dumps("v"), cbor2.dumps(VERSION),
        cbor2.dumps("gw"), cbor2.dumps(gateway),
        cbor2.dumps("site"), cbor2.dumps(site),
        cbor2.dumps("events"), cbor_head(4, len(events)), *events,
    ])


def rows(batch: dict) -> Iterator[dict]:
    """One dict per event, with the gateway's id, ready for JSON Lines."""
    gw = batch.get("gw")
    evs = batch.get("events", ())
    for event in evs if isinstance(evs, (list, tuple)) else ():
        if isinstance(event, dict):
            yield {"gw": gw, **event}
