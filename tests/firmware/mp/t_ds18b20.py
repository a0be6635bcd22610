# DS18B20 over a fake 1-Wire bus: the datasheet's temperature table, resolutions, CRC
# errors, an absent or shorted sensor, two sensors addressed by ROM. MicroPython and CPython.
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/tests/firmware/mp")
sys.path.insert(0, ROOT + "/firmware")
from board.fake import FakeOneWire  # noqa: E402
from devices import DS18B20Model, rom_code  # noqa: E402
from sensors import SensorError  # noqa: E402
from sensors.ds18b20 import DS18B20, crc8  # noqa: E402

# CRC-8 of a ROM code (Maxim application note 27: 02 1C B8 01 00 00 00, CRC A2)
assert crc8(bytes([0x02, 0x1C, 0xB8, 0x01, 0, 0, 0])) == 0xA2
assert crc8(bytes([0x02, 0x1C, 0xB8, 0x01, 0, 0, 0, 0xA2])) == 0


class Clock:  # the board's sleep_ms, recorded rather than slept
    def __init__(self):
        self.waits = []

    def sleep_ms(self, ms):
        self.waits.append(ms)


board = Clock()

# datasheet table 1: register value -> temperature, at 12 bits
TABLE = [(0x07D0, 125.0), (0x0550, 85.0), (0x0191, 25.0625), (0x00A2, 10.125), (0x0008, 0.5), (0x0000, 0.0),
         (0xFFF8, -0.5), (0xFF5E, -10.125), (0xFE6F, -25.0625), (0xFC90, -55.0)]
bus = FakeOneWire()
dev = bus.attach(DS18B20Model())
s = DS18B20(bus, "t1", board, resolution=12)
assert dev.pad[4] == 0x7F
for raw, want in TABLE:
    dev.raw = raw
    got = s.read()
    assert got == want, (hex(raw), got, want)
assert dev.converts == len(TABLE)
assert board.waits[-1] == 750  # tCONV at 12 bits, every read
# the node's path: raw integers in 1/16 °C (s.shift), the same temperatures, no float made
assert s.shift == 4
for raw, want in TABLE:
    dev.raw = raw
    got = s.read_raw()
    assert isinstance(got, int) and got / 16 == want, (hex(raw), got, want)

# lower resolutions: the undefined low bits are masked (datasheet figure 4)
s9 = DS18B20(bus, "t1", board, resolution=9)
assert dev.pad[4] == 0x1F, hex(dev.pad[4])  # the config register was written
assert dev.pad[2:4] == bytearray([0x4B, 0x46])  # the alarm bytes kept
dev.raw = 0x0191  # 25.0625 -> 25.0 at 9 bits
assert s9.read() == 25.0
dev.raw = 0xFE6F  # -25.0625 -> -25.5 at 9 bits (two's complement, low bits cleared)
assert s9.read() == -25.5 and board.waits[-1] == 94

# a bad CRC is an error, never a value; the next good read works again
s = DS18B20(bus, "t1", board, resolution=9)
dev.corrupt = True
try:
    s.read()
except SensorError as e:
    assert "CRC" in str(e), e
else:
    raise AssertionError("a scratchpad with a bad CRC was accepted")
dev.corrupt = False
dev.raw = 0x0008
assert s.read() == 0.5

# nobody on the bus: no presence pulse
dev.present = False
try:
    s.read()
except SensorError as e:
    assert "no DS18B20" in str(e)
else:
    raise AssertionError("read with no sensor on the bus")
dev.present = True


class Shorted:  # a bus held low: presence, and zeros (whose CRC is 0)
    def reset(self):
        return True

    def write(self, b):
        pass

    def read(self):
        return 0


short = FakeOneWire()
short.attach(Shorted())
try:
    DS18B20(short, "t1", board, resolution=9)
except SensorError as e:
    assert "not a DS18B20 scratchpad" in str(e), e
else:
    raise AssertionError("a shorted bus passed for a sensor")

# two sensors on one bus, each addressed by its ROM code
two = FakeOneWire()
a = two.attach(DS18B20Model(serial=1, raw=0x0191))
b = two.attach(DS18B20Model(serial=2, raw=0xFF5E))
rom_a = "".join("%02x" % x for x in rom_code(1))
rom_b = "".join("%02x" % x for x in rom_code(2))
sa = DS18B20(two, "ta", board, rom=rom_a, resolution=9)
sb = DS18B20(two, "tb", board, rom=rom_b, resolution=9)
assert sa.read() == 25.0 and sb.read() == -10.5  # -10.125 at 9 bits
assert a.converts == 1 and b.converts == 1
try:
    DS18B20(two, "tc", board, rom="28" + "00" * 7)
except SensorError:
    pass
else:
    raise AssertionError("a ROM code with a bad CRC was accepted")

# start() then read(): the node starts every sensor's conversion, waits the longest out
# without holding its loop, then reads; read() itself waits no more
log = []
two = FakeOneWire()
a = two.attach(DS18B20Model(serial=1, raw=0x0191, log=log))
b = two.attach(DS18B20Model(serial=2, raw=0xFF5E, log=log))
sa = DS18B20(two, "ta", board, rom=rom_a, resolution=12)
sb = DS18B20(two, "tb", board, rom=rom_b, resolution=11)
del log[:]
waits = len(board.waits)
assert sa.start() == 750 and sb.start() == 375
assert sa.read() == 25.0625 and sb.read() == -10.125
assert len(board.waits) == waits, board.waits[waits:]  # no wait inside read()
assert [e for _, e in log] == ["convert", "convert", "read", "read"], log
assert a.converts == 1 and b.converts == 1
assert sa.read() == 25.0625 and board.waits[-1] == 750 and a.converts == 2  # read() alone converts and waits

# start() on a sensor that has gone: no wait asked, and the read() that follows raises
one = FakeOneWire()
c = one.attach(DS18B20Model(raw=0x0008))
sc = DS18B20(one, "tc", board, resolution=9)
c.present = False
assert sc.start() == 0
try:
    sc.read()
except SensorError as e:
    assert "no DS18B20" in str(e), e
else:
    raise AssertionError("read after a failed start gave a value")
c.present = True
assert sc.read() == 0.5  # the error was raised once; the sensor is back
print("OK t_ds18b20 %d table rows" % len(TABLE))
