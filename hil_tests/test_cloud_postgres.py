"""The sink on a real PostgreSQL: COPY + one idempotent insert, racing workers, a restart of the
database; and the sink on a real mosquitto (a persistent session, acknowledged after commit)."""
from __future__ import annotations

import asyncio
import json
import math
import threading
import time

import cbor2
import paho.mqtt.client as paho
import pytest

from gateway.runtime.uplink import batch
from sink.config import from_dict
from sink.decode import DeadLetter, Decoder
from sink.service import Sink
from sink.store import Dead, PostgresStore, StoreUnavailable
from tests.sink.conftest import T0, ListSource, data_batch, events_batch

from .rig import wait_for

DATA = "headrace/v1/s1/gw1/data"


def test_copy_and_idempotent_insert(postgres):
    store = PostgresStore(postgres.database("copy"))
    dec = Decoder()
    try:
        w = batch.window_body("n1/temp", 10.0, T0, 0, math.nan, math.nan, 0.0, 0.0, math.nan, math.nan, math.nan, 1)
        payload = data_batch("gw1", [("n1", s) for s in range(1, 51)], windows=[w])
        first = store.write([dec.decode(DATA, payload)])
        again = store.write([dec.decode(DATA, payload)])
        assert (first.readings, first.duplicates, first.windows) == (200, 0, 1)
        assert (again.readings, again.duplicates, again.windows) == (0, 200, 0)
        want = [(r["node"], r["seq"], r["sensor"], r["t"], r["v"]) for r in batch.rows(batch.decode(payload))
                if "window" not in r]
        got = store.query("SELECT node, seq, sensor, t, v FROM readings ORDER BY seq, idx")
        assert got == want  # double precision: the exact value and time
        assert store.query("SELECT min, correction FROM windows") == [(None, True)]  # NaN of an empty window
        # NaN in the mirror's JSON (which jsonb refuses) becomes null
        nan = data_batch("gw1", [("n1", 99)])
        d = dec.decode(DATA, nan)
        d.nodes["n1"] = (T0 + 1000, 99, {"temp": math.nan}, T0 + 1000)
        store.write([d])
        assert store.query("SELECT last_values->>'temp', last_seq FROM nodes") == [(None, 99)]
        store.write([], [Dead(DATA, "5", DeadLetter("version", "v 9"), b"\xa1\x61v\x09")])
        assert store.query("SELECT reason, payload FROM dead_letters") == [("version", b"\xa1\x61v\x09")]
    finally:
        store.close()


def test_a_worker_starting_beside_running_writers_neither_waits_nor_deadlocks(postgres):
    """A worker (re)started while another writes: its set-up leaves what exists alone. Before,
    CREATE INDEX IF NOT EXISTS and ALTER TABLE ADD COLUMN IF NOT EXISTS locked the tables even
    with nothing to make, so the start waited for the writers' transactions, or deadlocked
    with them (seen in the NATS fault test)."""
    import psycopg

    url = postgres.database("restart")
    PostgresStore(url).close()  # the tables and indexes, as a running worker made them
    writer = psycopg.connect(url)
    try:
        # a writer's transaction in progress: the locks a group's insert and mirror upsert hold
        writer.execute("LOCK TABLE readings, events, nodes, gateways IN ROW EXCLUSIVE MODE")
        opened: list = []
        t = threading.Thread(target=lambda: opened.append(PostgresStore(url)), daemon=True)
        t.start()
        t.join(20)
        assert opened, "the new worker's set-up waited for the running writer's transaction"
        opened[0].close()
    finally:
        writer.rollback()
        writer.close()


def test_two_workers_racing_on_overlapping_batches(postgres):
    url = postgres.database("race")
    stores = [PostgresStore(url), PostgresStore(url)]
    dec = Decoder()
    # the same frames in different groupings, as a gateway resends after a crash, handed to
    # both workers at once: the key order of the insert keeps them from deadlocking
    payloads = [data_batch("gw1", [("n1", s) for s in range(a, a + 40)]) for a in range(1, 400, 20)]
    decoded = [dec.decode(DATA, p) for p in payloads]
    results, errors = [[], []], []

    def work(i):
        try:
            for d in (decoded if i == 0 else decoded[::-1]):
                results[i].append(stores[i].write([d]))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    new = sum(w.readings for r in results for w in r)
    dup = sum(w.duplicates for r in results for w in r)
    distinct = 420 * 4  # frames 1..420, 4 readings each
    assert new == distinct and new + dup == 2 * 40 * 4 * len(payloads)
    assert stores[0].query("SELECT count(*), count(DISTINCT (node, seq, idx)) FROM readings") == [(distinct, distinct)]
    for s in stores:
        s.close()


