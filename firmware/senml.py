# SenML packs (RFC 8428) in CBOR with integer labels: docs/protocol.md §1.
import cbor

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

BN = const(-2)
BT = const(-3)
N = const(0)
V = const(2)
VS = const(3)
T = const(6)


def number(x):
    """Integral floats travel as integers (shorter); others as the shortest exact float."""
    if isinstance(x, float) and x == x and -9.0e15 < x < 9.0e15 and x == int(x) and not (x == 0 and str(x)[0] == "-"):
        return int(x)
    return x


def encode_pack(node, readings, base_time, texts=()):
    """readings: list of (sensor name, time offset from base_time in seconds, value);
    texts: (name, string) records after them, at the base time (command reports)."""
    records = []
    for name, dt, value in readings:
        rec = {N: name, V: number(value)}
        if dt:
            rec[T] = number(dt)
        records.append(rec)
    for name, text in texts:
        records.append({N: name, VS: text})
    if records:
        records[0][BN] = node + "/"
        records[0][BT] = number(base_time)
    return cbor.dumps(records)
