# What an outbox (outbox.py) does off its frame path, as functions of the outbox: its log
# opened and read back at boot (open_log, restore: loaded then, and unloaded once done), its
# frames kept or dropped by a check (keep: at boot, when frames were restored), a message
# copied in (push: error reports), and its frames as bytes (items, message, due, oldest: tools
# and tests). outbox.Outbox finds these as its methods (its __getattr__) at their first use.
try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

# outbox.py's log records and ring (constants folded there: no names to import)
_FRAME = const(0x46)  # b"F": gen (4 bytes) seq (4) length (2) message
_GONE = const(0x41)   # b"A": gen (4) seq (4), acked or dropped
_MARK = const(0x4D)   # b"M": gen (4) mark (4), the sequence mark (SeqStore)
_GEN = const(0x47)    # b"G": gen (4), a log's head, written last when the log is made
_SCRATCH = const(4)   # bytes free before each message in the ring


def _last(t):
    return None if t < 0 else t


def message(box, k):
    o = box.offs[k]
    return bytes(box.buf(k)[o:o + box.lens[k]])


def items(box):
    """[seq, message bytes, last send or None, tries] of the live frames, oldest first (tests, tools)."""
    out = []
    for j in range(box.used):
        k = box._slot(j)
        if box.seqs[k] >= 0:
            out.append([box.seqs[k], message(box, k), _last(box.last[k]), box.tries[k]])
    return out


def due(box, now, timeout_ms, limit):
    """Up to `limit` frames to (re)send now, as items (next_due, repeated; tests, tools)."""
    out: list = []
    while len(out) < limit:
        k = box.next_due(now, timeout_ms)
        if k < 0:
            break
        out.append([box.seqs[k], message(box, k), _last(box.last[k]), box.tries[k]])
    return out


def oldest(box):
    """The oldest unacked frame's sequence number, -1 if none."""
    return box.seqs[box.head] if box.used else -1


def push(box, seq, msg):
    at = box.reserve(len(msg))
    spill = None
    if at < 0:
        spill = box.spill_buffer(len(msg))
        at = _SCRATCH
    buf = box.data if spill is None else spill
    for i in range(len(msg)):
        buf[at + i] = msg[i]
    box.commit(seq, at, len(msg), spill)


def keep(box, ours):
    """Drop the frames for which ours(message bytes) is false (counted as dropped); how many."""
    gone = 0
    for j in range(box.used):
        k = box._slot(j)
        if box.seqs[k] >= 0 and not ours(message(box, k)):
            seq = box.seqs[k]
            box.seqs[k] = -1
            box._unspill(k)
            box.live -= 1
            box.dropped += 1
            gone += 1
            box._log(_GONE, seq)
    box._reclaim()
    box.restored -= gone
    return gone


def open_log(box, path):
    # both files, open for reading and writing, made empty where missing; at boot only
    fs: list = []
    for p in (path, path + ".b"):
        try:
            f = open(p, "r+b")
        except OSError:
            f = open(p, "w+b")
        fs.append(f)
    box._f, box._g = fs
    box._pf = path  # their names
    box._pg = path + ".b"


def restore(box):
    # the file whose head is whole and newest; or a log from older firmware (no head,
    # no generations) in `path`
    best = None
    gen = -1
    for f in (box._f, box._g):
        f.seek(0)
        head = f.read(5)
        if len(head) == 5 and head[0] == _GEN and int.from_bytes(head[1:5], "big") > gen:
            best = f
            gen = int.from_bytes(head[1:5], "big")
    g = 4
    if best is None:
        best = box._f
        best.seek(0)
        g = 0
    else:
        best.seek(5)
        box.gen = gen
        if best is box._g:  # the newer one takes the appends; the other is rewritten next
            box._g = box._f
            box._f = best
            box._pg = box._pf
            box._pf = box.path + ".b"
    # each frame read straight into the ring (or a spill buffer, as when it was made), and
    # taken out again at its ack: the ring goes through the states the node held before, and
    # the restore needs no heap for the frames (a dict of them as bytes took about 2.5 KB at
    # boot, more than a 32 KB heap on 64-bit ports had)
    path = box.path
    box.path = None  # restoring: nothing to log
    try:
        while True:
            head = best.read(5 + g)
            if len(head) < 5 + g or (g and int.from_bytes(head[1:5], "big") != gen):
                break  # the end, or an older generation's records left past it
            seq = int.from_bytes(head[1 + g:5 + g], "big")
            if head[0] == _GONE:
                box.ack(seq)
                continue
            if head[0] == _MARK:
                box.mark = max(box.mark, seq)
                continue
            if head[0] != _FRAME:
                break  # not a record: the rest cannot be trusted
            h = best.read(2)
            if len(h) < 2:
                break  # torn by a power cut mid-write
            n = int.from_bytes(h, "big")
            at = box.reserve(n)  # as push() puts a frame in
            spill = None
            if at < 0:
                spill = box.spill_buffer(n)
                at = _SCRATCH
            if best.readinto(memoryview(box.data if spill is None else spill)[at:at + n]) != n:
                break  # torn
            box.commit(seq, at, n, spill)
    finally:
        box.path = path
    box.restored = box.live
