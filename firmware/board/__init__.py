# The board layer: one small interface, one module per board, chosen by sys.platform.
#
#   board.unix   the MicroPython unix port and CPython: ptys for UARTs, UDP, files;
#                simulated sleep, watchdog and LED; fake I2C, 1-Wire and ADC buses
#                (board/fake.py) that tests attach device models to
#   board.esp32  ESP32 boards (machine, onewire, network); shared code in board/_mcu.py
#   board.rp2    RP2040 / RP2350 boards (Pico, Pico W, Pico 2); shared code in board/_mcu.py
#   board.qemu   the Cortex-M3 bench board (QEMU mps2-an385, firmware/build/frozen.py qemu-m3):
#                UART registers, a watchdog, storage and clock in host files by semihosting
#
# Every board module provides:
#
#   NAME, WATCHDOG_MAX_MS           the board's name; the longest watchdog timeout it takes
#   ticks_ms(), ticks_diff(a, b),   a wrapping millisecond clock, the difference of two ticks,
#   ticks_add(t, ms)                and a tick ms later (wraps as the clock does)
#   epoch_ms()                      wall-clock ms since 1970 (boards: the RTC, set by NTP or by hand)
#   sleep_ms(ms)                    busy or idle wait; nothing else runs
#   lightsleep(ms)                  the CPU sleeps, RAM and state are kept, returns after ms
#   deepsleep(ms)                   never returns: the board powers down and boots again after ms
#                                   (unix: sleeps, then the process exits with 75)
#   reset(), reset_cause()          restart now; why the board last started: "power", "watchdog",
#                                   "deepsleep", "soft", "hard"
#   unique_id()                     bytes that name this chip
#   network_up(ssid, password, timeout_ms) -> bool   join Wi-Fi where the board has it
#   Watchdog(timeout_ms)            the hardware watchdog, started at once, .feed() it in time or the
#                                   board resets; .timeout_ms is the timeout in force (clamped to
#                                   WATCHDOG_MAX_MS); it cannot be stopped
#   Led(pin=None, active_low=False) the status LED (.on(), .off(), .value(v)); None: the board's own
#   use_led(pin)                    the status LED is on `pin` from now on (a board without one on
#                                   its default pin; config key led_pin)
#   show_code(pattern, forever)     play a blink code, (on ms, off ms) pairs, on the status LED;
#                                   forever: until reset (unix: writes it on stderr, never blocks)
#   identify(seconds)               blink the status LED for a while, without blocking
#   Serial(port)                    a UART: .read(n) -> bytes (b"" when nothing waits), .write(data);
#                                   unix: a tty path; boards: "uart<id>[,tx=<pin>,rx=<pin>,baud=<n>]"
#   i2c(bus, scl, sda, freq)        an I2C bus with machine.I2C's readfrom_mem_into, readfrom_mem,
#                                   writeto_mem and scan; scl/sda None: the port's default pins
#   onewire(pin)                    a 1-Wire bus with onewire.OneWire's reset, readbyte, readinto,
#                                   writebyte, write, select_rom and scan
#   adc(pin)                        an ADC channel with read_u16() (0..65535 over the full range)
#   pin_out(pin, value), pin_in(pin, pull_up)   digital pins with .value()
#   read_file(path) -> bytes|None, write_file_atomic(path, data)
#
# Errors: bus methods raise OSError (ENODEV, ETIMEDOUT, EIO) as machine.I2C does.
import sys

if sys.platform == "esp32":
    from board import esp32 as _board
elif sys.platform == "rp2":
    from board import rp2 as _board  # type: ignore[no-redef]
elif sys.platform == "qemu":
    from board import qemu as _board  # type: ignore[no-redef]
elif sys.platform in ("linux", "darwin") or sys.implementation.name == "cpython":
    from board import unix as _board  # type: ignore[no-redef]
else:
    raise ImportError("no board module for platform %r" % sys.platform)

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy (firmware/typecheck.sh) sees the port's names and their types
    if sys.platform == "esp32":
        from board.esp32 import *  # noqa: F401,F403
    elif sys.platform == "rp2":
        from board.rp2 import *  # noqa: F401,F403


def __getattr__(name):
    # board.X is the board module's X, looked up there at each use rather than copied into
    # this package by `import *`: a copy was a second dict of its forty-odd names, 380 B
    # of heap on 32-bit ports and twice that on 64-bit. A name set here (a test's stand-in)
    # is found first. Submodules: `import board.fake`, not `from board import fake`.
    return getattr(_board, name)
