# Simulated sensors: seeded and identical on MicroPython and CPython (own xorshift32),
# with drift, noise, steps and spikes, quantized like real converters so values
# travel as exact half floats.


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


# kind: (base, noise amplitude, drift per sample, step size, quantum)
KINDS = {
    "temp": (21.0, 0.25, 0.002, 1.5, 1 / 16),       # °C, DS18B20-like resolution
    "vib": (2.0, 0.5, 0.0005, 3.0, 1 / 64),         # mm/s RMS
    "pressure": (4.0, 0.05, 0.0001, 0.5, 1 / 128),  # bar
    "current": (12.0, 0.4, 0.001, 4.0, 1 / 32),     # A
    "humidity": (45.0, 0.5, 0.003, 5.0, 1 / 8),     # %RH
}


class SimSensor:
    def __init__(self, name, seed):
        if name not in KINDS:
            raise ValueError("unknown simulated sensor %r (known: %s)" % (name, ", ".join(sorted(KINDS))))
        self.name = name
        self.base, self.noise, self.drift, self.step, self.q = KINDS[name]
        self.rng = XorShift32(seed)
        self.level = self.base
        self.n = 0

    def read(self):
        rng = self.rng
        self.n += 1
        self.level += self.drift * (rng.uniform() - 0.45)
        r = rng.uniform()
        if r < 0.002:  # a step change (a valve opens, a load comes on)
            self.level += self.step * (1 if rng.uniform() < 0.5 else -1)
        value = self.level + self.noise * (rng.uniform() + rng.uniform() - 1.0)
        if r > 0.999:  # a spike
            value += self.step * 2
        return round(value / self.q) * self.q
