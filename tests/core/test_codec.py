"""Series codec: exact round trips, bounded-error modes, one format for both
implementations (same bytes), and corrupt input rejected with CodecError."""
import array
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core_ext import _codec_format as fmt
from core_ext import _codec_py as reference
from core_ext.codec import CodecError

pytestmark = pytest.mark.core("codec")
SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND
SERIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "series"


def bits(a: np.ndarray) -> list[int]:
    return np.asarray(a, np.float64).view(np.uint64).tolist()


def clock(n: int, step: int = SECOND) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * step


def roundtrip(impl, ts, vs, **kw):
    data = impl.encode(ts, vs, **kw)
    assert reference.encode(ts, vs, **kw) == data  # one format: every implementation writes the same bytes
    t2, v2 = impl.decode(data)
    assert t2.dtype == np.int64 and v2.dtype == np.float64
    assert t2.tolist() == np.asarray(ts, np.int64).tolist()
    return data, v2


SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 2.2250738585072009e-308,
           1.7976931348623157e308, -1.7976931348623157e308, 1.0, -1.5]
NAN_PAYLOADS = np.array([0x7FF8_0000_DEAD_BEEF, 0xFFF0_0000_0000_0001, 0x7FF0_0000_0000_0002], np.uint64).view(np.float64)


@pytest.mark.parametrize("name,values", [
    ("decimals", np.round(np.random.default_rng(1).normal(20, 3, 3000), 2)),
    ("full precision", np.random.default_rng(2).normal(0, 1, 3000)),
    ("constant", np.full(5000, 7.25)),
    ("few distinct", np.random.default_rng(3).choice([0.5, 1.25, -3.0, 12.0], 5000)),
    ("special floats", np.array(SPECIAL * 50)),
    ("nan payloads", np.concatenate([NAN_PAYLOADS, np.ones(5), NAN_PAYLOADS])),
    ("gaps", np.where(np.arange(4000) % 97 < 20, np.nan, np.round(np.sin(np.arange(4000) / 50), 3))),
    ("huge integers", np.array([2.0 ** 62, -(2.0 ** 62), 2.0 ** 53 + 2, 1e300, -1e-300] * 40)),
    ("one value", np.array([3.5])),
    ("empty", np.zeros(0)),
    ("longer than a chunk", np.round(np.cumsum(np.random.default_rng(4).normal(0, 1, fmt.CHUNK + 123)), 1)),
])
def test_lossless_roundtrip_is_bit_exact(impl, name, values):
    _, out = roundtrip(impl, clock(len(values)), values)
    assert bits(out) == bits(values)


@pytest.mark.parametrize("ts", [
    clock(1000),
    T0 + np.cumsum(np.random.default_rng(5).integers(1, 10**9, 1000)),
    np.array([-(2**63), 2**63 - 1, 0, -1, 2**63 - 1, -(2**63)] * 10, np.int64),  # wrapping differences
    np.full(100, T0),
])
def test_timestamps_exact_whatever_their_spacing(impl, ts):
    vs = np.arange(len(ts), dtype=np.float64)
    _, out = roundtrip(impl, ts, vs)
    assert bits(out) == bits(vs)


def test_regular_clock_costs_almost_nothing(impl):
    n = 50_000 if not impl.__name__.endswith("_py") else 5_000
    ts = clock(n, 250_000_000)
    data = impl.encode(ts, np.zeros(n))
    assert len(data) * 8 / n < 0.2


def test_accepts_lists_and_array_array(impl):
    ts, vs = [T0, T0 + 5, T0 + 10], [1.5, 2.5, -0.0]
    a = impl.encode(ts, vs)
    assert impl.encode(array.array("q", ts), array.array("d", vs)) == a
    assert bits(impl.decode(a)[1]) == bits(np.array(vs))


def test_bad_arguments_are_value_errors(impl):
    with pytest.raises(ValueError, match="one length"):
        impl.encode([1, 2], [1.0])
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="max_error"):
            impl.encode([1], [1.0], max_error=bad)


