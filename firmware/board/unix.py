# The unix board: ptys stand in for UARTs, UDP for the radio, files for flash.
# Runs on the MicroPython unix port and on CPython.
import os
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"

if MICROPYTHON:
    def ticks_ms():
        return time.ticks_ms()

    def ticks_diff(a, b):
        return time.ticks_diff(a, b)
else:
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


def epoch_ms():
    """Wall-clock milliseconds since 1970 (the unix board has an RTC: the host's)."""
    if hasattr(time, "time_ns"):
        return time.time_ns() // 1000000
    return int(time.time() * 1000)


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

    def write(self, data):
        if self._f is not None:
            mv = memoryview(data)
            while mv:
                n = self._f.write(mv)
                mv = mv[n:] if n else mv
            return
        mv = memoryview(data)
        while mv:
            try:
                n = os.write(self.fd, mv)
                mv = mv[n:]
            except BlockingIOError:
                time.sleep(0.001)

    def close(self):
        if self._f is not None:
            self._f.close()
        else:
            os.close(self.fd)


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file_atomic(path, data):
    """Write then rename, so a power cut leaves the old or the new file, never half."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
