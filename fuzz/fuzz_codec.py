"""Coverage-guided fuzzing of the series decoder (libFuzzer via atheris).

    python fuzz/fuzz_codec.py -max_total_time=300 -rss_limit_mb=1024   # or: python fuzz/run.py fuzz_codec

Each input goes to the compiled decoder and to the pure-Python reference; they
must agree (the same series, or both a CodecError), and nothing else may be
raised. Half the inputs are valid streams with a few bytes changed (fuzz/mutation.py),
so the fuzzer reaches past the header. The same properties run in the test suite
(tests/core/test_codec.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from mutation import from_seeds, fuzz, instrumented  # noqa: E402

with instrumented(__name__ == "__main__"):
    from core_ext import implementations
    from core_ext.codec import CodecError
    IMPLS = implementations("codec")  # imports the reference: instrumented too

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


def check(raw: bytes) -> None:
    data = from_seeds(SEEDS, raw)
    results = {name: outcome(impl, data) for name, impl in IMPLS.items()}
    if len({repr(r) for r in results.values()}) > 1:
        raise AssertionError(f"implementations disagree on {data.hex()}")


if __name__ == "__main__":
    fuzz(check, sys.argv)
