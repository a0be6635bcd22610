"""Turn a fuzzer's raw input into a message: half the time the raw bytes themselves, the other
half a valid message (a seed) with a few bytes changed, cut or inserted, so the fuzzer gets
past the first checks of a parser from the start. Plain bytes in, bytes out: the same check
functions run under atheris (fuzz/run.py) and under hypothesis when atheris is absent.
"""
from __future__ import annotations

import contextlib


def from_seeds(seeds: list[bytes], data: bytes) -> bytes:
    """data[0] even: data[1:] as it is. Odd: seeds[data[1] % len(seeds)], then up to 4 edits
    of 3 bytes each (kind, position scaled to the message's length, value): replace, cut, insert."""
    if len(data) < 2 or data[0] & 1 == 0:
        return data[1:]
    msg = bytearray(seeds[data[1] % len(seeds)])
    edits = data[2:14]
    for k in range(0, len(edits) - 2, 3):
        kind, pos, value = edits[k], edits[k + 1], edits[k + 2]
        i = pos * len(msg) // 256
        if kind % 3 == 0 and msg:
            msg[i] = value
        elif kind % 3 == 1:
            end = i + 1 + value % 4 if value & 0x80 else len(msg)  # a few bytes, or the rest
            del msg[i:end]
        else:
            msg.insert(i, value)
    return bytes(msg)


def instrumented(fuzzing: bool):
    """A context in which imports of headrace's own packages (gateway, core_ext) are
    instrumented for coverage, when `fuzzing` (the target runs as a script) under atheris.
    Only these: instrumenting numpy and the rest too takes ~20 s at every start."""
    if not fuzzing:
        return contextlib.nullcontext()
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["gateway", "core_ext"])


def fuzz(check, argv: list[str]) -> None:
    """Run `check(data: bytes)` under atheris, with libFuzzer's options in argv."""
    import atheris

    atheris.Setup(argv, check)
    atheris.Fuzz()
