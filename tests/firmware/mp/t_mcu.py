# board/esp32.py and board/rp2.py on a stand-in `machine` module that records calls:
# they import, they pick their defaults (UART pins, LED, watchdog limit), they parse
# serial port specs, map reset causes, play blink codes. MicroPython and CPython.
import sys
import time

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")

if not hasattr(time, "ticks_ms"):  # CPython: the few MicroPython time functions used
    time.ticks_ms = lambda: int(time.monotonic() * 1000)
    time.ticks_diff = lambda a, b: a - b
    time.ticks_add = lambda a, b: a + b
    time.sleep_ms = lambda ms: None
    time.time_ns = time.time_ns
calls = []


class Pin:
    OUT, IN, PULL_UP = 1, 0, 2

    def __init__(self, id, mode=-1, pull=None, value=None):
        self.id, self.level = id, 0
        calls.append(("Pin", id, mode))

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v


class UART:
    def __init__(self, id, baudrate, tx, rx, timeout, rxbuf):
        calls.append(("UART", id, baudrate, tx.id, rx.id, timeout))
        self.inbox = b""

    def read(self, n):
        return None  # what machine.UART returns when nothing waits

    def write(self, data):
        return len(data)


class WDT:
    def __init__(self, timeout):
        calls.append(("WDT", timeout))

    def feed(self):
        calls.append(("feed",))


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        calls.append(("ADC", pin.id))

    def atten(self, a):
        calls.append(("atten", a))


class Timer:
    PERIODIC = 1

    def __init__(self, id=-1):
        self.id = id

    def init(self, period, mode, callback):
        calls.append(("Timer", self.id, period))
        self.cb = callback

    def deinit(self):
        calls.append(("Timer.deinit",))


class machine:
    Pin, UART, WDT, ADC, Timer = Pin, UART, WDT, ADC, Timer
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    cause = 3

    @staticmethod
    def reset_cause():
        return machine.cause

    @staticmethod
    def unique_id():
        return b"\x01\x02\x03\x04\x05\x06\x07\x08"

    @staticmethod
    def lightsleep(ms):
        calls.append(("lightsleep", ms))

    @staticmethod
    def I2C(bus, scl=None, sda=None, freq=400000):
        calls.append(("I2C", bus, scl.id if scl else None, sda.id if sda else None, freq))


sys.modules["machine"] = machine  # type: ignore[assignment]
import board._mcu as _mcu  # noqa: E402
import board.esp32 as esp32  # noqa: E402
import board.rp2 as rp2  # noqa: E402

_mcu.sleep_ms = lambda ms: None  # blink codes play at once

INTERFACE = ["NAME", "WATCHDOG_MAX_MS", "ticks_ms", "ticks_diff", "ticks_add", "epoch_ms", "sleep_ms", "lightsleep",
             "deepsleep", "reset", "reset_cause", "unique_id", "network_up", "Watchdog", "Led", "use_led", "show_code",
             "identify", "Serial", "i2c", "onewire", "adc", "pin_out", "pin_in", "read_file", "write_file_atomic"]
for mod in (esp32, rp2):
    missing = [n for n in INTERFACE if not hasattr(mod, n)]
    assert not missing, (mod.NAME, missing)

# serial port specs; a host path means the board's default UART
assert _mcu.parse_port("/dev/ttyUSB0", 2, 17, 16) == (2, 17, 16, 115200)
assert _mcu.parse_port("uart1,tx=4,rx=5,baud=57600", 2, 17, 16) == (1, 4, 5, 57600)
assert _mcu.parse_port("uart", 0, 0, 1) == (0, 0, 1, 115200)
try:
    _mcu.parse_port("uart1,parity=even", 2, 17, 16)
except ValueError:
    pass
else:
    raise AssertionError("an unknown UART setting was accepted")
u = esp32.Serial("/dev/ttyUSB0")
assert ("UART", 2, 115200, 17, 16, 0) in calls and u.read() == b""
rp2.Serial("uart1,tx=8,rx=9")
assert ("UART", 1, 115200, 8, 9, 0) in calls

# the watchdog timeout is clamped to what the chip takes
w = rp2.Watchdog(60000)
assert w.timeout_ms == 8388 and ("WDT", 8388) in calls
w.feed()
assert esp32.Watchdog(60000).timeout_ms == 60000

assert esp32.reset_cause() == "watchdog"
machine.cause = 4
assert rp2.reset_cause() == "deepsleep"
assert esp32.unique_id() == b"\x01\x02\x03\x04\x05\x06\x07\x08"
esp32.lightsleep(500)
assert ("lightsleep", 500) in calls

# LEDs: GPIO2 on an ESP32, "LED" on a Pico; active low inverts
led = esp32.Led()
assert ("Pin", 2, Pin.OUT) in calls
led.on()
assert led._p.level == 1
low = rp2.Led(active_low=True)
assert ("Pin", "LED", Pin.OUT) in calls
low.on()
assert low._p.level == 0 and low.value() == 1
esp32.use_led(13)
esp32.Led()
assert ("Pin", 13, Pin.OUT) in calls
esp32.use_led(2)
del calls[:]
esp32.show_code([(1000, 600), (200, 2000)])  # once, not forever
b = rp2.identify(1)
assert [c for c in calls if c[0] == "Timer"] == [("Timer", -1, 125)]

# ADC attenuation on the ESP32 for a 0-3.1 V input; I2C with the port's pins unless given
esp32.adc(34)
assert ("ADC", 34) in calls and ("atten", 3) in calls
rp2.i2c(0, None, None, 100000)
rp2.i2c(1, 7, 6, 400000)
assert ("I2C", 0, None, None, 100000) in calls and ("I2C", 1, 7, 6, 400000) in calls
assert esp32.epoch_ms() > 1700000000000
print("OK t_mcu")
