# The outbox: frames kept until the gateway acks them, in RAM and in a log on flash
# so a power cut loses none; and the sequence counter that never repeats, across
# reboots too (persisted ahead by a margin).
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


def _record(kind, seq, msg=None):
    """A log record: kind, seq (4 bytes), and for a frame its length (2) and bytes."""
    rec = bytearray(5 if msg is None else 7 + len(msg))
    rec[0] = kind
    rec[1:5] = seq.to_bytes(4, "big")
    if msg is not None:
        rec[5:7] = len(msg).to_bytes(2, "big")
        rec[7:] = msg
    return rec


class Outbox:
    """Bounded FIFO of [seq, message, last send ms, tries]; the oldest go when full.

    With `path`, every frame is appended to a log on flash before it is sent and
    every ack or drop after it, so a reboot or a power cut restores the frames
    not yet acked (sent again; the gateway answers a copy it has as a duplicate).
    The log is rewritten with the pending frames alone when it grows past
    `log_max` bytes: a torn record at the end (a cut mid-write) is ignored."""

    def __init__(self, capacity, path=None, log_max=16384):
        self.capacity = capacity
        self.items = []
        self.dropped = 0
        self.path = path
        self.log_max = log_max
        self.log_size = 0
        self.restored = 0
        if path:
            self._restore()
            self._compact()

    def __len__(self):
        return len(self.items)

    def push(self, seq, msg):
        if len(self.items) >= self.capacity:
            gone = self.items.pop(0)
            self.dropped += 1
            self._log(_GONE, gone[0])
        self.items.append([seq, msg, None, 0])
        self._log(_FRAME, seq, msg)

    def ack(self, seq):
        for i, item in enumerate(self.items):
            if item[0] == seq:
                self.items.pop(i)
                self._log(_GONE, seq)
                return True
        return False

    def keep(self, ours):
        """Drop the frames for which ours(message) is false (counted as dropped); how many."""
        gone = [item for item in self.items if not ours(item[1])]
        for item in gone:
            self.items.remove(item)
            self.dropped += 1
            self._log(_GONE, item[0])
        self.restored -= len(gone)
        return len(gone)

    def _log(self, kind, seq, msg=None):
        if not self.path:
            return
        rec = _record(kind, seq, msg)
        with open(self.path, "ab") as f:
            f.write(rec)
        self.log_size += len(rec)
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
        for seq in order:
            if seq in pending:
                self.items.append([seq, pending.pop(seq), None, 0])
        while len(self.items) > self.capacity:
            self.items.pop(0)
            self.dropped += 1
        self.restored = len(self.items)

    def _compact(self):
        tmp = self.path + ".tmp"
        size = 0
        with open(tmp, "wb") as f:
            for item in self.items:
                rec = _record(_FRAME, item[0], item[1])
                f.write(rec)
                size += len(rec)
        os.rename(tmp, self.path)
        self.log_size = size

    def due(self, now, timeout_ms, limit):
        """Up to `limit` frames to (re)send now: never sent, or unacked for longer than the
        backed-off timeout (doubling per try, at most 32×). Marks them sent.

        Frames more than SPAN numbers ahead of the oldest unacked one wait: the gateway's
        replay window covers 64 numbers, and a frame that fell further behind would be
        answered as a duplicate it cannot tell apart, never stored."""
        out: list = []
        if not self.items:
            return out
        horizon = self.items[0][0] + SPAN
        for item in self.items:
            if len(out) >= limit or item[0] >= horizon:
                break
            if item[2] is None or board.ticks_diff(now, item[2]) >= timeout_ms << min(item[3] - 1, 5):
                item[2] = now
                item[3] += 1
                out.append(item)
        return out

    def in_flight(self, now, timeout_ms):
        """Frames sent and still within their ack timeout."""
        n = 0
        for item in self.items:
            if item[2] is not None and board.ticks_diff(now, item[2]) < timeout_ms << min(item[3] - 1, 5):
                n += 1
        return n
