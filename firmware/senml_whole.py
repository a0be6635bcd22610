# SenML packs as whole bytes at once, allocating (docs/protocol.md §1): a node's error reports,
# tools and tests. senml.X finds these (senml's __getattr__), so a node that never calls them
# keeps none of their functions on its heap; its frames are written by senml.Pack, in place.
from senml import Pack

_DAY_MS = 86400000


def split_ms(ms):
    """(day, ms of the day) of an epoch time in ms."""
    day = ms // _DAY_MS
    return day, ms - day * _DAY_MS


def encode_pack(node, readings, base_ms, texts=()):
    """The pack as bytes (allocates: tools and tests): readings (sensor name, ms after base_ms,
    value, an int or a float) in time order; texts (name, string)."""
    pack = _pack(node, readings)
    pack.day, pack.msod = split_ms(base_ms)
    buf = bytearray(1024 + 64 * len(texts) + sum(len(t[1]) for t in texts) + 64 * len(readings))
    n = pack.write(buf, 0, [(t[0].encode(), t[1].encode()) for t in texts])
    return bytes(buf[:n])


def wire_order(readings):
    """The indices of `readings` (name, dt, value) in the order a pack carries them."""
    pack = _pack("", readings)
    pack.plan()
    return list(pack.order[:len(readings)])


def _pack(node, readings):
    # a Pack of `readings` (name, dt, value), its names in the order they first come
    names = []
    for r in readings:
        if r[0] not in names:
            names.append(r[0])
    pack = Pack(node, [x.encode() for x in names], max(1, len(readings)))
    for name, dt, value in readings:
        pack.add_obj(names.index(name), dt, value)
    return pack
