# BME280 temperature, pressure and humidity over I2C (Bosch datasheet BST-BME280-DS002):
# chip id check, the factory calibration read once, a forced measurement per reading
# (x1 oversampling, filter off: the weather-monitoring setting, section 3.5.1) and the
# datasheet's integer compensation formulas (section 4.2.3), exact on every interpreter.
# A reading is an int in quanta of 2**-shift of its unit (the node packs it exactly, no
# float made): temperature in 1/256 °C, pressure in 1/256 hPa, humidity in 1/1024 %RH,
# within the resolution at x1 oversampling (0.005 °C, 2.62 Pa, 0.008 %RH). The 64-bit
# pressure formula's two products past 2**62 are taken in parts, exactly, so that no
# intermediate leaves a 64-bit port's small ints (on 32-bit ports, whose small ints end
# at 2**30, the formulas still make big ints).
import struct
import sys

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]
        return x

from sensors import SensorError

_CALIB00 = const(0x88)  # 26 bytes: dig_T1..dig_P9, dig_H1 at 0xA1
_CHIP_ID = const(0xD0)
_BME280_ID = const(0x60)
_CALIB26 = const(0xE1)  # 7 bytes: dig_H2..dig_H6
_CTRL_HUM = const(0xF2)
_STATUS = const(0xF3)
_CTRL_MEAS = const(0xF4)
_CONFIG = const(0xF5)
_DATA = const(0xF7)  # press[3], temp[3], hum[2]
_MEASURING = const(0x08)
_FORCED_X1 = b"\x25"  # ctrl_meas: osrs_t x1, osrs_p x1, forced mode
_SKIPPED_20 = const(0x80000)  # what a skipped temperature or pressure reads
_SKIPPED_16 = const(0x8000)
# a port whose small ints reach 2**62 (64-bit): the pressure formula's products are split
# to stay there; on 32-bit ports (2**30) they are big ints either way, and the split's
# extra steps would allocate more
_WIDE = sys.maxsize > 1 << 40


