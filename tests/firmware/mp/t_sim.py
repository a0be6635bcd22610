# Simulated sensors: seeded, the same numbers on both interpreters (printed as a digest,
# which the pytest side compares), bounded over a long run, with steps and spikes.
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
from sensors.sim import KINDS, SimSensor  # noqa: E402

digest = 0
for i, kind in enumerate(sorted(KINDS)):
    s = SimSensor(kind, 7 + i)
    base, noise, drift, step, q, cycle = KINDS[kind]
    lo = hi = s.read()
    total = 0.0
    jumps = 0
    prev = lo
    n = 20000
    for _ in range(n):
        v = s.read()
        assert v == round(v / q) * q  # quantized: an exact binary fraction
        digest = (digest * 31 + int(v / q)) & 0xFFFFFFFF
        if abs(v - prev) > step:
            jumps += 1
        prev = v
        lo, hi = min(lo, v), max(hi, v)
        total += v
    mean = total / n
    # bounded: the set point stays within two steps of the base, the wander comes back
    bound = 2 * step + cycle + noise + 2 * step + 0.5 * step
    assert base - bound <= lo and hi <= base + bound, (kind, lo, hi)
    assert abs(mean - base) < 2 * step + 0.5, (kind, mean)
    assert jumps > 5, (kind, jumps)  # steps and spikes happen
# same seed, same series; another seed, another one; a name and a base of its own
a, b, c = SimSensor("temp", 1), SimSensor("temp", 1), SimSensor("temp", 2)
ra, rb, rc = [a.read() for _ in range(50)], [b.read() for _ in range(50)], [c.read() for _ in range(50)]
assert ra == rb and ra != rc
d = SimSensor("temp", 1, name="boiler", base=80.0)
assert d.name == "boiler" and 70 < d.read() < 90
try:
    SimSensor("plasma", 1)
except ValueError:
    pass
else:
    raise AssertionError("unknown kind accepted")
print("OK t_sim %08x" % digest)
