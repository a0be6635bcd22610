# The Cortex-M3 bench board: MicroPython's qemu port (firmware/build/frozen.py qemu-m3) on
# QEMU's `mps2-an385`, started by hil_tests/rig.py's QemuBoard. The node's UART is the
# CMSDK UART1 (0x40005000), driven through machine.mem32 and wired by QEMU to a host tty
# (the gateway's end of a pty pair, as a USB-UART adapter is); UART0 is the console and
# REPL. Storage is LittleFS on a block device kept in a host file through ARM
# semihosting (`flash.bin` in QEMU's working folder): it outlives a reset and a killed
# QEMU, as flash outlives a power cut. The wall clock is a host file too (`rtc`, epoch
# ms, written by the bench when it powers the board), advanced by the tick counter. The
# watchdog is the MPS2's CMSDK APB watchdog (0x40008000): not fed, it raises an NMI
# (the port prints it), then resets the board. Sensors are simulated; the I2C,
# 1-Wire and ADC buses are board/fake.py's, as on the unix board. The interface is
# documented in board/__init__.py.
#
# Caveats: QEMU must run with `-semihosting`; without `flash.bin` the board makes it
# (256 KiB) and a fresh filesystem. Floats are single precision on this port: the node
# keeps times as integers (clock.py).
import sys
import time
from array import array

import machine
import semihost
import uctypes
from micropython import const

NAME = "qemu"
WATCHDOG_MAX_MS = 340000  # two periods of the 32-bit counter at 25 MHz
# const() and a leading _: folded into the code, no entry in this module's dict (heap)
_CLOCK_HZ = const(25000000)  # the MPS2's peripheral clock, the watchdog's count rate
_UARTS = const((0x40004000, 0x40005000, 0x40006000, 0x40007000, 0x40009000))  # CMSDK UART0-4
_WDOG = const(0x40008000)
_BLOCK = const(512)
_BLOCKS = const(512)
# LittleFS's read and program size (its caches are 4 times that: the filesystem's two and
# each open file's one) and lookahead, in bytes: the smallest that keep it quick here (at
# 32, MicroPython's default, they took 400 B more of heap with the log's file open)
_LFS_IO = const(8)
_LFS_LOOKAHEAD = const(8)
# semihosting operations (semihost.call) and fopen modes by index
_SYS_OPEN = const(0x01)
_SYS_CLOSE = const(0x02)
_SYS_WRITE = const(0x05)
_SYS_READ = const(0x06)
_SYS_SEEK = const(0x0A)
_MODE_RB = const(1)
_MODE_RPB = const(3)
_MODE_WPB = const(7)
_FLASH_FILE = const(b"flash.bin\x00")
_RTC_FILE = const(b"rtc\x00")

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms

_params = array("I", [0, 0, 0, 0])  # the semihosting parameter block, reused by every call


def _open(name, mode):
    """A host file's handle (name: NUL-terminated bytes), or -1."""
    p = _params
    p[0] = uctypes.addressof(name)
    p[1] = mode
    p[2] = len(name) - 1
    return semihost.call(_SYS_OPEN, p)


def _xfer(op, handle, pos, buf):
    """Read or write buf whole at pos of the host file; bytes left over (0: all done)."""
    p = _params
    p[0] = handle
    p[1] = pos
    if semihost.call(_SYS_SEEK, p) != 0:
        raise OSError(5)  # EIO
    p[1] = uctypes.addressof(buf)
    p[2] = len(buf)
    return semihost.call(op, p)


def _read_rtc():
    h = _open(_RTC_FILE, _MODE_RB)
    if h < 0:
        return 0
    buf = bytearray(24)
    left = _xfer(_SYS_READ, h, 0, buf)
    _params[0] = h
    semihost.call(_SYS_CLOSE, _params)
    try:
        return int(bytes(buf[:len(buf) - left]).strip() or b"0")
    except ValueError:
        return 0


_RTC_MS = _read_rtc()  # epoch ms when the board was powered (the bench wrote it), read at boot
del _read_rtc  # used once: its slot of this module's dict is taken by a later name
_BOOT_TICKS = ticks_ms()


def epoch_ms():
    """Wall-clock ms since 1970: the rtc file's time at power-on plus the ticks since."""
    return _RTC_MS + ticks_diff(ticks_ms(), _BOOT_TICKS)


# -- storage --------------------------------------------------------------------------------

class Flash:
    """A block device (LittleFS's extended interface) in the host file flash.bin."""

    def __init__(self, blocks=_BLOCKS):
        self.blocks = blocks
        h = _open(_FLASH_FILE, _MODE_RPB)
        if h < 0:  # a new board: erased flash
            h = _open(_FLASH_FILE, _MODE_WPB)
            if h < 0:
                raise OSError(19)  # ENODEV: QEMU runs without -semihosting
            _xfer(_SYS_WRITE, h, blocks * _BLOCK - 1, b"\xff")
        self.h = h

    def readblocks(self, block, buf, off=0):
        if _xfer(_SYS_READ, self.h, block * _BLOCK + off, buf):
            raise OSError(5)

    def writeblocks(self, block, buf, off=0):
        if _xfer(_SYS_WRITE, self.h, block * _BLOCK + off, buf):
            raise OSError(5)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return _BLOCK
        return 0  # init, deinit, sync, erase: nothing to do on a file


