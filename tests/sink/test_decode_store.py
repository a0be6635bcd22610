"""The sink's decode step and the SQLite store: exactly once at rest, dead letters, the mirror."""
from __future__ import annotations

import asyncio
import json

import cbor2
import pytest

from gateway.runtime.uplink import batch
from sink.config import from_dict
from sink.decode import DeadLetter, Decoder, split_topic
from sink.service import Sink
from sink.store import Dead

from .conftest import T0, ListSource, data_batch, events_batch


def test_topics_and_subjects():
    assert split_topic("headrace/v1/s1/gw1/data") == ("s1", "gw1", "data")
    assert split_topic("headrace.v1.s1.gw1.events") == ("s1", "gw1", "events")
    for bad in ("headrace/v1/s1/gw1/cmd/n1", "other/v1/s/g/data", "headrace/v1/s1/gw1/nope"):
        with pytest.raises(DeadLetter) as e:
            split_topic(bad)
        assert e.value.reason == "topic"


def test_readings_are_what_headrace_decode_prints():
    payload = data_batch("gw1", [("n1", 1), ("n2", 1), ("n1", 2)])
    d = Decoder().decode("headrace/v1/s1/gw1/data", payload)
    assert d.frames == 3 and len(d.readings) == 12
    expected = list(batch.rows(batch.decode(payload)))
    got = [{"gw": r[1], "node": r[2], "seq": r[3], "sensor": r[5], "t": r[6], "v": r[7]} for r in d.readings]
    assert got == expected
    assert [r[4] for r in d.readings[:4]] == [0, 1, 2, 3]  # index in frame
    assert d.nodes["n1"][1] == 2  # the mirror's last seq of n1


def test_version_3_batches_after_their_schema_message():
    from .conftest import frame
    schema = batch.Schema("gw1", "s1")
    bodies = [frame("n1", seq, [1.5, 2.25, 3.0, 4.0], T0 + seq) for seq in (1, 2)]
    payload = batch.encode("gw1", "s1", bodies, [], schema)
    dec = Decoder()
    with pytest.raises(DeadLetter) as e:  # before the schema: a dead letter, never wrong rows
        dec.decode("headrace/v1/s1/gw1/data", payload)
    assert e.value.reason == "schema" and "schema" in e.value.detail
    assert dec.decode("headrace/v1/s1/gw1/schema", schema.message()).kind == "schema"
    d = dec.decode("headrace/v1/s1/gw1/data", payload)
    assert d.frames == 2 and [r[7] for r in d.readings[:4]] == [1.5, 2.25, 3.0, 4.0]
    assert d.readings == Decoder().decode("headrace/v1/s1/gw1/data",
                                          batch.encode("gw1", "s1", bodies, [])).readings  # as version 2


def test_exactly_once_at_rest(sqlite_store):
    dec = Decoder()
    a = data_batch("gw1", [("n1", s) for s in range(1, 6)])
    # the gateway sends again after a crash, grouped differently: frames 4-7
    b = data_batch("gw1", [("n1", s) for s in range(4, 8)])
    w1 = sqlite_store.write([dec.decode("headrace/v1/s1/gw1/data", a)])
    assert (w1.readings, w1.duplicates) == (20, 0)
    w2 = sqlite_store.write([dec.decode("headrace/v1/s1/gw1/data", a)])  # redelivered
    assert (w2.readings, w2.duplicates) == (0, 20)
    w3 = sqlite_store.write([dec.decode("headrace/v1/s1/gw1/data", b)])
    assert (w3.readings, w3.duplicates) == (8, 8)
    # the same node name behind another gateway is another node
    w4 = sqlite_store.write([dec.decode("headrace/v1/s1/gw2/data", a)])
    assert w4.readings == 20
    n = sqlite_store.query("SELECT count(*), count(DISTINCT gateway || node || seq || '/' || idx) FROM readings")
    assert n == [(48, 48)]
    assert sqlite_store.query("SELECT max(seq) FROM readings WHERE gateway = 'gw1'") == [(7,)]


