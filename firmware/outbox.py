# The outbox: frames kept until the gateway acks them, in RAM and in a log on flash
# so a power cut loses none; and the sequence counter that never repeats, across
# reboots too (persisted ahead by a margin).
import sys
from array import array

import board

try:
    import os
except ImportError:
    import uos as os  # type: ignore[no-redef]


class SeqStore:
    """Sequence numbers 0, 1, 2, …; the file holds a number no used one reaches.

    On boot the counter starts at the stored mark: numbers between the last one
    used and the mark are skipped, never reused. Writing the file every `margin`
    frames spares the flash."""

    def __init__(self, path, margin=100):
        self.path = path
        self.margin = margin
        data = board.read_file(path) if path else None
        try:
            self.next = int(data) if data else 0
        except ValueError:
            self.next = 0
        self.mark = self.next
        self._persist()

    def _persist(self):
        self.mark = self.next + self.margin
        if self.path:
            board.write_file_atomic(self.path, str(self.mark).encode())

    def take(self):
        seq = self.next
        self.next += 1
        if self.next >= self.mark:
            self._persist()
        return seq


SPAN = 32  # sequence numbers in flight beyond the oldest unacked frame, at most (half the replay window)


_FRAME = 0x46  # b"F": seq (4 bytes) length (2) message
_GONE = 0x41   # b"A": seq (4 bytes), acked or dropped
_MP = sys.implementation.name == "micropython"
_SCRATCH = 4  # bytes free before each message in the ring (cose.seal_into writes there)


