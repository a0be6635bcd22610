"""Gateway configuration: one TOML file, validated into one frozen object.

Every error names the key and the fix (`ConfigError`), and every mistake in the
file is reported in one run (`ConfigErrors` when there are several). Unknown keys
are errors too: a typo must not silently fall back to a default. All keys have
sane defaults, so an empty file (or none) runs a gateway on loopback.
See `gateway/data/gateway.toml` for the commented sample.

Parsing lives here and only here: `sections` (the plain tables), `rules`
(`[[rules]]`), `resources` (`[[resources]]`), `zones` (`[zones]`); the runtime and
the decisions receive the validated objects.
"""
from gateway.config.problems import ConfigErrors, Problems
from gateway.config.rules import check_nodes
from gateway.config.sections import (
    AggregateSection,
    CoapSection,
    Config,
    DispatchSection,
    GatewaySection,
    HttpSection,
    MqttSection,
    SerialPort,
    SerialSection,
    SparkplugSection,
    SpoolSection,
    from_dict,
    load,
)
from gateway.errors import ConfigError

__all__ = ["AggregateSection", "CoapSection", "Config", "ConfigError", "ConfigErrors", "DispatchSection",
           "GatewaySection", "HttpSection", "MqttSection", "Problems", "SerialPort", "SerialSection",
           "SparkplugSection", "SpoolSection", "check_nodes", "from_dict", "load"]