@pytest.mark.parametrize("max_error", [1e-3, 0.05, 2.0])
@pytest.mark.parametrize("kind", ["noisy", "smooth", "steps"])
def test_lossy_stays_within_max_error(impl, max_error, kind):
    rng = np.random.default_rng(6)
    n = 3000
    vs = {"noisy": rng.normal(50, 5, n),
          "smooth": 20 + 3 * np.sin(np.arange(n) / 200) + rng.normal(0, 0.01, n),
          "steps": np.repeat(rng.normal(0, 10, n // 100), 100)}[kind]
    vs[::500] = np.nan
    vs[7] = math.inf
    ts = T0 + np.cumsum(rng.integers(1, 3 * SECOND, n))
    data, out = roundtrip(impl, ts, vs, max_error=max_error)
    finite = np.isfinite(vs)
    assert np.all(np.abs(out[finite] - vs[finite]) <= max_error)
    assert bits(out[~finite]) == bits(vs[~finite])
    assert len(data) < len(impl.encode(ts, vs))


def test_lossy_modes_pay_off_where_they_should(impls):
    impl = impls.get("cython", reference)
    n = 4000
    ts = clock(n)
    ramp = np.linspace(0, 100, n) + np.random.default_rng(7).normal(0, 0.001, n)
    steps = np.repeat(np.random.default_rng(8).normal(0, 10, n // 200), 200) + np.random.default_rng(9).normal(0, 0.001, n)
    kind = {}
    for name, vs in (("ramp", ramp), ("steps", steps)):
        data = impl.encode(ts, vs, max_error=0.01)
        r = fmt.Reader(data)
        r.take(5), r.varint(), r.varint()
        fmt.read_istream(r, n, impl)
        kind[name] = r.u8()
    assert kind["ramp"] == fmt.K_LINEAR  # a straight line: two points
    assert kind["steps"] == fmt.K_HOLD   # a level held: one point a step


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=300),
       st.integers(0, 3))
def test_property_roundtrip_and_same_bytes(impls, values, spacing):
    vs = np.array(values, np.float64)
    if spacing == 3 and len(vs):
        ts = np.sort(np.random.default_rng(len(vs)).integers(-(2**62), 2**62, len(vs)))
    else:
        ts = clock(len(vs), [1, SECOND, 10**6 + 7][spacing % 3])
    out = {}
    for name, impl in impls.items():
        data = impl.encode(ts, vs)
        t2, v2 = impl.decode(data)
        assert t2.tolist() == ts.tolist() and bits(v2) == bits(vs)
        out[name] = data
    assert len(set(out.values())) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300), st.floats(1e-6, 100.0))
def test_property_lossy_bound_and_agreement(impls, values, max_error):
    vs = np.array(values, np.float64)
    ts = clock(len(vs))
    out = {name: impl.encode(ts, vs, max_error=max_error) for name, impl in impls.items()}
    assert len(set(out.values())) == 1
    for impl in impls.values():
        _, v2 = impl.decode(next(iter(out.values())))
        assert np.all(np.abs(v2 - vs) <= max_error)


def _outcome(impl, data):
    try:
        t, v = impl.decode(data)
        return ("ok", t.tolist(), bits(v))
    except CodecError as exc:
        return ("error", type(exc).__name__)


def test_long_series_whose_divisor_changes_and_many_levels(impls):
    # past the sampled plan's threshold: the divisor of the clock changes late (from
    # 1 s to 0.5 s), and the dictionary has levels of both signs and many magnitudes
    rng = np.random.default_rng(11)
    ts = T0 + np.cumsum(rng.choice([SECOND, 2 * SECOND], 20_000))
    ts[15_000:] = ts[14_999] + np.cumsum(rng.choice([SECOND // 2, SECOND], 5_000))
    levels = np.round(rng.normal(0, 1e4, 2_000), 1) * rng.choice([-1.0, 1.0, 1e-3, 1e12], 2_000)
    vs = rng.choice(levels, 20_000)
    for impl in impls.values():
        _, out = roundtrip(impl, ts, vs)
        assert bits(out) == bits(vs)


def test_threads_encode_and_decode_at_once(impls):
    # the kernels release the GIL: each call must keep to its own memory (the gateway may
    # encode in a worker thread while another thread does too)
    from concurrent.futures import ThreadPoolExecutor
    impl = impls.get("cython", reference)
    rng = np.random.default_rng(12)
    series = [(clock(20_000), rng.choice(np.round(rng.normal(0, 50, 500 * (k + 1)), 2), 20_000)) for k in range(4)]
    expected = [impl.encode(ts, vs) for ts, vs in series]

    def work(k):
        data = impl.encode(*series[k % 4])
        t, v = impl.decode(data)
        return data, bits(v) == bits(series[k % 4][1])

    with ThreadPoolExecutor(4) as pool:
        for k, (data, exact) in enumerate(pool.map(work, range(32))):
            assert data == expected[k % 4] and exact


def _corrupt_bases():
    rng = np.random.default_rng(10)
    ts = clock(300)
    py = reference
    return [py.encode(ts, np.round(rng.normal(0, 5, 300), 2)),             # decimal
            py.encode(ts, rng.choice([0.5, -2.25, np.nan, 7.0], 300)),       # dictionary
            py.encode(ts[:40], rng.normal(0, 1, 40)),                        # float bits
            py.encode(ts[:20], rng.integers(0, 2**62, 20).view(np.float64)),  # raw
            py.encode(ts, np.repeat(rng.normal(0, 1, 6), 50), max_error=0.01)]  # lossy


@pytest.mark.parametrize("base", _corrupt_bases(), ids=["decimal", "dictionary", "bits", "raw", "lossy"])
def test_corrupt_streams_raise_codec_error_in_both(impls, base):
    for i in range(len(base)):
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(base)
            data[i] ^= flip
            results = {name: _outcome(impl, bytes(data)) for name, impl in impls.items()}
            assert len({repr(r) for r in results.values()}) == 1, (i, flip, results)
    for cut in range(len(base)):
        for impl in impls.values():
            with pytest.raises(CodecError):
                impl.decode(base[:cut])


@pytest.mark.parametrize("data,message", [
    (b"", "magic"),
    (b"XYZ\x01", "magic"),
    (b"HRZ\x09\x00\x00\x00", "version 9"),
    (b"HRZ\x01\x00" + b"\xff\xff\xff\xff\x07" + b"\x80\x80\x04", "cannot fit"),
    (fmt.MAGIC + bytes((fmt.VERSION, 0, 0, 0)) + b"junk", "chunk size 0"),
    (fmt.MAGIC + bytes((fmt.VERSION, 0, 0, 1)) + b"junk", "after the end"),
])
def test_bad_headers_say_what_is_wrong(impl, data, message):
    with pytest.raises(CodecError, match=message):
        impl.decode(data)


def test_a_varint_past_64_bits_is_an_error(impl):
    # a divisor whose tenth byte carries bits above 2**64 (a decoder reading into a
    # 64-bit integer would silently drop them)
    ok = fmt.MAGIC + bytes((fmt.VERSION, 0, 1, 1)) + b"\x00\x00\x00" + b"\xff" * 9 + b"\x01"
    with pytest.raises(CodecError):
        impl.decode(ok[:-1] + b"\x02")
    with pytest.raises(CodecError):
        impl.decode(ok)  # 2**64 - 1 itself is a varint, but this stream lacks the rest


def test_decoder_rejects_non_bytes(impl):
    with pytest.raises(CodecError):
        impl.decode("HRZ")


def test_a_short_stream_cannot_claim_a_huge_series(impl):
    # 2**31 values of one constant would be a few bytes if allowed: the decoder bounds
    # what it allocates by what the stream's chunks can hold
    header = fmt.MAGIC + bytes((fmt.VERSION, 0)) + b"\xff\xff\xff\xff\x07" + b"\x80\x80\x04"
    with pytest.raises(CodecError, match="cannot fit"):
        impl.decode(header + b"\x00" * 16)


@pytest.mark.skipif(not SERIES.is_dir(), reason="../shared/data/series is not beside the checkout")
def test_real_series_roundtrip_exactly_and_beat_float_bytes(impls):
    from bench.codec import load
    impl = impls.get("cython", reference)
    for path in sorted(SERIES.glob("*.csv")):
        for name, (ts, vs) in load(path).items():
            data = impl.encode(ts, vs)
            t2, v2 = impl.decode(data)
            assert t2.tolist() == ts.tolist() and bits(v2) == bits(vs), name
            assert len(data) < vs.nbytes * 0.8, name
            roundtrip(impl, ts[:1500], vs[:1500])  # and the reference agrees, on a slice