def test_database_restart(postgres):
    store = PostgresStore(postgres.database("restart"))
    dec = Decoder()
    try:
        store.write([dec.decode(DATA, data_batch("gw1", [("n1", 1)]))])
        postgres.stop("immediate")
        with pytest.raises(StoreUnavailable):
            store.write([dec.decode(DATA, data_batch("gw1", [("n1", 2)]))])
        postgres.start()
        w = store.write([dec.decode(DATA, data_batch("gw1", [("n1", 2)]))])  # reconnects
        assert w.readings == 4
        assert store.query("SELECT count(*) FROM readings") == [(8,)]
    finally:
        if not postgres.data.joinpath("postmaster.pid").exists():
            postgres.start()
        store.close()


def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(topic, payload, qos=1, retain=topic.endswith("/schema")) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_sink_on_mosquitto_persistent_session(postgres, mosquitto):
    """A worker stores, dead-letters and acknowledges; stopped, it gets what arrived meanwhile,
    a batch (the version the gateway writes) among it whose schema it read before the restart (kept in PostgreSQL:
    the session's queued messages come before the retained schema is sent again)."""
    from gateway.runtime.uplink import batch as batch_format
    from tests.sink.test_decode_store import _schema_batches

    schema, schema_first, schema_second = _schema_batches(batch_format.VERSION)
    url = postgres.database("mqtt")
    cfg = from_dict({"sink": {"database": url, "source": "mqtt", "allow": ["gw1"]},
                     "mqtt": {"port": mosquitto.port, "client_id": "sink-test"}})
    evs = [{"type": "demand", "id": 1, "need": "mechanic", "priority": 5, "at": [0, 0], "source": "api", "t": T0}]

    async def run_until(pred, what):
        sink = Sink(cfg)
        task = asyncio.create_task(sink.run())
        try:
            for _ in range(300):
                await asyncio.sleep(0.1)
                if sink.store is not None and pred(sink):
                    return sink
                assert not task.done(), task.exception()
            raise TimeoutError(what)
        finally:
            sink.stop()
            await asyncio.wait_for(task, 10)

    async def main():
        # the first run makes the persistent session, then messages come
        sink = Sink(cfg)
        task = asyncio.create_task(sink.run())
        # the session exists (subscribed, SUBACK received) before anything is published
        started = asyncio.ensure_future(sink.started.wait())
        await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        assert sink.started.is_set(), task.exception() if task.done() else "the sink did not subscribe in 30 s"
        publish(mosquitto.port, [(DATA, data_batch("gw1", [("n1", 1), ("n1", 2)])),
                                 ("headrace/v1/s1/gw1/events", events_batch("gw1", evs)),
                                 (DATA, b"\x00 not a batch"),
                                 ("headrace/v1/s1/gw1/state", json.dumps({"online": True, "at": time.time()}).encode()),
                                 ("headrace/v1/s1/gw1/schema", schema), (DATA, schema_first)])
        for _ in range(100):
            await asyncio.sleep(0.1)
            if sink.metrics.total("headrace_sink_messages_total") >= 5:
                break
        sink.stop()
        await asyncio.wait_for(task, 10)
        assert sink.metrics.total("headrace_sink_readings_total") == 16
        assert sink.metrics.get("headrace_sink_dead_letters_total", reason="undecodable") == 1
        # while no worker runs, the broker keeps the session's messages
        publish(mosquitto.port, [(DATA, data_batch("gw1", [("n1", 2), ("n1", 3)])), (DATA, schema_second)])
        again = await run_until(lambda s: s.metrics.get("headrace_sink_messages_total", kind="data") >= 2,
                                "the queued batches")
        assert again.metrics.total("headrace_sink_readings_total") == 8
        assert again.metrics.total("headrace_sink_duplicates_total") == 4
        assert again.metrics.total("headrace_sink_dead_letters_total") == 0

    asyncio.run(main())
    store = PostgresStore(url)
    try:
        assert store.query("SELECT count(*) FROM readings") == [(24,)]
        assert store.query("SELECT gateway, nodes, patterns FROM schemas") == [("gw1", 1, 1)]
        assert store.query("SELECT type, key FROM events") == [("demand", "1")]
        assert store.query("SELECT gateway, online, why FROM gateways") == [("gw1", True, "state")]
        assert store.query("SELECT reason FROM dead_letters") == [("undecodable",)]
    finally:
        store.close()


