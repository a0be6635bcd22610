# The numbers of headrace's own protocol (docs/protocol.md), named once for the firmware;
# gateway/protocol/numbers.py names the same on the gateway's side. RFC numbers are named
# where they are used (cbor.py, senml.py, cose.py, framing.py, link_coap.py).
try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

GATEWAY_KID = b"gw"         # the kid of every message from the gateway (§2)
MSG_ACK = const(1)          # an ack: [MSG_ACK, seq, status] or [MSG_ACK, seq, status, commands] (§3)
ACK_STORED = const(0)       # the frame's readings are durable in the gateway's spool
ACK_DUPLICATE = const(1)    # a frame the gateway had already stored
ACK_REJECTED = const(2)     # a frame the gateway will never store (a bad payload): do not resend
# commands' limits (§3, as gateway/decisions/downlink.py checks them before sending)
PERIOD_MS_MIN = const(10)
PERIOD_MS_MAX = const(86400000)
BATCH_MIN = const(1)
BATCH_MAX = const(64)
IDENTIFY_S_MIN = const(1)
IDENTIFY_S_MAX = const(600)
# the commands a node takes from the cloud: name -> {argument: (low, high, required)}; the gateway
# refuses a cloud command outside this table before it is queued. Defined where the gateway
# reads it (CPython); on a node nothing does, and a table of dicts is 250 bytes of heap
try:
    import micropython  # noqa: F401
except ImportError:
    COMMANDS = {
        "set_period": {"period_ms": (PERIOD_MS_MIN, PERIOD_MS_MAX, True)},
        "set_batch": {"batch": (BATCH_MIN, BATCH_MAX, True)},
        "identify": {"seconds": (IDENTIFY_S_MIN, IDENTIFY_S_MAX, False)},
        "reboot": {},
    }
