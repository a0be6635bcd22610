"""Version 3 and 4 batches and the schema message: what repeats is described once, referred to by id."""
import json
import math
import sqlite3
import subprocess
import sys

import cbor2
import pytest

from gateway.runtime.uplink import batch, columns


def _bodies(frames):
    return [batch.frame_body(*f) for f in frames]


def _raw(data: bytes) -> dict:
    """A batch's map as sent, its deflated part opened (version 4's numbered keys named)."""
    obj = cbor2.loads(data)
    if obj["v"] == 4:
        obj = batch._v4_named(obj)
    if "deflate" in obj:
        inner = cbor2.loads(columns.inflate(obj.pop("deflate")))
        obj.update(batch._v4_named(inner) if obj["v"] == 4 else inner)
    return obj


@pytest.mark.parametrize("version", [3, 4])
def test_versions_3_and_4_give_back_what_version_2_does_and_are_smaller(sample_frames, version):
    frames = sample_frames(40)
    w = batch.window_body("pump1/temp", 10.0, 1.7e9, 3, 1.0, 3.0, 6.0, 14.0, 1.0, 3.0, 2.5, 0)
    v2 = batch.encode("gw1", "site1", _bodies(frames), [w])
    schema = batch.Schema("gw1", "site1")
    first = batch.encode("gw1", "site1", _bodies(frames), [w], schema, version=version)
    assert schema.changed and cbor2.loads(first)["v"] == version
    dec = batch.Decoder()
    dec.feed(schema.message())
    assert not schema.changed
    second = batch.encode("gw1", "site1", _bodies(frames), [w], schema, version=version)
    assert not schema.changed  # nothing new: the schema message is not sent again
    assert "nodes" not in _raw(second) and "patterns" not in _raw(second)
    for data in (first, second):
        got = dec.decode(data)
        assert list(batch.readings(got)) == list(batch.readings(batch.decode(v2)))
        assert list(batch.rows(got)) == list(batch.rows(batch.decode(v2)))
        assert batch.frame_ids(got) == [(f[0], f[1]) for f in frames]
    assert len(second) < len(v2) - sum(len(n) + 1 for n in ("pump1", "fork2", "tank3"))


@pytest.mark.parametrize("version", [3, 4])
def test_unknown_schema_is_an_error_never_wrong_data(sample_frames, version):
    frames = sample_frames(3)
    a = batch.Schema("gw1", "site1")
    batch.encode("gw1", "site1", _bodies(frames[:3]), [], a, version=version)  # pump1, fork2, tank3
    old_message = a.message()
    data = batch.encode("gw1", "site1", _bodies(frames), [], a, version=version)
    with pytest.raises(batch.UnknownSchema, match="headrace/v1/site1/gw1/schema" if version == 3 else
                       r"schema \[\d+, 3, 3\].*retained message of headrace/v1/<site>/<gateway>/schema"):
        batch.decode(data)  # no schema at all
    # another lineage with the same names in another order: a decoder holding it refuses
    b = batch.Schema("gw1", "site1")
    batch.encode("gw1", "site1", _bodies(list(reversed(frames))), [], b, version=version)
    with pytest.raises(batch.UnknownSchema):
        batch.decode(data, schemas=[b.message()])
    # a shorter schema of the same lineage than the batch needs
    a.node("late-node")
    grown = batch.encode("gw1", "site1", _bodies(frames) + [batch.frame_body("late-node", 1, 1.7e9, cbor2.dumps(
        [{0: "late-node/x", 2: 1.0, 6: 1.7e9}]))], [], a, version=version)
    with pytest.raises(batch.UnknownSchema):
        batch.decode(grown, schemas=[old_message])
    other = cbor2.loads(a.message())
    other["gw"] = "gw2"
    if version == 3:  # another gateway's schema of the same lineage number is not this one's
        with pytest.raises(batch.UnknownSchema):
            batch.decode(grown, schemas=[cbor2.dumps(other)])
    else:  # version 4 names its schema by lineage alone: two gateways claiming one is refused
        with pytest.raises(batch.BatchError, match="claimed by 2 gateways"):
            batch.decode(grown, schemas=[cbor2.dumps(other), a.message()])
    # the one retained message decodes every batch of its lineage, old and new (a late joiner)
    late = batch.Decoder()
    late.feed(a.message())
    assert batch.frame_ids(late.decode(data)) == [(f[0], f[1]) for f in frames]
    assert batch.frame_ids(late.decode(grown))[-1] == ("late-node", 1)
    # an unresolved batch is refused by the readers too
    with pytest.raises(batch.BatchError, match="schema"):
        list(batch.readings(_raw(data)))
    assert late.decode(data)["gw"] == "gw1" and late.decode(data)["site"] == "site1"


