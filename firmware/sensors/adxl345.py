# Vibration RMS from an ADXL345 accelerometer over I2C (Analog Devices datasheet rev. G):
# full resolution (3.9 mg/LSB at every range), the FIFO in stream mode; each reading
# takes a window of samples and reports the RMS of their AC part on the node, as
# velocity (mm/s, the ISO 10816 / 20816 measure) or acceleration (g).
# In g the node reads read_raw(): the RMS in 1/4096 g (shift 12) from the window's integer
# sums, an integer square root and a fixed-point factor made once, no float a reading; no
# intermediate passes 2**62 (a 64-bit port's small ints: a reading allocates nothing
# there; on 32-bit ports, where they would be big ints, read() in floats allocates less
# and is what the node reads, shift 255). In mm/s the detrend's exact sums pass 2**62 for most signals, and big ints would
# allocate more than the floats: velocity is read() in floats (shift 255).
import array
import math
import sys

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]
        return x

from sensors import SensorError, raise_kept

_DEVID = const(0x00)
_ADXL345_ID = const(0xE5)
_BW_RATE = const(0x2C)
_POWER_CTL = const(0x2D)
_DATA_FORMAT = const(0x31)
_DATAX0 = const(0x32)
_FIFO_CTL = const(0x38)
_FIFO_STATUS = const(0x39)
_MEASURE = const(0x08)
_FULL_RES = const(0x08)
_STREAM = const(0x80)
G_PER_LSB = 0.0039  # full resolution, typical (datasheet table 1)
G = 9.80665  # m/s² per g
_RATES = {100: 0x0A, 200: 0x0B, 400: 0x0C, 800: 0x0D, 1600: 0x0E, 3200: 0x0F}
_RANGES = {2: 0, 4: 1, 8: 2, 16: 3}
# a port whose small ints reach 2**62 (64-bit); on 32-bit ports (2**30) the sums are big
# ints, which allocate more than the floats: there the node reads read() in floats
_WIDE = sys.maxsize > 1 << 40


def _s16(lo, hi):
    v = lo | hi << 8
    return v - 0x10000 if v & 0x8000 else v


def ac_rms(buf, n, axis, stride=3):
    """RMS of the AC part (mean removed) of `axis` in samples interleaved by `stride`,
    in LSB. Sums of deviations from the first sample, in integers: exact, and no
    allocation per sample while they stay small ints."""
    x0 = buf[axis]
    s = ss = 0
    for i in range(axis, n * stride, stride):
        d = buf[i] - x0
        s += d
        ss += d * d
    return math.sqrt((n * ss - s * s) / (n * n))


def velocity_rms(buf, n, axis, dt, stride=3):
    """RMS velocity of `axis` in LSB·s: the acceleration integrated by Al-Alaoui's rule,
    v += dt (7 a[k] + a[k-1]) / 8 (its gain is within 1.5 % of 1/w up to 0.6 x Nyquist,
    where trapezoids lose 5 % at 8 samples a cycle and 34 % at 3.2), then the least-
    squares line taken out: the unknown initial velocity and the mean acceleration
    (gravity, a tilt) integrate to a line, so the AC part needs no mean first, and the
    band starts at about 1 / window. In integers (8/dt times the velocity) until the
    last division: exact, the same on every interpreter."""
    x0 = buf[axis]
    prev = v = sy = syy = sxy = 0
    k = 0
    for i in range(axis, n * stride, stride):
        d = buf[i] - x0
        if k:
            v += 7 * d + prev
        prev = d
        sy += v
        syy += v * v
        sxy += k * v
        k += 1
    # residual sum of squares about the fitted line, times n^3 (n^2 - 1):
    # n Syy = n syy - sy^2; 2n Sxy = 2n sxy - n(n-1) sy; 12 Sxx = n(n^2 - 1)
    a = n * syy - sy * sy
    b = 2 * n * sxy - n * (n - 1) * sy
    q = n * n - 1
    resid = (a * n * n * q - 3 * b * b) / (n * n * n * q)
    return math.sqrt(max(0.0, resid / n)) * dt / 8