def test_rows_postgresql_refuses_become_one_dead_letter(postgres):
    """A text value with a NUL character (PostgreSQL's text cannot hold one): the group is written
    again message by message, the one at fault is parked (`unstorable`), the others stored."""
    bad_frame = batch.frame_body("n1", 50, T0, cbor2.dumps([{-2: "n1/", -3: T0, 0: "temp", 2: 1.5},
                                                            {0: "note", 3: "a\x00b"}]))
    bad = batch.encode("gw1", "s1", [bad_frame], [])
    good = data_batch("gw1", [("n1", 1), ("n1", 2)])
    url = postgres.database("refused")
    store = PostgresStore(url)
    src = ListSource([(1, DATA, good), (2, DATA, bad), (3, DATA, data_batch("gw1", [("n1", 3)]))])
    sink = Sink(from_dict({"sink": {"database": url}}), source=src, store=store)

    async def main():
        await sink.handle(await src.fetch(10, 0))

    try:
        asyncio.run(main())
        assert sorted(src.acked) == [1, 2, 3]
        assert store.query("SELECT count(*), max(seq) FROM readings") == [(12, 3)]
        assert store.query("SELECT position, reason FROM dead_letters") == [("2", "unstorable")]
        assert sink.metrics.get("headrace_sink_dead_letters_total", reason="unstorable") == 1
    finally:
        store.close()


def test_presence_in_postgresql(postgres):
    """The presence rules (sink/presence.py) in PostgreSQL's SQL: the story the SQLite test tells."""
    from tests.sink.test_presence import presence_story

    store = PostgresStore(postgres.database("presence"))
    try:
        presence_story(store)
    finally:
        store.close()


