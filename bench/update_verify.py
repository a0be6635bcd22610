"""Node updates: the node's release signature check (firmware/ed25519.py on firmware/sha512.py),
its time and the heap it needs, on the MicroPython unix port and optionally the QEMU Cortex-M3.

    python bench/update_verify.py [--runs 20] [--qemu-elf build-MPS2_AN385/firmware.elf]

Unix port: the two modules compiled by mpy-cross and loaded as .mpy; a real release manifest
(the firmware's own, signed by a fresh key through gateway/tools/release.py) verified `--runs`
times, side by side with a baseline in the same process: native hashlib.sha256 over every
part of the release (what the node does anyway for the parts), so the ratio holds on a
shared, noisy machine. Heap: the least free heap a verify needs, found by filling the heap
with ballast in small blocks (fragmented, as on a node) and halving the gap.

QEMU (optional): an MPS2-AN385 image with ed25519.py, sha512.py and bench/update_verify_mp.py
frozen (MicroPython v1.28.0, `make -C ports/qemu BOARD=MPS2_AN385 MICROPY_HEAP_SIZE=24576
FROZEN_MANIFEST=<manifest freezing those three>`), run with `-icount shift=0`, so its
milliseconds are millions of instructions.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.tools import release  # noqa: E402
from gateway.tools.flash import tool  # noqa: E402
from gateway.tools.sim.nodes import micropython_command  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--heap", default="1m")
    ap.add_argument("--qemu-elf", default=None)
    args = ap.parse_args()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    mp, mpy_cross = micropython_command(), tool("mpy-cross")
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        parts = release.compile_firmware(ROOT / "firmware", out / "build", mpy_cross)
        sign1, bodies = release.split(release.make(key, (1, 0, 0), "mpy6", parts))
        protected, _, payload, signature = __import__("cbor2").loads(sign1).value
        (out / "case.json").write_text(json.dumps({
            "pub": release.public_bytes(key).hex(), "msg": release.sig_structure(protected, payload).hex(),
            "sig": signature.hex(), "parts": [b.hex() for b in bodies]}))
        for name in ("ed25519", "sha512"):
            subprocess.run([mpy_cross, "-o", str(out / f"{name}.mpy"), str(ROOT / "firmware" / f"{name}.py")],
                           check=True)
        shutil.copy(ROOT / "bench" / "update_verify_mp.py", out / "update_verify_mp.py")
        p = subprocess.run([mp, "-X", f"heapsize={args.heap}", str(out / "update_verify_mp.py"), str(out),
                            str(args.runs)], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            print(p.stdout + p.stderr)
            return 1
        r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"release of the firmware: {len(parts)} parts, {sum(len(b) for b in parts.values())} bytes, "
          f"Sig_structure {r['msg_len']} bytes")
    print(f"unix port, .mpy in a {args.heap} heap, {args.runs} runs (machine shared: ratios, not absolutes):")
    print(f"  verify (Ed25519 + SHA-512 in Python): median {r['verify_ms']:.1f} ms")
    print(f"  baseline, native SHA-256 of every part: median {r['hash_ms']:.2f} ms  -> verify = "
          f"{r['verify_ms'] / max(r['hash_ms'], 0.01):.0f}x the baseline")
    print(f"  heap: modules {r['modules']} B after import; a verify needs {r['need']} B free "
          f"({r['need_fail']} B fails)")
    if args.qemu_elf:
        run_qemu(args.qemu_elf)
    return 0


def run_qemu(elf: str) -> None:
    script = ("import update_verify_mp as b\r", "b.qemu()\r")
    t0 = time.monotonic()
    p = subprocess.Popen(["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                          "-semihosting", "-icount", "shift=0", "-kernel", elf],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1)
    for line in script:
        p.stdin.write(line.encode())
        p.stdin.flush()
        time.sleep(0.5)
    lines = []
    while time.monotonic() - t0 < 120:
        line = p.stdout.readline().decode(errors="replace")
        lines.append(line)
        if line.startswith("QEMU "):
            print("qemu Cortex-M3 (frozen, -icount shift=0: ms = million instructions):", line[5:].strip())
        if "QEMU-DONE" in line:
            break
    p.kill()
    p.wait()


if __name__ == "__main__":
    sys.exit(main())
