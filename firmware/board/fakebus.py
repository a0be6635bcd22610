# The buses of the boards with no real sensors wired (the unix port, the QEMU Cortex-M3):
# fakes that tests script (board/fake.py), one a bus, made on first use. board.fake is
# imported only then, so a node whose config names no sensor bus never loads it. Also the
# QEMU board's status LED (it has none: a state kept), and the unix board's (the same, with
# a trace of its changes for tests).

_fakes = {}  # (kind, id) -> fake bus: this board's wiring


def _fake(kind, key, make):
    bus = _fakes.get((kind, key))
    if bus is None:
        bus = _fakes[(kind, key)] = make()
    return bus


def i2c(bus=0, scl=None, sda=None, freq=400000):
    """I2C bus `bus` (board.fake.FakeI2C): tests attach device models to it."""
    import board.fake as fake
    return _fake("i2c", bus, fake.FakeI2C)


def onewire(pin):
    """The 1-Wire bus on `pin` (board.fake.FakeOneWire)."""
    import board.fake as fake
    return _fake("onewire", pin, fake.FakeOneWire)


def adc(pin, atten=None):
    """The ADC channel on `pin` (board.fake.FakeADC): read_u16() 0..65535 for 0..3.3 V."""
    import board.fake as fake
    return _fake("adc", pin, fake.FakeADC)


def pin_out(pin, value=0):
    import board.fake as fake
    p = _fake("pin", pin, fake.FakePin)
    p.value(value)
    return p


def pin_in(pin, pull_up=False):
    import board.fake as fake
    return _fake("pin", pin, lambda: fake.FakePin(1 if pull_up else 0))


class Led:
    """A status LED kept as a state (the QEMU board has none; the unix board has its own,
    with a trace)."""

    def __init__(self, pin=None, active_low=False):
        self.state = 0

    def value(self, v=None):
        if v is None:
            return self.state
        self.state = 1 if v else 0
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class TraceLed(Led):
    """The unix board's simulated status LED: its state, and a trace of (state, ticks_ms) changes."""

    def __init__(self, pin=None, active_low=False):
        self.state = 0
        self.trace = []

    def value(self, v=None):
        if v is None:
            return self.state
        self.state = 1 if v else 0
        if len(self.trace) < 256:
            import board
            self.trace.append((self.state, board.ticks_ms()))
        return None
