"""Coverage-guided fuzzing of the uplink batch decoder, versions 3 and 4 (compact columns, DEFLATE) included.

    python fuzz/fuzz_batch.py -max_total_time=300        # or: python fuzz/run.py fuzz_batch

Each input is read as a data batch of a known schema (and as the inner map of a
deflated one of version 3 and of version 4): decoding and walking its readings and rows may raise
`batch.BatchError` (UnknownSchema included) and nothing else. The same property
runs in the test suite under hypothesis (tests/gateway/test_batch_schema.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutation import fuzz, instrumented  # noqa: E402

with instrumented(__name__ == "__main__"):
    import cbor2
    from gateway.runtime.uplink import batch, columns

SCHEMA = batch.Decoder([cbor2.dumps({"v": 1, "kind": "schema", "gw": "g", "site": "s", "lineage": 1,
                                     "nodes": ["n1", "n2"], "patterns": [["a", "b"], ["a"]]})])


def check(data: bytes) -> None:
    for payload in (data, cbor2.dumps({"v": 3, "gw": "g", "site": "s", "schema": [1, 2, 2],
                                       "deflate": columns.deflate(data)}),
                    cbor2.dumps({"v": 4, 1: [1, 2, 2], 2: columns.deflate(data)})):
        try:
            got = batch.decode(payload, schemas=SCHEMA)
            list(batch.readings(got))
            list(batch.rows(got))
        except batch.BatchError:
            pass


if __name__ == "__main__":
    fuzz(check, sys.argv)
