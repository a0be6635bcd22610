"""Coverage-guided fuzzing of the series decoder (libFuzzer via atheris).

    pip install atheris && python fuzz/fuzz_codec.py -max_total_time=300 -rss_limit_mb=1024

Each input goes to the compiled decoder and to the pure-Python reference; they
must agree (the same series, or both a CodecError), and nothing else may be
raised. Half the inputs are valid streams with a few bytes changed, so the
fuzzer reaches past the header. The same properties run in the test suite
(tests/core/test_codec.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atheris  # noqa: E402

with atheris.instrument_imports():
    import numpy as np
    from core_ext import implementations
    from core_ext.codec import CodecError

IMPLS = implementations("codec")
_rng = np.random.default_rng(1)
SEEDS = [IMPLS["python"].encode(1000 * np.arange(n), v) for n, v in (
    (200, np.round(_rng.normal(0, 3, 200), 2)), (100, _rng.normal(0, 1, 100)),
    (300, _rng.choice([1.0, 2.5, np.nan], 300)))]


def outcome(impl, data):
    try:
        t, v = impl.decode(data)
    except CodecError:
        return ("error",)
    return ("ok", t.tolist(), v.view(np.uint64).tolist())


def test_one(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    if fdp.ConsumeBool():
        data = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            data[fdp.ConsumeIntInRange(0, len(data) - 1)] = fdp.ConsumeInt(1) & 0xFF
        data = bytes(data)
    else:
        data = fdp.ConsumeBytes(fdp.remaining_bytes())
    results = {name: outcome(impl, data) for name, impl in IMPLS.items()}
    if len({repr(r) for r in results.values()}) > 1:
        raise AssertionError(f"implementations disagree on {data.hex()}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