def test_values_and_times_exact(sqlite_store):
    payload = data_batch("gw1", [("n1", 9)], seed=5)
    sqlite_store.write([Decoder().decode("headrace/v1/s1/gw1/data", payload)])
    want = [(r["sensor"], r["t"], r["v"]) for r in batch.rows(batch.decode(payload))]
    got = sqlite_store.query("SELECT sensor, t, v FROM readings ORDER BY idx")
    assert got == want


def test_windows_and_events_once(sqlite_store):
    w = batch.window_body("n1/temp", 10.0, T0, 3, 1.0, 3.0, 6.0, 14.0, 1.0, 3.0, 2.5, 0)
    payload = data_batch("gw1", [("n1", 1)], windows=[w])
    dec = Decoder()
    evs = [{"type": "alarm", "rule": "hot", "state": "raised", "t": T0, "value": 7.5, "severity": "warning",
            "node": "n1"},
           {"type": "demand", "id": 3, "need": "mechanic", "priority": 5, "at": [1, 2], "source": "api", "t": T0},
           {"type": "dispatch", "demand": 3, "need": "mechanic", "resource": "mech1", "state": "assigned",
            "t": T0 + 1, "attempt": 1, "eta": 4.0}]
    ev = events_batch("gw1", evs)
    for _ in range(2):
        sqlite_store.write([dec.decode("headrace/v1/s1/gw1/data", payload), dec.decode("headrace/v1/s1/gw1/events", ev)])
    assert sqlite_store.query("SELECT node, sensor, count, min, max, sum, twa, correction FROM windows") == \
        [("n1", "temp", 3, 1.0, 3.0, 6.0, 2.5, 0)]
    rows = sqlite_store.query("SELECT type, key, body FROM events ORDER BY type")
    assert [(t, k) for t, k, _ in rows] == [("alarm", f"hot|raised|{T0!r}"), ("demand", "3"),
                                             ("dispatch", "3|assigned|1")]
    assert json.loads(rows[0][2])["value"] == 7.5
    stale = events_batch("gw1", [{"type": "alarm", "rule": "quiet", "state": "raised", "t": T0, "value": float("nan"),
                                  "severity": "info", "node": "n1"}])
    body = dec.decode("headrace/v1/s1/gw1/events", stale).events[0][6]
    assert json.loads(body)["value"] is None  # NaN is not JSON (jsonb refuses it)
    assert sqlite_store.query("SELECT resource, demand, state FROM resources") == [("mech1", 3, "assigned")]
    # every event has a time (the events tables are partitioned by it): one without is a dead letter
    with pytest.raises(DeadLetter) as e:
        dec.decode("headrace/v1/s1/gw1/events", events_batch("gw1", [{"type": "demand", "id": 4, "need": "x"}]))
    assert e.value.reason == "undecodable" and "without a time" in e.value.detail


def test_mirror_of_gateways_and_nodes(sqlite_store):
    dec = Decoder()
    born = json.dumps({"online": True, "since": T0, "at": T0 + 5, "spool": {}}).encode()
    sqlite_store.write([dec.decode("headrace/v1/s1/gw1/state", born)])
    sqlite_store.write([dec.decode("headrace/v1/s1/gw1/state", b'{"online": false}')])  # the LWT
    assert sqlite_store.query("SELECT online FROM gateways") == [(0,)]
    sqlite_store.write([dec.decode("headrace/v1/s1/gw1/data", data_batch("gw1", [("n1", 2)]))])
    sqlite_store.write([dec.decode("headrace/v1/s1/gw1/data", data_batch("gw1", [("n1", 1)]))])  # older, late
    (seen, seq, values), = sqlite_store.query("SELECT last_seen, last_seq, last_values FROM nodes")
    assert seq == 2 and seen == pytest.approx(T0 + 2 + 0.03)
    assert set(json.loads(values)) == {"temp", "vib"}


