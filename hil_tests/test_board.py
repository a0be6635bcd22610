"""The board suite: a board flashed through `headrace node flash`, against the real gateway.

By default the board is simulated (the MicroPython unix port on a pty, with a
filesystem of its own: see `bench.SimBoard`); with `--hil-port` it is a real
ESP32 or RP2 (conftest.py). The tests read the node's JSON events from the
board's console, as an installer would, and check at a subscriber what
reached the broker.
"""
from __future__ import annotations

import json
import time

import pytest

from gateway.tools import cli
from gateway.tools.flash import flash

from .rig import Console, GatewayProcess, publish, wait_applied, wait_for

pytestmark = pytest.mark.hil


@pytest.fixture
def flashed(tmp_path, mosquitto, subscriber, bench_board):
    """Provision a node, start a gateway on the wire to the board, flash the board with
    `settings` (node config keys) and return (console, gateway, config); verify included."""
    board, uart, node_port, kind = bench_board
    gw = GatewayProcess(tmp_path, mosquitto.port, {}, serial_ports=[uart])
    registry, config = tmp_path / "nodes.toml", tmp_path / "bench1.json"
    assert cli.main(["node", "provision", "bench1", "--registry", str(registry), "-o", str(config)]) == 0
    gw.start()
    consoles = []

    def run(**settings):
        cfg = json.loads(config.read_text())
        cfg.update(port=node_port, ack_timeout_ms=500, **settings)
        config.write_text(json.dumps(cfg))
        flash(board.port, config=str(config), board=kind, gateway_url=f"http://127.0.0.1:{gw.http_port}",
              timeout=60)
        consoles.append(Console(board.port))
        return consoles[-1], gw, cfg

    yield run
    for c in consoles:
        c.close()
    gw.stop()


def test_a_flashed_board_delivers_every_frame(flashed, subscriber):
    console, gw, cfg = flashed(period_ms=50, batch=8, frames=40, sensors=["temp", "vib"])
    done = wait_for(lambda: console.events("done"), 90, "the node's done event on the console")[-1]
    assert done["unacked"] == 0, done
    # frames left in the board's log from an earlier key (another run on this bench) are dropped
    # as stale at boot; nothing else may be
    boots = console.events("boot")
    assert done["dropped"] == (boots[-1]["stale"] if boots else done["dropped"]), (done, boots)
    sent = {("bench1", e["seq"]): e["r"] for e in console.events("sent")}
    assert len(sent) >= 30, "the console lost most of the node's events"
    frames = wait_for(lambda: f if set(sent) <= set(f := subscriber.frames()) else None, 30,
                      "every frame the console showed, at the broker")
    for key, readings in sent.items():
        assert [(r[0].split("/")[-1], r[2]) for r in readings] == [(c[0], c[2]) for c in frames[key][0]], key
    assert all(len(copies) == 1 for copies in frames.values())


def test_a_flashed_board_applies_commands(flashed, subscriber, mosquitto):
    console, gw, cfg = flashed(period_ms=50, batch=8, frames=0, sensors=["temp", "vib"])
    publish(mosquitto.port, "bench1", {"id": "b-1", "cmd": "set_batch", "args": {"batch": 4}},
            {"id": "b-2", "cmd": "identify", "args": {"seconds": 1}})
    wait_applied(subscriber, ["b-1", "b-2"])
    assert [c["id"] for c in console.events("cmd")] == ["b-1", "b-2"]
    wait_for(lambda: any(len(e["r"]) == 4 for e in console.events("sent")), 20, "4-reading frames")


@pytest.mark.needs("relay")
def test_power_cuts_lose_nothing_and_reuse_no_number(flashed, subscriber, bench_board):
    board = bench_board[0]
    console, gw, cfg = flashed(period_ms=5, batch=8, frames=0, sensors=["temp", "vib"])
    for cut in range(3):
        wait_for(lambda n=len(console.events("ack")): len(console.events("ack")) >= n + 5, 30, "acks")
        time.sleep(0.02 * cut)
        boots = len(console.events("boot"))
        board.power_cycle()
        try:
            wait_for(lambda n=boots: len(console.events("boot")) > n, 30, "the board booting again")
        except TimeoutError:
            print("\n".join(console.lines[-30:]))
            raise
    wait_for(lambda: len(console.events("ack")) > 0 and console.events("boot")[-1] and
             len(console.events("sent")) > 20, 30, "frames after the last cut")
    seqs = [e["seq"] for e in console.events("sent")]
    assert len(seqs) == len(set(seqs)), "a sequence number was reused across a power cut"
    before_last = {("bench1", s) for s in seqs[:-16]}
    frames = wait_for(lambda: f if before_last <= set(f := subscriber.frames()) else None, 30,
                      "every frame sent before the last cuts, at the broker")
    assert all(len(copies) == 1 for copies in frames.values())