def isqrt(v):
    """floor(sqrt(v)) of an int v >= 0, by Newton's method in integers."""
    if v < 2:
        return v
    x = 1 << ((_bits(v) + 1) >> 1)  # >= sqrt(v)
    while True:
        y = (x + v // x) >> 1
        if y >= x:
            return x
        x = y


def _bits(v):
    b = 0
    while v >> b:
        b += 1
    return b


def ac_sq(buf, n, axis, stride=3):
    """n² times the AC part's mean square in LSB² (ac_rms(...)² n²): an exact int."""
    x0 = buf[axis]
    s = ss = 0
    i = axis
    end = n * stride
    while i < end:  # not range(): one with a variable step is a heap object on MicroPython
        d = buf[i] - x0
        s += d
        ss += d * d
        i += stride
    return n * ss - s * s


class Vibration:
    """Vibration RMS over `samples` samples at `rate_hz` (a window of samples / rate_hz
    seconds: the node awaits fill() then calls read(); read() alone waits that long), in `unit` "mm/s" (velocity) or "g" (acceleration),
    over `axis` "x", "y", "z" or "xyz" (the root of the three axes' sum of squares)."""

    every = 1

    def __init__(self, i2c, name, board, addr=0x53, rate_hz=1600, samples=256, range_g=16, unit="mm/s",
                 axis="xyz"):
        self.i2c = i2c
        self.name = name
        self.board = board
        self.addr = addr
        self.rate_hz = rate_hz
        self.n = samples
        self.unit = unit
        self.axes = (0, 1, 2) if axis == "xyz" else ("xyz".index(axis),)
        self.buf = array.array("h", bytes(6 * samples))  # x, y, z interleaved
        self.six = bytearray(6)
        self.one = bytearray(1)
        self.filled = False  # fill() took the window that read() is to use
        self.fault = None  # type: SensorError | None  # what fill() met, raised by the next read()
        # in g, read_raw() = round(factor * sqrt(sum of the axes' ac_sq)), factor = fmul / 2**fexp
        self.shift = 12 if unit == "g" and _WIDE else 255  # 1/4096 g; 255: read() only (floats)
        factor = G_PER_LSB * 4096 / samples
        e = 0
        while factor * (1 << e) < (1 << 24):
            e += 1
        self.fmul = round(factor * (1 << e))
        self.fexp = e
        i2c.readfrom_mem_into(addr, _DEVID, self.one)
        if self.one[0] != _ADXL345_ID:
            raise SensorError("device id 0x%02x at 0x%02x is not an ADXL345's (0xE5)" % (self.one[0], addr))
        self._write(_POWER_CTL, 0)  # standby while configuring
        self._write(_DATA_FORMAT, _FULL_RES | _RANGES[range_g])
        self._write(_BW_RATE, _RATES[rate_hz])
        self._write(_FIFO_CTL, _STREAM)
        self._write(_POWER_CTL, _MEASURE)

    def _write(self, reg, value):
        self.one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self.one)

    def _fifo(self):
        self.i2c.readfrom_mem_into(self.addr, _FIFO_STATUS, self.one)
        return self.one[0] & 0x3F

    def _window(self):
        """Fill the buffer with `samples` fresh samples (what waited in the FIFO goes first),
        yielding the ms to wait whenever the FIFO is empty."""
        i2c, addr, six, buf, n = self.i2c, self.addr, self.six, self.buf, self.n
        for _ in range(self._fifo()):  # older than this reading: drop
            i2c.readfrom_mem_into(addr, _DATAX0, six)
        got = idle = 0
        limit = 2 * n * 1000 // self.rate_hz + 100  # ms without samples before giving up
        while got < n:
            avail = self._fifo()
            if not avail:
                idle += 1
                if idle > limit:
                    raise SensorError("ADXL345 at 0x%02x: no samples (is it measuring?)" % addr)
                yield 1
                continue
            for _ in range(min(avail, n - got)):
                i2c.readfrom_mem_into(addr, _DATAX0, six)  # six bytes pop one FIFO entry
                j = 3 * got
                buf[j] = _s16(six[0], six[1])
                buf[j + 1] = _s16(six[2], six[3])
                buf[j + 2] = _s16(six[4], six[5])
                got += 1

    def window(self):
        """Take a window, sleeping while the FIFO fills (the node's loop waits)."""
        for ms in self._window():
            self.board.sleep_ms(ms)

    async def fill(self, sleep_ms):
        """Take a window, awaiting `sleep_ms(ms)` while the FIFO fills, so the node's loop
        runs on; the read() that follows uses it. An error is kept for that read()."""
        try:
            for ms in self._window():
                await sleep_ms(ms)
        except SensorError as e:
            self.fault = e
            return
        self.filled = True

    def read(self):
        if self.shift == 12:
            return self.read_raw() / 4096
        return self.read_float()

    def read_raw(self):
        """The RMS acceleration in 1/4096 g, an int (unit "g" only)."""
        if self.unit != "g":
            raise ValueError("read_raw() reads g; mm/s is read()")
        raise_kept(self)
        if not self.filled:
            self.window()
        self.filled = False
        total = 0
        for a in self.axes:
            total += ac_sq(self.buf, self.n, a)
        # sqrt(total) * 2**f, f as many bits as keep total * 4**f under 2**60, then the factor
        f = (60 - _bits(total)) >> 1 if total < 1 << 58 else 0
        e = self.fexp + f
        return (isqrt(total << 2 * f) * self.fmul + (1 << (e - 1))) >> e

    def read_float(self):
        """The RMS in floats (ac_rms, velocity_rms): mm/s, and the reference for g."""
        raise_kept(self)
        if not self.filled:
            self.window()
        self.filled = False
        total = 0.0
        for a in self.axes:
            if self.unit == "g":
                r = ac_rms(self.buf, self.n, a) * G_PER_LSB
            else:
                r = velocity_rms(self.buf, self.n, a, 1 / self.rate_hz) * G_PER_LSB * G * 1000
            total += r * r
        return math.sqrt(total)
