import json
import subprocess
import sys

from gateway.tools import cli
import cbor2

from gateway.runtime.uplink import batch


def sample_batch() -> bytes:
    f = batch.frame_body("pump1", 3, 1700000001.0, cbor2.dumps([{-2: "pump1/", -3: 1700000000.5, 0: "temp", 2: 21.25},
                                                              {0: "vib", 2: 0.5}]))
    w = batch.window_body("pump1/temp", 10.0, 1700000000.0, 2, 21.0, 21.5, 42.5, 903.25, 21.0, 21.5, 21.3, 0)
    return batch.encode("gw1", "site1", [f], [w])


def test_decode_file_prints_json_lines(tmp_path, capsys):
    p = tmp_path / "payload.cbor"
    p.write_bytes(sample_batch())
    assert cli.main(["decode", str(p)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"gw": "gw1", "node": "pump1", "seq": 3, "sensor": "temp", "t": 1700000000.5, "v": 21.25}
    assert lines[1]["sensor"] == "vib"
    assert lines[2]["window"] == {"start": 1700000000.0, "width": 10.0} and lines[2]["mean"] == 21.25


def test_decode_stdin_and_bad_input():
    p = subprocess.run([sys.executable, "-m", "gateway", "decode", "-"], input=sample_batch(), capture_output=True)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 3
    p = subprocess.run([sys.executable, "-m", "gateway", "decode", "-"], input=b"\xff\x00", capture_output=True)
    assert p.returncode == 1 and b"not CBOR" in p.stderr
    damaged = cbor2.loads(sample_batch())
    damaged["frames"] = [b"junk", b"junk"]
    p = subprocess.run([sys.executable, "-m", "gateway", "decode", "-"], input=cbor2.dumps(damaged),
                       capture_output=True)
    assert p.returncode == 1 and b"inconsistent batch" in p.stderr and b"Traceback" not in p.stderr


def test_check_config_reports_key_and_fix(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[mqtt]\nport = "x"\n')
    assert cli.main(["gateway", "check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "[mqtt] port" in err and "fix:" in err


def test_provision_writes_registry_and_node_config(tmp_path):
    reg = tmp_path / "nodes.toml"
    out = tmp_path / "n.json"
    assert cli.main(["node", "provision", "pump9", "--registry", str(reg), "--transport", "coap",
                     "--sensors", "temp,vib", "-o", str(out)]) == 0
    cfg = json.loads(out.read_text())
    from gateway.runtime.registry import Registry
    node = Registry.load(reg).nodes["pump9"]
    assert node.key.hex() == cfg["key"] and cfg["sensors"] == ["temp", "vib"]
    assert (reg.stat().st_mode & 0o777) == 0o600
    assert cli.main(["node", "provision", "pump9", "--registry", str(reg)]) == 1


def test_check_config_reports_every_error(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[gateway]\nid = "Bad Name"\n[mqtt]\nport = "x"\nkeepalive = 1\n[coap]\nprot = 5683\n')
    assert cli.main(["gateway", "check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    for key in ("[gateway] id", "[mqtt] port", "[mqtt] keepalive", "[coap] prot"):
        assert f"  {key}: " in err
    assert err.count("fix:") == 4 and "4 errors" in err
