# BME280 over a fake I2C bus: Bosch's worked example (BMP280 datasheet 3.12, the same
# temperature and pressure formulas) to the last bit, humidity against the datasheet's
# floating-point formula, the forced measurement, a wrong chip, an absent one.
import gc
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

# the 64-bit formula as C runs it (its products to 2**63, in Python's unbounded ints):
# the driver's, which splits them to stay in a 64-bit port's small ints, gives the same
def c_p64(c, t_fine, adc_p):
    var1 = t_fine - 128000
    var2 = var1 * var1 * c["P6"] + ((var1 * c["P5"]) << 17) + (c["P4"] << 35)
    var1 = ((var1 * var1 * c["P3"]) >> 8) + ((var1 * c["P2"]) << 12)
    var1 = (((1 << 47) + var1) * c["P1"]) >> 33
    n = ((1048576 - adc_p) << 31) - var2
    p = (abs(n) * 3125 // var1) * (1 if n >= 0 else -1)
    return ((p + ((c["P9"] * (p >> 13) * (p >> 13)) >> 25) + ((c["P8"] * p) >> 19)) >> 8) + (c["P7"] << 4)


for adc_t in range(300000, 700001, 25000):
    dev.compensate_t(adc_t)
    for adc_p in range(100000, 1000000, 37000):
        assert dev.compensate_p(adc_p) == c_p64(EXAMPLE_CAL, dev.t_fine, adc_p), (adc_t, adc_p)

# a forced measurement through the registers, one per round for three channels
chans = dev.channels("amb", ["t", "p", "h"])
assert [c.name for c in chans] == ["amb_t", "amb_p", "amb_h"]
vals = [c.read() for c in chans]
assert model.forced == 1 and model.regs[0xF2] == 0x01  # humidity oversampling set
assert [c.shift for c in chans] == [8, 8, 10]
assert vals[0] == 6421 / 256 and vals[1] == (25767233 + 50) // 100 / 256, vals  # 128422 / 5120 = 25.0824 °C; 100653.25 Pa
assert abs(vals[2] - float_h(EXAMPLE_CAL, 128422, 30000)) < 0.02, vals

# the node's path, raw integers (quanta of 2**-shift), against the floating-point formulas
# across the ranges (-40..85 °C, 300..1100 hPa, 0..100 %RH): within the resolution at x1
# oversampling (0.005 °C, 2.62 Pa, 0.008 %RH; humidity as the formulas differ, 0.02 %RH)
raws = 0
for adc_t in range(300000, 700001, 20000):
    for adc_p in range(150000, 700001, 50000):
        for adc_h in (0, 15000, 25000, 30000, 40000, 50000, 65534):
            model.adc_t, model.adc_p, model.adc_h = adc_t, adc_p, adc_h
            got = [c.read_raw() for c in chans]
            tf_fine, tf = float_t(EXAMPLE_CAL, adc_t)
            if not -40 <= tf <= 85:
                break
            pf = float_p(EXAMPLE_CAL, tf_fine, adc_p)
            if not 30000 <= pf <= 110000:
                break
            hf = float_h(EXAMPLE_CAL, tf_fine, adc_h)
            assert all(isinstance(v, int) for v in got), got
            assert abs(got[0] / 256 - tf) <= 0.005, (adc_t, got, tf)
            assert abs(got[1] / 256 * 100 - pf) <= 2.62, (adc_t, adc_p, got, pf)
            assert abs(got[2] / 1024 - hf) < 0.02, (adc_t, adc_h, got, hf)
            raws += 1
assert raws > 300, raws

# and allocate nothing (where the interpreter tells): the compensation and the scaling of a
# round, and the channels that report it (the measurement's bus reads are the fake bus's)
if hasattr(gc, "mem_alloc") and sys.maxsize > 1 << 40:  # 64-bit ports (32-bit: big ints)
    dev.ok = True
    c0, c1, c2 = chans
    c0.first = False
    k = used = 0  # globals made before the count (a dict that grows allocates)
    gc.collect()
    before = gc.mem_alloc()
    while k < 100:  # -40..85 °C, 1100..300 hPa (the largest intermediates at the top)
        dev.compensate_t(330000 + 3200 * k)
        dev.t = (dev.t_fine + 10) // 20
        dev.p = (dev.compensate_p(160000 + 5000 * k) + 50) // 100
        dev.h = dev.compensate_h(600 * k)
        c0.read_raw()
        c1.read_raw()
        c2.read_raw()
        k += 1
    used = gc.mem_alloc() - before
    assert used == 0, used
    c0.first = True
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
print("OK t_bme280 %d humidity points, %d raw rounds" % (checked, raws))
