# Fake buses for the unix board: I2C, 1-Wire, ADC and pins with the methods of
# MicroPython's machine.I2C, onewire.OneWire, machine.ADC and machine.Pin that the
# drivers use. Tests attach device models to them and script what they answer.
# Imported only when a driver asks the unix board for a bus.

_ENODEV = 19  # what machine.I2C raises when no device acknowledges the address


class Registers:
    """An I2C device model: 256 byte registers, reads and writes auto-increment.
    Subclasses override on_read(reg) (before a read from reg) and on_write(reg, value)."""

    def __init__(self):
        self.regs = bytearray(256)

    def on_read(self, reg):
        pass

    def on_write(self, reg, value):
        self.regs[reg] = value

    def read(self, reg, buf):
        self.on_read(reg)
        for i in range(len(buf)):
            buf[i] = self.regs[(reg + i) & 0xFF]

    def write(self, reg, data):
        for i in range(len(data)):
            self.on_write((reg + i) & 0xFF, data[i])


class FakeI2C:
    """machine.I2C's memory methods over attached device models (address -> model)."""

    def __init__(self):
        self.devices = {}
        self.transfers = 0

    def attach(self, addr, device):
        self.devices[addr] = device
        return device

    def _dev(self, addr):
        self.transfers += 1
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(_ENODEV)
        return dev

    def scan(self):
        return sorted(self.devices)

    def readfrom_mem_into(self, addr, reg, buf):
        self._dev(addr).read(reg, buf)

    def readfrom_mem(self, addr, reg, n):
        buf = bytearray(n)
        self._dev(addr).read(reg, buf)
        return bytes(buf)

    def writeto_mem(self, addr, reg, data):
        self._dev(addr).write(reg, data)


class FakeOneWire:
    """onewire.OneWire's byte-level methods over attached device models, each with
    reset() -> present, write(byte) and read() -> byte (an open bus reads 0xFF)."""

    def __init__(self):
        self.devices = []
        self.resets = 0

    def attach(self, device):
        self.devices.append(device)
        return device

    def reset(self, required=False):
        self.resets += 1
        present = False
        for d in self.devices:
            present = d.reset() or present
        if required and not present:
            raise OSError(_ENODEV)
        return present

    def writebyte(self, value):
        for d in self.devices:
            d.write(value & 0xFF)

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def readbyte(self):
        v = 0xFF  # the pull-up: wired-AND of every device that drives the bus
        for d in self.devices:
            v &= d.read()
        return v

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def select_rom(self, rom):
        self.reset()
        self.writebyte(0x55)
        self.write(rom)

    def scan(self):
        return [d.rom for d in self.devices if hasattr(d, "rom")]


class FakeADC:
    """machine.ADC.read_u16(): `values` are returned in turn (the last one repeats),
    or set `value`."""

    def __init__(self, value=0):
        self.value = value
        self.values = []
        self.reads = 0

    def read_u16(self):
        self.reads += 1
        if self.values:
            self.value = self.values.pop(0)
        return self.value


class FakePin:
    """machine.Pin's value(), on() and off(); an input reads `level` when nothing drives it."""

    def __init__(self, level=0):
        self.level = level

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        return None

    def on(self):
        self.level = 1

    def off(self):
        self.level = 0
