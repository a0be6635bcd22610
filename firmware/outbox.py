# The outbox: frames kept until the gateway acks them, and the sequence counter
# that never repeats, across reboots too (persisted ahead by a margin).
import board


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


class Outbox:
    """Bounded FIFO of [seq, message, last send ms, tries]; the oldest go when full."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.items = []
        self.dropped = 0

    def __len__(self):
        return len(self.items)

    def push(self, seq, msg):
        if len(self.items) >= self.capacity:
            self.items.pop(0)
            self.dropped += 1
        self.items.append([seq, msg, None, 0])

    def ack(self, seq):
        for i, item in enumerate(self.items):
            if item[0] == seq:
                self.items.pop(i)
                return True
        return False

    def due(self, now, timeout_ms, limit):
        """Up to `limit` frames to (re)send now: never sent, or unacked for longer than the
        backed-off timeout (doubling per try, at most 32×). Marks them sent.

        Frames more than SPAN numbers ahead of the oldest unacked one wait: the gateway's
        replay window covers 64 numbers, and a frame that fell further behind would be
        answered as a duplicate it cannot tell apart, never stored."""
        out = []
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
