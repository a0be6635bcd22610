import subprocess

import pytest

from .conftest import ROOT, SHARED

SCRIPTS = ["t_cbor", "t_framing", "t_golden", "t_outbox"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script(interpreter, script, tmp_path):
    p = subprocess.run(interpreter + [str(ROOT / "tests" / "firmware" / "mp" / f"{script}.py"), str(ROOT),
                                      str(tmp_path), str(SHARED)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith(f"OK {script}"), p.stdout
