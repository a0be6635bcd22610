# The ADC driver on a fake ADC: two-point calibration, oversampling, a 4-20 mA loop,
# and sensors built from config entries on the unix board's fake buses. MicroPython and CPython.
import gc
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/tests/firmware/mp")
sys.path.insert(0, ROOT + "/firmware")
import board  # noqa: E402
import config  # noqa: E402
import sensors  # noqa: E402
from board.fake import FakeADC  # noqa: E402
from sensors.adc import AdcSensor, fixed_line, two_point  # noqa: E402

assert two_point(0, 0.0, 65535, 3.3) == (3.3 / 65535, 0.0)
gain, offset = two_point(10000, 0.0, 50000, 10.0)
assert abs(offset + gain * 30000 - 5.0) < 1e-12

adc = FakeADC()
volts = AdcSensor(adc, "v")  # default: 0..65535 -> 0..3.3 V, 4 conversions a reading
adc.value = 65535
assert abs(volts.read() - 3.3) < 1e-12 and adc.reads == 4
adc.values = [0, 0, 65535, 65535]
assert abs(volts.read() - 1.65) < 1e-12  # the mean of the conversions

# 4-20 mA across 150 ohm: 0.6-3.0 V; calibrated at the two ends of a 0-10 bar transmitter
raw4, raw20 = round(0.6 / 3.3 * 65535), round(3.0 / 3.3 * 65535)
bar = AdcSensor(adc, "p", [[raw4, 0.0], [raw20, 10.0]], samples=1)
adc.value = raw4
assert bar.read() == 0.0
adc.value = raw20
assert abs(bar.read() - 10.0) < 1e-9
adc.value = (raw4 + raw20) // 2
assert abs(bar.read() - 5.0) < 0.001

# the node's path: raw integers in quanta of 2**-shift, within 5/16 of the mean's step
# (gain / samples; half a quantum and the line's 1/8) of the float line, over the whole input range, for lines up and
# down, with offsets, at 1, 4 and 64 conversions a reading
lines = 0
WIDE = sys.maxsize > 1 << 40  # small ints to 2**62; on 32-bit ports the node reads read() (shift 255)
for cal in ([[0, 0.0], [65535, 3.3]], [[raw4, 0.0], [raw20, 10.0]], [[100, 50.0], [60000, -20.0]],
            [[0, -40.0], [65535, 125.0]], [[1000, 0.0], [2000, 1e-3]]):
    for n in (1, 4, 64):
        s = AdcSensor(adc, "a", cal, samples=n)
        step = abs(s.gain) / n
        if not WIDE:
            assert s.shift == 255
            s.shift = fixed_line(s.gain, s.offset, n)[0]  # read_raw()'s quanta all the same
        if s.shift == 255:  # 1 uV a count over 64 conversions: a quantum under 2**-23
            assert step / 2 < 2 ** -23, (cal, n)
            continue
        assert 0 < s.shift <= 23, (cal, n, s.shift)
        assert 2 ** -s.shift <= step / 2, (cal, n, s.shift)
        for count in range(0, 65536, 997):
            adc.values = [count] * (n - 1) + [count + (count < 65535)]  # a mean between two steps
            r = s.read_raw()
            adc.values = [count] * (n - 1) + [count + (count < 65535)]
            f = s.read()
            assert isinstance(r, int) and abs(r / 2 ** s.shift - f) <= step * 5 / 16 + abs(f) * 1e-12, (cal, n, count, r, f)
        lines += 1
assert lines == 14, lines
# a line with no raw form (a large offset beside a tiny gain): shift 255, the node reads read()
assert AdcSensor(adc, "a", [[0, 1000.0], [65535, 1000.001]]).shift == 255
assert AdcSensor(adc, "a", [[0, 1.0], [65535, 1.0]]).shift == 255

# and a raw reading allocates nothing (where the interpreter tells)
if hasattr(gc, "mem_alloc") and WIDE:
    s = AdcSensor(adc, "a", [[raw4, 0.0], [raw20, 10.0]], samples=64)
    adc.values = []
    adc.value = 65535
    k = used = 0  # globals made before the count (a dict that grows allocates)
    gc.collect()
    before = gc.mem_alloc()
    while k < 100:
        s.read_raw()
        k += 1
    used = gc.mem_alloc() - before
    assert used == 0, used

# built from config entries: each on its own bus of the board, as wired
cfg = config.validate({"node": "n1", "key": "11" * 32, "period_ms": 500, "sensors": [
    {"name": "p1", "driver": "adc", "pin": 26, "cal": [[raw4, 0], [raw20, 10]], "period_ms": 1000},
    {"name": "t1", "driver": "sim", "kind": "temp"}]})
board.adc(26).value = raw20
made, problems = sensors.build(cfg["sensors"], cfg["seed"], board)
assert problems == [] and [s.name for s in made] == ["p1", "t1"] and [s.every for s in made] == [2, 1]
assert abs(made[0].read() - 10.0) < 1e-9
# a chip that does not answer at boot: left out, and said why
cfg = config.validate({"node": "n1", "key": "11" * 32, "sensors": [
    {"name": "amb", "driver": "bme280", "i2c": 1, "addr": 0x77}, "temp"]})
made, problems = sensors.build(cfg["sensors"], cfg["seed"], board)
assert [s.name for s in made] == ["temp"] and len(problems) == 1 and "amb" in problems[0], problems
print("OK t_adc %d lines" % lines)
