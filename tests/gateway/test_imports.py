"""What a default gateway loads: modules only some configurations need stay unloaded.

Each megabyte of RSS counts against the 40 MB budget (docs/performance.md, Memory): node
updates (the release reader, with tempfile, shutil, bz2 and lzma behind it) load only when
`[update] public_key` is set, pyserial only when a serial port is configured, paho-mqtt's
proxy support (`urllib.request`, with `http.client` and `email`) only with PySocks, OpenSSL
(`ssl`, and hashlib's OpenSSL constructors) only when the configuration uses TLS.
"""
import subprocess
import sys

from gateway import config
from gateway.protocol.coap import UPDATE_PATH, is_update_request
from gateway.protocol.numbers import COAP_OPT_URI_PATH


def test_a_default_gateway_does_not_load_updates_nor_pyserial_nor_urllib_request():
    code = ("import sys, gateway.tools.cli, gateway.runtime.service; "
            "print(sorted(m for m in ('gateway.runtime.updates', 'gateway.decisions.update', "
            "'gateway.tools.release', 'serial', 'serial_asyncio_fast', 'urllib.request', 'http.client', 'email', 'html') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_update_requests_are_told_apart_by_their_first_path_segment():
    assert is_update_request({COAP_OPT_URI_PATH: [UPDATE_PATH, b"r1", b"m"]})
    assert not is_update_request({COAP_OPT_URI_PATH: [b"d"]})
    assert not is_update_request({COAP_OPT_URI_PATH: []})
    assert not is_update_request({})


# the gateway's own start (gateway/tools/cli.py's `gateway run`), up to its event loop
_START = """
import sys
sys.argv = ["headrace", "gateway", "run", "--config", sys.argv[1]]
from gateway.tools import cli
def run(coro):  # cli._run, with the check in place of the service
    coro.close()
    from gateway.runtime import tls
    return tls.import_uvloop().run(check())
async def check():
    import asyncio, hashlib, hmac, paho.mqtt.client
    from gateway.protocol import cose
    maps = open("/proc/self/maps").read()
    try:
        import ssl
        has_ssl = True
    except ImportError:
        has_ssl = False
    mac = cose.MacKey(b"k").digest(b"data") == hmac.new(b"k", b"data", "sha256").digest()
    # paho's socket read with nothing to read: BlockingIOError, which paho expects (with ssl None
    # its `except ssl.SSLWantReadError` raised AttributeError instead)
    from gateway.runtime.uplink.mqtt import paho
    import socket
    a, b = socket.socketpair()
    a.setblocking(False)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client._sock = a
    try:
        client._sock_recv(1)
    except BlockingIOError:
        pass
    print(has_ssl, "libcrypto" in maps, type(asyncio.get_running_loop()).__module__, mac, "shutil" in sys.modules)
cli._run = run
sys.exit(cli.main())
"""


def _start(tmp_path, toml: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nid = "gw"\nsite = "s"\nregistry = "{tmp_path / "nodes.toml"}"\n' + toml)
    (tmp_path / "nodes.toml").write_text("")
    out = subprocess.run([sys.executable, "-c", _START, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_gateway_without_tls_does_not_load_openssl(tmp_path):
    # uvloop still runs the loop (with a stand-in for the names it reads from ssl); MACs still right
    # and the command line's parser did not load shutil (with bz2 and lzma) for argparse
    assert _start(tmp_path, "") == "False False uvloop True False"


def test_a_gateway_with_tls_loads_it(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert _start(tmp_path, f'[mqtt]\ntls_ca = "{ca}"\n') == "True True uvloop True False"


def test_tls_is_needed_by_each_of_its_settings():
    from gateway.runtime import tls

    assert not tls.needed(config.Config())
    for cfg in (config.Config().replace(mqtt={"tls_ca": "ca.pem"}), config.Config().replace(http={"tls_cert": "c"}),
                config.Config().replace(jetstream={"enabled": True})):
        assert tls.needed(cfg)