def _parts(store, table: str = "readings") -> dict[str, int]:
    """Rows in each partition of a table (those with none too)."""
    names = [r[0] for r in store.query(
        "SELECT c.relname FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid "
        "JOIN pg_class p ON p.oid = inhparent WHERE p.relname = %s", (table,))]
    counts = dict(store.query(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"))
    return {n: counts.get(n, 0) for n in names}


def test_time_partitions_keep_readings_exactly_once(postgres, caplog):
    """Readings partitioned by month on t: the partitions ahead are made at start, the one a
    group needs before its transaction; repeats on both sides of a month's boundary meet their
    twins (the key is the identity plus t); a query for a day reads one partition."""
    import logging

    from sink.partitions import name, period
    from tests.sink.conftest import frame

    now = time.time()
    this, nxt = period(now, "month"), period(period(now, "month")[1], "month")
    prev = period(this[0] - 1, "month")
    boundary = this[0]
    store = PostgresStore(postgres.database("parts"))
    dec = Decoder()
    try:
        parts = _parts(store)
        assert {name("readings", this[0]), name("readings", nxt[0]), "readings_default"} <= set(parts)
        assert name("readings", prev[0]) not in parts  # the month before: made when rows need it
        assert set(_parts(store, "windows")) >= {name("windows", this[0]), "windows_default"}

        def group(seqs):  # one frame a second, across the boundary
            return dec.decode(DATA, batch.encode("gw1", "s1", [frame("n1", s, [1.0 * s, 2.0, 3.0, 4.0],
                                                                     boundary - 20 + s) for s in seqs], []))

        first = store.write([group(range(1, 41))])
        assert (first.readings, first.duplicates) == (160, 0)
        again = store.write([group(range(1, 41))])  # redelivered
        assert (again.readings, again.duplicates) == (0, 160)
        regrouped = store.write([group(range(15, 61))])  # sent again by the gateway, grouped otherwise
        assert (regrouped.readings, regrouped.duplicates) == (80, 104)
        parts = _parts(store)
        before, after = parts[name("readings", prev[0])], parts[name("readings", this[0])]
        assert before > 0 and after > 0 and before + after == 240 and parts["readings_default"] == 0
        assert store.query("SELECT count(*), count(DISTINCT (node, seq, idx)) FROM readings") == [(240, 240)]
        # a day's query reads that day's month only (partition pruning)
        plan = "\n".join(r[0] for r in store.query(
            "EXPLAIN SELECT t, v FROM readings WHERE site = 's1' AND gateway = 'gw1' AND node = 'n1' "
            "AND sensor = 'temp' AND t >= %s AND t < %s", (boundary + 3600, boundary + 86400)))
        assert name("readings", this[0]) in plan and name("readings", prev[0]) not in plan, plan
        assert "readings_default" not in plan, plan
        # a node's clock far ahead: its rows wait in the default partition, and move into their
        # period's partition when that is made
        far = now + 200 * 86400
        store.write([dec.decode(DATA, batch.encode("gw1", "s1", [frame("n2", 1, [9.0, 9.0], far)], []))])
        assert _parts(store)["readings_default"] == 2
        lo, hi = period(far, "month")
        with caplog.at_level(logging.WARNING, "headrace.sink"):
            store.partitions.create(store._conn, "readings", lo, hi, __import__("psycopg").errors)
        assert _parts(store)[name("readings", lo)] == 2 and _parts(store)["readings_default"] == 0
        assert "2 rows moved into it" in caplog.text
        again = store.write([dec.decode(DATA, batch.encode("gw1", "s1", [frame("n2", 1, [9.0, 9.0], far)], []))])
        assert again.duplicates == 2  # found in its new partition
    finally:
        store.close()


def test_one_table_without_partitions(postgres, caplog):
    """partition = "none" makes one table, keyed on the identity alone; a later sink configured
    for partitions keeps such a table as it is, with a warning."""
    import logging

    url = postgres.database("noparts")
    store = PostgresStore(url, partition="none")
    dec = Decoder()
    try:
        assert store.query("SELECT relkind FROM pg_class WHERE relname = 'readings'") == [("r",)]
        store.write([dec.decode(DATA, data_batch("gw1", [("n1", 1)]))])
    finally:
        store.close()
    with caplog.at_level(logging.WARNING, "headrace.sink"):
        store = PostgresStore(url)
    try:
        assert "readings was made without partitions" in caplog.text
        assert store.write([dec.decode(DATA, data_batch("gw1", [("n1", 1), ("n1", 2)]))]).duplicates == 4
    finally:
        store.close()


def test_presence_from_a_real_gateway_its_will_and_its_rebirth(tmp_path, postgres, mosquitto):
    """A gateway process on mosquitto with a MicroPython node over CoAP, a sink worker process into
    PostgreSQL: the gateway and its node online from the birth and the node's frames; the gateway
    killed (kill -9), mosquitto publishes its Last Will and both are offline (`will`, `gateway`); the
    gateway started again, its birth brings both back (the node was heard within node_timeout)."""
    import os
    import signal
    import zlib

    from .rig import GatewayProcess, Node, SinkProcess

    url = postgres.database("presence_live")
    key = os.urandom(32)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"pump1": key}, mqtt_extra="keepalive = 5\n").start()
    config = tmp_path / "sink.toml"
    config.write_text(f'[sink]\ndatabase = "{url}"\nsource = "mqtt"\npresence_interval = 1.0\n'
                      f'[mqtt]\nport = {mosquitto.port}\nclient_id = "sink-presence"\n')
    sink = SinkProcess(tmp_path, config, "sink").start()
    node = None
    store = PostgresStore(url)

    def mirror():
        gws = store.query("SELECT gateway, online, why FROM gateways")
        nodes = store.query("SELECT node, online, why FROM nodes")
        return gws, nodes

    try:
        node = Node(tmp_path, {"node": "pump1", "key": key.hex(), "transport": "coap", "host": "127.0.0.1",
                               "coap_port": gw.coap_port, "sensors": ["temp", "vib"], "period_ms": 20, "batch": 4,
                               "frames": 30, "seed": zlib.crc32(b"pump1") % 1000 + 1,
                               "state_file": str(tmp_path / "pump1.seq"), "ack_timeout_ms": 500,
                               "drain_timeout_s": 20})
        assert node.wait(90) == 0, node.out_path.read_text()[-2000:]
        online = ([("gwtest", True, "state")], [("pump1", True, "data")])
        wait_for(lambda: mirror() == online, 30, f"the gateway and its node online (now {mirror()})")
        killed = time.time()
        gw.stop(signal.SIGKILL)  # no clean last state: the broker's Will says it (the connection dropped)
        wait_for(lambda: mirror() == ([("gwtest", False, "will")], [("pump1", False, "gateway")]), 30,
                 f"the Will taking the gateway and its node offline (now {mirror()})")
        gw.start()
        wait_for(lambda: mirror() == online, 30, f"the rebirth bringing both back (now {mirror()})")
        assert store.query("SELECT changed >= %s FROM gateways", (killed,)) == [(True,)]  # the birth's time
    finally:
        if node is not None:
            node.kill()
        store.close()
        assert sink.stop() == 0
        gw.stop()


