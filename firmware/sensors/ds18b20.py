# DS18B20 temperature over 1-Wire (Maxim datasheet 19-7487): convert T, wait, read the
# 9-byte scratchpad and check its CRC-8. One sensor per bus (skip ROM) or several,
# each addressed by its 64-bit ROM code (match ROM). Powered by VDD, not parasitic.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]
        return x

from sensors import SensorError, raise_kept

_MATCH_ROM = const(0x55)
_SKIP_ROM = const(0xCC)
_CONVERT_T = const(0x44)
_READ_SCRATCHPAD = const(0xBE)
_WRITE_SCRATCHPAD = const(0x4E)
_FAMILY = const(0x28)
_CONVERT_MS = (94, 188, 375, 750)  # tCONV max at 9, 10, 11, 12 bits


def crc8(data):
    """Dallas/Maxim CRC-8 (x^8 + x^5 + x^4 + 1, LSB first); 0 over data that ends in its CRC."""
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


class DS18B20:
    """Temperature in °C, at `resolution` bits (9-12: 0.5 to 0.0625 °C, 94 to 750 ms a
    conversion). The node calls start(), waits the milliseconds it returns without holding
    its loop (several sensors convert at once), then read(); read() alone converts and
    waits itself. `rom`: the sensor's 16 hex digit ROM code when several share the bus.
    Raises SensorError: no presence pulse, a bad CRC, a bus held low."""

    every = 1

    def __init__(self, bus, name, board, rom=None, resolution=12):
        self.bus = bus
        self.name = name
        self.board = board
        self.rom = bytes.fromhex(rom) if isinstance(rom, str) else rom
        if self.rom is not None and (len(self.rom) != 8 or self.rom[0] != _FAMILY or crc8(self.rom)):
            raise SensorError("%s: %r is not a DS18B20 ROM code" % (name, rom))
        self.buf = bytearray(9)
        self.cmd = bytearray(4)
        self.conv_ms = _CONVERT_MS[resolution - 9]
        self.started = False  # a conversion was started by start() and is read by read()
        self.fault = None  # type: SensorError | None  # what start() met, raised by the read() that follows
        self.mask = -(1 << (12 - resolution))  # the low bits are undefined below 12 bits
        cfg = ((resolution - 9) << 5) | 0x1F
        pad = self._scratchpad()
        if pad[4] != cfg:  # keep the alarm bytes, set the resolution
            self.cmd[0], self.cmd[1], self.cmd[2], self.cmd[3] = _WRITE_SCRATCHPAD, pad[2], pad[3], cfg
            self._select()
            bus.write(self.cmd)

    def _select(self):
        if not self.bus.reset():
            raise SensorError("%s: no DS18B20 answers on the bus" % self.name)
        if self.rom is None:
            self.bus.writebyte(_SKIP_ROM)
        else:
            self.bus.writebyte(_MATCH_ROM)
            self.bus.write(self.rom)

    def _scratchpad(self):
        buf = self.buf
        self._select()
        self.bus.writebyte(_READ_SCRATCHPAD)
        self.bus.readinto(buf)
        if crc8(buf):
            raise SensorError("%s: scratchpad CRC error" % self.name)
        if buf[4] & 0x9F != 0x1F:  # the config byte is 0rr11111: all zeros is a bus held low
            raise SensorError("%s: not a DS18B20 scratchpad (config byte 0x%02x)" % (self.name, buf[4]))
        return buf

    def start(self):
        """Start a conversion; the ms until read() has it. An error is kept for read()."""
        try:
            self._select()
            self.bus.writebyte(_CONVERT_T)
        except SensorError as e:
            self.fault = e
            return 0
        self.started = True
        return self.conv_ms

    shift = 4  # read_raw() is in 1/16 °C

    def read(self):
        return self.read_raw() / 16

    def read_raw(self):
        """The temperature in 1/16 °C, an int (no allocation: the node packs it exactly)."""
        raise_kept(self)
        if not self.started:
            self._select()
            self.bus.writebyte(_CONVERT_T)
            self.board.sleep_ms(self.conv_ms)
        self.started = False
        buf = self._scratchpad()
        raw = buf[0] | buf[1] << 8
        if raw & 0x8000:
            raw -= 0x10000
        return raw & self.mask
