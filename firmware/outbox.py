# The outbox: frames kept until the gateway acks them, in RAM and in a log on flash
# so a power cut loses none; and the sequence counter that never repeats, across
# reboots too (persisted ahead by a margin).
import gc
import sys
from array import array

import board

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy (firmware/typecheck.sh)
    from typing import Any

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

try:
    import os
except ImportError:
    import uos as os  # type: ignore[no-redef]


class SeqStore:
    """Sequence numbers 0, 1, 2, …; the mark on flash is a number no used one reaches.

    On boot the counter starts at the stored mark: numbers between the last one
    used and the mark are skipped, never reused. Writing the mark every `margin`
    frames spares the flash. With `log` (an Outbox with a log), the mark is a record
    of the outbox log, already open: writing it allocates nothing (a file of its own
    took a file object and a string each time, and on a fragmented heap found no
    block); a mark left in the file `path` by older firmware is taken once, then the
    file goes. Without it, the mark is the file `path`, written whole and renamed."""

    def __init__(self, path, margin=100, log=None):
        self.path = path
        self.margin = margin
        self.log = log if log is not None and log.path else None
        data = board.read_file(path) if path else None
        try:
            self.next = int(data) if data else 0
        except ValueError:
            self.next = 0
        if self.log is not None and self.log.mark > self.next:
            self.next = self.log.mark
        self.mark = self.next
        self._persist()
        if self.log is not None and data is not None:
            try:
                os.remove(path)  # the log holds a mark at least as high now
            except OSError:
                pass

    def _persist(self):
        self.mark = self.next + self.margin
        if self.log is not None:
            self.log.put_mark(self.mark)
        elif self.path:
            board.write_file_atomic(self.path, str(self.mark).encode())

    def take(self):
        seq = self.next
        self.next += 1
        if self.next >= self.mark:
            self._persist()
        return seq


SPAN = 32  # sequence numbers in flight beyond the oldest unacked frame, at most (half the replay window)


_FRAME = const(0x46)  # b"F": gen (4 bytes) seq (4) length (2) message
_GONE = const(0x41)   # b"A": gen (4) seq (4), acked or dropped
_MARK = const(0x4D)   # b"M": gen (4) mark (4), the sequence mark (SeqStore)
_GEN = const(0x47)    # b"G": gen (4), a log's head, written last when the log is made
# the first generation: bytes unlike a message's (CBOR has many zeros), so the bytes left past
# a rewritten file's end are not taken for a record of its generation; below 2**30 for years
_GEN0 = const(0x15A5A5A5)
_MP = sys.implementation.name == "micropython"
_SCRATCH = const(4)  # bytes free before each message in the ring (cose.seal_into writes there)