@pytest.mark.parametrize("topic,payload,reason", [
    ("headrace/v1/s1/gw1/data", b"\xff\x00garbage", "undecodable"),
    ("headrace/v1/s1/gw1/data", cbor2.dumps({"v": 99, "gw": "gw1"}), "version"),
    ("headrace/v1/s1/gw1/data", cbor2.dumps({"v": 2, "gw": "gw1", "frames": [b"x", b"y"], "nodes": []}),
     "undecodable"),
    ("headrace/v1/s1/gw1/events", cbor2.dumps({"v": 1, "gw": "gw1", "events": 5}), "undecodable"),
    ("headrace/v1/s1/gw1/state", b"not json", "undecodable"),
    ("headrace/v1/s1/intruder/data", None, "not_allowed"),
])
def test_dead_letters(topic, payload, reason):
    payload = payload if payload is not None else data_batch("intruder", [("n1", 1)])
    with pytest.raises(DeadLetter) as e:
        Decoder(allow=("gw1",)).decode(topic, payload)
    assert e.value.reason == reason and e.value.detail


def test_worker_stores_acks_and_parks_dead_letters(sqlite_store, caplog):
    good = data_batch("gw1", [("n1", 1), ("n1", 2)])
    msgs = [(1, "headrace/v1/s1/gw1/data", good), (2, "headrace/v1/s1/gw1/data", b"\x01\x02"),
            (3, "headrace/v1/s1/gw9/data", good), (4, "headrace/v1/s1/gw1/data", good)]
    cfg = from_dict({"sink": {"allow": ["gw1"], "group": 3}})
    src = ListSource(msgs)
    sink = Sink(cfg, source=src, store=sqlite_store)

    async def main():
        for _ in range(2):
            await sink.handle(await src.fetch(3, 0))

    asyncio.run(main())
    assert sorted(src.acked) == [1, 2, 3, 4]  # dead letters too: they never block the stream
    m = sink.metrics
    assert m.total("headrace_sink_readings_total") == 8 and m.total("headrace_sink_duplicates_total") == 8
    assert m.get("headrace_sink_dead_letters_total", reason="undecodable") == 1
    assert m.get("headrace_sink_dead_letters_total", reason="not_allowed") == 1
    dead = sqlite_store.query("SELECT topic, position, reason, payload FROM dead_letters ORDER BY id")
    assert dead == [("headrace/v1/s1/gw1/data", "2", "undecodable", b"\x01\x02"),
                    ("headrace/v1/s1/gw9/data", "3", "not_allowed", good)]
    assert "dead letter (undecodable) on headrace/v1/s1/gw1/data at position 2" in caplog.text


def test_a_dead_letter_redelivered_is_parked_once(sqlite_store):
    err = DeadLetter("undecodable", "not CBOR")
    for _ in range(2):
        sqlite_store.write([], [Dead("headrace/v1/s1/gw1/data", "17", err, b"x")])
    assert sqlite_store.query("SELECT count(*) FROM dead_letters") == [(1,)]


def test_config_errors_name_the_key():
    from gateway.errors import ConfigError
    for raw, key in (({"sink": {"source": "kafka"}}, "[sink] source"), ({"sink": {"grup": 1}}, "[sink] grup"),
                     ({"jetstream": {"replicas": 2}}, "[jetstream] replicas"),
                     ({"sink": {"allow": "gw1"}}, "[sink] allow")):
        with pytest.raises(ConfigError) as e:
            from_dict(raw)
        assert e.value.key == key
    assert from_dict({}).database.endswith("cloud.sqlite")


def test_config_errors_are_all_reported_at_once():
    from gateway.config.problems import ConfigErrors
    with pytest.raises(ConfigErrors) as e:
        from_dict({"sink": {"source": "kafka", "group": 0, "grup": 1}, "jetstream": {"replicas": 2, "servers": "x"},
                   "kafka": {}})
    keys = {err.key for err in e.value.errors}
    assert keys == {"[sink] source", "[sink] group", "[sink] grup", "[jetstream] replicas", "[jetstream] servers",
                    "[kafka]"}, keys
    assert str(e.value).startswith("6 errors:")


