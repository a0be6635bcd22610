# Node configuration: a JSON file, validated at boot. Errors name the key and the fix.
#
# validate(raw) is strict (raises ConfigError on the first problem: for tools such as
# `headrace node flash`). boot(path) is what the node runs: it never raises, replaces
# each bad setting by its default and leaves each bad sensor out, so a node with a
# damaged config keeps running and can say what is wrong (error(cfg), in an error
# frame when its link works) or, when it has no identity to send frames with, show a
# blink code (fault(cfg), blink_pattern(code)). docs/node.md lists keys and codes.
import json

DEFAULTS = {  # type: dict
    "transport": "serial",
    "port": "/dev/ttyUSB0",
    "host": "127.0.0.1",
    "coap_port": 5683,
    "wifi_ssid": "",
    "wifi_password": "",
    "sensors": ["temp"],
    "period_ms": 1000,
    "batch": 8,
    "frames": 0,  # 0: run for ever
    "drain_timeout_s": 30,
    "state_file": "seq.dat",
    "seed": 1,
    "ack_timeout_ms": 2000,
    "max_retransmit": 4,
    "window": 0,  # 0: the link's default (serial 4, CoAP 1)
    "outbox": 64,
    "quiet": False,  # print only sequence numbers (no readings) on stdout: for small heaps
    "watchdog_ms": 8000,  # 0: no watchdog
    "trial_s": 300,  # code on trial (node updates) without an acked frame this long resets the board
    "sleep": "none",  # between samples: none (idle), light (lightsleep), deep (deepsleep, boots again)
    "led_pin": None,  # None: the board's own LED
    "worker": None,  # a resource's simulated worker: {"accept_ms": 2000, "work_ms": 5000} (worker.py)
}

_INTS = ("coap_port", "period_ms", "batch", "frames", "drain_timeout_s", "seed", "ack_timeout_ms",
         "max_retransmit", "window", "outbox", "watchdog_ms", "trial_s")
_STRS = ("port", "host", "wifi_ssid", "wifi_password", "state_file")

# blink codes: a long flash, then this many short ones (docs/node.md)
FAULT_NO_FILE = 1  # the config file is missing or unreadable
FAULT_NOT_JSON = 2  # it is not a JSON object
FAULT_IDENTITY = 3  # node name or key missing or invalid: no frame can be authenticated
FAULT_SETTING = 4  # a setting is invalid: its default is used
FAULT_SENSOR = 5  # a sensor entry is invalid: it is left out
FAULT_SENSOR_START = 6  # a sensor did not answer at boot: it is left out
FAULT_LINK = 7  # the link did not open (serial port, Wi-Fi): the node retries after a reset
FATAL = 3  # codes up to this one leave the node without an identity: it only blinks

class ConfigError(Exception):
    pass


def _msg(key, problem, fix):
    return "config key %r: %s (fix: %s)" % (key, problem, fix)


def _fail(key, problem, fix):
    raise ConfigError(_msg(key, problem, fix))


def _int(v, low, high):
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _valid_name(name, chars="-_", limit=32):
    if not isinstance(name, str) or not name or len(name) > limit:
        return False
    for i, c in enumerate(name):
        if not ("a" <= c <= "z" or "0" <= c <= "9" or (i and c in chars)):
            return False
    return True


def _sibling(name):
    """A firmware module: flat on a node (sensors.sim), in the package for the gateway's tools."""
    try:
        return __import__(name, None, None, ["_"])
    except ImportError:  # imported as firmware.config
        return __import__(__name__[:-len("config")] + name, None, None, ["_"])


def _setting(k, v, cfg):
    """Why setting k = v is invalid, as (problem, fix), or None."""
    if k in _INTS:
        if not _int(v, 0, 0x7FFFFFFF):
            return "must be a whole number >= 0", '"%s": %d' % (k, DEFAULTS[k])
        if k == "batch" and not 1 <= v <= 64:
            return "must be 1..64", '"batch": 8'
        if k in ("ack_timeout_ms", "outbox", "trial_s") and v < 1:
            return "must be >= 1", '"%s": %d' % (k, DEFAULTS[k])
        if k == "watchdog_ms" and 0 < v < 1000:
            return "must be 0 (off) or >= 1000", '"watchdog_ms": 8000'
    elif k in _STRS:
        if not isinstance(v, str):
            return "must be a string", '"%s": "%s"' % (k, DEFAULTS[k])
    elif k == "transport" and v not in ("serial", "coap"):
        return "must be serial or coap", '"transport": "serial"'
    elif k == "quiet" and not isinstance(v, bool):
        return "must be true or false", '"quiet": false'
    elif k == "sleep" and v not in ("none", "light", "deep"):
        return "must be none, light or deep", '"sleep": "none"'
    elif k == "led_pin" and not (v is None or _int(v, 0, 255) or isinstance(v, str)):
        return "must be a pin number, a pin name or null", '"led_pin": null'
    elif k == "sensors" and not isinstance(v, list):
        return "must be a list", '"sensors": ["temp"]'
    elif k == "worker" and v is not None and not (
            isinstance(v, dict) and sorted(v) == ["accept_ms", "work_ms"]
            and _int(v["accept_ms"], 0, 86400000) and _int(v["work_ms"], 0, 86400000)):
        return ("must be null or {accept_ms, work_ms} in ms (0..86400000)",
                '"worker": {"accept_ms": 2000, "work_ms": 5000}')
    return None


