"""OpenSSL is loaded only when the configuration uses TLS.

Loading `ssl` maps OpenSSL's libcrypto, and its relocations alone make about
3 MB of it resident; `hashlib`'s OpenSSL constructors map it too. asyncio,
paho-mqtt and uvloop import `ssl` whatever the configuration says, and paho
imports `hashlib`. A gateway without TLS (the default: MQTT to a broker on the
site's network, the status page on loopback) leaves both out and is about
4.5 MB smaller (docs/performance.md, "Memory").

Usage: `headrace gateway run` calls `leave_out_unless_needed(cfg)` once the
configuration is read and before anything imports asyncio, then
`import_uvloop()` instead of `import uvloop`; the MQTT uplink imports paho-mqtt
with `import_with_stand_in("paho.mqtt.client")`.

Configuration: TLS is needed, and OpenSSL loaded as usual, with any of
`[mqtt] tls_ca`, `tls_cert`, `tls_key`, `[http] tls_cert`, or the JetStream
uplink (`[jetstream] enabled`: nats-py imports `ssl` for its own TLS options).

Caveats: without TLS, `import ssl` raises ImportError in the gateway's process
(asyncio and paho-mqtt expect that and run without TLS), and `hashlib` and
`hmac` use CPython's own SHA-2 code (the MACs keep their hash states, as fast:
`gateway/protocol/cose.py`'s MacKey). uvloop reads a few names of `ssl` when it
loads, and paho-mqtt names `ssl`'s errors in the `except` clauses of its socket
reads and writes (with `ssl` None, a read that would block raised AttributeError
instead of BlockingIOError): both get a stand-in that names them, whose errors
are never raised and whose contexts cannot be made. Where
`ssl` or `_hashlib` was imported already (the gateway run inside another
program, the tests), nothing is left out.
"""
from __future__ import annotations

import importlib
import sys
import types

_MODULES = ("ssl", "_ssl", "_hashlib")  # what maps libcrypto


def needed(cfg) -> bool:
    """Whether the configuration uses TLS anywhere in the gateway's process."""
    return bool(cfg.mqtt.tls_ca or cfg.mqtt.tls_cert or cfg.mqtt.tls_key or cfg.http.tls_cert
                or cfg.jetstream.enabled)


def leave_out_unless_needed(cfg) -> bool:
    """Keep `ssl` and OpenSSL's hashes unimportable in this process unless `cfg` needs TLS.
    True if they were left out; False if TLS is needed or one of them is loaded already."""
    if needed(cfg) or any(m in sys.modules for m in _MODULES):
        return False
    for m in _MODULES:
        sys.modules[m] = None  # the import system's "not available": ImportError
    return True


def left_out() -> bool:
    return sys.modules.get("ssl", 0) is None


def import_with_stand_in(module: str):
    """`importlib.import_module(module)`, with the stand-in as `ssl` while it loads if `ssl` was
    left out, so that it binds the stand-in instead of None."""
    if not left_out():
        return importlib.import_module(module)
    sys.modules["ssl"] = _stand_in()
    try:
        return importlib.import_module(module)
    finally:
        sys.modules["ssl"] = None


def import_uvloop():
    """`import uvloop`, with the stand-in for `ssl` while it loads if `ssl` was left out.
    Raises ImportError when uvloop is not installed."""
    if not left_out():
        import uvloop
        return uvloop
    sys.modules["ssl"] = _stand_in()
    try:
        import uvloop
    except AttributeError:  # a uvloop that reads more of `ssl` than the stand-in has: load OpenSSL after all
        for m in [m for m in sys.modules if m == "uvloop" or m.startswith("uvloop.")]:
            del sys.modules[m]
        for m in _MODULES:
            sys.modules.pop(m, None)
        import uvloop
        return uvloop
    finally:
        if sys.modules.get("ssl") is not None and getattr(sys.modules["ssl"], "_stand_in", False):
            sys.modules["ssl"] = None
    return uvloop


_NO_TLS = "TLS is not loaded: this gateway's configuration uses none (gateway/runtime/tls.py)"


def _stand_in() -> types.ModuleType:
    """The names uvloop reads from `ssl` when it loads (its `includes/stdlib.pxi`), none usable."""
    m = types.ModuleType("ssl", _NO_TLS)
    m._stand_in = True

    class SSLError(OSError):
        pass

    m.SSLError = SSLError
    for name in ("SSLWantReadError", "SSLWantWriteError", "SSLSyscallError", "SSLZeroReturnError", "SSLEOFError",
                 "CertificateError"):
        setattr(m, name, type(name, (SSLError,), {}))

    def unavailable(*args, **kwargs):
        raise RuntimeError(_NO_TLS)

    m.SSLContext = type("SSLContext", (), {"__init__": unavailable})
    m.MemoryBIO = type("MemoryBIO", (), {"__init__": unavailable})
    m.create_default_context = unavailable
    m.SSL_ERROR_WANT_READ, m.SSL_ERROR_WANT_WRITE, m.SSL_ERROR_SYSCALL = 2, 3, 5  # OpenSSL's SSL_ERROR_* numbers
    return m
