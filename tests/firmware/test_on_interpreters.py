import subprocess

import pytest

from .conftest import ROOT

SCRIPTS = ["t_cbor", "t_framing", "t_golden", "t_outbox", "t_config", "t_board", "t_mcu", "t_sim", "t_adc",
           "t_ds18b20", "t_bme280", "t_adxl345"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script(interpreter, script, tmp_path):
    p = subprocess.run(interpreter + [str(ROOT / "tests" / "firmware" / "mp" / f"{script}.py"), str(ROOT),
                                      str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith(f"OK {script}"), p.stdout
