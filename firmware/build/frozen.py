"""Frozen firmware images: the node firmware and asyncio frozen into MicroPython v1.28.0.

Configuration:
    MICROPY_DIR       a MicroPython source tree (a clone of tag v1.28.0); else the tarball
                      ../shared/micropython/micropython-1.28.0-src.tar.gz beside the
                      repository is unpacked into the cache
    HEADRACE_FIRMWARE_CACHE   where sources and images are kept (default ~/.cache/headrace)

Usage:
    python firmware/build/frozen.py unix64 [unix32 qemu-m3 ...] [--heap BYTES]
                                                          build (or find cached) images, print their paths
    python firmware/build/frozen.py --list                 the targets

Targets: unix64 (the unix port, 64-bit), unix32 (the unix port, MICROPY_FORCE_32BIT=1: the
heap and ints of a 32-bit MCU; needs gcc-multilib), qemu-m3 (the qemu port's MPS2_AN385
board, a Cortex-M3 under `qemu-system-arm -machine mps2-an385`, with the board folder
firmware/build/qemu-m3/: asyncio on, LittleFS, a boot that mounts the filesystem and runs
/main.py, and board/qemu.py's semihosting helper; needs gcc-arm-none-eabi,
libnewlib-arm-none-eabi and qemu-system-arm; its heap is fixed at build time:
`--heap BYTES`, default 64 KiB). An image is cached under a hash of its inputs (the
firmware's sources and board files, the MicroPython source, the target and heap), so an
unchanged image is never rebuilt and a changed one is.

Caveats: ESP32 and RP2 images need their own toolchains (ESP-IDF, pico-sdk): see
docs/firmware.md for the commands with the same manifest. make runs no git: the unix
port is built without its submodule features (btree, ssl, ffi).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent
REPO = FIRMWARE.parent
VERSION = "1.28.0"
TARBALL = REPO.parent / "shared" / "micropython" / f"micropython-{VERSION}-src.tar.gz"

UNIX = ["VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0", "MICROPY_PY_FFI=0"]
BOARD_QEMU = HERE / "qemu-m3"  # the Cortex-M3 bench board: make's BOARD_DIR, boot hook, own modules
QEMU = ["BOARD=MPS2_AN385", f"BOARD_DIR={BOARD_QEMU}"]
TARGETS = {
    # -march: hmac256.py's viper functions are frozen as native code (the qemu board's own
    # mpconfigboard.mk sets armv7m)
    # GC blocks of 16 bytes (two words; MicroPython's default is four, 32 bytes on 64-bit): no
    # object rounded up to 32 bytes, about 1.8 KB less of live heap for a node (docs/firmware.md)
    "unix64": ("ports/unix", UNIX + ["MPY_CROSS_FLAGS=-march=x64", "CFLAGS_EXTRA=-DMICROPY_BYTES_PER_GC_BLOCK=16"],
               "micropython"),
    "unix32": ("ports/unix", UNIX + ["MICROPY_FORCE_32BIT=1", "MPY_CROSS_FLAGS=-march=x86"], "micropython"),
    "qemu-m3": ("ports/qemu", QEMU, "firmware.elf"),
}
QEMU_HEAP = 65536  # the qemu image's heap unless asked (bytes): its heap is fixed at build time


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("HEADRACE_FIRMWARE_CACHE") or Path.home() / ".cache" / "headrace")


def source() -> Path | None:
    """The MicroPython source tree: MICROPY_DIR, else the shared tarball unpacked (once) into
    the cache; None when neither is there."""
    if os.environ.get("MICROPY_DIR"):
        path = Path(os.environ["MICROPY_DIR"]).resolve()
        if not (path / "py" / "mpconfig.h").exists():
            raise BuildError(f"MICROPY_DIR={path} is not a MicroPython source tree (no py/mpconfig.h)")
        return path
    if not TARBALL.exists():
        return None
    digest = hashlib.sha256(TARBALL.read_bytes()).hexdigest()[:16]
    dest = cache_dir() / f"micropython-{VERSION}-{digest}"
    if not (dest / ".unpacked").exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with tarfile.open(TARBALL) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / f"micropython-{VERSION}" / ".unpacked").touch()
        try:
            os.rename(tmp / f"micropython-{VERSION}", dest)
        except OSError:  # another build unpacked it meanwhile
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def missing_reason(target: str = "unix64") -> str | None:
    """Why no image of `target` can be built here (for a test's skip), or None."""
    try:
        src = source()
    except BuildError as e:
        return str(e)
    if src is None:
        return (f"no MicroPython source: set MICROPY_DIR to a clone of tag v{VERSION} "
                f"(or put {TARBALL.name} in ../shared/micropython/)")
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    if target == "qemu-m3":
        for tool, pkg in (("arm-none-eabi-gcc", "gcc-arm-none-eabi"), ("qemu-system-arm", "qemu-system-arm")):
            if shutil.which(tool) is None:
                return f"`{tool}` not found: apt-get install {pkg} libnewlib-arm-none-eabi (./run.sh test does)"
    if target == "unix32":  # gcc-multilib: a 32-bit program links
        probe = cache_dir() / "probe32"
        probe.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", str(probe)], input="int main(void){return 0;}",
                           capture_output=True, text=True)
        if p.returncode != 0:
            return "gcc cannot build 32-bit programs here: apt-get install gcc-multilib"
    return None


