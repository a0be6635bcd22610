# The node's wall clock in small integers: (day, ms of the day) since 1970.
#
# Milliseconds since 1970 pass 2**30, which is a heap object on 32-bit MicroPython ports
# (and floats are single precision there): a clock read per sample would allocate, or
# round. The clock takes the board's epoch once at boot and then advances by its
# millisecond ticks, so reading it allocates nothing.
#
# Caveats: set the board's RTC before boot (NTP, or by hand); later changes to the RTC are
# not followed. ticks_diff is exact for intervals up to 2**29 ms (6 days): read the clock
# more often than that (every sample round does).
try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

DAY_MS = const(86400000)


class Clock:
    """day: days since 1970-01-01; msod: ms into that day. now() advances both in place."""

    def __init__(self, board):
        self.board = board
        ms = board.epoch_ms()
        self.day = ms // DAY_MS
        self.msod = ms - self.day * DAY_MS
        self.tick = board.ticks_ms()

    def now(self):
        t = self.board.ticks_ms()
        msod = self.msod + self.board.ticks_diff(t, self.tick)
        self.tick = t
        while msod >= DAY_MS:
            msod -= DAY_MS
            self.day += 1
        self.msod = msod

    def since(self, day, msod):
        """ms from (day, msod) to the clock's time (both small ints)."""
        return (self.day - day) * DAY_MS + self.msod - msod

    def epoch_ms(self):
        """The time as one int (a heap object on 32-bit ports: events and tools only)."""
        return self.day * DAY_MS + self.msod