def test_entries_past_the_schema_bound_travel_in_the_batch(sample_frames):
    class Small(batch.Schema):
        MAX_ENTRIES = 2
    frames = sample_frames(10)
    schema = Small("gw1", "site1")
    data = batch.encode("gw1", "site1", _bodies(frames), [], schema)
    raw = _raw(data)
    assert raw["schema"][1:] == [2, 2] and len(raw["nodes"]) == 1 and len(raw["patterns"]) >= 1
    got = batch.decode(data, schemas=[schema.message()])
    assert batch.frame_ids(got) == [(f[0], f[1]) for f in frames]
    assert [r[3] for r in batch.readings(got)] == [batch.frame_readings(f[0], f[2], f[3]) for f in frames]


def test_decoder_by_topic_export_and_bad_schemas(sample_frames):
    frames = sample_frames(5)
    schema = batch.Schema("gw1", "site1")
    data = batch.encode("gw1", "site1", _bodies(frames), [], schema)
    dec = batch.Decoder()
    assert dec.message("headrace/v1/site1/gw1/schema", schema.message()) is None
    got = dec.message("headrace/v1/site1/gw1/data", data)
    assert batch.frame_ids(got) == [(f[0], f[1]) for f in frames]
    again = batch.Decoder(json.loads(json.dumps({str(i): s for i, s in enumerate(dec.export())})).values())
    assert batch.frame_ids(batch.decode(data, schemas=again.export())) == batch.frame_ids(got)
    for bad, msg in ((cbor2.dumps({"v": 1, "kind": "schema", "lineage": "x", "nodes": [], "patterns": []}),
                      "inconsistent schema"),
                     (cbor2.dumps({"v": 9, "kind": "schema"}), "schema version 9"),
                     (cbor2.dumps({"v": 1, "events": []}), "not a schema message")):
        with pytest.raises(batch.BatchError, match=msg):
            dec.feed(bad)
    damaged = cbor2.loads(data)
    damaged[batch.V4_KEYS["schema"]] = "gw1"
    with pytest.raises(batch.BatchError, match=r"schema must be \[lineage"):
        dec.decode(cbor2.dumps(damaged))
    damaged[99] = 1
    with pytest.raises(batch.BatchError, match="key 99 is not one of version 4's"):
        dec.decode(cbor2.dumps(damaged))