def _last(t):
    return None if t < 0 else t


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
    The log is rewritten with the pending frames alone when it grows past
    `log_max` bytes: a torn record at the end (a cut mid-write) is ignored."""

    SCRATCH = _SCRATCH

    def __init__(self, capacity, path=None, log_max=16384, size=None):
        self.capacity = capacity
        # room for `capacity` frames of 8 readings (about 150 bytes), 4 KB at most: more
        # frames than that wait in buffers of their own
        self.data = bytearray(size or max(1088, min(176 * capacity, 4096)))
        slots = capacity + min(SPAN, capacity)  # acked slots wait in place until the older ones go
        self.seqs = array("i", bytes(4 * slots))  # -1: acked, the slot waits to be reclaimed
        self.offs = array("i", bytes(4 * slots))
        self.lens = array("H", bytes(2 * slots))
        self.last = array("i", bytes(4 * slots))  # ticks ms of the last send; -1: never sent
        self.tries = bytearray(slots)
        self.spill: list = [None] * slots  # a spilled frame's own buffer
        self.head = 0   # the oldest slot
        self.used = 0   # slots from head on, live or waiting
        self.live = 0
        self.top = 0    # the next free byte of data
        self.spilled = 0  # frames that went to buffers of their own (outages)
        self.dropped = 0
        self.path = path
        self.log_max = log_max
        self.log_size = 0
        self.restored = 0
        self._f = None  # the log, open for appends
        self._head = bytearray(7)  # a frame record's head: kind, seq (4), length (2)
        self._gone = bytearray(5)  # an ack or drop record: kind, seq (4)
        self._tmp = path + ".tmp" if path else None
        if path:
            self._restore()
            self._compact()

    def __len__(self):
        return self.live

    def _slot(self, j):
        return (self.head + j) % len(self.seqs)

    def buf(self, k):
        """The buffer slot k's message is in (at offs[k], lens[k] bytes)."""
        b = self.spill[k]
        return self.data if b is None else b

    def message(self, k):
        o = self.offs[k]
        return bytes(self.buf(k)[o:o + self.lens[k]])

    @property
    def items(self):
        """[seq, message bytes, last send or None, tries] of the live frames, oldest first (tests, tools)."""
        out = []
        for j in range(self.used):
            k = self._slot(j)
            if self.seqs[k] >= 0:
                out.append([self.seqs[k], self.message(k), _last(self.last[k]), self.tries[k]])
        return out

    def _reclaim(self):
        # slots acked at the old end go; the ring's free space with them
        n = len(self.seqs)
        while self.used and self.seqs[self.head] < 0:
            self.spill[self.head] = None
            self.head = (self.head + 1) % n
            self.used -= 1
        if self._low() < 0:
            self.top = 0

    def _low(self):
        # where the oldest message in the ring has its room, -1 when the ring holds none
        for j in range(self.used):
            k = self._slot(j)
            if self.seqs[k] >= 0 and self.spill[k] is None:
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

    def reserve(self, n):
        """Room for a message of up to n bytes: its offset in data (with _SCRATCH bytes free
        before it), or -1 when the ring is full: the message goes in a buffer of its own
        (commit's `spill`). The oldest frames go when `capacity` are kept."""
        need = n + _SCRATCH
        if need > len(self.data):
            return -1
        while self.live >= self.capacity or self.used >= len(self.seqs):
            self._drop_oldest()
        low = self._low()
        if low < 0:
            self.top = 0
            return _SCRATCH
        if self.top > low:  # used: [low, top); free: [top, end) and [0, low)
            if len(self.data) - self.top >= need:
                return self.top + _SCRATCH
            if low >= need:
                return _SCRATCH
        elif low - self.top >= need:  # wrapped: free [top, low)
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
        self.spill[k] = spill
        self.used += 1
        self.live += 1
        if spill is None:
            self.top = at + n
        else:
            self.spilled += 1
        self._log(_FRAME, seq, k)

    def push(self, seq, msg):
        at = self.reserve(len(msg))
        spill = None
        if at < 0:
            spill = self.spill_buffer(len(msg))
            at = _SCRATCH
        buf = self.data if spill is None else spill
        for i in range(len(msg)):
            buf[at + i] = msg[i]
        self.commit(seq, at, len(msg), spill)

    def ack(self, seq):
        for j in range(self.used):
            k = self._slot(j)
            if self.seqs[k] == seq:
                self.seqs[k] = -1
                self.spill[k] = None
                self.live -= 1
                self._reclaim()
                self._log(_GONE, seq)
                return True
        return False

    def keep(self, ours):
        """Drop the frames for which ours(message bytes) is false (counted as dropped); how many."""
        gone = 0
        for j in range(self.used):
            k = self._slot(j)
            if self.seqs[k] >= 0 and not ours(self.message(k)):
                seq = self.seqs[k]
                self.seqs[k] = -1
                self.spill[k] = None
                self.live -= 1
                self.dropped += 1
                gone += 1
                self._log(_GONE, seq)
        self._reclaim()
        self.restored -= gone
        return gone

    def _log(self, kind, seq, k=0):
        # the log stays open (a file object per record was ~250 B of heap a frame); a record's
        # head and its message are two writes: a cut between them leaves a torn record, which
        # _restore ignores
        if not self.path:
            return
        if self._f is None:
            self._f = open(self.path, "ab")
        h = self._head if kind == _FRAME else self._gone
        h[0] = kind
        h[1] = (seq >> 24) & 0xFF
        h[2] = (seq >> 16) & 0xFF
        h[3] = (seq >> 8) & 0xFF
        h[4] = seq & 0xFF
        size = 5
        if kind == _FRAME:
            at = self.offs[k]
            n = self.lens[k]
            h[5] = n >> 8
            h[6] = n & 0xFF
            self._f.write(h)
            if _MP:
                self._f.write(self.buf(k), at, n)  # a stream's write takes an offset and a length
            else:
                self._f.write(memoryview(self.buf(k))[at:at + n])
            size = 7 + n
        else:
            self._f.write(h)
        self._f.flush()
        self.log_size += size
        if self.log_size > self.log_max:
            self._compact()

    def _restore(self):
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        pending: dict = {}
        order = []
        with f:
            while True:
                head = f.read(5)
                if len(head) < 5:
                    break
                seq = int.from_bytes(head[1:5], "big")
                if head[0] == _GONE:
                    pending.pop(seq, None)
                    continue
                if head[0] != _FRAME:
                    break  # not a record: the rest cannot be trusted
                n = f.read(2)
                msg = f.read(int.from_bytes(n, "big")) if len(n) == 2 else b""
                if len(n) < 2 or len(msg) < int.from_bytes(n, "big"):
                    break  # torn by a power cut mid-write
                pending[seq] = msg
                order.append(seq)
        path = self.path
        self.path = None  # restoring: nothing to log
        for seq in order:
            if seq in pending:
                self.push(seq, pending.pop(seq))
        self.path = path
        self.restored = self.live

    def _compact(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        # the pending frames' records, written as _log writes them (no copy of a message: a
        # compaction in a small heap must not need one)
        tmp = self._tmp
        if tmp is None:
            return  # no log to compact (an outbox without a path)
        size = 0
        with open(tmp, "wb") as f:
            h = self._head
            for j in range(self.used):
                k = self._slot(j)
                seq = self.seqs[k]
                if seq >= 0:
                    at = self.offs[k]
                    n = self.lens[k]
                    h[0] = _FRAME
                    h[1] = (seq >> 24) & 0xFF
                    h[2] = (seq >> 16) & 0xFF
                    h[3] = (seq >> 8) & 0xFF
                    h[4] = seq & 0xFF
                    h[5] = n >> 8
                    h[6] = n & 0xFF
                    f.write(h)
                    if _MP:
                        f.write(self.buf(k), at, n)
                    else:
                        f.write(memoryview(self.buf(k))[at:at + n])
                    size += 7 + n
        os.rename(tmp, self.path)
        self.log_size = size

    def due(self, now, timeout_ms, limit):
        """Up to `limit` frames to (re)send now, as items (next_due, repeated; tests, tools)."""
        out: list = []
        while len(out) < limit:
            k = self.next_due(now, timeout_ms)
            if k < 0:
                break
            out.append([self.seqs[k], self.message(k), _last(self.last[k]), self.tries[k]])
        return out

    def oldest(self):
        """The oldest unacked frame's sequence number, -1 if none."""
        return self.seqs[self.head] if self.used else -1

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
