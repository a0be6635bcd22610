# Simulated sensors: seeded and identical on MicroPython and CPython (own xorshift32, no
# libm), quantized like real converters so values travel as exact half floats. What a
# plant looks like: a set point that steps (a valve opens, a load comes on) and comes
# back, a slow bounded wander, a cycle (day and night, shifts), noise and rare spikes.


class XorShift32:
    def __init__(self, seed):
        self.s = (seed * 2654435761) & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def uniform(self):
        """In [0, 1)."""
        return self.next() / 4294967296.0


# kind: (base, noise amplitude, drift per sample, step size, quantum, cycle amplitude)
KINDS = {
    "temp": (21.0, 0.25, 0.002, 1.5, 1 / 16, 2.0),        # °C, DS18B20-like resolution
    "vib": (2.0, 0.5, 0.0005, 3.0, 1 / 64, 0.0),          # mm/s RMS
    "pressure": (4.0, 0.05, 0.0001, 0.5, 1 / 128, 0.0),   # bar
    "current": (12.0, 0.4, 0.001, 4.0, 1 / 32, 3.0),      # A
    "humidity": (45.0, 0.5, 0.003, 5.0, 1 / 8, 6.0),      # %RH
    "level": (2.5, 0.01, 0.0005, 0.3, 1 / 256, 0.5),      # m
    "flow": (30.0, 0.6, 0.002, 8.0, 1 / 16, 5.0),         # m³/h
}
CYCLE = 1440  # samples per cycle: a day at one sample a minute
_REVERT = 1 / 2048  # how fast the wander is pulled back, per sample


def _wave(p):
    """A sine-like wave of phase p in [0, 1), by parabolas: the same bits on every interpreter."""
    if p < 0.5:
        return 16 * p * (0.5 - p)
    return -16 * (p - 0.5) * (1 - p)


class SimSensor:
    """A simulated sensor of `kind` (KINDS), seeded; `name` defaults to the kind; `base`
    and `noise` override the kind's."""

    every = 1

    def __init__(self, kind, seed, name=None, base=None, noise=None):
        if kind not in KINDS:
            raise ValueError("unknown simulated sensor %r (known: %s)" % (kind, ", ".join(sorted(KINDS))))
        self.name = name or kind
        self.base, self.noise, self.drift, self.step, self.q, self.cycle = KINDS[kind]
        if base is not None:
            self.base = base
        if noise is not None:
            self.noise = noise
        self.rng = XorShift32(seed)
        self.setpoint = self.base
        self.wander = 0.0
        self.phase = self.rng.uniform()
        self.n = 0

    def read(self):
        rng = self.rng
        self.n += 1
        self.wander += self.drift * 4 * (rng.uniform() - 0.5) - self.wander * _REVERT
        r = rng.uniform()
        if r < 0.002:  # a step: away from the base, or back when two steps away already
            away = self.setpoint - self.base
            if away >= 2 * self.step or (away > -2 * self.step and rng.uniform() < 0.5):
                self.setpoint -= self.step
            else:
                self.setpoint += self.step
        self.phase += 1 / CYCLE
        if self.phase >= 1:
            self.phase -= 1
        value = self.setpoint + self.wander + self.cycle * _wave(self.phase)
        value += self.noise * (rng.uniform() + rng.uniform() - 1.0)
        if r > 0.999:  # a spike
            value += self.step * 2
        return round(value / self.q) * self.q
