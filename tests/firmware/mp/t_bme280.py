# BME280 over a fake I2C bus: Bosch's worked example (BMP280 datasheet 3.12, the same
# temperature and pressure formulas) to the last bit, humidity against the datasheet's
# floating-point formula, the forced measurement, a wrong chip, an absent one.
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/tests/firmware/mp")
sys.path.insert(0, ROOT + "/firmware")
import board  # noqa: E402
from board.fake import FakeI2C  # noqa: E402
from devices import EXAMPLE_CAL, BME280Model  # noqa: E402
from sensors import SensorError  # noqa: E402
from sensors.bme280 import BME280  # noqa: E402

bus = FakeI2C()
model = bus.attach(0x76, BME280Model())
dev = BME280(bus, 0x76, board)
for k, v in EXAMPLE_CAL.items():
    assert getattr(dev, k) == v, (k, getattr(dev, k), v)  # the calibration parsed back, H4/H5 nibbles too

# the worked example: adc_T 519888 -> 25.08 °C (t_fine 128422), adc_P 415148 -> 100653.27 Pa
assert dev.compensate_t(519888) == 2508 and dev.t_fine == 128422
p = dev.compensate_p(415148)
# the datasheet's table prints 25767236 (from the float drawing); its 64-bit formula, run in C
# (gcc) as here, gives 25767233: 100653.25 Pa, 0.01 Pa off, inside its rounding note
assert p == 25767233, p
assert abs(p / 256 - 100653.27) < 0.02


def float_t(c, adc_t):  # datasheet section 8.1, double precision
    var1 = (adc_t / 16384.0 - c["T1"] / 1024.0) * c["T2"]
    var2 = (adc_t / 131072.0 - c["T1"] / 8192.0) * (adc_t / 131072.0 - c["T1"] / 8192.0) * c["T3"]
    return int(var1 + var2), (var1 + var2) / 5120.0


def float_h(c, t_fine, adc_h):
    h = t_fine - 76800.0
    h = (adc_h - (c["H4"] * 64.0 + c["H5"] / 16384.0 * h)) * (
        c["H2"] / 65536.0 * (1.0 + c["H6"] / 67108864.0 * h * (1.0 + c["H3"] / 67108864.0 * h)))
    h = h * (1.0 - c["H1"] * h / 524288.0)
    return min(100.0, max(0.0, h))


def float_p(c, t_fine, adc_p):
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * c["P6"] / 32768.0
    var2 = var2 + var1 * c["P5"] * 2.0
    var2 = var2 / 4.0 + c["P4"] * 65536.0
    var1 = (c["P3"] * var1 * var1 / 524288.0 + c["P2"] * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c["P1"]
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c["P9"] * p * p / 2147483648.0
    var2 = p * c["P8"] / 32768.0
    return p + (var1 + var2 + c["P7"]) / 16.0


t_fine, t = float_t(EXAMPLE_CAL, 519888)
assert abs(t - 25.08) < 0.005 and abs(float_p(EXAMPLE_CAL, t_fine, 415148) - 100653.27) < 0.02
# across the range: the integer formulas agree with the floating-point ones
checked = 0
for adc_t in (400000, 480000, 519888, 560000, 620000):
    ti = dev.compensate_t(adc_t)
    tf_fine, tf = float_t(EXAMPLE_CAL, adc_t)
    assert abs(ti / 100 - tf) <= 0.01, (adc_t, ti, tf)
    for adc_p in (300000, 415148, 500000):
        assert abs(dev.compensate_p(adc_p) / 256 - float_p(EXAMPLE_CAL, dev.t_fine, adc_p)) < 0.5
    for adc_h in (20000, 26000, 30000, 36000, 42000):
        hi = dev.compensate_h(adc_h) / 1024
        hf = float_h(EXAMPLE_CAL, dev.t_fine, adc_h)
        assert abs(hi - hf) < 0.02, (adc_t, adc_h, hi, hf)
        assert 0 <= hi <= 100
        checked += 1

# a forced measurement through the registers, one per round for three channels
chans = dev.channels("amb", ["t", "p", "h"])
assert [c.name for c in chans] == ["amb_t", "amb_p", "amb_h"]
vals = [c.read() for c in chans]
assert model.forced == 1 and model.regs[0xF2] == 0x01  # humidity oversampling set
assert vals[0] == 25.08 and vals[1] == 25767233 / 25600, vals
assert abs(vals[2] - float_h(EXAMPLE_CAL, 128422, 30000)) < 0.02, vals
model.adc_t = 0x80000  # a skipped measurement (the reset value) is an error, never a value
try:
    chans[0].read()
except SensorError:
    pass
else:
    raise AssertionError("a skipped measurement was reported")
try:
    chans[1].read()  # the other channels of the failed round have nothing either
except SensorError:
    pass
else:
    raise AssertionError("a stale value was reported")

# a BMP280 (id 0x58) or anything else at the address: refused; nothing there: OSError (ENODEV)
bus.attach(0x77, BME280Model(chip_id=0x58))
try:
    BME280(bus, 0x77, board)
except SensorError as e:
    assert "0x58" in str(e)
else:
    raise AssertionError("a BMP280 passed for a BME280")
try:
    BME280(FakeI2C(), 0x76, board)
except OSError:
    pass
else:
    raise AssertionError("an absent chip answered")
print("OK t_bme280 %d humidity points" % checked)
