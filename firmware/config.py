# Node configuration: a JSON file, validated at boot. Errors name the key and the fix.
import json

DEFAULTS = {
    "transport": "serial",
    "port": "/dev/ttyUSB0",
    "host": "127.0.0.1",
    "coap_port": 5683,
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
}

_INTS = ("coap_port", "period_ms", "batch", "frames", "drain_timeout_s", "seed", "ack_timeout_ms",
         "max_retransmit", "window", "outbox")


class ConfigError(Exception):
    pass


def _fail(key, problem, fix):
    raise ConfigError("config key %r: %s (fix: %s)" % (key, problem, fix))


def _valid_name(name):
    if not name or len(name) > 32:
        return False
    for i, c in enumerate(name):
        if not ("a" <= c <= "z" or "0" <= c <= "9" or (i and c in "-_")):
            return False
    return True


def validate(raw):
    cfg = dict(DEFAULTS)
    for k in raw:
        if k not in DEFAULTS and k not in ("node", "key"):
            _fail(k, "unknown key", "remove it; known keys: node, key, " + ", ".join(sorted(DEFAULTS)))
    cfg.update(raw)
    if not isinstance(cfg.get("node"), str) or not _valid_name(cfg["node"]):
        _fail("node", "missing or invalid", "1-32 lowercase letters, digits, - or _, from `headrace node provision`")
    key = cfg.get("key")
    try:
        cfg["key"] = bytes.fromhex(key) if isinstance(key, str) else b""
    except ValueError:
        cfg["key"] = b""
    if len(cfg["key"]) != 32:
        _fail("key", "must be 64 hex characters", "copy the key from `headrace node provision`")
    if cfg["transport"] not in ("serial", "coap"):
        _fail("transport", "must be serial or coap", 'write "transport": "serial"')
    for k in _INTS:
        if not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 0:
            _fail(k, "must be a whole number >= 0", '"%s": %d' % (k, DEFAULTS[k]))
    if not 1 <= cfg["batch"] <= 64:
        _fail("batch", "must be 1..64", '"batch": 8')
    if cfg["ack_timeout_ms"] < 1 or cfg["outbox"] < 1:
        _fail("ack_timeout_ms", "ack_timeout_ms and outbox must be >= 1", '"ack_timeout_ms": 2000')
    if not isinstance(cfg["quiet"], bool):
        _fail("quiet", "must be true or false", '"quiet": false')
    if not isinstance(cfg["sensors"], list) or not cfg["sensors"]:
        _fail("sensors", "must be a non-empty list", '"sensors": ["temp"]')
    return cfg


def load(path):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError("cannot read config %s: %s" % (path, e))
    except ValueError as e:
        raise ConfigError("config %s is not valid JSON: %s" % (path, e))
    if not isinstance(raw, dict):
        raise ConfigError("config %s must be a JSON object" % path)
    return validate(raw)