def _check(raw):
    """(config, problems): every invalid setting replaced by its default, every invalid
    sensor left out; problems is a list of (blink code, message)."""
    cfg = dict(DEFAULTS)
    problems = []
    for k in raw:
        if k not in DEFAULTS and k not in ("node", "key"):
            problems.append((FAULT_SETTING, _msg(k, "unknown key", "remove it; known keys: node, key, "
                                                 + ", ".join(sorted(DEFAULTS)))))
            continue
        v = raw[k]
        bad = None if k in ("node", "key") else _setting(k, v, cfg)
        if bad:
            problems.append((FAULT_SETTING, _msg(k, bad[0], bad[1])))
            if k == "sensors":
                cfg[k] = []  # no readings rather than simulated ones from a real board
        else:
            cfg[k] = v
    if not _valid_name(cfg.get("node")):
        problems.append((FAULT_IDENTITY, _msg("node", "missing or invalid",
                                              "1-32 lowercase letters, digits, - or _, from `headrace node provision`")))
    key = cfg.get("key")
    try:
        cfg["key"] = bytes.fromhex(key) if isinstance(key, str) else b""
    except ValueError:
        cfg["key"] = b""
    if len(cfg["key"]) != 32:
        problems.append((FAULT_IDENTITY, _msg("key", "must be 64 hex characters",
                                              "copy the key from `headrace node provision`")))
    specs = []
    for i, entry in enumerate(cfg["sensors"]):
        if isinstance(entry, str):  # a simulated sensor named by its kind: kept as it is, small
            if entry in _sibling("sensors.sim").KINDS:
                specs.append(entry)
            else:
                problems.append((FAULT_SENSOR, _msg("sensors[%d]" % i, "unknown simulated kind %r" % entry,
                                                    "one of " + ", ".join(sorted(_sibling("sensors.sim").KINDS)))))
            continue
        try:  # an object: checked against its driver's keys (loaded only for such entries)
            specs.append(_sibling("sensors.schema").entry(i, entry, cfg["period_ms"]))
        except ValueError as e:
            problems.append((FAULT_SENSOR, str(e)))
    cfg["sensors"] = specs
    return cfg, problems


def validate(raw):
    """The config from a parsed JSON object; ConfigError on the first problem."""
    cfg, problems = _check(raw)
    if problems:
        problems.sort(key=lambda p: p[0])
        raise ConfigError(problems[0][1])
    if not cfg["sensors"]:
        _fail("sensors", "must be a non-empty list", '"sensors": ["temp"]')
    return cfg


def load(path):
    """The validated config from a file; ConfigError when anything is wrong."""
    cfg = boot(path)
    if cfg["_fault"]:
        raise ConfigError(cfg["_error"])
    if not cfg["sensors"]:
        _fail("sensors", "must be a non-empty list", '"sensors": ["temp"]')
    return cfg


def boot(path):
    """The config to run with; never raises. error(cfg) says what was wrong, fault(cfg)
    gives the blink code of the worst problem (0: none; FATAL or below: no identity)."""
    raw = None
    problems = []
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        problems.append((FAULT_NO_FILE, "cannot read config %s: %s" % (path, e)))
    except ValueError as e:
        problems.append((FAULT_NOT_JSON, "config %s is not valid JSON: %s" % (path, e)))
    if raw is not None and not isinstance(raw, dict):
        problems.append((FAULT_NOT_JSON, "config %s must be a JSON object" % path))
    cfg, more = _check(raw if isinstance(raw, dict) else {})
    if not problems:
        problems = more
    problems.sort(key=lambda p: p[0])
    cfg["_fault"] = problems[0][0] if problems else 0
    cfg["_error"] = "; ".join(p[1] for p in problems) if problems else None
    return cfg


def error(cfg):
    """What was wrong with the config file (for the error frame and the log), or None."""
    return cfg.get("_error")


def fault(cfg):
    """The blink code of the config's worst problem: 0 when there was none."""
    return cfg.get("_fault", 0)


def blink_pattern(code):
    """A blink code as (on ms, off ms) pairs: one long flash, then `code` short ones, then a pause."""
    out = [(1000, 600)]
    for _ in range(code):
        out.append((200, 300))
    out[-1] = (out[-1][0], 2000)
    return out
