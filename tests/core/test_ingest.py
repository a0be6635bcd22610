import json
import math
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core_ext.ingest import IngestError

pytestmark = pytest.mark.core("ingest")
VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "frames.json").read_text())


def parse(impl, payload, now=1000.0, **kw):
    p = impl.Parser(**kw)
    n = p.parse(payload, now)
    sids, ts, vs, other = p.take()
    return n, p.names, list(zip(sids, ts, vs)), other


def test_golden_frames(impl):
    p = impl.Parser()
    total = 0
    for v in VECTORS["frames"]:
        total += p.parse(bytes.fromhex(v["senml_hex"]), 0.0)
    sids, ts, vs, other = p.take()
    assert total == len(sids) == 19
    # grouped by sensor: a run of records after bn "node/sensor" (RFC 8428: name = bn + n)
    assert p.names == ["pump3/temp", "pump3/vib", "n-7_x/p", "press1/pressure", "pump3/flow", "pump3/cmd",
                       "pump3/error"]
    assert list(vs[:5]) == [21.5, 21.0625, 21.125, -3, 1e6]
    assert math.copysign(1, vs[10]) == -1  # -0.0 keeps its sign
    # a base time with a fractional second and ms offsets: bt is the double nearest ms / 1000, and
    # bt + t lands within a microsecond of the node's integer ms
    assert ts[13] == 1700000000.123
    assert [round(t * 1000) for t in ts[13:19]] == [1700000000123, 1700000000123, 1700000000124, 1700000100248,
                                                    1700000000123, 1700000001122]
    assert [(p.names[sid], t, v) for sid, t, v in other] == [
        ("pump3/cmd", 1700000000.123, "c-1:ok"),
        ("pump3/error", 1700000001.001, "sensor vib (adxl345) did not start: no device")]
    assert len(p) == 0 and p.take()[0].tolist() == []


def test_rfc8428_features(impl):
    recs = [{-2: "dev/", -3: 1.32e9, -5: 10.0, 0: "a", 2: 1.5}, {0: "b", 6: 1}, {0: "c", 3: "open"},
            {0: "d", 4: False}, {0: "e", 8: b"\x00\x01"}, {-6: 100, 0: "f", 5: 2}, {0: "g", 2: 1, 6: -5e8},
            {"unknown": 1, 99: [1, {2: 3}], 0: "h", 2: 7}]
    n, names, rows, other = parse(impl, cbor2.dumps(recs), now=50.0)
    assert n == 5
    assert names == ["dev/a", "dev/b", "dev/c", "dev/d", "dev/e", "dev/f", "dev/g", "dev/h"]
    assert rows == [(0, 1.32e9, 11.5), (1, 1.32e9 + 1, 10.0), (5, 1.32e9, 102.0), (6, 1.32e9 - 5e8, 11.0),
                    (7, 1.32e9, 17.0)]
    assert other == [(2, 1.32e9, "open"), (3, 1.32e9, False), (4, 1.32e9, b"\x00\x01")]


def test_relative_time_and_indefinite_lengths(impl):
    payload = b"\x9f" + b"\xbf" + cbor2.dumps(0) + cbor2.dumps("x") + cbor2.dumps(2) + cbor2.dumps(1.5) \
        + cbor2.dumps(6) + cbor2.dumps(-2) + b"\xff\xff"
    n, names, rows, _ = parse(impl, payload, now=100.0)
    assert (n, names, rows) == (1, ["x"], [(0, 98.0, 1.5)])


@pytest.mark.parametrize("payload, offset, msg", [
    (b"", 0, "truncated"), (b"\xa0", 0, "must be an array"), (b"\x81\x01", 1, "not a map"),
    (b"\x82\xa2\x00\x61x\x02\x01\xa1", 8, "truncated"), (cbor2.dumps([{0: "x", 2: "1"}]), 1, "v must be a number"),
    (cbor2.dumps([{0: "x"}]), 1, "no value"), (cbor2.dumps([{0: " x", 2: 1}]), 1, "invalid name"),
    (cbor2.dumps([{0: "x", 2: 1, 3: "a"}]), 1, "several values"), (cbor2.dumps([{0: "x", 2: 1, "m_": 1}]), 1,
                                                                     "must-understand"),
    (cbor2.dumps([{0: "x", 2: 1}]) + b"\x00", 7, "bytes after"), (b"\x81\xc1\x00", 1, "tag"),
    (b"\x81\xa1\x00\x62\xff\xfe", 3, "UTF-8"), (cbor2.dumps([{0: "x" * 200, 2: 1}]), 1, "invalid name"),
    (b"\x81" + b"\x81" * 20 + b"\x00", 17, "nested"), (cbor2.dumps([{}]), 0, "no reading"),
])
def test_errors_name_the_offset(impl, payload, offset, msg):
    with pytest.raises(IngestError, match=msg) as info:
        parse(impl, payload)
    assert info.value.offset == offset


