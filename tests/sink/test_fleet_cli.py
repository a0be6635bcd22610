"""`headrace fleet run | check-config`: the fleet dispatcher's command line and its configuration errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tools import cli
from sink import fleet_service

REPO = Path(__file__).resolve().parents[2]
SITE = """
links = [["line1:pumps", "line2:hall", 45.0]]
[gateways.line1]
points = { workshop = [2, 2], pumps = [20, 12] }
edges = [["workshop", "pumps"]]
[gateways.line2]
points = { hall = [60, 2], press = [70, 12] }
edges = [["hall", "press"]]
"""


def write(tmp_path, text: str, site: str | None = SITE) -> Path:
    if site is not None:
        (tmp_path / "site.toml").write_text(site)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(text.replace("SITE_MAP", str(tmp_path / "site.toml")))
    return cfg


def test_check_config_says_what_a_good_file_sets_up(tmp_path, capsys):
    cfg = write(tmp_path, 'site = "plant"\nsite_map = "SITE_MAP"\ntick = 1\n[mqtt]\nhost = "broker"\nport = 1884\n')
    assert cli.main(["fleet", "check-config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "OK: site plant, site map" in out and "2 gateways, 4 points" in out and "MQTT broker:1884" in out
    loaded = fleet_service.load(cfg)
    assert loaded["tick"] == 1.0 and loaded["site_map_parsed"].gateways == ("line1", "line2")


def test_every_mistake_is_reported_at_once_with_its_key_and_fix(tmp_path, capsys):
    cfg = write(tmp_path, 'site = "Plant 1"\ntick = 0\nask_timeout = "soon"\nsite_map = "SITE_MAP"\ncolour = 1\n'
                          '[mqtt]\nport = 99999\n',
                site=SITE.replace('"line2:hall"', '"line9:hall"'))
    assert cli.main(["fleet", "check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("headrace fleet: 6 errors:")
    for want in ("colour: unknown key (fix: valid keys: site, site_map",
                 "tick: must be a number of seconds > 0, got 0.0 (fix: write tick = 0.25",
                 "ask_timeout: must be a number of seconds > 0, got 'soon'",
                 "[mqtt] port: must be a TCP port 1-65535, got 99999 (fix: write port = 1883)",
                 "site: 'Plant 1' is not a site name",
                 f"site_map {tmp_path / 'site.toml'}: links[0]: 'line9:hall' is not a point of the site map "
                 "(fix: name points <gateway>:<point>"):
        assert want in err, (want, err)


@pytest.mark.parametrize("text, want", [
    ("", "site: missing (fix: write site = \"plant\""),
    ('site = "plant"\nsite_map = "/nonexistent/site.toml"\n',
     "site_map: /nonexistent/site.toml: cannot read: No such file or directory"),
    ('site = "plant"\n[mqtt]\nhots = "x"\n', "[mqtt] hots: unknown key (fix: valid keys: host, port, client_id)"),
    ('site = "plant"\nmqtt = 3\n', "mqtt: must be a table, got 3"),
    ("site = \n", "not valid TOML"),
])
def test_one_mistake(tmp_path, capsys, text, want):
    cfg = write(tmp_path, text, site=None)
    assert cli.main(["fleet", "run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("headrace fleet: ") and want in err, err


def test_a_missing_file_is_named():
    p = subprocess.run([sys.executable, "-m", "gateway", "fleet", "run", "--config", "/nonexistent/fleet.toml"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 2 and "headrace fleet: /nonexistent/fleet.toml: cannot read" in p.stderr, p.stderr


def test_a_database_that_cannot_be_read_is_named_and_waited_for(tmp_path, caplog):
    cfg = fleet_service.from_dict({"site": "plant", "database": str(tmp_path / "missing" / "cloud.sqlite")})
    service = fleet_service.FleetService(cfg)
    with caplog.at_level("WARNING", logger="headrace.fleet"):
        assert service.rebuild() is False
    assert f"cannot read the sink's database {tmp_path / 'missing' / 'cloud.sqlite'}" in caplog.text
    assert "retrying in 5 s" in caplog.text
    (tmp_path / "missing").mkdir()  # there now (empty: the sink has stored nothing yet)
    assert service.rebuild() is True and not service.mirror.resources
