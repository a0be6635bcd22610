# What the esp32 and rp2 boards share: machine's UART, pins, ADC, I2C, watchdog, sleep
# and the onewire driver. board/esp32.py and board/rp2.py add their defaults (pins,
# watchdog limit, timers, Wi-Fi). The interface is documented in board/__init__.py.
import time

import machine

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms

# ports whose time epoch is 2000 (older builds) need the 30 years added
_EPOCH_OFFSET_MS = 946684800000 if time.gmtime(0)[0] == 2000 else 0


def epoch_ms():
    return time.time_ns() // 1000000 + _EPOCH_OFFSET_MS


def lightsleep(ms):
    machine.lightsleep(ms)


def deepsleep(ms):
    machine.deepsleep(ms)


def reset():
    machine.reset()


def reset_cause():
    c = machine.reset_cause()
    for name, attr in (("power", "PWRON_RESET"), ("watchdog", "WDT_RESET"), ("deepsleep", "DEEPSLEEP_RESET"),
                       ("soft", "SOFT_RESET"), ("hard", "HARD_RESET")):
        if getattr(machine, attr, -1) == c:
            return name
    return "hard"


def unique_id():
    return machine.unique_id()


class Watchdog:
    """machine.WDT with the timeout clamped to what the chip takes (.timeout_ms)."""

    def __init__(self, timeout_ms, max_ms):
        self.timeout_ms = min(max(1, timeout_ms), max_ms)
        self._w = machine.WDT(timeout=self.timeout_ms)

    def feed(self):
        self._w.feed()


def parse_port(port, uart, tx, rx):
    """(uart id, tx pin, rx pin, baud) from "uart<id>[,tx=<pin>,rx=<pin>,baud=<n>]"; a port
    that is not such a spec (a host path like /dev/ttyUSB0) means the board's default UART."""
    baud = 115200
    if not port.startswith("uart"):
        return uart, tx, rx, baud
    parts = port.split(",")
    if parts[0][4:]:
        uart = int(parts[0][4:])
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k == "tx":
            tx = int(v)
        elif k == "rx":
            rx = int(v)
        elif k == "baud":
            baud = int(v)
        else:
            raise ValueError("serial port %r: unknown setting %r (tx, rx, baud)" % (port, k))
    return uart, tx, rx, baud


class Uart:
    """machine.UART that never blocks: read() returns b"" when nothing waits."""

    def __init__(self, uart, tx, rx, baud):
        self._u = machine.UART(uart, baudrate=baud, tx=machine.Pin(tx), rx=machine.Pin(rx), timeout=0,
                               rxbuf=2048)

    def read(self, n=512):
        return self._u.read(n) or b""

    def readinto(self, buf):
        """Bytes waiting, into buf; how many (0 when none). Allocates nothing."""
        return self._u.readinto(buf) or 0

    def write(self, data, n=None):
        """data[:n] (all of it when n is None), whole; allocates nothing (a stream's write
        takes an offset and a length)."""
        if n is None:
            n = len(data)
        off = 0
        while off < n:
            off += self._u.write(data, off, n - off) or 0  # type: ignore[call-arg]  # a stream write: (buf, off, len)

    def close(self):
        self._u.deinit()


class Led:
    """The status LED on `pin`, lit by a high level unless active_low."""

    def __init__(self, pin, active_low=False):
        self._p = machine.Pin(pin, machine.Pin.OUT)
        self._low = active_low
        self.off()

    def value(self, v=None):
        if v is None:
            return self._p.value() ^ self._low
        self._p.value((1 if v else 0) ^ self._low)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def show_code(led, pattern, forever):
    while True:
        for on_ms, off_ms in pattern:
            led.on()
            sleep_ms(on_ms)
            led.off()
            sleep_ms(off_ms)
        if not forever:
            return


class Blinker:
    """Toggles the LED from a timer for `seconds`, so the caller is not held up."""

    def __init__(self, led, timer, seconds):
        self.led = led
        self.left = max(1, int(seconds * 4))
        self.timer = timer
        timer.init(period=125, mode=machine.Timer.PERIODIC, callback=self._tick)

    def _tick(self, t):
        self.left -= 1
        self.led.value(not self.led.value() and self.left > 0)
        if self.left <= 0:
            self.timer.deinit()


def network_up(ssid=None, password=None, timeout_ms=15000):
    """Join Wi-Fi (station); False on a board without it or when it did not connect in time."""
    try:
        import network
    except ImportError:
        return False
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected() and ssid:
        wlan.connect(ssid, password)
        t0 = ticks_ms()
        while not wlan.isconnected() and ticks_diff(ticks_ms(), t0) < timeout_ms:
            sleep_ms(100)
    return wlan.isconnected()


def i2c(bus, scl, sda, freq):
    if scl is None or sda is None:
        return machine.I2C(bus, freq=freq)
    return machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)


def onewire(pin):
    import onewire as _ow
    return _ow.OneWire(machine.Pin(pin))


def pin_out(pin, value=0):
    return machine.Pin(pin, machine.Pin.OUT, value=value)


def pin_in(pin, pull_up=False):
    if pull_up:
        return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
    return machine.Pin(pin, machine.Pin.IN)


from board._files import read_file, write_file_atomic  # noqa: E402,F401


class Port:
    """What a port module fills in with its defaults: the serial link, the status LED,
    the watchdog, blink codes and identify (esp32.py and rp2.py bind these as their
    module-level functions)."""

    def __init__(self, watchdog_max_ms, uart_default, led_pin, timer_id):
        self.watchdog_max_ms = watchdog_max_ms
        self.uart_default = uart_default
        self.led_pin = led_pin
        self.timer_id = timer_id

    def functions(self):
        """(Serial, use_led, Led, Watchdog, show_code, identify) of the board interface."""
        return self.serial, self.use_led, self.led, self.watchdog, self.show_code, self.identify

    def serial(self, port):
        return Uart(*parse_port(port, *self.uart_default))

    def use_led(self, pin):
        self.led_pin = pin

    def led(self, pin=None, active_low=False):
        return Led(self.led_pin if pin is None else pin, active_low)

    def watchdog(self, timeout_ms):
        return Watchdog(timeout_ms, self.watchdog_max_ms)

    def show_code(self, pattern, forever=False):
        show_code(self.led(), pattern, forever)

    def identify(self, seconds):
        return Blinker(self.led(), machine.Timer(self.timer_id), seconds)

