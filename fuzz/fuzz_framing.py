"""Coverage-guided fuzzing of the serial deframer (libFuzzer via atheris), differential: the
stream fed in pieces against the same stream fed at once, and each frame against
`decode_frame`.

    python fuzz/fuzz_framing.py -max_total_time=300     # or: python fuzz/run.py fuzz_framing

Checked on every input (the first byte picks where the stream is cut into reads):
- `Deframer.feed` returns messages (bytes) and FrameErrors only, and never raises;
- the same stream gives the same messages and errors however it is cut into reads;
- it never holds more than MAX_ENCODED bytes of an unfinished frame;
- fed at once, each delimited frame of at most MAX_ENCODED bytes gives what
  `decode_frame` gives (the message, or an error with the same reason);
- every message re-encodes (`encode_frame`) to a frame that decodes to it.
Half the inputs are streams of valid frames with a few bytes changed (fuzz/mutation.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutation import from_seeds, fuzz, instrumented  # noqa: E402

with instrumented(__name__ == "__main__"):
    from gateway.errors import FrameError
    from gateway.protocol.framing import MAX_ENCODED, Deframer, decode_frame, encode_frame
    from gateway.protocol.numbers import MAX_MESSAGE

SEEDS = [b"".join(encode_frame(m) for m in msgs) for msgs in (
    [b"\xd1\x84" + bytes(150)], [b"a", b"bc", bytes(300)], [bytes(range(256)) * 4],
    [b"\x00" * 40, b"\xff" * 254, b"\x01" * 255])] + [b"\x00\x01\x02\x03\x00" + encode_frame(b"x" * 20)]


def outcome(items: list) -> list:
    out = []
    for item in items:
        if type(item) is bytes:
            out.append(item)
        elif isinstance(item, FrameError):
            out.append(("error", item.reason))
        else:
            raise AssertionError(f"feed returned {item!r}")
    return out


def check(raw: bytes) -> None:
    if not raw:
        return
    step, data = raw[0] % 64 + 1, from_seeds(SEEDS, raw[1:])
    whole = Deframer()
    at_once = outcome(whole.feed(data))
    pieces = Deframer()
    in_reads = []
    for i in range(0, len(data), step):
        in_reads += outcome(pieces.feed(data[i:i + step]))
        if len(pieces._buf) > MAX_ENCODED:
            raise AssertionError(f"{len(pieces._buf)} bytes held of an unfinished frame: {data.hex()}")
    if in_reads != at_once:
        raise AssertionError(f"reads of {step} bytes give {in_reads} against {at_once} at once: {data.hex()}")
    if len(data) <= MAX_ENCODED:  # no frame past the limit: each delimited part is one frame
        want = []
        for part in data.split(b"\x00")[:-1]:
            if part:
                try:
                    want.append(decode_frame(part))
                except FrameError as exc:
                    want.append(("error", exc.reason))
        if want != at_once:
            raise AssertionError(f"the deframer gives {at_once}, decode_frame {want}: {data.hex()}")
    for m in at_once:
        if type(m) is bytes and len(m) <= MAX_MESSAGE and decode_frame(encode_frame(m)[:-1]) != m:
            raise AssertionError(f"{m.hex()} does not survive encode_frame and decode_frame")


if __name__ == "__main__":
    fuzz(check, sys.argv)
