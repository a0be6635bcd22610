import pytest

from gateway import config
from gateway.errors import ConfigError


def test_empty_is_defaults():
    cfg = config.from_dict({})
    assert cfg.mqtt.port == 1883 and cfg.coap.port == 5683 and cfg.aggregate.widths == (10.0,)
    assert cfg.topic_root == "headrace/v1/site1/gw1/"


def test_full_example_file_is_valid():
    from pathlib import Path
    cfg = config.load(Path(__file__).resolve().parents[2] / "gateway" / "data" / "gateway.toml")
    assert cfg.serial.ports[0].path == "/dev/ttyUSB0"


@pytest.mark.parametrize("raw, key, fix", [
    ({"mqtt": {"prot": 1}}, "[mqtt] prot", "valid keys"),
    ({"mqtt": {"port": "1883"}}, "[mqtt] port", "port = 1883"),
    ({"mqtt": {"port": 70000}}, "[mqtt] port", "1 to 65535"),
    ({"gateway": {"id": "Bad Name"}}, "[gateway] id", "lowercase"),
    ({"aggregate": {"widths": [0]}}, "[aggregate] widths", "positive"),
    ({"serial": {"ports": [{"baudrate": 9600}]}}, "[serial.ports[0]] path", "/dev/ttyUSB0"),
    ({"mqtt": {"tls_cert": "/x.pem"}}, "[mqtt] tls_cert", "both"),
    ({"nonsense": {}}, "[nonsense]", "valid sections"),
    ({"coap": {"dedup_max": 10}}, "[coap] dedup_max", "64 to 10000000"),
    ({"coap": {"receive_buffer": -1}}, "[coap] receive_buffer", "0 (the system's default)"),
    ({"coap": {"batch": 2000}}, "[coap] batch", "0 (a system call a datagram"),
])
def test_errors_name_key_and_fix(raw, key, fix):
    with pytest.raises(ConfigError) as info:
        config.from_dict(raw)
    assert info.value.key == key
    assert fix in str(info.value)


def test_bad_toml_syntax(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text("[mqtt\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(p)


def test_every_mistake_is_reported_in_one_run():
    raw = {"mqtt": {"port": "x", "keepalive": 1}, "gateway": {"id": "Bad Name"}, "spool": {"bogus": 1},
           "zones": {"points": {"a": [0, 0], "b": "far"}, "edges": [["a", "c"]]},
           "resources": [{"id": "m1", "capabilities": ["mechanic"]}, {"id": "m2", "capabilities": []}],
           "rules": [{"name": "r1", "series": "p1/t"}, {"name": "r2", "series": "p1/t", "above": 1, "emit": "demand",
                                                       "need": "crane", "at": [0, 0]}]}
    with pytest.raises(config.ConfigErrors) as info:
        config.from_dict(raw)
    keys = [e.key for e in info.value.errors]
    # the tables in file order, then the checks across keys and ranges
    assert keys == ["[mqtt] port", "[spool] bogus", "[zones] points.b", "[zones] edges[0]", "[resources.m1] home",
                    "[resources.m2] capabilities", "[rules.r1] above", "[rules.r2] need", "[gateway] id",
                    "[mqtt] keepalive"]
    text = str(info.value)
    assert text.startswith("10 errors:") and all(f"  {k}: " in text for k in keys)
    assert all(e.fix for e in info.value.errors), "every error says how to fix it"


def test_one_mistake_is_a_plain_config_error():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"mqtt": {"port": "x"}})
    assert type(info.value) is ConfigError and info.value.key == "[mqtt] port"
