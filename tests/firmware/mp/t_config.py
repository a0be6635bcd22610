# Node configs, good and bad: the strict validate() for tools, and boot(), which never
# raises, falls back to defaults, leaves bad sensors out, and gives the error text and
# the blink code. MicroPython and CPython.
import sys
import json

ROOT = sys.argv[1]
TMP = sys.argv[2]
sys.path.insert(0, ROOT + "/firmware")
import config  # noqa: E402

KEY = "ab" * 32
GOOD = {"node": "pump-3", "key": KEY, "transport": "coap", "host": "10.0.0.2", "period_ms": 1000, "batch": 16,
        "watchdog_ms": 5000, "sleep": "light", "sensors": [
            "temp",
            {"name": "water", "driver": "ds18b20", "pin": 4, "period_ms": 5000},
            {"name": "amb", "driver": "bme280", "i2c": 0, "scl": 22, "sda": 21, "addr": 0x77, "measure": ["t", "h"]},
            {"name": "vib", "driver": "adxl345", "rate_hz": 3200, "samples": 320, "unit": "g", "axis": "z"},
            {"name": "p1", "driver": "adc", "pin": 34, "cal": [[11915, 0], [59577, 10]]}]}


def write(name, obj):
    path = TMP + "/" + name
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


cfg = config.validate(GOOD)
assert cfg["worker"] is None
assert config.validate(dict(GOOD, worker={"accept_ms": 0, "work_ms": 1500}))["worker"] == {"accept_ms": 0,
                                                                                       "work_ms": 1500}
assert cfg["key"] == bytes.fromhex(KEY) and cfg["batch"] == 16 and cfg["sleep"] == "light"
assert cfg["sensors"][0] == "temp"  # a simulated sensor by its kind stays a string: small on the node
s = {x["name"]: x for x in cfg["sensors"][1:]}
assert s["water"]["every"] == 5 and s["water"]["resolution"] == 12 and s["water"]["rom"] is None
assert s["amb"]["addr"] == 0x77 and s["amb"]["freq"] == 400000 and s["amb"]["measure"] == ["t", "h"]
assert s["vib"]["range_g"] == 16 and s["vib"]["addr"] == 0x53
boot = config.boot(write("good.json", GOOD))
assert config.fault(boot) == 0 and config.error(boot) is None and boot["sensors"] == cfg["sensors"]

# strict: the first problem, naming the key and the fix
BAD = [({"batch": 100}, "'batch'"), ({"transport": "lora"}, "'transport'"), ({"colour": 1}, "'colour'"),
       ({"sleep": "hibernate"}, "'sleep'"), ({"watchdog_ms": 10}, "'watchdog_ms'"),
       ({"sensors": [{"name": "t", "driver": "ds18b20"}]}, "'sensors[0].pin'"),
       ({"sensors": [{"name": "t", "driver": "ds18b20", "pin": 4, "resolution": 8}]}, "'sensors[0].resolution'"),
       ({"sensors": [{"name": "T!", "driver": "sim"}]}, "'sensors[0].name'"),
       ({"sensors": [{"name": "t", "driver": "dht22", "pin": 4}]}, "'sensors[0].driver'"),
       ({"sensors": [{"name": "t", "driver": "sim", "kind": "plasma"}]}, "'sensors[0].kind'"),
       ({"sensors": [{"name": "v", "driver": "adxl345", "rate_hz": 1000}]}, "'sensors[0].rate_hz'"),
       ({"sensors": [{"name": "a", "driver": "bme280", "addr": 200}]}, "'sensors[0].addr'"),
       ({"sensors": [{"name": "a", "driver": "bme280", "colour": 1}]}, "'sensors[0].colour'"),
       ({"sensors": [{"name": "p", "driver": "adc", "pin": 1, "cal": [[5, 0], [5, 1]]}]}, "'sensors[0].cal'"),
       ({"sensors": [{"name": "p", "driver": "sim", "kind": "temp", "period_ms": 1500}]}, "'sensors[0].period_ms'"),
       ({"worker": {"accept_ms": 5}}, "'worker'"), ({"worker": {"accept_ms": -1, "work_ms": 5}}, "'worker'"),
       ({"sensors": ["plasma"]}, "'sensors[0]'"), ({"sensors": []}, "'sensors'"), ({"node": "Pump 3"}, "'node'"), ({"key": "12"}, "'key'")]
for change, where in BAD:
    raw = dict(GOOD)
    raw.update(change)
    try:
        config.validate(raw)
    except config.ConfigError as e:
        assert where in str(e) and "fix:" in str(e), (change, str(e))
    else:
        raise AssertionError("accepted %r" % (change,))

# boot: a bad setting falls back to its default, a bad sensor is left out, the node runs
raw = dict(GOOD)
raw.update(batch=100, colour=1, sleep="hibernate")
raw["sensors"] = GOOD["sensors"] + [{"name": "x", "driver": "ds18b20"}, 7]
cfg = config.boot(write("bad.json", raw))
assert cfg["batch"] == 8 and cfg["sleep"] == "none" and "colour" not in cfg
assert [x if isinstance(x, str) else x["name"] for x in cfg["sensors"]] == ["temp", "water", "amb", "vib", "p1"]
assert config.fault(cfg) == config.FAULT_SETTING  # the worst: a setting (4) before a sensor (5)
text = config.error(cfg)
for part in ("'batch'", "'colour'", "'sleep'", "'sensors[5].pin'", "'sensors[6]'"):
    assert part in text, (part, text)
raw = dict(GOOD)
raw["sensors"] = [{"name": "x", "driver": "sim", "kind": "plasma"}]
cfg = config.boot(write("bad2.json", raw))
assert config.fault(cfg) == config.FAULT_SENSOR and cfg["sensors"] == []
cfg = config.boot(write("bad3.json", dict(GOOD, sensors="temp")))
assert config.fault(cfg) == config.FAULT_SETTING and cfg["sensors"] == []  # never simulated values instead

# fatal: no identity to authenticate frames with; the node only blinks
for name, content, code in (("missing.json", None, config.FAULT_NO_FILE), ("junk.json", "{node:", config.FAULT_NOT_JSON),
                            ("list.json", [1, 2], config.FAULT_NOT_JSON),
                            ("nokey.json", {"node": "n1"}, config.FAULT_IDENTITY),
                            ("badnode.json", dict(GOOD, node=""), config.FAULT_IDENTITY)):
    path = TMP + "/" + name if content is None else write(name, content)
    cfg = config.boot(path)
    assert config.fault(cfg) == code and code <= config.FATAL, (name, config.fault(cfg))
    assert config.error(cfg), name
    try:
        config.load(path)
    except config.ConfigError:
        pass
    else:
        raise AssertionError("load accepted " + name)
assert config.load(write("good.json", GOOD))["node"] == "pump-3"

# blink codes: a long flash, `code` short ones, a pause before the next round
pat = config.blink_pattern(3)
assert pat == [(1000, 600), (200, 300), (200, 300), (200, 2000)], pat
assert len(config.blink_pattern(7)) == 8
print("OK t_config %d bad configs" % len(BAD))
