# Device models for the unix board's fake buses (board/fake.py): a DS18B20 on 1-Wire, a
# BME280 and an ADXL345 on I2C, answering as their datasheets say. Used by the t_*.py
# scripts on MicroPython and CPython.
import math
import struct
import time

from board.fake import Registers
from sensors.ds18b20 import crc8


def rom_code(serial):
    """A valid DS18B20 ROM code (family 0x28, 48-bit serial, CRC) for a small serial number."""
    body = bytes([0x28, serial & 0xFF, serial >> 8 & 0xFF, 0, 0, 0, 0])
    return body + bytes([crc8(body)])


class DS18B20Model:
    """Byte-level DS18B20: ROM commands (skip, match, read), convert T, read and write
    scratchpad. `raw` is the temperature register a conversion loads (datasheet table 1);
    `corrupt` flips a bit of what is read. `log`, a list, gets (serial, "convert" or
    "read") for each conversion and scratchpad read, to see their order across sensors."""

    def __init__(self, serial=1, raw=0x0191, log=None):
        self.serial = serial
        self.log = log
        self.rom = rom_code(serial)
        self.raw = raw
        self.pad = bytearray([0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10, 0])  # power-on: 85 °C
        self.state = "idle"
        self.out = []
        self.buf = []
        self.converts = 0
        self.corrupt = False
        self.present = True

    def reset(self):
        self.state, self.out, self.buf = "rom", [], []
        return self.present

    def write(self, b):
        if self.state == "rom":
            if b == 0xCC:
                self.state = "func"
            elif b == 0x55:
                self.state = "match"
            elif b == 0x33:
                self.out, self.state = list(self.rom), "idle"
        elif self.state == "match":
            self.buf.append(b)
            if len(self.buf) == 8:
                self.state = "func" if bytes(self.buf) == self.rom else "idle"
                self.buf = []
        elif self.state == "func":
            if b == 0x44:
                bits = (self.pad[4] >> 5) & 3  # 0: 9 bits ... 3: 12 bits
                v = self.raw & (0xFFFF << (3 - bits)) & 0xFFFF
                self.pad[0], self.pad[1] = v & 0xFF, v >> 8
                self.converts += 1
                if self.log is not None:
                    self.log.append((self.serial, "convert"))
                self.state = "idle"
            elif b == 0xBE:
                if self.log is not None:
                    self.log.append((self.serial, "read"))
                self.pad[8] = crc8(self.pad[:8])
                self.out = list(self.pad)
                if self.corrupt:
                    self.out[1] ^= 0x01
                self.state = "idle"
            elif b == 0x4E:
                self.state = "wpad"
        elif self.state == "wpad":
            self.buf.append(b)
            if len(self.buf) == 3:
                self.pad[2], self.pad[3], self.pad[4] = self.buf[0], self.buf[1], (self.buf[2] & 0x60) | 0x1F
                self.state, self.buf = "idle", []

    def read(self):
        return self.out.pop(0) if self.out else 0xFF


# The calibration of the worked example in Bosch's BMP280 datasheet (section 3.12), whose
# temperature and pressure formulas the BME280's are; humidity trimming of a real BME280.
EXAMPLE_CAL = {"T1": 27504, "T2": 26435, "T3": -1000, "P1": 36477, "P2": -10685, "P3": 3024, "P4": 2855,
               "P5": 140, "P6": -7, "P7": 15500, "P8": -14600, "P9": 6000,
               "H1": 75, "H2": 362, "H3": 0, "H4": 313, "H5": 50, "H6": 30}


class BME280Model(Registers):
    """BME280 registers: chip id, calibration (`cal`), and a forced measurement that loads
    adc_t, adc_p and adc_h into 0xF7-0xFE."""

    def __init__(self, cal=EXAMPLE_CAL, adc_t=519888, adc_p=415148, adc_h=30000, chip_id=0x60):
        Registers.__init__(self)
        self.regs[0xD0] = chip_id
        c = cal
        c00 = struct.pack("<HhhHhhhhhhhh", c["T1"], c["T2"], c["T3"], c["P1"], c["P2"], c["P3"], c["P4"], c["P5"],
                          c["P6"], c["P7"], c["P8"], c["P9"]) + bytes([0, c["H1"]])
        c26 = struct.pack("<hB", c["H2"], c["H3"]) + bytes([
            (c["H4"] >> 4) & 0xFF, (c["H4"] & 0x0F) | ((c["H5"] & 0x0F) << 4), (c["H5"] >> 4) & 0xFF, c["H6"] & 0xFF])
        self.regs[0x88:0x88 + 26] = c00
        self.regs[0xE1:0xE1 + 7] = c26
        self.adc_t, self.adc_p, self.adc_h = adc_t, adc_p, adc_h
        self.forced = 0

    def on_write(self, reg, value):
        self.regs[reg] = value
        if reg == 0xF4 and value & 3 == 1:  # forced mode: one measurement, then sleep
            self.forced += 1
            p, t, h = self.adc_p, self.adc_t, self.adc_h
            self.regs[0xF7:0xFF] = bytes([p >> 12, p >> 4 & 0xFF, (p & 0xF) << 4, t >> 12, t >> 4 & 0xFF,
                                          (t & 0xF) << 4, h >> 8, h & 0xFF])
            self.regs[0xF4] = value & 0xFC


def _ms():
    try:
        return time.ticks_ms()  # type: ignore[attr-defined]
    except AttributeError:  # CPython
        return int(time.monotonic() * 1000)


class ADXL345Model(Registers):
    """ADXL345 registers with a FIFO: each 6-byte read from DATAX0 pops the next sample of
    `signal(k) -> (x, y, z)` in LSB. The FIFO is always full, or with `rate_hz` it fills
    in real time at that rate (32 entries at most, older samples lost, as in stream mode)."""

    def __init__(self, signal, devid=0xE5, rate_hz=None):
        Registers.__init__(self)
        self.regs[0x00] = devid
        self.signal = signal
        self.k = 0
        self.rate_hz = rate_hz
        self.t0 = None

    def _entries(self):
        if self.rate_hz is None:
            return 32
        if self.t0 is None:
            self.t0 = _ms()
        made = (_ms() - self.t0) * self.rate_hz // 1000  # samples taken since measuring began
        if made - self.k > 32:
            self.k = made - 32  # stream mode: the oldest are overwritten
        return made - self.k

    def on_read(self, reg):
        if reg == 0x39:
            self.regs[0x39] = self._entries() if self.regs[0x2D] & 0x08 else 0  # only while measuring
        elif reg == 0x32:
            x, y, z = self.signal(self.k)
            self.k += 1
            self.regs[0x32:0x38] = struct.pack("<hhh", x, y, z)


def sine(amp, freq, rate, offset=(0, 0, 256), axis=0):
    """A sinusoid of `amp` LSB at `freq` Hz sampled at `rate` Hz on `axis`, over a static
    offset (1 g on z: the board lies flat)."""
    def signal(k):
        out = list(offset)
        out[axis] += int(round(amp * math.sin(2 * math.pi * freq * k / rate)))
        return out[0], out[1], out[2]
    return signal
