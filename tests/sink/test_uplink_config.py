"""The gateway's [jetstream] section: off by default, checked like every other section."""
import pytest

from gateway.config import ConfigError, from_dict


def test_jetstream_section():
    assert from_dict({}).jetstream.enabled is False  # MQTT stays the default uplink
    cfg = from_dict({"jetstream": {"enabled": True, "servers": ["nats://a:4222", "nats://b:4222"], "replicas": 3}})
    assert cfg.jetstream.servers == ("nats://a:4222", "nats://b:4222")
    for raw, key in (({"servers": "nats://a"}, "[jetstream] servers"), ({"replicas": 9}, "[jetstream] replicas"),
                     ({"strem": "X"}, "[jetstream] strem")):
        with pytest.raises(ConfigError) as e:
            from_dict({"jetstream": raw})
        assert key in str(e.value)
