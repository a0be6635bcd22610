"""Coverage-guided fuzzing of the SenML parser (libFuzzer via atheris).

    python fuzz/fuzz_ingest.py -max_total_time=300        # or: python fuzz/run.py fuzz_ingest

Each input goes to the compiled parser and to the pure-Python reference; they
must agree (same readings, or an IngestError at the same offset), and nothing
else may be raised. The same property runs in the test suite under hypothesis
(tests/core/test_ingest.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutation import fuzz, instrumented  # noqa: E402

with instrumented(__name__ == "__main__"):
    from core_ext import implementations
    from core_ext.ingest import IngestError
    IMPLS = implementations("ingest")  # imports the reference: instrumented too


def outcome(impl, data):
    p = impl.Parser(max_series=8, max_records=16)
    try:
        n = p.parse(data, 1000.0)
    except IngestError as exc:
        return ("error", exc.offset)
    sids, ts, vs, other = p.take()
    return ("ok", n, p.names, bytes(sids), bytes(ts), [v if v == v else "nan" for v in vs], other)


def check(data: bytes) -> None:
    results = {name: outcome(impl, data) for name, impl in IMPLS.items()}
    if len(set(map(repr, results.values()))) > 1:
        raise AssertionError(f"implementations disagree on {data.hex()}: {results}")


if __name__ == "__main__":
    fuzz(check, sys.argv)
