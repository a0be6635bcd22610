"""`pytest hil_tests --hil-port …` as on a real bench, with a simulated board standing in.

The board suite runs in a pytest of its own against a SimBoard given by its
console port, the gateway side of its UART and a "relay" command that cuts
its power, exactly as a bench with an ESP32 or an RP2 would give them. Without
the relay, the test that needs one is skipped, with the reason.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from .rig import REPO, PtyPair, SimBoard

pytestmark = pytest.mark.hil

RELAY = """\
import os, signal, sys
pidfile, state = sys.argv[1], sys.argv[2]
if state == "off":
    sup = int(open(pidfile).read())
    for pid in open(f"/proc/{sup}/task/{sup}/children").read().split():
        os.kill(int(pid), signal.SIGKILL)
"""


def run_suite(tmp_path, board, pair, *extra) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pytest", "hil_tests/test_board.py", "-q", "-rs", "-p", "no:cacheprovider",
            "--hil-port", board.port, "--board", "unix", "--hil-uart", pair.a, "--hil-node-port", "/dev/ttyUSB0",
            "--basetemp", str(tmp_path / "inner"), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.long
def test_the_board_suite_runs_against_a_board_given_by_its_ports(tmp_path):
    pair = PtyPair(tmp_path, "uart")
    board = SimBoard(tmp_path, uart=pair.b)
    try:
        (tmp_path / "relay.py").write_text(RELAY)
        relay = f"{sys.executable} {tmp_path / 'relay.py'} {board._pidfile} %s"
        p = run_suite(tmp_path, board, pair, "--hil-relay", relay)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        assert "3 passed" in p.stdout, p.stdout[-2000:]
        # the same bench without a relay: the power-cut test says why it cannot run
        p = run_suite(tmp_path, board, pair)
        assert p.returncode == 0, p.stdout[-3000:]
        assert "2 passed, 1 skipped" in p.stdout and "the bench has no relay wired" in p.stdout, p.stdout[-2000:]
    finally:
        board.stop()
        pair.stop()
