# The unix board: ptys stand in for UARTs, UDP for the radio, files for flash; sleep,
# the watchdog and the status LED are simulated, and the I2C, 1-Wire and ADC buses are
# fakes (board/fake.py) that tests attach device models to. Runs on the MicroPython
# unix port and on CPython. The interface is documented in board/__init__.py.
import os
import sys
import time

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

MICROPYTHON = sys.implementation.name == "micropython"
NAME = "unix"
WATCHDOG_MAX_MS = 0x7FFFFFFF

if MICROPYTHON:  # the port's own: no function objects of ours on the heap
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]
else:  # CPython: the same 30-bit wrapping clock as MicroPython's
    _TICKS_MAX = (1 << 30) - 1
    _TICKS_HALF = 1 << 29

    def ticks_ms():
        return int(time.monotonic() * 1000) & _TICKS_MAX

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF

    def ticks_add(a, b):
        return (a + b) & _TICKS_MAX

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def epoch_ms():
    """Wall-clock milliseconds since 1970 (the unix board has an RTC: the host's)."""
    if hasattr(time, "time_ns"):
        return time.time_ns() // 1000000
    return int(time.time() * 1000)


# -- the watchdog ---------------------------------------------------------------------------

class Watchdog:
    """A simulated hardware watchdog: a thread that kills the process (SIGKILL, as a
    reset cuts everything short) when feed() was not called for timeout_ms. Like the
    hardware one it cannot be stopped, except by stop() (tests only)."""

    def __init__(self, timeout_ms):
        import array
        self.timeout_ms = min(max(1, timeout_ms), WATCHDOG_MAX_MS)
        self._fed = array.array("i", [ticks_ms(), 1])  # last feed; 0 stops the thread
        if MICROPYTHON:
            import _thread
            _thread.start_new_thread(self._watch, ())
        else:
            import threading
            threading.Thread(target=self._watch, daemon=True).start()

    def feed(self):
        self._fed[0] = ticks_ms()  # no allocation: called from the main loop every turn

    def stop(self):
        self._fed[1] = 0

    def _watch(self):
        poll = max(1, min(100, self.timeout_ms // 4))
        fed = self._fed
        while fed[1]:
            sleep_ms(poll)
            if fed[1] and ticks_diff(ticks_ms(), fed[0]) > self.timeout_ms:
                sys.stderr.write("watchdog: not fed for %d ms: reset\n" % self.timeout_ms)
                if MICROPYTHON:
                    os.system("kill -9 $PPID")  # the shell's parent is this interpreter
                else:
                    import signal
                    os.kill(os.getpid(), signal.SIGKILL)


# -- buses: fakes that tests script -----------------------------------------------------------

_RARE = const(("lightsleep", "deepsleep", "reset", "reset_cause", "unique_id", "network_up", "use_led",
               "show_code", "identify"))  # board/unix_rare.py's (folded into
# __getattr__, defined before it: no global)


def __getattr__(name):
    # what a node uses rarely or never in its steady state (sleep, reset, the LED's codes, the
    # network, the board's id) is board/unix_rare.py's, loaded at its first use: about 450
    # bytes of heap on 64-bit ports that a node without them does not keep.
    # adc, i2c, onewire, pin_in and pin_out: board/fakebus.py's, loaded at their first use
    # (a node of simulated sensors never loads it); Led is its TraceLed (a node never makes one)
    if name in _RARE:
        import board.unix_rare
        return getattr(board.unix_rare, name)
    import board.fakebus
    return getattr(board.fakebus, "TraceLed" if name == "Led" else name)



# -- UART ---------------------------------------------------------------------------------------

class Serial:
    """A raw, non-blocking tty: read() returns b"" when nothing is there."""

    def __init__(self, path):
        import termios
        if MICROPYTHON:
            self._f = open(path, "r+b")
            fd = self._f.fileno()
        else:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            self._f = None
        self.fd = fd
        attrs = termios.tcgetattr(fd)
        # raw: no echo, no line editing, no translation; VMIN=0 VTIME=0 so reads never block
        attrs[0] = 0  # iflag
        attrs[1] = 0  # oflag
        attrs[3] = 0  # lflag
        cc = attrs[6]
        cc[6] = 0  # VMIN
        cc[5] = 0  # VTIME
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def read(self, n=512):
        if self._f is not None:
            data = self._f.read(n)
            return data or b""
        try:
            return os.read(self.fd, n)
        except BlockingIOError:
            return b""

    def readinto(self, buf):
        """Bytes waiting, into buf; how many (0 when none). Allocates nothing on MicroPython."""
        if self._f is not None:
            return self._f.readinto(buf) or 0
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def write(self, data, n=None):
        """data[:n] (all of it when n is None), whole. On MicroPython a stream's write takes an
        offset and a length: no memoryview per call."""
        if n is None:
            n = len(data)
        off = 0
        if self._f is not None:
            while off < n:
                off += self._f.write(data, off, n - off) or 0
            return
        mv = memoryview(data)
        while off < n:
            try:
                off += os.write(self.fd, mv[off:n])
            except BlockingIOError:
                time.sleep(0.001)

    def close(self):
        if self._f is not None:
            self._f.close()
        else:
            os.close(self.fd)


# -- files ----------------------------------------------------------------------------------

from board._files import read_file, write_file_atomic  # noqa: E402,F401