@pytest.mark.parametrize("version", [3, 4])
def test_headrace_decode_reads_the_schema_and_versions_3_and_4(sample_frames, tmp_path, version):
    frames = sample_frames(2)
    schema = batch.Schema("gw1", "site1")
    data = batch.encode("gw1", "site1", _bodies(frames), [], schema, version=version)
    (tmp_path / "schema.cbor").write_bytes(schema.message())
    (tmp_path / "data.cbor").write_bytes(data)
    run = [sys.executable, "-m", "gateway", "decode"]
    p = subprocess.run(run + [str(tmp_path / "data.cbor"), "--schema", str(tmp_path / "schema.cbor")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert {(r["node"], r["seq"]) for r in rows} == {(f[0], f[1]) for f in frames}
    p = subprocess.run(run + [str(tmp_path / "data.cbor")], capture_output=True, text=True)
    assert p.returncode == 1 and "has not seen" in p.stderr and "--schema" not in p.stdout and not p.stdout
    p = subprocess.run(run + [str(tmp_path / "schema.cbor")], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["nodes"] == ["pump1", "fork2", "tank3"]


def test_a_new_spool_has_small_pages(tmp_path):
    import asyncio
    from gateway.runtime.spool import PAGE_SIZE, Spool

    async def main():
        s = await Spool.open(tmp_path / "s.sqlite")
        await s.close()
    asyncio.run(main())
    assert sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 1024


from hypothesis import given, settings, strategies as st  # noqa: E402

_times = st.lists(st.integers(1_600_000_000_000, 1_900_000_000_000), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(ms=_times, jitter=st.lists(st.integers(-999_999, 999_999), min_size=60, max_size=60),
       values=st.lists(st.one_of(st.integers(-10**6, 10**6).map(lambda i: i / 16),
                                 st.integers(-10**6, 10**6).map(lambda i: i / 1000),
                                 st.floats(allow_nan=True, allow_infinity=True)), min_size=60, max_size=60),
       exact_ms=st.booleans())
@pytest.mark.parametrize("version", [3, 4])
def test_compact_series_give_every_time_and_value_back_bit_exact(ms, jitter, values, exact_ms, version):
    # times as the batch holds them (integer ns of the float seconds), values as float64
    secs = [m / 1000 + (0 if exact_ms else j / 1e9) for m, j in zip(ms, jitter)]
    ns = [batch._ns(t) for t in secs]
    vs = values[:len(ns)]
    col = columns.encode_series(ns, vs, version)
    if col is None:  # no exact scale: the codec stream is kept; never for sixteenths or thousandths
        assert not all(math.isfinite(v) and str(v) != "-0.0" and abs(v) <= 10**6
                       and (float(round(v * 16)) / 16 == v or round(v * 1000) / 1000 == v) for v in vs)
        return
    ts, back = columns.decode_series(cbor2.loads(cbor2.dumps(col)), len(ns), version)
    assert ts == [batch._seconds_one(t) for t in ns]
    assert [struct_bits(v) for v in back] == [struct_bits(v) for v in vs]


def struct_bits(v: float) -> bytes:
    import struct
    return struct.pack("<d", v)


@pytest.mark.parametrize("version", [3, 4])
@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 400), flip=st.integers(0, 400), byte=st.integers(0, 255))
def test_damaged_compact_batches_are_batch_errors(sample_frames, cut, flip, byte, version):
    frames = sample_frames(6)
    schema = batch.Schema("gw1", "site1")
    w = batch.window_body("pump1/temp", 10.0, 1.7e9, 3, 1.0, 3.0, 6.0, 14.0, 1.0, 3.0, 2.5, 0)
    data = batch.encode("gw1", "site1", _bodies(frames), [w], schema, version=version)
    inner = cbor2.loads(data)
    inner = cbor2.loads(columns.inflate(inner.pop(2 if version == 4 else "deflate")))
    inner = cbor2.dumps(inner)
    damaged = bytearray(inner[:max(cut, 1)] if cut < len(inner) else inner)
    if flip < len(damaged):
        damaged[flip] = byte
    env = ({"v": 3, "gw": "gw1", "site": "site1", "schema": schema.id, "deflate": columns.deflate(bytes(damaged))}
           if version == 3 else {"v": 4, 1: schema.id, 2: columns.deflate(bytes(damaged))})
    try:
        got = batch.decode(cbor2.dumps(env), schemas=[schema.message()])
        list(batch.readings(got))
        list(batch.rows(got))
    except batch.BatchError:
        pass


def test_a_deflate_bomb_is_refused():
    env = {"v": 3, "gw": "g", "site": "s", "schema": [1, 0, 0], "deflate": columns.deflate(bytes(80 << 20))}
    with pytest.raises(batch.BatchError, match="inflates to more than"):
        batch.decode(cbor2.dumps(env), schemas=[])
