"""The systemd unit and the sample config that ship in packaging/."""
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install the Debian package systemd (./run.sh test does)"
    text = (PACKAGING / "headrace-gateway.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
    # verify checks that ExecStart is executable: point it at this environment's command
    headrace = Path(sys.executable).parent / "headrace"
    unit = tmp_path / "headrace-gateway.service"
    unit.write_text(text.replace("/opt/headrace/venv/bin/headrace", str(headrace if headrace.exists() else sys.executable)))
    p = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [l for l in p.stderr.splitlines() if str(unit.name) in l or "Failed" in l]
    assert p.returncode == 0 and not problems, p.stderr


def test_sample_config_checks_clean(tmp_path):
    from gateway import cli
    reg = tmp_path / "nodes.toml"
    reg.write_text("")
    text = (PACKAGING / "gateway.toml").read_text().replace("/etc/headrace/nodes.toml", str(reg))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(text)
    assert cli.main(["gateway", "check-config", "--config", str(cfg)]) == 0