def _events(dec, ts: list[float]):
    from tests.sink.conftest import events_batch

    evs = [{"type": "demand", "id": i, "need": "mechanic", "t": t} for i, t in enumerate(ts)]
    return dec.decode("headrace/v1/s1/gw1/events", events_batch("gw1", evs))


def test_events_partitioned_and_an_older_table_moved(postgres, caplog):
    """events is partitioned by t like readings; an events table an older sink made without
    partitions is moved into a partitioned one at start (the rows of each period into its
    partition), and the repeats of its events are still caught there."""
    import logging

    import psycopg

    from sink.partitions import name, period
    from sink.store import EVENT_COLS

    now = time.time()
    dec = Decoder()
    old = _events(dec, [now - 3600, now - 1800, now - 60 * 86400])
    urls = {}
    for db, with_null in (("oldevents", False), ("oldevents_null", True)):
        urls[db] = postgres.database(db)
        with psycopg.connect(urls[db], autocommit=True) as c:  # as the sink made it before
            c.execute("CREATE TABLE events (site text NOT NULL, gateway text NOT NULL, type text NOT NULL, "
                      "key text NOT NULL, t double precision, node text, body jsonb NOT NULL, "
                      "PRIMARY KEY (site, gateway, type, key))")
            c.execute("CREATE INDEX events_t ON events (t)")
            with c.cursor() as cur:
                cur.executemany(f"INSERT INTO events ({', '.join(EVENT_COLS)}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                old.events + ([("s1", "gw1", "alarm", "x", None, None, "{}")] if with_null else []))
    with caplog.at_level(logging.WARNING, "headrace.sink"):
        store = PostgresStore(urls["oldevents"])
    try:
        assert "events: the table made without partitions by an older sink is now partitioned by t (3 rows moved)" \
            in caplog.text
        assert store.query("SELECT relkind FROM pg_class WHERE relname = 'events'") == [("p",)]
        assert store.query("SELECT to_regclass('events_unpartitioned')") == [(None,)]
        parts = _parts(store, "events")
        assert parts[name("events", period(now - 60 * 86400, "month")[0])] == 1
        assert parts[name("events", period(now - 3600, "month")[0])] + \
            parts.get(name("events", period(now - 1800, "month")[0]), 0) >= 1
        assert sum(parts.values()) == 3 and parts["events_default"] == 0
        assert store.write([old]).events == 0  # repeats, found in their partitions
        assert store.write([_events(dec, [now - 10])]).events == 1  # id 0 again, at another time: a new event
        assert store.query("SELECT count(*) FROM events") == [(4,)]
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "headrace.sink"):
        store = PostgresStore(urls["oldevents_null"])
    try:
        assert "1 without a time are left in events_unpartitioned" in caplog.text
        assert store.query("SELECT count(*) FROM events") == [(3,)]
        assert store.query("SELECT count(*) FROM events_unpartitioned") == [(4,)]  # kept whole, nothing lost
    finally:
        store.close()