def _schema_batches(version):
    """A gateway's schema message and two batches of `version` (3 or 4) that refer to it (the second
    sent after the schema stopped changing: no schema message goes with it)."""
    from .conftest import frame

    schema = batch.Schema("gw1", "s1")
    first = batch.encode("gw1", "s1", [frame("n7", s, [1.5, 2.0, 3.0, 4.0], T0 + s) for s in (1, 2)], [], schema,
                         version=version)
    message = schema.message()
    second = batch.encode("gw1", "s1", [frame("n7", 3, [5.5, 6.0, 7.0, 8.0], T0 + 3)], [], schema, version=version)
    assert not schema.changed and cbor2.loads(second)["v"] == version
    return message, first, second


async def _run_until_acked(sink, src, n: int) -> None:
    task = asyncio.create_task(sink.run())
    try:
        for _ in range(200):
            if len(src.acked) >= n or task.done():
                break
            await asyncio.sleep(0.02)
    finally:
        sink.stop()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("version", [3, 4])
def test_schemas_kept_across_a_restart(tmp_path, version):
    """A worker stores the schema messages it meets; restarted (a new process: new decoder, new
    connection), it reads them back, and a batch referring to a schema sent before the restart
    decodes instead of becoming a dead letter."""
    from sink.store import SqliteStore

    message, first, second = _schema_batches(version)
    with pytest.raises(DeadLetter) as e:  # what the second batch needs: the schema, from somewhere
        Decoder().decode("headrace/v1/s1/gw1/data", second)
    assert e.value.reason == "schema"
    path = str(tmp_path / "cloud.sqlite")
    cfg = from_dict({"sink": {"sqlite": path}})
    src = ListSource([(1, "headrace/v1/s1/gw1/schema", message), (2, "headrace/v1/s1/gw1/data", first)])
    store = SqliteStore(path)
    asyncio.run(_run_until_acked(Sink(cfg, source=src, store=store), src, 2))
    store.close()

    again = ListSource([(3, "headrace/v1/s1/gw1/data", second)])
    store = SqliteStore(path)
    sink = Sink(cfg, source=again, store=store)
    asyncio.run(_run_until_acked(sink, again, 1))
    try:
        assert again.acked == [3]
        assert store.query("SELECT count(*) FROM dead_letters") == [(0,)]
        assert store.query("SELECT seq, v FROM readings WHERE idx = 0 ORDER BY seq") == [(1, 1.5), (2, 1.5), (3, 5.5)]
        assert store.query("SELECT gateway, nodes, patterns FROM schemas") == [("gw1", 1, 1)]
        assert sink.decoder.schemas.schemas  # read at start, before the batch came
    finally:
        store.close()


@pytest.mark.parametrize("version", [3, 4])
def test_a_worker_reads_a_schema_another_worker_stored(sqlite_store, version):
    """Competing workers: the schema message went to one; the other, already running, meets a
    batch referring to it and reads it from the database (no stream to ask here)."""
    message, first, second = _schema_batches(version)
    cfg = from_dict({})
    one = ListSource([(1, "headrace/v1/s1/gw1/schema", message), (2, "headrace/v1/s1/gw1/data", first)])
    other = ListSource([(3, "headrace/v1/s1/gw1/data", second)])
    a, b = Sink(cfg, source=one, store=sqlite_store), Sink(cfg, source=other, store=sqlite_store)

    async def main():
        await a.handle(await one.fetch(10, 0))
        await b.handle(await other.fetch(10, 0))

    asyncio.run(main())
    assert b.metrics.total("headrace_sink_dead_letters_total") == 0
    assert b.metrics.total("headrace_sink_readings_total") == 4
    # a longer schema of the lineage replaces a shorter one, never the reverse
    sqlite_store.write([Decoder().decode("headrace/v1/s1/gw1/schema", message)])
    longer = batch.Schema("gw1", "s1", lineage=cbor2.loads(message)["lineage"])
    for n in ("n7", "n8"):
        longer.node(n)
    longer.pattern(("temp", "vib"))
    sqlite_store.write([Decoder().decode("headrace/v1/s1/gw1/schema", longer.message())])
    sqlite_store.write([Decoder().decode("headrace/v1/s1/gw1/schema", message)])
    assert sqlite_store.query("SELECT nodes, patterns FROM schemas") == [(2, 1)]
