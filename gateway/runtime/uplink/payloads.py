"""What a consumer meets on a gateway's topics, recognised from the bytes alone.

    kind, rows = payloads.read(data, schemas=None)

`kind` is `data` (a batch, docs/protocol.md §7), `events` (§8), `schema` (the
retained schema that version 3 data batches refer to, §7) or `state` (the
retained JSON birth, death or periodic state on `state`, and the JSON answers on
`cmd_result/<node>`); `rows` yields one dict per reading, window, event, schema
or state. A version 3 data batch needs its schema: `schemas` is a
`batch.Decoder` fed the schema messages (or what `batch.decode` takes); without
it, `batch.UnknownSchema`.
A payload that is none of these raises `batch.BatchError` saying what it is and
which kinds are read; a damaged batch raises it while its rows are read (those
before the damage are yielded). `headrace decode` prints these rows as JSON Lines.
"""
from __future__ import annotations

import json
from typing import Iterator

from gateway.runtime.uplink import batch, events

KINDS = ("data", "events", "schema", "state")


def kind_of(data: bytes) -> str:
    """The kind of payload `data` is; BatchError when it is none of KINDS."""
    head = data.lstrip()[:1]
    if head == b"{":  # JSON: the state topic and command results; no batch starts with 0x7b (a long text)
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise BatchError(f"starts like a JSON state but is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BatchError("a JSON state must be an object")
        return "state"
    try:
        obj = batch.decode(data)
    except batch.UnknownSchema:
        return "data"
    if batch.is_schema(obj):
        return "schema"
    return "events" if "events" in obj else "data"


def read(data: bytes, schemas=None) -> tuple[str, Iterator[dict]]:
    """(kind, rows) of one payload from any of a gateway's topics."""
    kind = kind_of(data)
    if kind == "state":
        return kind, iter([{"state": json.loads(data)}])
    if kind == "schema":
        obj = batch.decode(data)
        return kind, iter([{"gw": obj.get("gw"), "site": obj.get("site"), "schema": obj["lineage"],
                            "nodes": obj["nodes"], "patterns": obj["patterns"]}])
    obj = batch.decode(data, schemas=schemas)
    return kind, (events.rows(obj) if kind == "events" else batch.rows(obj))


BatchError = batch.BatchError
