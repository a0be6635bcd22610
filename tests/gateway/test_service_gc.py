"""The gateway process's garbage collector settings (gateway/runtime/service.py: collect_less)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_collect_less_freezes_start_up_and_raises_the_young_threshold():
    # in a process of its own: the settings are the whole process's
    code = ("import gc\n"
            "from gateway.runtime.service import GC_YOUNG, collect_less\n"
            "before = gc.get_threshold()\n"
            "collect_less()\n"
            "print(before[0], gc.get_threshold()[0], GC_YOUNG, gc.get_freeze_count() > 1000, gc.isenabled())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    before, after, young, frozen, enabled = out.split()
    assert int(after) == int(young) > int(before)
    assert frozen == "True"  # the modules' objects, at least
    assert enabled == "True"  # cycles are still collected
