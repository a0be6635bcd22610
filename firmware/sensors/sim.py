# Simulated sensors: seeded and identical on MicroPython and CPython (own xorshift32, no
# libm), quantized like real converters so values travel as exact half floats. What a
# plant looks like: a set point that steps (a valve opens, a load comes on) and comes
# back, a slow bounded wander, a cycle (day and night, shifts), noise and rare spikes.
#
# All in small integers (fixed point, 16 fractional bits; the generator in 16-bit halves),
# so a read allocates nothing on any port: read_raw() gives the value in quanta of
# 2**-shift, read() the same as a float. The generator's state sits in the sensor: one object
# a sensor (16 sensors on a 24 KB heap).

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x


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
_CYCLE = const(1440)  # samples per cycle: a day at one sample a minute
_REVERT = const(11)  # the wander is pulled back by 2**-11 of itself per sample
_ONE = const(65536)  # fixed point: 16 fractional bits


def _wave(p):
    """A sine-like wave at phase p of _CYCLE, by parabolas, times 2**16: in [-65536, 65536]."""
    if 2 * p < _CYCLE:
        w = 8 * p * (_CYCLE - 2 * p)
    else:
        w = -8 * (2 * p - _CYCLE) * (_CYCLE - p)
    return (w * 16 // _CYCLE) * 4096 // _CYCLE


_SHARED: dict = {}  # kind: its fixed-point parameters, one tuple for every sensor of the kind
_LO = const(0xFFFF)  # SimSensor.s: the generator's low half (16 bits), the phase (11 bits) above,
_PHASE = const(16)   # and above that (3 bits) the set point's offset from the base, in steps,
_STEPS = const(27)   # plus 2 (the set point stays within two steps of the base): below 2**30


class SimSensor:
    """A simulated sensor of `kind` (KINDS), seeded; `name` defaults to the kind; `base`
    and `noise` override the kind's (|base| below 16000).

    Four attributes, an instance's table of four entries (it grows in steps of 2, 4, 6, 8:
    seven took eight, 64 more bytes a sensor on 64-bit ports, 32 on 32-bit ones): the
    kind's parameters in fixed point and the name in one tuple shared by the sensors of a
    kind, the generator's high half `h`, the wander `w`, and `s` (the generator's low half,
    the cycle's phase and the set point's step, packed in a small int)."""

    every = 1

    def __init__(self, kind, seed, name=None, base=None, noise=None):
        if kind not in KINDS:
            raise ValueError("unknown simulated sensor %r (known: %s)" % (kind, ", ".join(sorted(KINDS))))
        name = name or kind
        shared = base is None and noise is None and name == kind
        p = _SHARED.get(kind) if shared else None
        if p is None:
            base_, noise_, drift, step, q, cycle = KINDS[kind]
            if base is not None:
                base_ = base
            if noise is not None:
                noise_ = noise
            shift = 0  # values in quanta of 2**-shift
            while q * (1 << shift) < 1:
                shift += 1
            # base, noise (12 fractional bits: the product stays small), drift, step, cycle, shift, name
            p = (int(round(base_ * _ONE)), int(round(noise_ * 4096)), int(round(drift * 4 * _ONE)),
                 int(round(step * _ONE)), int(round(cycle * 256)), shift, name)
            if shared:
                _SHARED[kind] = p
        self.p = p
        s = (seed * 2654435761) & 0xFFFFFFFF or 1  # xorshift32's state in two 16-bit halves
        self.h = s >> 16
        self.s = (s & _LO) | (2 << _STEPS)  # the set point at the base
        self.w = 0  # the wander
        phase = self.u16() * _CYCLE >> 16
        self.s |= phase << _PHASE

    @property
    def name(self):
        return self.p[6]

    @property
    def shift(self):
        return self.p[5]

    def u16(self):
        """Marsaglia's xorshift32 on two 16-bit halves (no int ever passes 2**30, a heap object
        on 32-bit ports): the next state's high 16 bits, uniform in [0, 65536)."""
        h = self.h
        s = self.s
        lo = s & _LO
        h ^= ((h << 13) | (lo >> 3)) & 0xFFFF  # s ^= s << 13
        lo ^= (lo << 13) & 0xFFFF
        lo ^= h >> 1                           # s ^= s >> 17
        h ^= ((h << 5) | (lo >> 11)) & 0xFFFF  # s ^= s << 5
        lo ^= (lo << 5) & 0xFFFF
        self.h = h
        self.s = s ^ (s & _LO) ^ lo
        return h

    def read_raw(self):
        """The next value in quanta (value = raw / 2**shift); allocates nothing."""
        rng = self
        p = self.p
        step = p[3]
        w = self.w
        w += (p[2] * (rng.u16() - 32768)) >> 16
        self.w = w - (w >> _REVERT)
        r = rng.u16()
        s = self.s
        k = (s >> _STEPS) - 2  # the set point: the base and k steps
        if r < 131:  # a step (one in 500): away from the base, or back when two steps away already
            if k >= 2 or (k > -2 and rng.u16() < 32768):
                k -= 1
            else:
                k += 1
            s = self.s  # the generator's low half moved
        phase = ((s >> _PHASE) & 0x7FF) + 1
        if phase >= _CYCLE:
            phase = 0
        self.s = (s & _LO) | (phase << _PHASE) | ((k + 2) << _STEPS)
        value = p[0] + k * step + self.w + ((p[4] * _wave(phase)) >> 8)
        value += (p[1] * ((rng.u16() >> 1) + (rng.u16() >> 1) - 32768)) >> 11  # 2**-12 -> 2**-16
        if r > 65470:  # a spike (one in 1000)
            value += step * 2
        k = p[5]
        return (value + (1 << (15 - k))) >> (16 - k)

    def read(self):
        return self.read_raw() / (1 << self.p[5])