def test_retention_drops_old_partitions(postgres, caplog):
    """[sink] keep: partitions wholly older than it are detached and dropped at start (and hourly),
    rows older than it deleted from the default partition, tables without a keep left alone; two
    workers expiring at once drop each partition once; the sink counts it in its metrics."""
    import calendar
    import logging

    from sink.partitions import period

    now = time.time()
    day = 86400.0
    keep = {"readings": 40 * day, "events": 40 * day}
    dec = Decoder()
    url = postgres.database("retention")
    from tests.sink.conftest import frame

    def readings(ts, node="n1"):
        return dec.decode(DATA, batch.encode("gw1", "s1", [frame(node, i + 1, [1.0, 2.0], t) for i, t in enumerate(ts)],
                                             []))

    def old_rows(store):  # 100 and 70 days ago (partitions made: no keep yet), 500 days ago (the default)
        store.write([readings([now - 100 * day, now - 70 * day, now - 500 * day, now - 3600]),
                     _events(dec, [now - 100 * day, now - 3600])])

    store = PostgresStore(url)  # an older sink, or one without keep
    try:
        old_rows(store)
        before = set(_parts(store)) | set(_parts(store, "events"))
        windows_before = _parts(store, "windows")
    finally:
        store.close()
    cutoff = now - 40 * day
    gone = {p for p in before if not p.endswith("_default")  # <table>_pYYYYMMDD: its period ended before cutoff
            and period(calendar.timegm(time.strptime(p[-8:], "%Y%m%d")), "month")[1] <= cutoff}
    assert len(gone) >= 3  # 100 and 70 days ago in readings, 100 in events

    with caplog.at_level(logging.INFO, "headrace.sink"):
        store = PostgresStore(url, keep=keep)
    try:
        sink = Sink(from_dict({"sink": {"database": url}}), source=ListSource([]), store=store)
        asyncio.run(sink.sweep())
        after = set(_parts(store)) | set(_parts(store, "events"))
        assert after == before - gone
        assert _parts(store, "windows") == windows_before  # no keep for windows
        assert sink.metrics.get("headrace_sink_partitions_dropped_total", table="readings") + \
            sink.metrics.get("headrace_sink_partitions_dropped_total", table="events") == len(gone)
        assert sink.metrics.get("headrace_sink_expired_rows_total", table="readings") == 2  # 500 days old
        assert "retention: partition readings_p" in caplog.text
        assert store.query("SELECT count(*) FROM readings WHERE t < %s", (cutoff,)) == [(0,)]
        assert store.query("SELECT count(*) FROM readings WHERE t > %s", (now - 7200,)) == [(2,)]
        assert store.query("SELECT count(*) FROM events") == [(1,)]
        # a late row older than keep makes no partition; it waits in the default one for the next pass
        store.write([readings([now - 80 * day], node="n2")])
        assert set(_parts(store)) | set(_parts(store, "events")) == after
        store._expire()
        assert store.take_expired() == [("events", 0, 0), ("readings", 0, 2)]
        # a writer holding readings longer than retention waits: readings is left to the next
        # pass (logged), events is done all the same
        import psycopg

        import sink.partitions

        store.write([readings([now - 80 * day], node="n3"), _events(dec, [now - 80 * day])])
        store.partitions.create(store._conn, "readings", *period(now - 100 * day, "month"), psycopg.errors)
        caplog.clear()
        with psycopg.connect(url) as writer, caplog.at_level(logging.WARNING, "headrace.sink"):
            writer.execute("LOCK TABLE readings IN ROW EXCLUSIVE MODE")  # what a group's COPY takes
            old_wait, sink.partitions.LOCK_WAIT = sink.partitions.LOCK_WAIT, 0.3
            try:
                store._expire()
            finally:
                sink.partitions.LOCK_WAIT = old_wait
            writer.rollback()
        assert store.take_expired() == [("events", 0, 1)]
        assert "retention: readings stayed busy" in caplog.text
        store._expire()
        assert store.take_expired() == [("events", 0, 0), ("readings", 1, 2)]
    finally:
        store.close()

    # the old partitions made again (a sink without keep), then two workers with keep at once
    store = PostgresStore(url)
    try:
        old_rows(store)
    finally:
        store.close()
    stores = [PostgresStore(url) for _ in range(2)]
    try:
        for s in stores:
            s.partitions.keep = dict(keep)
        barrier = threading.Barrier(2)
        errors = []

        def expire(s):
            barrier.wait()
            try:
                s._expire()
            except Exception as exc:  # noqa: BLE001 (what a worker would die of)
                errors.append(exc)

        threads = [threading.Thread(target=expire, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        took = [x for s in stores for x in s.take_expired()]
        assert sum(d for _t, d, _r in took) == len(gone)  # each dropped once, by one of them, no error
        assert set(_parts(stores[0])) | set(_parts(stores[0], "events")) == before - gone
    finally:
        for s in stores:
            s.close()