def test_bounds_and_all_or_nothing(impl):
    p = impl.Parser(max_series=2, max_records=3)
    with pytest.raises(IngestError, match="max_records"):
        p.parse(cbor2.dumps([{0: "a", 2: 1}] * 4), 0.0)
    p.parse(cbor2.dumps([{0: "a", 2: 1}]), 0.0)
    with pytest.raises(IngestError, match="max_series"):
        p.parse(cbor2.dumps([{0: "b", 2: 1}, {0: "c", 2: 1}]), 0.0)
    assert p.names == ["a"]  # nothing of the failed payload stayed
    sids, ts, vs, _ = p.take()
    assert list(vs) == [1.0]
    assert p.series_id("b") == 1 and p.series_id("a") == 0


# -- one truth: the compiled parser equals the reference on anything ---------------------------

label = st.sampled_from([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "x", "y_", False, True, 2.0, None])
scalar = (st.integers(-(2**64), 2**64 - 1) | st.floats(width=16) | st.floats(width=32) | st.floats()
          | st.text(alphabet="ab/:-_ é", max_size=6) | st.binary(max_size=4) | st.booleans() | st.none())
record = st.dictionaries(label, scalar | st.lists(scalar, max_size=2), max_size=6)
names = st.sampled_from(["n1/", "n2/", "", "bad name/"])


@st.composite
def packs(draw):
    recs = draw(st.lists(record, min_size=0, max_size=10))
    if recs and draw(st.booleans()):
        recs[0][-2] = draw(names)
    data = cbor2.dumps(recs)
    if draw(st.integers(0, 3)) == 0 and data:  # sometimes damage it
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if draw(st.integers(0, 5)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


def outcome(impl, data, max_series=5):
    p = impl.Parser(max_series=max_series, max_records=8)
    try:
        n = p.parse(data, 123.0)
    except IngestError as exc:
        return ("error", exc.offset, p.names, [bytes(c) for c in p.take()[:3]])
    sids, ts, vs, other = p.take()
    return ("ok", n, p.names, bytes(sids), bytes(ts), _nan_safe(vs), other)


def _nan_safe(vs):
    return [("nan" if v != v else v.hex()) for v in vs]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packs())
def test_compiled_equals_reference(impls, compiled, data):
    assert outcome(compiled, data) == outcome(impls["python"], data)


@pytest.mark.parametrize("data", [
    bytes.fromhex("89bfffa2f4f6f4f42b0000"),  # found by fuzz/fuzz_ingest.py: a False key is not label 0
    cbor2.dumps([{0: "x", 2.0: 1.0, True: "n"}]),
])
def test_non_integer_keys_are_never_labels(impls, compiled, data):
    assert outcome(compiled, data) == outcome(impls["python"], data)
    assert outcome(impls["python"], data)[0] == "error"


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(impls, compiled, data):
    assert outcome(compiled, data) == outcome(impls["python"], data)


_TIMES = st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e10, max_value=1e10),
                   st.integers(1_600_000_000_000, 1_900_000_000_000).map(lambda ms: ms / 1000),
                   st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(times=st.lists(_TIMES, max_size=40))
def test_spread_gives_each_reading_to_its_columns_in_exact_nanoseconds(impl, times):
    from array import array

    from gateway.runtime.uplink.batch import _ns
    cols = [([], []) for _ in times]
    impl.spread(cols, array("d", times), array("d", range(len(times))))
    assert [c[0] for c in cols] == [[_ns(t)] for t in times]  # the uplink's exact form, past int64 too
    assert [c[1] for c in cols] == [[float(i)] for i in range(len(times))]
    again = [([1], [2.0]) for _ in times]
    impl.spread(again, array("d", times), array("d", range(len(times))))
    assert [c[0][1:] for c in again] == [[_ns(t)] for t in times]  # appended after what the columns held


