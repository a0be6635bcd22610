"""The CoAP server's own work a request: from the datagram to the payload offered, and the answer.

    python bench/coap_request.py [--requests N] [--rounds R]

On the requests nodes send (confirmable POST /d, a 4-byte token, Content-Format 17, a
145-byte COSE_Mac0, 100 nodes), the server's work around the pipeline, a request:
the datagram read into (type, message id, token, payload) with the checks that decide
it is offered, and its 2.04 answer written around a 20-byte ack. The MAC check, the
commit and the socket calls are the same for every variant and left out. The variants
are alternated in each of R rounds; the least of the rounds with their median and
most, µs a request, and the median of the rounds' ratios:

- fast path, compiled: `core_ext._coap.data_request`, the commit queue's room
  (`Pipeline.has_space`) and `core_ext._coap.response` (what the gateway runs);
- full path, compiled parser: `core_ext._coap.parse` (the options as a dict) and the
  server's checks of a request (`CoapServer._check`), the answer by
  `gateway.protocol.coap.response` (what the gateway ran before the fast path);
- fast path and full path with the pure-Python references (`core_ext._coap_py`).

The server takes the full path for every other request (other options, a ping, an
update's block); it gives the same answers (tests/core/test_coap.py).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core_ext import _coap_py, implementations  # noqa: E402
from gateway.protocol import coap as spec, cose  # noqa: E402
from gateway.protocol.numbers import (CF_COSE_MAC0, COAP_ACK, COAP_CHANGED, COAP_CON, COAP_EMPTY, COAP_NON,  # noqa: E402
                                      COAP_RST)

NODES = 100
ACK = bytes(range(20))


def requests(n: int) -> list[bytes]:
    keys = [os.urandom(32) for _ in range(NODES)]
    body = bytes(range(120))  # a SenML pack's size (what is in it does not matter here)
    return [spec.request(k % 65536, cose.mac0(keys[k % NODES], f"n{k % NODES}".encode(), body, seq=k),
                         token=(k % 2 ** 32).to_bytes(4, "big")) for k in range(n)]


def fast(data_request, response, server):
    has_space = server.pipeline.has_space

    def run(msgs):
        out = 0
        for data in msgs:
            mtype, mid, token, payload = data_request(data)
            if not has_space():
                continue
            out += len(response(COAP_ACK if mtype == COAP_CON else COAP_NON, COAP_CHANGED, mid, token, ACK, CF_COSE_MAC0))
        return out
    return run


def full(parse, response, server):
    check = server._check

    def run(msgs):
        out = 0
        for data in msgs:
            mtype, code, mid, token, options, payload = parse(data)
            if mtype in (COAP_ACK, COAP_RST) or code == COAP_EMPTY:
                continue
            if check(code, options, payload) is not None:
                continue
            out += len(response(COAP_ACK if mtype == COAP_CON else COAP_NON, COAP_CHANGED, mid, token, ACK, CF_COSE_MAC0))
        return out
    return run


async def make_server(tmp: Path):
    from gateway.config import from_dict
    from gateway.runtime.ingest import Ingest
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.pipeline import Pipeline
    from gateway.runtime.registry import Registry
    from gateway.runtime.spool import Spool
    from gateway.runtime.transports.coap import CoapServer
    cfg = from_dict({"gateway": {"data_dir": str(tmp)}})
    spool = await Spool.open(cfg.spool_path)
    pipe = Pipeline(cfg, Ingest(Registry(), {}), spool, Metrics())
    return CoapServer("127.0.0.1", 0, pipe), spool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    impls = implementations("coap")
    if "cython" not in impls:
        sys.exit("core_ext._coap is not built: ./run.sh setup builds it")
    c, py = impls["cython"], impls["python"]
    msgs = requests(args.requests)
    assert all(c.data_request(m) == _coap_py.data_request(m) is not None for m in msgs)

    async def run():
        with tempfile.TemporaryDirectory() as tmp:
            server, spool = await make_server(Path(tmp))
            variants = {"fast path, compiled": fast(c.data_request, c.response, server),
                        "full path, compiled parser": full(c.parse, spec.response, server),
                        "fast path, reference": fast(py.data_request, py.response, server),
                        "full path, reference": full(py.parse, spec.response, server)}
            outs = {k: fn(msgs[:100]) for k, fn in variants.items()}  # warm, and the same answers' bytes
            assert len(set(outs.values())) == 1, outs
            times = {k: [] for k in variants}
            for r in range(args.rounds):
                for k, fn in variants.items():
                    t0 = time.process_time()
                    fn(msgs)
                    times[k].append((time.process_time() - t0) / len(msgs) * 1e6)
                print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{times[k][-1]:.2f}" for k in variants),
                      file=sys.stderr)
            await spool.close()
            return times
    times = asyncio.run(run())
    least = {k: min(v) for k, v in times.items()}
    print(f"{len(msgs):,} requests ({len(msgs[0])} bytes, {NODES} nodes), {args.rounds} rounds alternated, "
          "µs a request: least (median, most)")
    for k, v in times.items():
        print(f"  {k:28s} {least[k]:6.3f}  ({statistics.median(v):.3f}, {max(v):.3f})")

    # the ratios round by round (each round's variants ran within a second or so of one another,
    # on the same machine's speed), their median
    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))
    print(f"fast path ÷ full path (median of the rounds' ratios): compiled "
          f"{ratio('fast path, compiled', 'full path, compiled parser'):.2f}, "
          f"reference {ratio('fast path, reference', 'full path, reference'):.2f}; saved a request, compiled: "
          f"{statistics.median(y - x for x, y in zip(times['fast path, compiled'], times['full path, compiled parser'])):.2f} µs")


if __name__ == "__main__":
    main()
