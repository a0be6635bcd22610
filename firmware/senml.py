# SenML packs (RFC 8428) in CBOR with integer labels: docs/protocol.md §1.
import cbor

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

BN = const(-2)
BT = const(-3)
N = const(0)
V = const(2)
T = const(6)


def number(x):
    """Integral floats travel as integers (shorter); others as the shortest exact float."""
    if isinstance(x, float) and x == x and -9.0e15 < x < 9.0e15 and x == int(x) and not (x == 0 and str(x)[0] == "-"):
        return int(x)
    return x


def encode_pack(node, readings, base_time):
    """readings: list of (sensor name, time offset from base_time in seconds, value)."""
    records = []
    first = True
    for name, dt, value in readings:
        rec = {N: name, V: number(value)}
        if first:
            rec[BN] = node + "/"
            rec[BT] = number(base_time)
            first = False
        if dt:
            rec[T] = number(dt)
        records.append(rec)
    return cbor.dumps(records)
