# An analog input: the mean of a few conversions, mapped to the measured quantity by the
# straight line through two calibration points, e.g. a 4-20 mA transmitter read across a
# 150 ohm shunt: [[raw at 4 mA, 0.0], [raw at 20 mA, 10.0]] gives bar for a 0-10 bar one.
# The node reads read_raw(): the value in quanta of 2**-shift, from the sum of the
# conversions by an integer line made once (the calibration's floats turned to fixed
# point), no float a reading. The quantum is at most half the mean's step, gain / samples,
# and the line's rounding adds at most 1/8 of a quantum, so a raw reading is within 5/16
# of that step of read()'s float. The sum times the fixed-point gain stays under
# 2**56: small ints on a 64-bit port (on 32-bit ports, past 2**30, a big int a reading).
# A line whose values do not fit 2**30 quanta at that step (a large offset beside a small
# gain), or that needs a quantum under 2**-23, has no raw form: shift 255, read() floats.

import sys

_NONE = 255  # shift: no raw form (the node reads read())
# a port whose small ints reach 2**62 (64-bit); on 32-bit ports (2**30) the line's products
# are big ints, which allocate more than read()'s floats: there the node reads read()
_WIDE = sys.maxsize > 1 << 40


def two_point(raw1, value1, raw2, value2):
    """(gain, offset) of the line through (raw1, value1) and (raw2, value2): value = offset + gain * raw."""
    gain = (value2 - value1) / (raw2 - raw1)
    return gain, value1 - gain * raw1


class AdcSensor:
    """read_u16() (0..65535) oversampled `samples` times, calibrated by `cal`,
    [[raw1, value1], [raw2, value2]]; the default reads volts on a 0-3.3 V input."""

    every = 1

    def __init__(self, adc, name, cal=((0, 0.0), (65535, 3.3)), samples=4):
        self.adc = adc
        self.name = name
        self.samples = samples
        (r1, v1), (r2, v2) = cal
        self.gain, self.offset = two_point(r1, v1, r2, v2)
        self.shift, self.k, self.mul, self.add = fixed_line(self.gain, self.offset, samples)
        if not _WIDE:
            self.shift = _NONE  # read_raw() still gives the value in 2**-(its shift) quanta

    def raw(self):
        """The mean conversion, 0..65535 (an integer sum: no allocation per conversion)."""
        adc = self.adc
        total = 0
        for _ in range(self.samples):
            total += adc.read_u16()
        return total / self.samples

    def read(self):
        return self.offset + self.gain * self.raw()

    def read_raw(self):
        """The value in quanta of 2**-shift, an int (no float, no allocation on a 64-bit port)."""
        adc = self.adc
        total = 0
        for _ in range(self.samples):
            total += adc.read_u16()
        return (self.add + total * self.mul) >> self.k


def fixed_line(gain, offset, samples):
    """(shift, k, mul, add): value * 2**shift = (add + sum * mul) >> k, rounded, for the sum
    of `samples` conversions; shift is 255 when the line has no raw form (see above)."""
    step = abs(gain) / samples  # the mean's step
    if step == 0:
        return _NONE, 0, 0, 0
    shift = 0
    while shift < 24 and (1 << shift) * step < 2:  # a quantum at most half a step
        shift += 1
    top = 65535 * samples
    k = 0
    while (1 << k) < 8 * top:  # the gain's rounding: under 1/8 quantum over the whole sum
        k += 1
    mul = round(gain / samples * (1 << shift) * (1 << k))
    add = round(offset * (1 << shift) * (1 << k)) + (1 << (k - 1))
    ends = (add >> k, (add + top * mul) >> k)
    if shift > 23 or max(abs(ends[0]), abs(ends[1])) >= 1 << 30:
        return _NONE, 0, 0, 0
    return shift, k, mul, add
