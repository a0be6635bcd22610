"""`headrace node flash` against a simulated board, with the real gateway and mosquitto.

The simulated board is the MicroPython unix port behind a socat pty, as a board's
USB serial port: mpremote enters its raw REPL, copies files, resets it. Its
filesystem is a temp folder mounted as `/` (VfsPosix), with `/dev/ttyUSB0`
a link to a pty pair whose other end is a serial port of the gateway. A small
supervisor starts the interpreter again when it exits, which is what a reset
does: `machine.reset()` (the unix port has no `machine`) ends the process, and
the new one runs `/main.py` as a board does at boot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gateway.tools import cli
from gateway.runtime.registry import Registry

from .rig import GatewayProcess, PtyPair, SimBoard, require, wait_for

pytestmark = pytest.mark.hil

@pytest.fixture
def bench(tmp_path, mosquitto):
    """A gateway with one serial port; a node provisioned in its registry; a simulated board
    whose /dev/ttyUSB0 is wired to that port."""
    pair = PtyPair(tmp_path, "uart")
    gw = GatewayProcess(tmp_path, mosquitto.port, {}, serial_ports=[pair.a])
    registry = tmp_path / "nodes.toml"
    config = tmp_path / "pump7.json"
    assert cli.main(["node", "provision", "pump7", "--registry", str(registry), "-o", str(config)]) == 0
    cfg = json.loads(config.read_text())
    cfg.update(period_ms=100, port="/dev/ttyUSB0", ack_timeout_ms=500)
    config.write_text(json.dumps(cfg))
    gw.start()
    board = SimBoard(tmp_path, uart=pair.b)
    yield {"gw": gw, "board": board, "config": config, "registry": registry, "url": f"http://127.0.0.1:{gw.http_port}"}
    board.stop()
    gw.stop()
    pair.stop()


def flash_cmd(bench, *extra) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "gateway", "node", "flash", "--board", "unix", "--port", bench["board"].port,
            "--config", str(bench["config"]), "--gateway-url", bench["url"], "--timeout", "30", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.long
def test_flash_copies_firmware_and_the_node_reaches_the_gateway(bench, capsys):
    t0 = time.monotonic()
    p = flash_cmd(bench)
    first = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    files = bench["board"].files()
    manifest = json.loads(files["/.headrace-manifest.json"])["files"]
    assert {"/main.py", "/node.json", "/lib/node.mpy", "/lib/cose.mpy", "/lib/board/unix.mpy"} <= set(manifest)
    assert files["/node.json"] == bench["config"].read_bytes()
    assert "[verify] pump7: first authenticated frame" in p.stderr
    assert f"[copy] {len(manifest)} of {len(manifest)} files changed" in p.stderr
    assert bench["gw"].metric('headrace_frames_accepted_total{transport="serial"}') >= 1

    # again, unchanged: nothing copied, the node restarts and is seen again
    t0 = time.monotonic()
    p = flash_cmd(bench)
    again = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert f"[copy] 0 of {len(manifest)} files changed" in p.stderr

    # a changed config: only that file goes over
    cfg = json.loads(bench["config"].read_text())
    cfg["sensors"] = ["temp", "vib"]
    bench["config"].write_text(json.dumps(cfg))
    p = flash_cmd(bench)
    assert p.returncode == 0, p.stderr
    assert f"[copy] 1 of {len(manifest)} files changed (/node.json)" in p.stderr
    assert json.loads(bench["board"].files()["/node.json"])["sensors"] == ["temp", "vib"]
    with capsys.disabled():
        print(f"\n  flash + verify of the simulated board: first {first:.1f} s, unchanged {again:.1f} s")


@pytest.mark.long
def test_rekey_then_reflash(bench):
    assert flash_cmd(bench).returncode == 0
    before = json.loads(bench["config"].read_text())["key"]
    assert cli.main(["node", "rekey", "pump7", "--registry", str(bench["registry"]),
                     "--config", str(bench["config"])]) == 0
    assert json.loads(bench["config"].read_text())["key"] != before
    # the gateway still holds the old key: the re-flashed node is rejected, and the error says why
    p = flash_cmd(bench, "--timeout", "4")
    assert p.returncode == 3, p.stderr
    assert "rejected" in p.stderr and "unauthenticated" in p.stderr and "reload" in p.stderr
    bench["gw"].proc.send_signal(signal.SIGHUP)  # systemctl reload
    wait_for(lambda: "reloaded" in bench["gw"].log(), 10, "the registry reload")
    p = flash_cmd(bench)
    assert p.returncode == 0, p.stderr
    assert Registry.load(bench["registry"]).nodes["pump7"].key.hex() == json.loads(bench["config"].read_text())["key"]


def test_wrong_board_and_busy_port(bench):
    p = flash_cmd(bench, "--board", "esp32")
    assert p.returncode == 1 and "the board on this port is unix, not esp32" in p.stderr, p.stderr
    holder = subprocess.Popen([sys.executable, "-c", "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "print('open', flush=True); time.sleep(60)", bench["board"].port],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        p = flash_cmd(bench)
        assert p.returncode == 1 and "is busy: open in pid" in p.stderr and str(holder.pid) in p.stderr, p.stderr
    finally:
        holder.kill()
        holder.wait()
    assert bench["board"].files() == {}  # nothing was written


def test_no_repl_on_the_port(tmp_path, mosquitto):
    """A pty with nothing behind it, and one behind which something prints garbage."""
    gw = GatewayProcess(tmp_path, mosquitto.port, {}).start()
    config = tmp_path / "n1.json"
    assert cli.main(["node", "provision", "n1", "--registry", str(tmp_path / "nodes.toml"), "-o", str(config)]) == 0
    pair = PtyPair(tmp_path, "empty")
    noisy = tmp_path / "noisy"
    (tmp_path / "noise.sh").write_text("while true; do echo 'AT+OK garbage'; sleep 0.05; done\n")
    garbage = subprocess.Popen([require("socat", "socat"), f"PTY,link={noisy},raw,echo=0",
                                f"EXEC:sh {tmp_path / 'noise.sh'}"], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(noisy), 10, "the noisy pty")
        for port, expect in ((pair.b, "no MicroPython REPL answered"), (str(noisy), "answered, but not as a MicroPython REPL")):
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "gateway", "node", "flash", "--board", "unix", "--port", port,
                                "--config", str(config), "--gateway-url", f"http://127.0.0.1:{gw.http_port}",
                                "--timeout", "2"], capture_output=True, text=True, timeout=60)
            assert p.returncode == 1 and expect in p.stderr, p.stderr
            assert time.monotonic() - t0 < 15
        assert "garbage" in p.stderr
    finally:
        garbage.terminate()
        garbage.wait(5)
        pair.stop()
        gw.stop()


def test_no_gateway_and_no_port(tmp_path):
    config = tmp_path / "n1.json"
    assert cli.main(["node", "provision", "n1", "--registry", str(tmp_path / "nodes.toml"), "-o", str(config)]) == 0
    base = [sys.executable, "-m", "gateway", "node", "flash", "--board", "unix", "--config", str(config)]
    p = subprocess.run(base + ["--port", str(tmp_path / "nothing"), "--gateway-url", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "[gateway]" not in p.stderr and "does not answer" in p.stderr, p.stderr
    p = subprocess.run(base + ["--port", str(tmp_path / "nothing"), "--no-verify"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "nothing does not exist" in p.stderr, p.stderr
