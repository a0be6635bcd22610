"""headrace gateway: serial and CoAP in, verify, aggregate, spool, MQTT out."""

__version__ = "0.1.0"