class Outbox:
    """Bounded FIFO of frames until acked; the oldest go when full (counted in `dropped`).

    The messages live in one byte ring (`data`) made at boot, each slot an offset and a
    length, with its sequence number, last send (ticks ms, -1: never sent) and tries in
    arrays made once: pushing, sending, acking allocate nothing. A writer reserves room
    (reserve), writes the message into `data` and commits it (commit); push() copies one in.
    When the ring is full before `capacity` frames are (an outage), a frame spills into a
    buffer of its own (allocated then, and as long as the heap gives one), as frames were
    kept before the ring; `buf(k)` is the buffer slot k's message is in.

    With `path`, every frame is appended to a log on flash before it is sent and
    every ack or drop after it, so a reboot or a power cut restores the frames
    not yet acked (sent again; the gateway answers a copy it has as a duplicate).
    The log is two files, `path` and `path + ".b"`, one kept open: when the one in
    use grows past `log_max` bytes, the pending frames alone are written into the
    other, emptied (its head first invalid, written last), which then takes the
    appends. Each record carries the generation of its file's head, and a torn
    record at the end (a cut mid-write) is ignored. A power cut at any point leaves
    one file whole: the old until the new one's head is written. Nothing is renamed;
    the file emptied is opened again (LittleFS has no truncate) once the one in use
    is closed (whole on flash: the records written come from the ring) and collected,
    so the new object takes the old one's place and one file object is alive at a
    time (a new file and a rename every time took 300 to 480 bytes and a block a
    fragmented heap may not have). The
    sequence mark is a record (SeqStore), which allocates nothing. A log from older
    firmware (`path` alone, no head) is read at boot and replaced."""

    SCRATCH = _SCRATCH
    # the log's files (outbox_whole.open_log, at boot): _f in use, open for appends, _g the
    # other, open at boot only; _pf and _pg their names
    _f: "Any"
    _g: "Any"
    _pf: str
    _pg: str

    def __init__(self, capacity, path=None, log_max=16384, size=None):
        self.capacity = capacity
        # room for `capacity` frames of 8 readings (about 150 bytes), 4 KB at most: more
        # frames than that wait in buffers of their own
        self.data = bytearray(size or max(1088, min(176 * capacity, 4096)))
        slots = capacity + min(SPAN, capacity)  # acked slots wait in place until the older ones go
        self.seqs = array("i", bytes(4 * slots))  # -1: acked, the slot waits to be reclaimed
        self.offs = array("H", bytes(2 * slots))
        self.lens = array("H", bytes(2 * slots))
        self.last = array("i", bytes(4 * slots))  # ticks ms of the last send; -1: never sent
        self.tries = bytearray(slots)
        self.spill: list | None = None  # a spilled frame's own buffer by slot: made at the first
        self.head = 0   # the oldest slot
        self.used = 0   # slots from head on, live or waiting
        self.live = 0
        self.top = 0    # the next free byte of data
        self.room = 0   # after reserve(): the end of the free run it gave
        self.spilled = 0  # frames that went to buffers of their own (outages)
        self.dropped = 0
        self.path = path
        self.log_max = log_max
        self.log_size = 0
        self.restored = 0
        self.mark = 0   # the sequence mark last put in the log (SeqStore)
        self.gen = _GEN0  # the generation of the file in use
        self._head = bytearray(11)  # a record's head: kind, gen (4), seq (4), length (2)
        if path:  # the log: opened and read back by outbox_whole.py, unloaded then (boot only)
            import outbox_whole
            outbox_whole.open_log(self, path)  # _f: the file in use, open for appends; _g: the other, open at boot only
            outbox_whole.restore(self)
            del outbox_whole
            sys.modules.pop("outbox_whole", None)
            self._compact()

    def __len__(self):
        return self.live

    def __getattr__(self, name):
        # items, message, due, oldest, keep, push: off the frame path (boot, reports, tools and
        # tests), in outbox_whole.py as functions of the outbox, loaded at their first use: with
        # them here the class's table took 37 entries, 600 bytes of heap on 64-bit ports
        import outbox_whole
        f = getattr(outbox_whole, name)
        if name == "items":  # a property
            return f(self)
        return lambda *a: f(self, *a)

    def _slot(self, j):
        return (self.head + j) % len(self.seqs)

    def buf(self, k):
        """The buffer slot k's message is in (at offs[k], lens[k] bytes)."""
        sp = self.spill
        b = None if sp is None else sp[k]
        return self.data if b is None else b

    def _unspill(self, k, b=None):
        if self.spill is not None:
            self.spill[k] = b

    def _reclaim(self):
        # slots acked at the old end go; the ring's free space with them
        n = len(self.seqs)
        while self.used and self.seqs[self.head] < 0:
            self._unspill(self.head)
            self.head = (self.head + 1) % n
            self.used -= 1
        if self._low() < 0:
            self.top = 0

    def _low(self):
        # where the oldest message in the ring has its room, -1 when the ring holds none
        for j in range(self.used):
            k = self._slot(j)
            if self.seqs[k] >= 0 and self.buf(k) is self.data:
                return self.offs[k] - _SCRATCH
        return -1

    def _drop_oldest(self):
        k = self.head
        seq = self.seqs[k]
        self.seqs[k] = -1
        self.live -= 1
        self.dropped += 1
        self._reclaim()
        self._log(_GONE, seq)

    def reserve(self, n, largest=False):
        """Room for a message of up to n bytes: its offset in data (with _SCRATCH bytes free
        before it), or -1 when the ring is full: the message goes in a buffer of its own
        (commit's `spill`). The oldest frames go when `capacity` are kept. `room` is then the
        end of the free run it is in; with `largest`, the longer of the two runs is taken."""
        need = n + _SCRATCH
        size = len(self.data)
        if need > size:
            return -1
        while self.live >= self.capacity or self.used >= len(self.seqs):
            self._drop_oldest()
        low = self._low()
        self.room = size
        if low < 0:
            self.top = 0
            return _SCRATCH
        if self.top > low:  # used: [low, top); free: [top, end) and [0, low)
            tail = size - self.top
            if tail >= need and not (largest and low > tail):
                return self.top + _SCRATCH
            if low >= need:
                self.room = low
                return _SCRATCH
        elif low - self.top >= need:  # wrapped: free [top, low)
            self.room = low
            return self.top + _SCRATCH
        return -1

    def spill_buffer(self, n):
        """A buffer of its own for a message of up to n bytes (at _SCRATCH), when reserve gave
        -1; the oldest frames go while the heap has no room for it."""
        while True:
            try:
                return bytearray(n + _SCRATCH)
            except MemoryError:
                if not self.live:
                    raise
                self._drop_oldest()

    def commit(self, seq, at, n, spill=None):
        """The message written at data[at:at + n] (at from reserve), or at spill[at:at + n],
        is frame `seq`."""
        k = self._slot(self.used)
        self.seqs[k] = seq
        self.offs[k] = at
        self.lens[k] = n
        self.last[k] = -1
        self.tries[k] = 0
        if spill is not None and self.spill is None:
            self.spill = [None] * len(self.seqs)
        self._unspill(k, spill)
        self.used += 1
        self.live += 1
        if spill is None:
            self.top = at + n
        else:
            self.spilled += 1
        self._log(_FRAME, seq, k)

    def ack(self, seq):
        for j in range(self.used):
            k = self._slot(j)
            if self.seqs[k] == seq:
                self.seqs[k] = -1
                self._unspill(k)
                self.live -= 1
                self._reclaim()
                self._log(_GONE, seq)
                return True
        return False

    def put_mark(self, mark):
        """The sequence mark, as a record of the log (SeqStore): allocates nothing."""
        self.mark = mark
        self._log(_MARK, mark)

    def _put(self, f, kind, gen, seq, k=-1):
        # one record into f at its position; its size
        h = self._head
        h[0] = kind
        h[1] = (gen >> 24) & 0xFF
        h[2] = (gen >> 16) & 0xFF
        h[3] = (gen >> 8) & 0xFF
        h[4] = gen & 0xFF
        if kind == _GEN:
            f.write(h, 0, 5) if _MP else f.write(bytes(h[:5]))
            return 5
        h[5] = (seq >> 24) & 0xFF
        h[6] = (seq >> 16) & 0xFF
        h[7] = (seq >> 8) & 0xFF
        h[8] = seq & 0xFF
        if k < 0:
            f.write(h, 0, 9) if _MP else f.write(bytes(h[:9]))
            return 9
        at = self.offs[k]
        n = self.lens[k]
        h[9] = n >> 8
        h[10] = n & 0xFF
        # head and message are two writes: a cut between them leaves a torn record
        if _MP:
            f.write(h, 0, 11)
            f.write(self.buf(k), at, n)  # a stream's write takes an offset and a length
        else:
            f.write(bytes(h))
            f.write(memoryview(self.buf(k))[at:at + n])
        return 11 + n

    def _log(self, kind, seq, k=-1):
        if not self.path:
            return
        # _compact closes the file in use and needs its object collected: it is called from
        # here, a frame that never held the file (the collector scans the VM's stack
        # conservatively, and a stale slot of _append's arguments would keep it alive)
        if self._f is None or self._append(kind, seq, k):
            self._compact()  # (_f None: a compaction found no heap for its file; the ring's state, now)

    def _append(self, kind, seq, k):
        # the record appended and flushed; whether the log is due for compaction
        self.log_size += self._put(self._f, kind, self.gen, seq, k)
        self._f.flush()
        return self.log_size > self.log_max

    def _compact(self):
        # the pending frames' records (and the mark) into the other file, from its start (no
        # copy of a message: a compaction in a small heap must not need one); its head is made
        # invalid first and written last, so until then the file in use is the one restored
        # Made empty by opening it again: LittleFS keeps a file's length, so a write before
        # its end copies all that follows at every flush (the flash worn a log's length a
        # record). One file is open at a time (a file object is 176 bytes on the Cortex-M3
        # board): the one in use is closed first, all of it on flash (its records come from
        # the ring, not from it), and collected, so the new one takes its place
        # (each closed and let go in its own two statements, no loop: the collector scans the
        # VM's stack conservatively, and a loop's iterator left there would keep both alive)
        if self._g is not None:  # at boot, where both are open to be read
            self._g.close()
            self._g = None
        if self._f is not None:
            self._f.close()
            self._f = None
        gc.collect()
        # no heap for it (MemoryError): raised to the task (main.Node.failed counts it), and the next record
        # tries again (_log), the log then written whole from the ring
        f = open(self._pg, "wb")
        gen = self.gen + 1
        self._head[0] = 0
        f.write(self._head, 0, 5) if _MP else f.write(bytes(5))
        size = 5 + self._put(f, _MARK, gen, self.mark)
        for j in range(self.used):
            k = self._slot(j)
            seq = self.seqs[k]
            if seq >= 0:
                size += self._put(f, _FRAME, gen, seq, k)
        f.flush()
        f.seek(0)
        self._put(f, _GEN, gen, 0)
        f.flush()
        f.seek(size)
        self._f = f
        p = self._pg
        self._pg = self._pf
        self._pf = p
        self.gen = gen
        self.log_size = size

    def next_due(self, now, timeout_ms):
        """The slot of the next frame to (re)send now, marked sent, or -1: never sent, or
        unacked for longer than the backed-off timeout (doubling per try, at most 32x).
        Its message is data[offs[k]:offs[k] + lens[k]], its number seqs[k]. Allocates nothing.

        Frames more than SPAN numbers ahead of the oldest unacked one wait: the gateway's
        replay window covers 64 numbers, and a frame that fell further behind would be
        answered as a duplicate it cannot tell apart, never stored."""
        if not self.used:
            return -1
        horizon = self.seqs[self.head] + SPAN
        for j in range(self.used):
            k = self._slot(j)
            seq = self.seqs[k]
            if seq < 0:
                continue
            if seq >= horizon:
                return -1
            last = self.last[k]
            if last < 0 or board.ticks_diff(now, last) >= timeout_ms << min(self.tries[k] - 1, 5):
                self.last[k] = now
                if self.tries[k] < 255:
                    self.tries[k] += 1
                return k
        return -1

    def in_flight(self, now, timeout_ms):
        """Frames sent and still within their ack timeout."""
        n = 0
        for j in range(self.used):
            k = self._slot(j)
            last = self.last[k]
            if self.seqs[k] >= 0 and last >= 0 and \
                    board.ticks_diff(now, last) < timeout_ms << min(self.tries[k] - 1, 5):
                n += 1
        return n
