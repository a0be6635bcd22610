# CBOR (RFC 8949): a small deterministic encoder and a decoder for what nodes receive.
# Runs on MicroPython and CPython. Maps are written with keys in the bytewise
# order of their encodings (RFC 8949 §4.2.1); floats in the shortest exact form.
import struct

from senml import put_head  # noqa: F401  # the heads written in place, at a position (senml.py)

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

_UINT = const(0)
_NINT = const(1)
_BYTES = const(2)
_TEXT = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)
_MAX_DEPTH = const(16)


class Tag:
    """A tagged item, e.g. Tag(17, [...]) for a COSE_Mac0."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and other.tag == self.tag and other.value == self.value


def head(major, n, out):
    """Append the head of an item of `major` type with argument `n` to bytearray `out`."""
    if n < 24:
        out.append(major << 5 | n)
    elif n < 0x100:
        out.append(major << 5 | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(major << 5 | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append(major << 5 | 26)
        out.extend(struct.pack(">I", n))
    else:
        out.append(major << 5 | 27)
        out.extend(struct.pack(">Q", n))


def _float(x, out):
    if x != x:
        out.extend(b"\xf9\x7e\x00")  # the canonical NaN
        return
    for fmt, first in ((">e", 0xF9), (">f", 0xFA)):
        try:
            b = struct.pack(fmt, x)
        except (OverflowError, ValueError):
            continue
        if struct.unpack(fmt, b)[0] == x:
            out.append(first)
            out.extend(b)
            return
    out.append(0xFB)
    out.extend(struct.pack(">d", x))


def encode(obj, out):
    """Append the encoding of `obj` to bytearray `out`."""
    if obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            if obj >= 1 << 64:
                raise ValueError("integer too large for CBOR without a bignum tag")
            head(_UINT, obj, out)
        else:
            if obj < -(1 << 64):
                raise ValueError("integer too small for CBOR without a bignum tag")
            head(_NINT, -1 - obj, out)
    elif isinstance(obj, float):
        _float(obj, out)
    elif isinstance(obj, str):
        b = obj.encode()
        head(_TEXT, len(b), out)
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        head(_BYTES, len(obj), out)
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        head(_ARRAY, len(obj), out)
        for item in obj:
            encode(item, out)
    elif isinstance(obj, dict):
        # deterministic: sort by the encoded keys (MicroPython dicts are unordered anyway)
        items = []
        for k, v in obj.items():
            key = bytearray()
            encode(k, key)
            items.append((bytes(key), v))
        items.sort(key=lambda kv: kv[0])
        head(_MAP, len(items), out)
        for kb, v in items:
            out.extend(kb)
            encode(v, out)
    elif isinstance(obj, Tag):
        head(_TAG, obj.tag, out)
        encode(obj.value, out)
    else:
        raise TypeError("cannot encode %s as CBOR" % type(obj))


def dumps(obj):
    out = bytearray()
    encode(obj, out)
    return bytes(out)


def _arg(data, pos, info):
    if info < 24:
        return info, pos
    if info == 24:
        n = 1
    elif info == 25:
        n = 2
    elif info == 26:
        n = 4
    elif info == 27:
        n = 8
    else:
        raise ValueError("unsupported CBOR additional info %d at %d" % (info, pos))
    if pos + n > len(data):
        raise ValueError("truncated CBOR at %d" % pos)
    v = 0
    for i in range(n):
        v = v << 8 | data[pos + i]
    return v, pos + n


def _decode(data, pos, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("CBOR nested too deep")
    if pos >= len(data):
        raise ValueError("truncated CBOR at %d" % pos)
    ib = data[pos]
    major = ib >> 5
    info = ib & 31
    pos += 1
    if major == _SIMPLE:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info == 22 or info == 23:
            return None, pos
        sizes = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}
        if info not in sizes:
            raise ValueError("unsupported simple value %d at %d" % (info, pos - 1))
        fmt, n = sizes[info]
        if pos + n > len(data):
            raise ValueError("truncated CBOR float at %d" % pos)
        return struct.unpack(fmt, bytes(data[pos:pos + n]))[0], pos + n
    n, pos = _arg(data, pos, info)
    if major == _UINT:
        return n, pos
    if major == _NINT:
        return -1 - n, pos
    if major == _BYTES or major == _TEXT:
        if pos + n > len(data):
            raise ValueError("truncated CBOR string at %d" % pos)
        b = bytes(data[pos:pos + n])
        return (b if major == _BYTES else b.decode()), pos + n
    if major == _ARRAY:
        if n > len(data) - pos:
            raise ValueError("CBOR array longer than the data at %d" % pos)
        out = []
        for _ in range(n):
            item, pos = _decode(data, pos, depth + 1)
            out.append(item)
        return out, pos
    if major == _MAP:
        if 2 * n > len(data) - pos:
            raise ValueError("CBOR map longer than the data at %d" % pos)
        mapping = {}
        for _ in range(n):
            k, pos = _decode(data, pos, depth + 1)
            v, pos = _decode(data, pos, depth + 1)
            mapping[k] = v
        return mapping, pos
    value, pos = _decode(data, pos, depth + 1)
    return Tag(n, value), pos


def loads(data):
    """Decode one CBOR item that fills `data`; ValueError on malformed or trailing bytes."""
    try:
        obj, pos = _decode(data, 0, 0)
    except (IndexError, TypeError, UnicodeError) as e:
        raise ValueError("malformed CBOR: %s" % e)
    if pos != len(data):
        raise ValueError("trailing bytes after CBOR item at %d" % pos)
    return obj
