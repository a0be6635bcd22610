# An analog input: the mean of a few conversions, mapped to the measured quantity by the
# straight line through two calibration points, e.g. a 4-20 mA transmitter read across a
# 150 ohm shunt: [[raw at 4 mA, 0.0], [raw at 20 mA, 10.0]] gives bar for a 0-10 bar one.


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

    def raw(self):
        """The mean conversion, 0..65535 (an integer sum: no allocation per conversion)."""
        adc = self.adc
        total = 0
        for _ in range(self.samples):
            total += adc.read_u16()
        return total / self.samples

    def read(self):
        return self.offset + self.gain * self.raw()