def mount():
    """The board's filesystem at / (made on first boot), the working folder; run by _boot.py."""
    import os
    import vfs
    dev = Flash()
    try:
        fs = vfs.VfsLfs2(dev, readsize=_LFS_IO, progsize=_LFS_IO, lookahead=_LFS_LOOKAHEAD, mtime=False)
    except OSError:
        vfs.VfsLfs2.mkfs(dev, readsize=_LFS_IO, progsize=_LFS_IO, lookahead=_LFS_LOOKAHEAD)
        fs = vfs.VfsLfs2(dev, readsize=_LFS_IO, progsize=_LFS_IO, lookahead=_LFS_LOOKAHEAD, mtime=False)
    vfs.mount(fs, "/")
    os.chdir("/")
    if "/lib" not in sys.path:
        sys.path.append("/lib")


from board._files import read_file, write_file_atomic  # noqa: E402,F401


# -- power ----------------------------------------------------------------------------------

def lightsleep(ms):
    sleep_ms(ms)


def deepsleep(ms):
    sleep_ms(ms)
    reset()


def reset():
    """machine.reset(): QEMU exits (semihosting), the bench powers the board again."""
    machine.reset()


def reset_cause():
    return "power"


def unique_id():
    return b"mps2-m3\x00"


def network_up(ssid=None, password=None, timeout_ms=0):
    return False  # no radio: the serial link only


# -- the watchdog ---------------------------------------------------------------------------

class Watchdog:
    """The CMSDK APB watchdog: counts down at 25 MHz; the first time-out raises an NMI,
    the second resets the board, so each period is half of timeout_ms. feed() reloads it
    (no allocation: one register write). It cannot be stopped."""

    def __init__(self, timeout_ms):
        self.timeout_ms = min(max(2, timeout_ms), WATCHDOG_MAX_MS)
        self._intclr = _WDOG + 0x0C  # made once: addresses from 0x40000000 on are heap ints here
        m = machine.mem32
        m[_WDOG + 0xC00] = 0x1ACCE551  # unlock the registers
        m[_WDOG] = self.timeout_ms // 2 * (_CLOCK_HZ // 1000)  # LOAD
        m[_WDOG + 0x08] = 3  # CONTROL: INTEN (the count runs) and RESEN

    def feed(self):
        machine.mem32[self._intclr] = 1  # INTCLR: clears the time-out and reloads


# -- the status LED: none on this board; board.Led is board/fakebus.py's (below) ---------------

def use_led(pin):
    pass


def show_code(pattern, forever=False):
    """A blink code, written on the console (the board has no LED); never blocks."""
    sys.stdout.write("led: %s\n" % " ".join("%d/%d" % p for p in pattern))


def identify(seconds):
    sys.stdout.write("led: identify %d s\n" % seconds)


# -- buses: board/fake.py's, as on the unix board ---------------------------------------------

def __getattr__(name):
    # adc, i2c, onewire, pin_in, pin_out and Led: board/fakebus.py's, loaded at their first
    # use (a node of simulated sensors never loads it: about 500 B of heap less)
    import board.fakebus
    return getattr(board.fakebus, name)


# -- UART -------------------------------------------------------------------------------------

class Serial:
    """A CMSDK UART of the MPS2 by its registers: port "uart<n>" (0-4; UART0 is the
    console), default uart1. QEMU holds one received byte at a time and passes on the
    next once it is read, so nothing is lost while the node is busy: the host's tty
    buffers. read() returns b"" when nothing waits; readinto and write allocate nothing."""

    def __init__(self, port="uart1"):
        n = 1
        if port.startswith("uart") and port[4:].isdigit():
            n = int(port[4:])
        if not 0 <= n < len(_UARTS):
            raise ValueError("serial port %r: this board has uart0 to uart%d" % (port, len(_UARTS) - 1))
        # the registers' addresses, made once: from 0x40000000 on they are heap ints on this port,
        # and an address computed per call would allocate
        self.base = base = _UARTS[n]
        self._state = base + 4
        m = machine.mem32
        m[base + 0x10] = 16  # BAUDDIV (QEMU paces nothing by it; a real CMSDK UART needs >= 16)
        m[base + 0x08] = 3  # CTRL: TX and RX enabled

    def readinto(self, buf):
        """Bytes waiting, into buf; how many (0 when none)."""
        m = machine.mem32
        data = self.base
        state = self._state
        n = 0
        size = len(buf)
        while n < size and m[state] & 2:  # RX full
            buf[n] = m[data]
            n += 1
        return n

    def read(self, n=512):
        buf = bytearray(n)
        return bytes(buf[:self.readinto(buf)])

    def write(self, data, n=None):
        """data[:n] (all of it when n is None), whole."""
        if n is None:
            n = len(data)
        m = machine.mem32
        out = self.base
        state = self._state
        for i in range(n):
            while m[state] & 1:  # TX full
                pass
            m[out] = data[i]

    def close(self):
        machine.mem32[self.base + 0x08] = 0