def _div(a, b):
    """C's integer division (towards zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


class BME280:
    """One chip at `addr` (0x76 with SDO low, 0x77 high) on an I2C bus. measure() takes a
    forced measurement; t, p and h hold the values read (1/256 °C, 1/256 hPa, %RH in
    Q22.10). channels() gives a sensor per quantity for the sampler."""

    def __init__(self, i2c, addr=0x76, board=None):
        self.i2c = i2c
        self.addr = addr
        self.board = board
        self.buf = bytearray(8)
        self.one = bytearray(1)
        i2c.readfrom_mem_into(addr, _CHIP_ID, self.one)
        if self.one[0] != _BME280_ID:
            raise SensorError("chip id 0x%02x at 0x%02x is not a BME280's (0x60)" % (self.one[0], addr))
        self.calibrate(i2c.readfrom_mem(addr, _CALIB00, 26), i2c.readfrom_mem(addr, _CALIB26, 7))
        i2c.writeto_mem(addr, _CTRL_HUM, b"\x01")  # osrs_h x1: takes effect at the next ctrl_meas write
        i2c.writeto_mem(addr, _CONFIG, b"\x00")  # filter off; standby time unused in forced mode
        self.t_fine = 0
        self.t = self.p = self.h = 0
        self.ok = False  # the last measurement succeeded

    def calibrate(self, c00, c26):
        """The trimming parameters from registers 0x88-0xA1 and 0xE1-0xE7 (datasheet table 16)."""
        (self.T1, self.T2, self.T3, self.P1, self.P2, self.P3, self.P4, self.P5, self.P6, self.P7, self.P8,
         self.P9) = struct.unpack("<HhhHhhhhhhhh", c00[:24])
        self.H1 = c00[25]
        self.H2 = struct.unpack("<h", c26[0:2])[0]
        self.H3 = c26[2]
        e4 = c26[3] - 256 if c26[3] > 127 else c26[3]
        e6 = c26[5] - 256 if c26[5] > 127 else c26[5]
        self.H4 = (e4 << 4) | (c26[4] & 0x0F)
        self.H5 = (e6 << 4) | (c26[4] >> 4)
        self.H6 = c26[6] - 256 if c26[6] > 127 else c26[6]

    def measure(self):
        i2c, addr, one, buf = self.i2c, self.addr, self.one, self.buf
        self.ok = False
        i2c.writeto_mem(addr, _CTRL_MEAS, _FORCED_X1)
        for _ in range(25):  # 9.3 ms at most at x1 (datasheet 9.1); 2 ms a poll
            if self.board is not None:
                self.board.sleep_ms(2)
            i2c.readfrom_mem_into(addr, _STATUS, one)
            if not one[0] & _MEASURING:
                break
        else:
            raise SensorError("BME280 at 0x%02x: the measurement does not end" % addr)
        i2c.readfrom_mem_into(addr, _DATA, buf)
        adc_p = buf[0] << 12 | buf[1] << 4 | buf[2] >> 4
        adc_t = buf[3] << 12 | buf[4] << 4 | buf[5] >> 4
        adc_h = buf[6] << 8 | buf[7]
        if adc_t == _SKIPPED_20 or adc_p == _SKIPPED_20 or adc_h == _SKIPPED_16:
            raise SensorError("BME280 at 0x%02x: measurement skipped (check the wiring and the power)" % addr)
        self.compensate_t(adc_t)
        self.t = (self.t_fine + 10) // 20  # T = t_fine / 5120 °C (datasheet 8.1): in 1/256 °C
        self.p = (self.compensate_p(adc_p) + 50) // 100  # Q24.8 Pa to 1/256 hPa
        self.h = self.compensate_h(adc_h)
        self.ok = True

    def compensate_t(self, adc_t):
        """Temperature in 0.01 °C; sets t_fine for the other two."""
        var1 = (((adc_t >> 3) - (self.T1 << 1)) * self.T2) >> 11
        d = (adc_t >> 4) - self.T1
        var2 = (((d * d) >> 12) * self.T3) >> 14
        self.t_fine = var1 + var2
        return (self.t_fine * 5 + 128) >> 8

    def compensate_p(self, adc_p):
        """Pressure in Pa, Q24.8 (1/256 Pa), by the 64-bit formula."""
        var1 = self.t_fine - 128000
        var2 = var1 * var1 * self.P6
        var2 += (var1 * self.P5) << 17
        var2 += self.P4 << 35
        var1 = ((var1 * var1 * self.P3) >> 8) + ((var1 * self.P2) << 12)
        a = (1 << 47) + var1
        if _WIDE:  # var1 = ((2**47 + var1) * P1) >> 33, with 2**47 + var1 split at bit 17
            var1 = ((a >> 17) * self.P1 + (((a & 0x1FFFF) * self.P1) >> 17)) >> 16
        else:
            var1 = (a * self.P1) >> 33
        if var1 == 0:
            raise SensorError("BME280 at 0x%02x: calibration data gives a division by zero" % self.addr)
        p = 1048576 - adc_p
        a = (p << 31) - var2
        if _WIDE:  # p = (((p << 31) - var2) * 3125) / var1 (C's division), the quotient taken first
            q = _div(a, var1)
            p = q * 3125 + _div((a - q * var1) * 3125, var1)
        else:
            p = _div(a * 3125, var1)
        var1 = (self.P9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (self.P8 * p) >> 19
        return ((p + var1 + var2) >> 8) + (self.P7 << 4)

    def compensate_h(self, adc_h):
        """Relative humidity in %RH, Q22.10 (1/1024 %RH)."""
        v = self.t_fine - 76800
        v = ((((adc_h << 14) - (self.H4 << 20) - (self.H5 * v)) + 16384) >> 15) * (
            ((((((v * self.H6) >> 10) * (((v * self.H3) >> 11) + 32768)) >> 10) + 2097152) * self.H2 + 8192) >> 14)
        v -= ((((v >> 15) * (v >> 15)) >> 7) * self.H1) >> 4
        v = 0 if v < 0 else v
        v = 419430400 if v > 419430400 else v
        return v >> 12

    def channels(self, name, measure=("t", "p", "h")):
        """A sensor per quantity in `measure`, named name_t (°C), name_p (hPa), name_h (%RH);
        the first one read in a round takes the measurement the others report."""
        return [Bme280Channel(self, name + "_" + m, m, i == 0) for i, m in enumerate(measure)]


class Bme280Channel:
    every = 1

    def __init__(self, dev, name, quantity, first):
        self.dev = dev
        self.name = name
        self.quantity = quantity
        self.first = first
        self.shift = 10 if quantity == "h" else 8  # read_raw() in 1/1024 %RH, 1/256 °C or hPa

    def read(self):
        return self.read_raw() / (1 << self.shift)

    def read_raw(self):
        """The value in quanta of 2**-shift (°C, hPa, %RH), an int: no allocation a reading."""
        dev = self.dev
        if self.first:
            dev.measure()
        elif not dev.ok:
            raise SensorError("BME280 at 0x%02x: no measurement this round" % dev.addr)
        q = self.quantity
        if q == "t":
            return dev.t
        if q == "p":
            return dev.p
        return dev.h
