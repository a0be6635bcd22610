"""The firmware frozen into MicroPython v1.28.0 (firmware/build/frozen.py): the unix port at 64
and 32 bits, run as a node against an acking peer on a pty. Skipped, with the reason, where
no MicroPython source is at hand (MICROPY_DIR, or ../shared/micropython/ beside the clone)."""
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "firmware" / "build"))
import frozen  # noqa: E402

sys.path.insert(0, str(ROOT))
from bench.firmware import run_node  # noqa: E402

# heaps these runs fit in with room to spare (bench/firmware.py measures the smallest)
HEAPS = {"unix64": "56k", "unix32": "32k"}


@pytest.fixture(scope="module", params=sorted(HEAPS))
def image(request):
    why = frozen.missing_reason(request.param)
    if why:
        pytest.skip(why)
    return request.param, frozen.build(request.param)


def test_the_image_holds_the_firmware_frozen(image):
    target, path = image
    # with nothing but the frozen modules on the path, the firmware and asyncio import
    # (and hmac256's viper functions, frozen as native code, import: cose uses them)
    code = ("import sys; sys.path[:] = ['.frozen']; import main, senml, board, sensors.sim, asyncio, cose; "
            "print(board.NAME, sys.maxsize > 2**32, cose.hmac256 is not None)")
    p = subprocess.run([str(path), "-c", code], capture_output=True, text=True, timeout=30, cwd="/")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["unix", "True" if target == "unix64" else "False", "True"], p.stdout


def test_a_frozen_node_sends_in_a_small_heap_that_stays_flat(image, tmp_path):
    target, path = image
    d = run_node([str(path), "-X", f"heapsize={HEAPS[target]}"], 400, tmp_path)
    assert "failed" not in d, d
    assert d["sent"] == d["acked"] == 400 and d["dropped"] == 0, json.dumps(d)
    h = d["heap"]
    assert h["windows"] >= 2 and h["live_end"] <= h["live_100"] + 256, h  # flat from frame 100 on
    # a frame allocates nothing; rare work (the sequence mark, the log's compaction) does when
    # it falls in a measured frame: bounded
    assert h["alloc_min"] == 0 and h["alloc_max"] <= 1024, h


def test_an_image_is_built_once_for_its_inputs(image):
    target, path = image
    again = frozen.build(target)
    assert again == path and again.stat().st_mtime == path.stat().st_mtime