def test_spread_refuses_columns_that_do_not_match_the_readings(impl):
    from array import array
    with pytest.raises(ValueError, match="2 columns for 3 times"):
        impl.spread([([], []), ([], [])], array("d", [1.0, 2.0, 3.0]), array("d", [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        impl.spread([([], [])], array("d", [math.nan]), array("d", [1.0]))


def _spooled():
    """Frame bodies as the spool holds them: the golden packs (text values among them) from
    two nodes, then reception times the compiled path hands back to the reference's integers:
    an integer one and one past int64 nanoseconds."""
    bodies = [cbor2.dumps([f"n{i % 2}", i, 1.7e9 + i / 3, bytes.fromhex(v["senml_hex"])])
              for i, v in enumerate(VECTORS["frames"])]
    bodies.append(cbor2.dumps(["n0", 99, 1_700_000_123, cbor2.dumps([{0: "a", 2: 1.5}])]))
    bodies.append(cbor2.dumps(["n1", 100, 1.0e19, cbor2.dumps([{0: "a", 2: 2.5}, {0: "b", 2: 3.5}])]))
    return bodies


def _frame_loop(impl, bodies):
    """What spread_frames does, frame by frame through parse, take and spread."""
    from gateway.runtime.uplink.batch import _ns
    parser, nodes, known, made, table, out = impl.Parser(), {}, {}, [], ([], [], [], []), []
    for fi, body in enumerate(bodies):
        node, seq, recv, senml = cbor2.loads(body)
        ni = nodes.setdefault(node, len(nodes))
        parser.parse(senml, recv)
        sids, ts, vs, oth = parser.take()
        key = (ni, sids.tobytes())
        if key not in known:
            made.append((ni, node, list(sids)))
            known[key] = (len(made), [([], []) for _ in sids])
        impl.spread(known[key][1], ts, vs)
        for col, x in zip(table, (_ns(recv), seq, ni, known[key][0])):
            col.append(x)
        if oth:
            out.append((fi, node, oth))
    return nodes, made, table, out, [c for _p, cols in known.values() for c in cols]


def _spread_frames(impl, bodies):
    nodes, known, made, table = {}, {}, [], ([], [], [], [])

    def entry(ni, node, sids):
        made.append((ni, node, list(sids)))
        return len(made), [([], []) for _ in sids]

    out = impl.spread_frames(impl.Parser(), bodies, nodes, known, entry, table)
    return nodes, made, table, out, [c for _p, cols in known.values() for c in cols]


def test_spread_frames_is_the_per_frame_loop(impl):
    bodies = _spooled()
    got = _spread_frames(impl, bodies)
    assert got == _frame_loop(impl, bodies)
    assert got[2][0][-2:] == [1_700_000_123 * 10**9, 10**28]  # exact integers, not doubles
    assert [fi for fi, _node, _oth in got[3]] == [4, 5]  # the golden frames with text values


def test_spread_frames_agrees_with_the_reference(compiled, impls):
    bodies = _spooled()
    assert _spread_frames(compiled, bodies) == _spread_frames(impls["python"], bodies)


def _spread_frames_typed(impl, bodies):
    """spread_frames with typed columns (array 'q' and 'd', as the uplink's batches make them)."""
    from array import array
    nodes, known, made, table = {}, {}, [], ([], [], [], [])

    def entry(ni, node, sids):
        made.append((ni, node, list(sids)))
        return len(made), [(array("q"), array("d")) for _ in sids]

    out = impl.spread_frames(impl.Parser(), bodies, nodes, known, entry, table)
    return nodes, made, table, out, [(list(t), list(v)) for _p, cols in known.values() for t, v in cols]


def test_spread_frames_fills_typed_columns_as_lists(impl):
    """Arrays of 'q' and 'd' get the same readings as lists; a time past int64 nanoseconds
    cannot go into an array of 'q': OverflowError, as array('q', [...]) of the list raises."""
    bodies = _spooled()
    got = _spread_frames(impl, bodies[:-1])
    assert _spread_frames_typed(impl, bodies[:-1]) == (got[0], got[1], got[2], got[3], [tuple(c) for c in got[4]])
    past = cbor2.dumps(["n0", 1, 1.0, cbor2.dumps([{0: "a", 6: 1.0e10, 2: 1.0}])])
    with pytest.raises(OverflowError):
        _spread_frames_typed(impl, [past])


def _odd_bodies():
    """Frame bodies that are not in frame_body's own layout, each read by cbor2 (or refused by it)."""
    senml = cbor2.dumps([{0: "a", 2: 1.5}, {0: "b", 2: 2.5}])
    good = cbor2.dumps(["n0", 7, 1.7e9, senml])
    return [
        good,
        bytes([0x84, 0x78, 2]) + b"n0" + bytes([0x18, 7]) + good[5:],  # heads longer than they need be
        cbor2.dumps(["n0", 7, 1.7e9, senml]) + b"\x00",  # a byte after the body
        good[:-1],  # truncated inside its SenML
        good[:8],  # truncated inside its time
        cbor2.dumps(["n0", 7, 1.7e9, senml])[:1] + b"\x62\xff\xfe" + good[4:],  # a node that is not UTF-8
        cbor2.dumps(["n0", 7, 1.5, senml]),  # a time cbor2 writes in half precision
        cbor2.dumps(["n0", 7, 1.7e9, bytearray(senml)]),
        cbor2.dumps(["n0", -7, 1.7e9, senml]),  # a negative sequence number
        cbor2.dumps([b"n0", 7, 1.7e9, senml]),  # a node in bytes
        cbor2.dumps(["n0", 7, 1.7e9, senml, 1]),  # five items
        bytes([0x9f]) + good[1:] + b"\xff",  # an indefinite array
        cbor2.dumps(["n0", 2**64 - 1, 1.7e9, senml]),
        cbor2.dumps(["né", 7, -1.0e12, senml]),
    ]


def test_spread_frames_reads_any_body_as_cbor2_does(impl):
    """The compiled loop reads the spool's own layout itself and leaves anything else to cbor2:
    each body, alone, gives what the frame-by-frame loop gives, or the same error."""
    for body in _odd_bodies():
        try:
            want = _frame_loop(impl, [body])
        except Exception as exc:  # noqa: BLE001 - the loop's error, whatever it is
            with pytest.raises(type(exc)):
                _spread_frames(impl, [body])
        else:
            assert _spread_frames(impl, [body]) == want, body.hex()


def test_spread_frames_refuses_what_the_loop_would(impl):
    p = impl.Parser()
    p.parse(cbor2.dumps([{0: "a", 2: 1.0}]), 0.0)
    with pytest.raises(ValueError, match="holding no readings"):
        impl.spread_frames(p, [], {}, {}, None, ([], [], [], []))
    with pytest.raises(ValueError, match="1 columns for 2"):  # an entry with too few columns
        impl.spread_frames(impl.Parser(), _spooled()[-1:], {}, {}, lambda *a: (0, [([], [])]), ([], [], [], []))
    with pytest.raises(IngestError):
        impl.spread_frames(impl.Parser(), [cbor2.dumps(["n", 1, 0.0, b"\xff"])], {}, {}, None, ([], [], [], []))
    with pytest.raises(ValueError):  # a body that is not [node, seq, received, senml]
        impl.spread_frames(impl.Parser(), [cbor2.dumps(["n", 1, 0.0])], {}, {}, None, ([], [], [], []))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(node=st.one_of(st.text(max_size=300), st.sampled_from(["\ud800", "n1"]), st.integers()),
       seq=st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**70), 2**70), st.sampled_from([True, 2**64])),
       received=st.one_of(st.floats(), st.integers(0, 2**40)),
       senml=st.one_of(st.binary(max_size=300), st.sampled_from([bytes(65535), bytes(65536)]), st.just(bytearray(3))))
def test_frame_body_is_what_cbor2_writes(impl, node, seq, received, senml):
    try:
        want = cbor2.dumps([node, seq, received, senml])
    except Exception as exc:  # noqa: BLE001 (whatever cbor2 raises, the body raises it too)
        with pytest.raises(type(exc)):
            impl.frame_body(node, seq, received, senml)
        return
    assert impl.frame_body(node, seq, received, senml) == want
