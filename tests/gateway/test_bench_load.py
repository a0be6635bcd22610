"""bench/peer_load.py's nodes check their packs against the firmware's own encoder before a run.

In a fresh interpreter, as the load generator runs: the firmware's `senml` loads
`encode_pack` from senml_whole.py at its first use, so the firmware's folder must
still be on the path then, and off it afterwards.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import sys, time
from pathlib import Path
from bench.peer_load import check_against_firmware, load_named
before = list(sys.path)
check_against_firmware(load_named("thingsboard", Path("unused")), time.time())
assert sys.path == before, "the firmware's folder was left on the path"
print("same bytes")
"""


def test_the_load_generators_packs_are_the_firmwares_bytes():
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "same bytes"
