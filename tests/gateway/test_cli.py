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
    assert (reg.stat().st_mode & 0o777) == 0o600 and (out.stat().st_mode & 0o777) == 0o600  # both hold the key
    assert cli.main(["node", "provision", "pump9", "--registry", str(reg)]) == 1


def test_a_full_disk_is_one_line_naming_the_file_and_changes_nothing(tmp_path, capsys):
    """The registry's temporary file is /dev/full: the kernel's ENOSPC, said in one line, no
    traceback; the registry is as it was and the node's config not written."""
    import os

    import pytest
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    reg = tmp_path / "nodes.toml"
    assert cli.main(["node", "provision", "pump1", "--registry", str(reg), "-o", str(tmp_path / "p1.json")]) == 0
    before = reg.read_bytes()
    capsys.readouterr()
    (tmp_path / "nodes.toml.tmp").symlink_to("/dev/full")
    assert cli.main(["node", "provision", "pump2", "--registry", str(reg), "-o", str(tmp_path / "p2.json")]) == 1
    err = capsys.readouterr().err
    assert err == f"headrace: {reg}: No space left on device\n"
    assert reg.read_bytes() == before and not (tmp_path / "p2.json").exists()


def test_a_node_key_goes_to_both_files_or_neither(tmp_path, capsys):
    """The node's config cannot be written (its temporary is /dev/full): the registry does not
    take a key nobody holds. `node rekey` with no room for the registry keeps the old key in both."""
    import os

    import pytest
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    reg, p1 = tmp_path / "nodes.toml", tmp_path / "p1.json"
    assert cli.main(["node", "provision", "pump1", "--registry", str(reg), "-o", str(p1)]) == 0
    before, config = reg.read_bytes(), p1.read_bytes()
    capsys.readouterr()
    (tmp_path / "p2.json.tmp").symlink_to("/dev/full")
    assert cli.main(["node", "provision", "pump2", "--registry", str(reg), "-o", str(tmp_path / "p2.json")]) == 1
    assert capsys.readouterr().err == f"headrace: {tmp_path / 'p2.json'}: No space left on device\n"
    assert reg.read_bytes() == before and not (tmp_path / "p2.json").exists()
    (tmp_path / "nodes.toml.tmp").symlink_to("/dev/full")
    assert cli.main(["node", "rekey", "pump1", "--registry", str(reg), "--config", str(p1)]) == 1
    assert capsys.readouterr().err == f"headrace: {reg}: No space left on device\n"
    assert reg.read_bytes() == before and p1.read_bytes() == config
    os.unlink(tmp_path / "nodes.toml.tmp")  # room again
    assert cli.main(["node", "rekey", "pump1", "--registry", str(reg), "--config", str(p1)]) == 0
    from gateway.runtime.registry import Registry
    key = json.loads(p1.read_text())["key"]
    assert key != json.loads(config)["key"] and Registry.load(reg).nodes["pump1"].key.hex() == key


def test_check_config_reports_every_error(tmp_path, capsys):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[gateway]\nid = "Bad Name"\n[mqtt]\nport = "x"\nkeepalive = 1\n[coap]\nprot = 5683\n')
    assert cli.main(["gateway", "check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    for key in ("[gateway] id", "[mqtt] port", "[mqtt] keepalive", "[coap] prot"):
        assert f"  {key}: " in err
    assert err.count("fix:") == 4 and "4 errors" in err


def _decode(payload: bytes, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "decode", *extra, "-"], input=payload, capture_output=True)


def test_decode_reads_every_topic_kind():
    from gateway.runtime.uplink import events
    ev = events.encode("gw1", "site1", [events.event_body({"type": "alarm", "t": 1700000000.0, "rule": "r1"})])
    p = _decode(ev, "--kind")
    assert p.returncode == 0 and p.stderr.strip() == b"events"
    assert json.loads(p.stdout) == {"gw": "gw1", "type": "alarm", "t": 1700000000.0, "rule": "r1"}
    state = json.dumps({"online": True, "spool": {"frame": 3}}).encode()
    p = _decode(state, "--kind")
    assert p.returncode == 0 and p.stderr.strip() == b"state"
    assert json.loads(p.stdout) == {"state": {"online": True, "spool": {"frame": 3}}}
    p = _decode(sample_batch(), "--kind")
    assert p.returncode == 0 and p.stderr.strip() == b"data"
    p = _decode(b'{"online": tru')
    assert p.returncode == 1 and b"not JSON" in p.stderr and b"Traceback" not in p.stderr
    p = _decode(cbor2.dumps([1, 2]))
    assert p.returncode == 1 and b"data, events, schema and state" in p.stderr


def test_decode_into_a_closed_pipe_ends_quietly(tmp_path):
    many = batch.encode("gw1", "site1", [batch.frame_body("pump1", s, 1700000001.0 + s, cbor2.dumps(
        [{-2: "pump1/", -3: 1700000000.5 + s, 0: "temp", 2: 21.25}] + [{0: "vib", 6: k, 2: 0.5} for k in range(60)]))
        for s in range(200)], [])
    f = tmp_path / "big.cbor"
    f.write_bytes(many)
    p = subprocess.run(f"{sys.executable} -m gateway decode {f} | head -n 1", shell=True, capture_output=True)
    assert len(p.stdout.splitlines()) == 1
    assert p.stderr == b"", p.stderr.decode()
