# What a sensor entry of the node's config takes, per driver: its keys, their defaults
# and their valid values (docs/node.md). config.py loads this module only for sensors
# given as objects; a plain string names a simulated sensor and needs none of it.

REQUIRED = object()  # a key without a default
# per driver: its keys and their defaults; name, driver and period_ms are common to all
DRIVERS = {  # type: dict
    "sim": {"kind": None, "base": None, "noise": None, "seed": None},
    "adc": {"pin": REQUIRED, "cal": [[0, 0.0], [65535, 3.3]], "samples": 4},
    "ds18b20": {"pin": REQUIRED, "rom": None, "resolution": 12},
    "bme280": {"i2c": 0, "scl": None, "sda": None, "freq": 400000, "addr": 0x76, "measure": ["t", "p", "h"]},
    "adxl345": {"i2c": 0, "scl": None, "sda": None, "freq": 400000, "addr": 0x53, "rate_hz": 1600,
                "samples": 256, "range_g": 16, "unit": "mm/s", "axis": "xyz"},
}
# key: allowed values, or (low, high) for whole numbers
_CHOICES = {"rate_hz": (100, 200, 400, 800, 1600, 3200), "range_g": (2, 4, 8, 16), "unit": ("mm/s", "g"),
            "axis": ("x", "y", "z", "xyz")}
_RANGES = {"i2c": (0, 1), "freq": (10000, 1000000), "addr": (0x08, 0x77), "period_ms": (0, 0x7FFFFFFF),
           "resolution": (9, 12)}


def _fail(key, problem, fix):
    raise ValueError("config key %r: %s (fix: %s)" % (key, problem, fix))


def _int(v, low, high):
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ok(drv, k, v):
    if k in _CHOICES:
        return v in _CHOICES[k]
    if k in _RANGES:
        return _int(v, _RANGES[k][0], _RANGES[k][1])
    if k in ("pin", "scl", "sda"):  # a GPIO number, or a pin name ("LED", "GP4")
        return _int(v, 0, 255) or isinstance(v, str) or (v is None and k != "pin")
    if k == "samples":
        return _int(v, 1, 64) if drv == "adc" else _int(v, 16, 1024)
    if k == "rom":
        if v is None:
            return True
        try:
            return isinstance(v, str) and len(bytes.fromhex(v)) == 8
        except ValueError:
            return False
    if k == "cal":
        return (isinstance(v, list) and len(v) == 2 and all(isinstance(p, list) and len(p) == 2 and _num(p[0])
                                                            and _num(p[1]) for p in v) and v[0][0] != v[1][0])
    if k == "measure":
        return isinstance(v, list) and len(v) > 0 and all(m in ("t", "p", "h") for m in v) and len(set(v)) == len(v)
    if k in ("base", "noise"):
        return v is None or _num(v)
    if k == "seed":
        return v is None or _int(v, 0, 0x7FFFFFFF)
    return True  # kind: checked by the caller against the simulated kinds


def entry(i, raw, period_ms):
    """Sensor entry number i, completed with its driver's defaults and `every` (read on
    every n-th period of `period_ms`); ValueError naming the key and the fix."""
    where = "sensors[%d]" % i
    if not isinstance(raw, dict):
        _fail(where, "must be a sensor kind or an object", '{"name": "t1", "driver": "ds18b20", "pin": 4}')
    drv = raw.get("driver")
    if drv not in DRIVERS:
        _fail(where + ".driver", "unknown driver %r" % (drv,), "one of " + ", ".join(sorted(DRIVERS)))
    spec = {"driver": drv, "period_ms": 0}
    spec.update(DRIVERS[drv])
    spec.update(raw)
    name = spec.get("name")
    # SenML names are [a-z0-9_]{1,32}; a BME280 adds _t, _p or _h to its name
    limit = 30 if drv == "bme280" else 32
    if not (isinstance(name, str) and 0 < len(name) <= limit and all("a" <= c <= "z" or "0" <= c <= "9" or c == "_"
                                                                      for c in name)):
        _fail(where + ".name", "missing or invalid", "1-%d lowercase letters, digits or _" % limit)
    if drv == "sim":
        from .sim import KINDS
        if spec["kind"] is None:
            spec["kind"] = name
        if spec["kind"] not in KINDS:
            _fail(where + ".kind", "unknown simulated kind %r" % (spec["kind"],), "one of " + ", ".join(sorted(KINDS)))
    for k in spec:
        if k in ("name", "driver"):
            continue
        if k not in DRIVERS[drv] and k != "period_ms":
            _fail(where + "." + k, "unknown key", "remove it; %s sensors take: name, driver, period_ms, %s"
                  % (drv, ", ".join(sorted(DRIVERS[drv]))))
        if spec[k] is REQUIRED:
            _fail(where + "." + k, "missing", "see docs/node.md, section " + drv)
        if not _ok(drv, k, spec[k]):
            _fail(where + "." + k, "invalid value %r" % (spec[k],), "see docs/node.md, section " + drv)
    p = spec["period_ms"]
    if p and period_ms and p % period_ms:
        _fail(where + ".period_ms", "must be a multiple of period_ms (%d)" % period_ms, "0: every period")
    spec["every"] = p // period_ms if p and period_ms else 1
    return spec
