"""Coverage-guided fuzzing of the CoAP server's message parser and datagram handling
(libFuzzer via atheris), in gateway/runtime/transports/coap.py.

    python fuzz/fuzz_coap.py -max_total_time=300        # or: python fuzz/run.py fuzz_coap

An input is up to four datagrams (split at the bytes `\\xc0\\xfe`), each received by one
server from one of two endpoints, so repeats and message ids collide. Checked:
- `parse` returns a message or raises CoapFormatError, nothing else; what it accepts,
  the RFC 7252 §3 encoder below writes back byte for byte (the option encoding is unique);
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
    from gateway.runtime.transports import coap

KEY = bytes(range(32))
SPLIT = b"\xc0\xfe"
ENDPOINTS = [("127.0.0.1", 40001), ("::1", 40002)]


def encode(mtype: int, code: int, mid: int, token: bytes, options: dict, payload: bytes) -> bytes:
    """RFC 7252 §3, written from the RFC: header, token, options in order of number (delta and
    length nibbles, 13 → one extension byte, 14 → two), 0xFF and the payload."""
    out = bytearray([1 << 6 | mtype << 4 | len(token), code]) + mid.to_bytes(2, "big") + token
    last = 0
    for number in sorted(options):
        for value in options[number]:
            fields = []
            for v in (number - last, len(value)):
                fields.append((v, b"") if v < 13 else (13, bytes([v - 13])) if v < 269 else
                              (14, (v - 269).to_bytes(2, "big")))
            (d, dx), (n, nx) = fields
            out += bytes([d << 4 | n]) + dx + nx + value
            last = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def post(mid: int, payload: bytes, mtype: int = coap.TYPE_CON) -> bytes:
    return encode(mtype, coap.CODE_POST, mid, mid.to_bytes(2, "big"),
                  {coap.OPT_URI_PATH: [b"d"], coap.OPT_CONTENT_FORMAT: [bytes([17])]}, payload)


def _frame(seq: int) -> bytes:
    return cose.mac0(KEY, b"n1", cbor2.dumps([{-2: "n1/", -3: 1_700_000_000 + seq, 0: "temp", 2: 20.5}]), seq=seq)


SEEDS = [post(7, _frame(1)), post(8, _frame(2), coap.TYPE_NON), post(9, _frame(3)) + SPLIT + post(9, _frame(3)),
         encode(0, 0, 5, b"", {}, b""),  # a CON ping
         encode(0, 1, 6, b"\x01", {coap.OPT_URI_PATH: [b"d"], 60: [b"\x04\x00"], 300: [b"x" * 20]}, b"q")]


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

    def server(self) -> coap.CoapServer:
        if self.pipeline is None or not self.pipeline.has_space():
            reg = Registry()
            reg.add("n1", KEY)
            self.pipeline = Pipeline(self.cfg, Ingest(reg), self.spool, Metrics())
        server = coap.CoapServer("127.0.0.1", 0, self.pipeline)
        server._transport = Recorder()
        return server


BENCH = Bench()
logging.disable(logging.WARNING)  # every rejected frame is logged: millions here


def check_parse(data: bytes):
    try:
        msg = coap.parse(data)
    except coap.CoapFormatError:
        return None
    if encode(*msg) != data:
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
        if sent and mtype in (coap.TYPE_ACK, coap.TYPE_RST):
            raise AssertionError(f"an answer to an ACK or RST: {data.hex()}")
        key = (addr, mid)
        if code != coap.CODE_EMPTY and mtype in (coap.TYPE_CON, coap.TYPE_NON) and key in seen:
            # a duplicate (RFC 7252 §4.5: same endpoint, same message id): the stored answer
            # again to a CON, nothing to a NON or while the first is in progress
            if sent and (mtype != coap.TYPE_CON or sent[0][0] != seen[key]):
                raise AssertionError(f"a duplicate {data.hex()} answered {sent[0][0].hex()}, first {seen[key]}")
            continue
        if not sent:
            if mtype == coap.TYPE_CON and code == coap.CODE_EMPTY:
                raise AssertionError(f"a CON ping not answered: {data.hex()}")
            if code != coap.CODE_EMPTY and mtype in (coap.TYPE_CON, coap.TYPE_NON):
                seen[key] = None
            continue
        answer, to = sent[0]
        rtype, rcode, rmid, rtoken, _, _ = coap.parse(answer)
        want = (coap.TYPE_RST if code == coap.CODE_EMPTY else coap.TYPE_ACK) if mtype == coap.TYPE_CON else coap.TYPE_NON
        if to != addr or rmid != mid or rtype != want or (code != coap.CODE_EMPTY and rtoken != token):
            raise AssertionError(f"answer {answer.hex()} to {to} does not match request {data.hex()} from {addr}")
        if code != coap.CODE_EMPTY:
            seen[key] = answer

if __name__ == "__main__":
    fuzz(check, sys.argv)
