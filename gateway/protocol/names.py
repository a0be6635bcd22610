"""Names on the wire and in the configuration: one rule each, used by every module that checks one.

A node's name is its COSE kid and the first part of its SenML base name; a sensor
name follows it after a slash (docs/protocol.md §2). Gateway ids, site ids,
resource ids and capabilities follow the node rule, so each fits a topic level.
"""
import re

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")      # node, gateway, site, resource, capability
SENSOR_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
SERIES_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}/[a-z0-9_]{1,32}$")  # node/sensor
RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
