"""Version 4 batches: numbered keys, Golomb-coded values, window columns, sensors named by the frame table."""
import math
import struct

import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from gateway.runtime.uplink import batch, columns


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-40, 40), st.integers(-(1 << 63), (1 << 63) - 1)), max_size=300))
def test_golomb_gives_every_integer_back(ints):
    data = columns.golomb(ints)
    assert columns.ungolomb(data, len(ints)) == ints
    us = [(v << 1) ^ (v >> 63) for v in ints]  # the k that trying every k picks (golomb tries fewer)
    assert data[0] == min(range(62), key=lambda k: sum(2 * (u + (1 << k)).bit_length() - k for u in us))
    with pytest.raises(columns.ColumnError):
        columns.ungolomb(data, len(ints) + 1)
    if ints:
        with pytest.raises(columns.ColumnError):
            columns.ungolomb(data, len(ints) - 1)


def test_golomb_spends_bits_not_bytes_on_small_deltas():
    deltas = [(-1) ** i * (i % 3) for i in range(200)]  # zigzag 0-4: 3 bits or fewer
    assert len(columns.golomb(deltas)) < 0.5 * len(columns.varints(deltas))


def _bits(w):
    return cbor2.dumps([struct.pack("<d", x) if isinstance(x, float) else x for x in w])


_WINDOWS = [["pump1/temp", 10.0, 1.7e9, 40, 21.0625, 23.5, 880.25, 19390.5625, 22.0, 21.5, 22.031972, 0],
            ["pump1/vib", 10.0, 1.7e9, 40, 0.5, 2.25, 51.375, 70.140625, 1.0, 2.0, 1.2841, 0],
            ["fork2/x", 10.0, 1.7e9 + 10, 3, -1.25, 0.0, -1.5, 1.625, 0.0, -0.25, -0.41666666666666663, 1],
            ["tank3/level", 0.5, 1.7e9 + 0.5, 1, 3.1, 3.1, 3.1, 9.610000000000001, 3.1, 3.1, 3.1, 0]]


@pytest.mark.parametrize("windows, compact", [
    (_WINDOWS, True),
    # fields without an exact scale (NaN, -0.0, decimals squared) travel as doubles
    (_WINDOWS + [["tank3/level", 10.0, 1.7e9, 0, math.nan, math.nan, 0.0, 0.0, math.nan, math.nan, math.nan, 0]], True),
    ([["pump1/temp", 10.0, 1.7e9, 2, -0.0, 1.0, 1.0, 1.0, -0.0, 1.0, 0.5, 0]], True),
    # not of the form (a count that is not an integer): as spooled, version 3's way
    ([["pump1/temp", 10.0, 1.7e9, 2.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0]], False),
])
def test_windows_come_back_bit_exact(sample_frames, windows, compact):
    frames = [batch.frame_body(*f) for f in sample_frames(3)]
    bodies = [batch.window_body(*w) for w in windows]
    schema = batch.Schema("gw1", "site1")
    data = batch.encode("gw1", "site1", frames, bodies, schema)
    obj = cbor2.loads(data)
    inner = batch._v4_named(cbor2.loads(columns.inflate(obj[batch.V4_KEYS["deflate"]])))
    assert ("window_columns" in inner) is compact and ("windows" in inner) is not compact
    got = batch.decode(data, schemas=[schema.message()])
    spooled = [cbor2.loads(b) for b in bodies]
    assert [_bits(w) for w in got["windows"]] == [_bits(w) for w in spooled]
    assert [type(x) for w in got["windows"] for x in w] == [type(x) for w in spooled for x in w]
    want = list(batch.rows({"gw": "gw1", "v": 2, "windows": spooled}))
    assert str(list(batch.rows(got))[-len(windows):]) == str(want)  # str: NaN is not equal to itself


def test_a_window_of_a_node_without_frames_in_the_batch(sample_frames):
    frames = [batch.frame_body(*f) for f in sample_frames(2)]
    w = batch.window_body("quiet9/temp", 10.0, 1.7e9, 2, 1.0, 2.0, 3.0, 5.0, 1.0, 2.0, 1.5, 0)
    schema = batch.Schema("gw1", "site1")
    got = batch.decode(batch.encode("gw1", "site1", frames, [w], schema), schemas=[schema.message()])
    assert got["windows"][0][0] == "quiet9/temp" and "quiet9" in schema.nodes


def test_large_batches_and_batches_without_a_schema_slot(sample_frames):
    class Small(batch.Schema):
        MAX_ENTRIES = 1
    frames = sample_frames(40)  # 120 frames: codec streams, no DEFLATE
    w = batch.window_body("fork2/x", 10.0, 1.7e9, 2, 1.0, 2.0, 3.0, 5.0, 1.0, 2.0, 1.5, 0)
    for schema in (batch.Schema("gw1", "site1"), Small("gw1", "site1")):
        data = batch.encode("gw1", "site1", [batch.frame_body(*f) for f in frames], [w], schema)
        assert batch.V4_KEYS["deflate"] not in cbor2.loads(data)
        got = batch.decode(data, schemas=[schema.message()])
        assert [r[3] for r in batch.readings(got)] == [batch.frame_readings(f[0], f[2], f[3]) for f in frames]
        assert got["windows"] == [cbor2.loads(w)]


def test_streams_that_do_not_match_the_frame_table_are_an_error(sample_frames):
    schema = batch.Schema("gw1", "site1")
    data = batch.encode("gw1", "site1", [batch.frame_body(*f) for f in sample_frames(3)], [], schema)
    obj = cbor2.loads(data)
    inner = cbor2.loads(columns.inflate(obj[2]))
    inner[batch.V4_KEYS["sensors"]].pop()
    obj[2] = columns.deflate(cbor2.dumps(inner))
    with pytest.raises(batch.BatchError, match="sensor streams"):
        list(batch.readings(batch.decode(cbor2.dumps(obj), schemas=[schema.message()])))


@pytest.mark.parametrize("version", [3, 4])
def test_own_nodes_that_are_not_a_list_are_an_error(version):
    # found by fuzz/fuzz_batch.py: a TypeError before
    schema = cbor2.dumps({"v": 1, "kind": "schema", "gw": "g", "site": "s", "lineage": 1, "nodes": ["n1"],
                          "patterns": [["a"]]})
    inner = {3: 2} if version == 4 else {"nodes": 2}
    env = {"v": 4, 1: [1, 1, 1]} if version == 4 else {"v": 3, "gw": "g", "site": "s", "schema": [1, 1, 1]}
    with pytest.raises(batch.BatchError, match="must be lists"):
        batch.decode(cbor2.dumps({**env, **inner}), schemas=[schema])