def _inputs(target: str, src: Path) -> str:
    h = hashlib.sha256()
    h.update(target.encode())
    for path in sorted(p for p in FIRMWARE.rglob("*") if p.suffix in (".py", ".h", ".mk")):
        if "__pycache__" not in path.parts:
            h.update(str(path.relative_to(FIRMWARE)).encode())
            h.update(path.read_bytes())
    h.update(str(src).encode())
    stamp = src / ".unpacked"
    h.update(stamp.read_bytes() if stamp.exists() else (src / "py" / "mpconfig.h").read_bytes())
    return h.hexdigest()[:20]


def build(target: str, jobs: int = 2, log=sys.stderr, heap: int | None = None) -> Path:
    """The image of `target` (built now, or cached); BuildError when the build fails.
    heap: the qemu-m3 image's heap in bytes (default QEMU_HEAP), fixed at build time; the
    unix images take theirs at run time (-X heapsize=)."""
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    src = source()
    if src is None:
        raise BuildError(missing_reason() or "no MicroPython source")
    port, flags, product = TARGETS[target]
    name = target
    if target == "qemu-m3":
        heap = heap or QEMU_HEAP
        name = f"{target}-heap{heap}"
        flags = flags + [f"MICROPY_HEAP_SIZE={heap}"]
    out = cache_dir() / "images" / f"{name}-{_inputs(name + ' ' + ' '.join(flags), src)}"
    image = out / product
    if image.exists():
        return image
    # make's build folder: unchanged objects are reused (one per heap: make does not track flags;
    # and one per firmware folder: make goes by mtimes, so a folder shared by two work trees kept
    # the other tree's newer-stamped frozen modules in an image cached under this tree's hash;
    # and one per set of flags: objects compiled with others are not reused)
    work = cache_dir() / "work" / f"{name}-{hashlib.sha256((str(FIRMWARE) + ' '.join(flags)).encode()).hexdigest()[:8]}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "mpy-lib").mkdir(exist_ok=True)
    (work / "mpy-lib" / "README.md").write_text("nothing of micropython-lib is frozen\n")
    manifest = work / "manifest.py"
    text = f'include("$(MPY_DIR)/extmod/asyncio")\ninclude({str(FIRMWARE / "manifest.py")!r})\n'
    if target == "qemu-m3":
        text += f"include({str(BOARD_QEMU / 'manifest.py')!r})\n"
    manifest.write_text(text)
    env = dict(os.environ, MAKEFLAGS="")
    cmds = [["make", "-C", str(src / "mpy-cross"), f"-j{jobs}", f"BUILD={cache_dir() / 'work' / 'mpy-cross'}"],
            ["make", "-C", str(src / port), f"-j{jobs}", *flags, f"BUILD={work / 'build'}",
             f"FROZEN_MANIFEST={manifest}", f"MPY_LIB_DIR={work / 'mpy-lib'}",
             f"MICROPY_MPYCROSS={cache_dir() / 'work' / 'mpy-cross' / 'mpy-cross'}"]]
    for cmd in cmds:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    built = work / "build" / product
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{product}.{os.getpid()}"
    shutil.copy2(built, tmp)
    os.replace(tmp, image)
    print(f"built {target}: {image}", file=log)
    return image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--heap", type=int, default=None, help="the qemu-m3 image's heap, bytes (default 65536)")
    args = ap.parse_args(argv)
    if args.list or not args.targets:
        print("\n".join(TARGETS))
        return 0
    try:
        for t in args.targets:
            print(build(t, args.jobs, heap=args.heap))
    except BuildError as e:
        print(f"build failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
