"""The systemd unit and the sample config that ship in gateway/data/."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "gateway" / "data"


@pytest.mark.parametrize("name, wants", [
    ("headrace-gateway.service", ("Type=notify", "WatchdogSec=", "Restart=on-failure", " gateway run --config ")),
    ("headrace-fleet.service", ("Restart=on-failure", " fleet check-config --config ", " fleet run --config ")),
])
def test_unit_passes_systemd_analyze_verify(tmp_path, name, wants):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install the Debian package systemd (./run.sh test does)"
    text = (PACKAGING / name).read_text()
    assert all(w in text for w in wants), [w for w in wants if w not in text]
    # verify checks that ExecStart is executable: point it at this environment's command
    headrace = Path(sys.executable).parent / "headrace"
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/headrace/venv/bin/headrace", str(headrace if headrace.exists() else sys.executable)))
    p = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [l for l in p.stderr.splitlines() if str(unit.name) in l or "Failed" in l]
    assert p.returncode == 0 and not problems, p.stderr


def test_sample_config_checks_clean(tmp_path):
    from gateway.tools import cli
    reg = tmp_path / "nodes.toml"
    reg.write_text("")
    text = (PACKAGING / "gateway.toml").read_text().replace("/etc/headrace/nodes.toml", str(reg))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(text)
    assert cli.main(["gateway", "check-config", "--config", str(cfg)]) == 0


def test_install_service_into_a_staging_root(tmp_path, capsys):
    from gateway.tools import cli
    exe = tmp_path / "bin" / "headrace"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    root = tmp_path / "root"
    assert cli.main(["gateway", "install-service", "--root", str(root), "--executable", str(exe),
                     "--user", "hr", "--watchdog", "20"]) == 0
    unit = (root / "etc/systemd/system/headrace-gateway.service").read_text()
    assert f"ExecStart={exe} gateway run" in unit and "User=hr" in unit and "WatchdogSec=20" in unit
    assert (root / "usr/lib/sysusers.d/headrace.conf").read_text() == \
        'u hr - "headrace gateway" /var/lib/headrace\nm hr dialout\n'
    assert ((root / "etc/headrace/nodes.toml").stat().st_mode & 0o777) == 0o600
    p = subprocess.run([shutil.which("systemd-analyze"), "verify", str(root / "etc/systemd/system/headrace-gateway.service")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # a second run keeps the operator's edits
    (root / "etc/headrace/gateway.toml").write_text("[gateway]\nid = \"edited\"\n")
    assert cli.main(["gateway", "install-service", "--root", str(root), "--executable", str(exe)]) == 0
    assert "edited" in (root / "etc/headrace/gateway.toml").read_text()
    assert "kept" in capsys.readouterr().out


def test_install_service_errors_are_clear(tmp_path, capsys):
    from gateway.tools import cli
    assert cli.main(["gateway", "install-service", "--root", str(tmp_path), "--executable", "/nope/headrace"]) == 1
    assert "cannot find the headrace command" in capsys.readouterr().err
