"""Presence in the mirror (sink/presence.py): gateways, nodes and resources online or offline
from state messages (birth, Last Will, clean stop) and from silence. `presence_story` runs on
SQLite here and on PostgreSQL in hil_tests/test_cloud_postgres.py: the same rules on both."""
from __future__ import annotations

import asyncio
import json
import time

from gateway.runtime.uplink import batch
from sink.config import from_dict
from sink.decode import Decoder
from sink.service import Sink

from .conftest import ListSource, events_batch, frame

S = "headrace/v1/s1/gw1/"


def state(online: bool, at: float | None, **extra) -> bytes:
    body = {"online": online, **extra}
    if at is not None:
        body["at"] = at
    return json.dumps(body).encode()


def presence_story(store) -> None:
    """One gateway with two nodes (one heard lately, one long silent) and three resources (on
    each node, and on none), through silence, a new birth, a clean stop and the Last Will."""
    dec = Decoder()
    now = time.time()

    def write(kind: str, payload: bytes):
        return store.write([dec.decode(S + kind, payload)])

    def table(name: str, key: str):
        return {r[0]: tuple(r[1:]) for r in store.query(f"SELECT {key}, online, why FROM {name} ORDER BY 1")}

    write("state", state(True, now - 10, since=now - 100))
    write("data", batch.encode("gw1", "s1", [frame("n1", 1, [1.0, 2.0], now - 5),
                                             frame("n2", 1, [3.0, 4.0], now - 1000)], []))
    evs = [{"type": "resource", "id": rid, "capabilities": ["mechanic"], "at": [0, 0], "speed": 1.0, "free": True,
            "t": now - 4, **({"node": node} if node else {})}
           for rid, node in (("m1", "n1"), ("m2", "n2"), ("m3", None))]
    write("events", events_batch("gw1", evs))
    assert table("gateways", "gateway") == {"gw1": (True, "state")}
    # a node appears online (heard within node_timeout) or not at once; resources at the next sweep
    assert table("nodes", "node") == {"n1": (True, "data"), "n2": (False, "silent")}
    store.sweep(now)
    assert table("resources", "resource") == {"m1": (True, "online"), "m2": (False, "node"),
                                              "m3": (True, "online")}
    assert store.query("SELECT heard, node, free FROM nodes JOIN resources USING (site, gateway, node) "
                       "WHERE resource = 'm1'") == [(now - 5 + 0.5, "n1", True)]
    # the gateway falls silent (no state for gateway_timeout): it and everything behind it is offline
    later = now + 400
    assert store.sweep(later) == 1 + 1 + 2  # the gateway, n1 (n2 was already), m1 and m3 (m2 was already)
    assert table("gateways", "gateway") == {"gw1": (False, "silent")}
    # (what was offline already keeps the reason it went)
    assert table("nodes", "node") == {"n1": (False, "gateway"), "n2": (False, "silent")}
    assert table("resources", "resource") == {"m1": (False, "gateway"), "m2": (False, "node"),
                                              "m3": (False, "gateway")}
    assert store.sweep(later) == 0  # idempotent: a second sweep (another worker's) changes nothing
    # a new birth brings it back; what runs behind it follows (n1 heard lately as the sink's clock goes)
    write("state", state(True, later, since=later))
    assert table("gateways", "gateway") == {"gw1": (True, "state")}
    assert table("nodes", "node") == {"n1": (True, "data"), "n2": (False, "silent")}
    assert table("resources", "resource")["m1"] == (True, "online")
    (changed,), = store.query("SELECT changed FROM gateways")
    assert changed == later
    write("state", state(True, later + 60))  # still online: `changed` stays the time it came back
    assert store.query("SELECT changed FROM gateways") == [(later,)]
    # a clean stop: offline at once, with what runs behind it
    write("state", state(False, later + 61, clean=True))
    assert table("gateways", "gateway") == {"gw1": (False, "clean")}
    assert table("nodes", "node")["n1"] == (False, "gateway")
    assert table("resources", "resource")["m3"] == (False, "gateway")
    # an older state message delivered late changes nothing
    write("state", state(True, now))
    assert table("gateways", "gateway") == {"gw1": (False, "clean")}


def test_presence_story(sqlite_store):
    presence_story(sqlite_store)
    rows = sqlite_store.query("SELECT online FROM nodes")
    assert {r[0] for r in rows} == {0}  # SQLite's booleans are 0 and 1


def test_the_last_will_and_a_gateway_that_never_spoke(sqlite_store):
    dec = Decoder()
    now = time.time()
    sqlite_store.write([dec.decode(S + "state", state(True, now - 1))])
    sqlite_store.write([dec.decode(S + "state", state(False, None))])  # the broker's Last Will: no `at`
    assert sqlite_store.query("SELECT online, why FROM gateways") == [(0, "will")]
    # nodes of a gateway with no state message at all: judged by their own silence only
    sqlite_store.write([dec.decode("headrace/v1/s1/gw2/data",
                                   batch.encode("gw2", "s1", [frame("n9", 1, [1.0], now - 2)], []))])
    sqlite_store.sweep(now)
    assert sqlite_store.query("SELECT node, online, why FROM nodes WHERE gateway = 'gw2'") == [("n9", 1, "data")]
    sqlite_store.sweep(now + 301)
    assert sqlite_store.query("SELECT node, online, why FROM nodes WHERE gateway = 'gw2'") == [("n9", 0, "silent")]


def test_the_worker_sweeps_for_silence(tmp_path):
    """`headrace sink run`'s loop sweeps every presence_interval: a gateway whose state messages
    stop is marked offline (`silent`) once gateway_timeout passes, with no message to say so."""
    src = ListSource([(1, S + "state", state(True, time.time()))])
    cfg = from_dict({"sink": {"sqlite": str(tmp_path / "cloud.sqlite"), "gateway_timeout": 1,
                              "presence_interval": 0.1}})
    sink = Sink(cfg, source=src)  # opens the store with the configured timeouts

    async def main():
        task = asyncio.create_task(sink.run())
        try:
            for _ in range(150):
                await asyncio.sleep(0.05)
                if sink.store is not None and sink.store.query("SELECT why FROM gateways") == [("silent",)]:
                    return
            raise AssertionError(f"not marked silent: {sink.store.query('SELECT online, why FROM gateways')}")
        finally:
            sink.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    sink.store.close()
    assert src.acked == [1] and sink.metrics.total("headrace_sink_presence_changes_total") >= 1


def test_tables_of_an_older_sink_get_the_presence_columns(tmp_path):
    import sqlite3

    from sink.store import SqliteStore

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE nodes (site text NOT NULL, gateway text NOT NULL, node text NOT NULL, "
               "last_seen double precision, last_seq bigint, last_values TEXT NOT NULL, PRIMARY KEY (site, gateway, node))")
    db.execute("INSERT INTO nodes VALUES ('s1', 'gw1', 'old', 1.0, 1, '{}')")
    db.commit()
    db.close()
    store = SqliteStore(str(path))
    try:
        store.sweep(time.time())
        assert store.query("SELECT node, online, why FROM nodes") == [("old", 0, "silent")]
    finally:
        store.close()


def test_presence_settings_are_checked():
    import pytest

    from gateway.errors import ConfigError

    for key, bad in (("gateway_timeout", 0), ("node_timeout", -5), ("presence_interval", 7200)):
        with pytest.raises(ConfigError) as e:
            from_dict({"sink": {key: bad}})
        assert e.value.key == f"[sink] {key}"
    assert from_dict({"sink": {"node_timeout": 60}}).sink.node_timeout == 60.0
