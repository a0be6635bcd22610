"""Coverage-guided fuzzing of the CoAP message parser (gateway/protocol/coap.py) and the
server's datagram handling (gateway/runtime/transports/coap.py), libFuzzer via atheris.

    python fuzz/fuzz_coap.py -max_total_time=300        # or: python fuzz/run.py fuzz_coap

An input is up to four datagrams (split at the bytes `\\xc0\\xfe`), each received by one
server from one of two endpoints, so repeats and message ids collide. Checked:
- `parse` (gateway/protocol/coap.py) returns a message or raises CoapFormatError, nothing
  else, and the server's compiled parse (core_ext.coap) gives the same or the same error; what it accepts, `encode` writes back byte for byte (RFC 7252 §3 leaves one way to
  write each option, so parser and encoder must agree exactly);
- `datagram_received` never raises; it answers a datagram at most once, never an ACK, an
  RST or a malformed one; each answer parses, has the request's message id and token, is
  an ACK to a CON, a NON to a NON, an RST to a CON ping; a malformed datagram is counted;
- a repeated message id from one endpoint is a duplicate: a CON gets the first answer
  again, a NON nothing.
The server's pipeline is the real one (real Ingest and a real SQLite spool), not running:
what it takes waits in its queue, and a full queue is answered 5.03.
Half the inputs are valid POSTs with a few bytes changed (fuzz/mutation.py).
"""
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cbor2  # noqa: E402
from mutation import from_seeds, fuzz, instrumented  # noqa: E402

with instrumented(__name__ == "__main__"):
    from gateway.config import from_dict
    from gateway.protocol import cose
    from gateway.runtime.ingest import Ingest
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.pipeline import Pipeline
    from gateway.runtime.registry import Registry
    from gateway.runtime.spool import Spool
    from gateway.protocol.coap import CoapFormatError, encode, parse, request
    from gateway.protocol.numbers import COAP_ACK, COAP_CON, COAP_EMPTY, COAP_NON, COAP_OPT_SIZE1, COAP_RST
    from gateway.runtime.transports.coap import CoapServer
    from core_ext import implementations
    COAP_IMPLS = implementations("coap")

KEY = bytes(range(32))
SPLIT = b"\xc0\xfe"
ENDPOINTS = [("127.0.0.1", 40001), ("::1", 40002)]


def as_options(options: dict) -> list:
    return [(number, value) for number, values in options.items() for value in values]


def _frame(seq: int) -> bytes:
    return cose.mac0(KEY, b"n1", cbor2.dumps([{-2: "n1/", -3: 1_700_000_000 + seq, 0: "temp", 2: 20.5}]), seq=seq)


SEEDS = [request(7, _frame(1), b"\x07"), request(8, _frame(2), b"\x08", mtype=COAP_NON),
         request(9, _frame(3), b"\x09") + SPLIT + request(9, _frame(3), b"\x09"),
         encode(COAP_CON, COAP_EMPTY, 5),  # a CON ping
         request(6, b"q", b"\x01", cf=None, code=1, options=[(COAP_OPT_SIZE1, b"\x04\x00"), (300, b"x" * 20)])]


class Recorder:
    """Where the server's answers go instead of a UDP socket."""

    def __init__(self):
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data, addr):
        self.sent.append((bytes(data), addr))


class Bench:
    """A pipeline over a real spool, opened once; a new server for every input."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="fuzz-coap-")
        self.loop = asyncio.new_event_loop()
        self.cfg = from_dict({"gateway": {"data_dir": self.dir.name}})
        self.spool = self.loop.run_until_complete(Spool.open(self.cfg.spool_path))
        self.pipeline = None

    def server(self) -> CoapServer:
        if self.pipeline is None or not self.pipeline.has_space():
            reg = Registry()
            reg.add("n1", KEY)
            self.pipeline = Pipeline(self.cfg, Ingest(reg), self.spool, Metrics())
        server = CoapServer("127.0.0.1", 0, self.pipeline)
        server._transport = Recorder()
        return server


BENCH = Bench()
logging.disable(logging.WARNING)  # every rejected frame is logged: millions here


def _parsed(fn, data: bytes):
    try:
        return fn(data)
    except CoapFormatError as exc:
        return ("error", str(exc))


def check_parse(data: bytes):
    msg = _parsed(parse, data)
    for kind, impl in COAP_IMPLS.items():  # the server's parse (core_ext.coap): the same, or the same error
        if _parsed(impl.parse, data) != msg:
            raise AssertionError(f"core_ext.coap ({kind}) and protocol/coap.py disagree on {data.hex()}")
    if msg[0] == "error":
        return None
    mtype, code, mid, token, options, payload = msg
    if encode(mtype, code, mid, token, as_options(options), payload) != data:
        raise AssertionError(f"parse then encode changed the datagram {data.hex()}: {msg}")
    return msg


def check(raw: bytes) -> None:
    datagrams = from_seeds(SEEDS, raw).split(SPLIT)[:4]
    server = BENCH.server()
    metrics = server.pipeline.metrics
    seen: dict[tuple, bytes | None] = {}  # (endpoint, message id) -> the first answer
    for k, data in enumerate(datagrams):
        addr = ENDPOINTS[k % 2] if len(raw) < 2 or raw[-1] & 1 else ENDPOINTS[0]
        msg = check_parse(data)
        rejected = metrics.get("headrace_frames_rejected_total", transport="coap", reason="coap")
        before = len(server._transport.sent)
        server.datagram_received(data, addr)
        sent = server._transport.sent[before:]
        if len(sent) > 1:
            raise AssertionError(f"{len(sent)} answers to one datagram {data.hex()}")
        if msg is None:
            if sent or metrics.get("headrace_frames_rejected_total", transport="coap", reason="coap") != rejected + 1:
                raise AssertionError(f"a malformed datagram answered or not counted: {data.hex()}")
            continue
        mtype, code, mid, token, _options, _payload = msg
        if sent and mtype in (COAP_ACK, COAP_RST):
            raise AssertionError(f"an answer to an ACK or RST: {data.hex()}")
        key = (addr, mid)
        if code != COAP_EMPTY and mtype in (COAP_CON, COAP_NON) and key in seen:
            # a duplicate (RFC 7252 §4.5: same endpoint, same message id): the stored answer
            # again to a CON, nothing to a NON or while the first is in progress
            if sent and (mtype != COAP_CON or sent[0][0] != seen[key]):
                raise AssertionError(f"a duplicate {data.hex()} answered {sent[0][0].hex()}, first {seen[key]}")
            continue
        if not sent:
            if mtype == COAP_CON and code == COAP_EMPTY:
                raise AssertionError(f"a CON ping not answered: {data.hex()}")
            if code != COAP_EMPTY and mtype in (COAP_CON, COAP_NON):
                seen[key] = None
            continue
        answer, to = sent[0]
        rtype, rcode, rmid, rtoken, _, _ = parse(answer)
        want = (COAP_RST if code == COAP_EMPTY else COAP_ACK) if mtype == COAP_CON else COAP_NON
        if to != addr or rmid != mid or rtype != want or (code != COAP_EMPTY and rtoken != token):
            raise AssertionError(f"answer {answer.hex()} to {to} does not match request {data.hex()} from {addr}")
        if code != COAP_EMPTY:
            seen[key] = answer

if __name__ == "__main__":
    fuzz(check, sys.argv)
