# Vibration RMS from an ADXL345 on a fake I2C bus: the registers configured, a known
# sinusoid in -> its RMS acceleration (g) and velocity (mm/s) out, gravity and a tilt
# taken out, the three axes combined, a wrong chip refused. MicroPython and CPython.
import gc
import math
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/tests/firmware/mp")
sys.path.insert(0, ROOT + "/firmware")
import board  # noqa: E402
from board.fake import FakeI2C  # noqa: E402
from devices import ADXL345Model, sine  # noqa: E402
from sensors import SensorError  # noqa: E402
from sensors.adxl345 import G, G_PER_LSB, Vibration  # noqa: E402

bus = FakeI2C()
amp = 200  # LSB: 0.78 g peak
model = bus.attach(0x53, ADXL345Model(sine(amp, 50, 1600)))
v = Vibration(bus, "vib", board, rate_hz=1600, samples=256, range_g=16, unit="g", axis="xyz")
assert model.regs[0x31] == 0x0B and model.regs[0x2C] == 0x0E  # full resolution ±16 g; 1600 Hz
assert model.regs[0x38] == 0x80 and model.regs[0x2D] == 0x08  # FIFO stream; measuring

want_g = amp * G_PER_LSB / math.sqrt(2)  # a sine's RMS; the 1 g on z is DC, not vibration
got = v.read()
assert abs(got - want_g) / want_g < 0.01, (got, want_g)
assert model.k == 32 + 256  # what waited in the FIFO went first, then one window

# velocity: a = A sin(wt) -> v = A / w, RMS A / (w √2), in mm/s
for freq in (25, 50, 100, 200, 400):
    model.signal = sine(amp, freq, 1600, offset=(10, -20, 256))
    vel = Vibration(bus, "vib", board, rate_hz=1600, samples=256, unit="mm/s", axis="x")
    want = amp * G_PER_LSB * G / (2 * math.pi * freq) / math.sqrt(2) * 1000
    got = vel.read()
    assert abs(got - want) / want < 0.02, (freq, got, want)
model.signal = sine(amp, 1000, 3200, offset=(10, -20, 256))  # the top of the ISO 10816 band
got = Vibration(bus, "vib", board, rate_hz=3200, samples=320, unit="mm/s", axis="x").read()
want = amp * G_PER_LSB * G / (2 * math.pi * 1000) / math.sqrt(2) * 1000
assert abs(got - want) / want < 0.03, (got, want)

# axes: the vibration on y alone; "x" reads (almost) nothing, "y" and "xyz" read it all
model.signal = sine(amp, 100, 1600, axis=1)
assert Vibration(bus, "vib", board, unit="g", axis="x").read() < 1e-9
gy = Vibration(bus, "vib", board, unit="g", axis="y").read()
gxyz = Vibration(bus, "vib", board, unit="g").read()
assert abs(gy - want_g) / want_g < 0.01 and abs(gxyz - gy) < 1e-9, (gy, gxyz)

# still: zero; a still sensor tilted (a different DC on each axis): still zero
model.signal = lambda k: (35, -120, 230)
assert Vibration(bus, "vib", board, unit="mm/s").read() == 0.0

# 7.52 cycles in the window: the mean is off a little, the integrated velocity drifts; the
# detrend takes the drift out
model.signal = sine(amp, 47, 1600)
want = amp * G_PER_LSB * G / (2 * math.pi * 47) / math.sqrt(2) * 1000
got = Vibration(bus, "vib", board, unit="mm/s", axis="x").read()
assert abs(got - want) / want < 0.03, (got, want)

# the node's path in g: raw integers (1/4096 g) against the floating-point formula on the
# same window, from a still sensor to full scale (±16 g: 4096 LSB), at rates and window
# lengths across the range: within half a quantum and 1e-6 of the value; mm/s: floats
compared = 0
WIDE = sys.maxsize > 1 << 40  # small ints to 2**62 (on 32-bit ports to 2**30: big ints)
assert Vibration(bus, "vib", board, unit="mm/s").shift == 255
for unit, shift in (("g", 12),):
    for rate, n in ((100, 16), (1600, 256), (3200, 1024)):
        for a, freq, axis in ((0, 10, "xyz"), (1, 10, "x"), (37, 7, "x"), (200, 100, "xyz"),
                              (4000, 31, "xyz"), (1500, 3, "z")):
            model.signal = sine(a, freq * rate / 1600, rate, offset=(10, -20, 256))
            s = Vibration(bus, "vib", board, rate_hz=rate, samples=n, unit=unit, axis=axis)
            assert s.shift == (shift if WIDE else 255)  # 32-bit ports: floats (they allocate less)
            r = s.read_raw()
            s.filled = True  # the same window
            f = s.read_float()
            assert isinstance(r, int) and abs(r / (1 << shift) - f) <= 0.5 / (1 << shift) + f * 1e-6, (
                unit, rate, n, a, freq, axis, r, f)
            compared += 1

# and a reading in g allocates nothing from a window taken (where the interpreter tells)
if hasattr(gc, "mem_alloc") and WIDE:
    model.signal = sine(4000, 31, 1600)
    s = Vibration(bus, "vib", board, rate_hz=1600, samples=1024, unit="g")
    s.window()
    k = used = 0  # globals made before the count (a dict that grows allocates)
    gc.collect()
    before = gc.mem_alloc()
    while k < 20:
        s.filled = True
        s.read_raw()
        k += 1
    used = gc.mem_alloc() - before
    assert used == 0, used

bus.attach(0x1D, ADXL345Model(sine(1, 1, 100), devid=0x00))
try:
    Vibration(bus, "vib", board, addr=0x1D)
except SensorError as e:
    assert "ADXL345" in str(e)
else:
    raise AssertionError("a device with the wrong id was taken for an ADXL345")

# fill(): the window taken while the node's loop runs (awaiting its sleep), from a FIFO
# that fills in real time; the read() that follows uses it and pops nothing more
try:
    import asyncio
except ImportError:
    import uasyncio as asyncio  # type: ignore[no-redef]
waits = []


async def sleep_ms(ms):
    waits.append(ms)
    await asyncio.sleep(ms / 1000)


paced = FakeI2C()
pm = paced.attach(0x53, ADXL345Model(sine(amp, 50, 1600), rate_hz=1600))
pv = Vibration(paced, "vib", board, rate_hz=1600, samples=256, unit="g", axis="x")
asyncio.run(pv.fill(sleep_ms))
k = pm.k
got = pv.read()
assert pm.k == k and len(waits) >= 10, (pm.k, k, len(waits))  # 256 samples at 1600 Hz: 160 ms awaited
assert abs(got - want_g) / want_g < 0.01, (got, want_g)
assert abs(pv.read() - want_g) / want_g < 0.01 and pm.k > k  # read() alone takes its own window

# a sensor that stops measuring: fill() gives up, and the next read() raises it, once
short = Vibration(paced, "vib", board, rate_hz=3200, samples=32, unit="g")
pm.regs[0x2D] = 0
asyncio.run(short.fill(sleep_ms))
try:
    short.read()
except SensorError as e:
    assert "no samples" in str(e), e
else:
    raise AssertionError("a window from a sensor that is not measuring")
assert short.fault is None
print("OK t_adxl345 %d raw windows" % compared)
