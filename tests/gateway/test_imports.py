"""What a default gateway loads: modules only some configurations need stay unloaded.

Each megabyte of RSS counts against the 40 MB budget (docs/performance.md, Memory): node
updates (the release reader, with tempfile, shutil, bz2 and lzma behind it) load only when
`[update] public_key` is set, pyserial only when a serial port is configured.
"""
import subprocess
import sys

from gateway.protocol.coap import UPDATE_PATH, is_update_request
from gateway.protocol.numbers import COAP_OPT_URI_PATH


def test_a_default_gateway_does_not_load_updates_nor_pyserial():
    code = ("import sys, gateway.tools.cli, gateway.runtime.service; "
            "print(sorted(m for m in ('gateway.runtime.updates', 'gateway.decisions.update', "
            "'gateway.tools.release', 'serial', 'serial_asyncio_fast') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_update_requests_are_told_apart_by_their_first_path_segment():
    assert is_update_request({COAP_OPT_URI_PATH: [UPDATE_PATH, b"r1", b"m"]})
    assert not is_update_request({COAP_OPT_URI_PATH: [b"d"]})
    assert not is_update_request({COAP_OPT_URI_PATH: []})
    assert not is_update_request({})
