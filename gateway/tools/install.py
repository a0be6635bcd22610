"""`headrace gateway install-service`: the gateway as a systemd service, in one step.

Writes, under `root` (default `/`):
  etc/systemd/system/headrace-gateway.service   the unit (Type=notify, WatchdogSec, Restart=on-failure),
                                                ExecStart pointing at this installation's `headrace`
  etc/headrace/gateway.toml                      the commented sample, only if absent (never overwritten)
  etc/headrace/nodes.toml                        an empty registry, only if absent, mode 0600
  usr/lib/sysusers.d/headrace.conf               the service user, in the dialout group for serial ports
and, when `root` is `/` and `start` is true, creates the user (systemd-sysusers),
hands it the config and data folders, reloads systemd and enables and starts
the unit. Every step prints one line; a step that fails says what to do.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from gateway.runtime.files import write_atomic

DATA = Path(__file__).resolve().parents[1] / "data"
UNIT = "headrace-gateway.service"


class InstallError(Exception):
    pass


def _say(msg: str) -> None:
    print(f"  {msg}", flush=True)


def _write(path: Path, text: str, mode: int = 0o644, keep: bool = False) -> None:
    if keep and path.exists():
        _say(f"kept     {path} (exists; edit it by hand)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode)
    _say(f"wrote    {path}")


def install(root: Path = Path("/"), user: str = "headrace", start: bool = True,
            executable: str | None = None, watchdog: int = 30) -> None:
    root = Path(root)
    real = root.resolve() == Path("/")
    if real and os.geteuid() != 0:
        raise InstallError("installing the service needs root: run it with sudo "
                           "(or give --root DIR to write the files into a staging folder)")
    exe = executable or shutil.which("headrace") or str(Path(sys.executable).parent / "headrace")
    if not Path(exe).exists():
        raise InstallError(f"cannot find the headrace command at {exe}: give --executable PATH")
    etc = root / "etc" / "headrace"
    data_dir = Path("/var/lib/headrace")
    unit = (DATA / UNIT).read_text()
    unit = unit.replace("/opt/headrace/venv/bin/headrace", exe)
    unit = unit.replace("User=headrace", f"User={user}").replace("Group=headrace", f"Group={user}")
    unit = unit.replace("WatchdogSec=30", f"WatchdogSec={watchdog}")
    print(f"headrace: installing the gateway service under {root} (user {user}, command {exe})", flush=True)
    _write(root / "etc" / "systemd" / "system" / UNIT, unit)
    sample = (DATA / "gateway.toml").read_text()
    _write(etc / "gateway.toml", sample, keep=True)
    _write(etc / "nodes.toml", "# headrace node registry: keys are secrets, keep this file mode 0600\n",
           mode=0o600, keep=True)
    _write(root / "usr" / "lib" / "sysusers.d" / "headrace.conf",
           f'u {user} - "headrace gateway" {data_dir}\nm {user} dialout\n')
    if not (real and start):
        _say("not starting (staging root or --no-start): run `systemctl daemon-reload && "
             f"systemctl enable --now {UNIT}` on the target")
        return
    _run(["systemd-sysusers", str(root / "usr/lib/sysusers.d/headrace.conf")], "create the service user")
    for folder in (etc, data_dir):
        folder.mkdir(parents=True, exist_ok=True)
        _run(["chown", "-R", f"{user}:{user}", str(folder)], f"give {folder} to {user}")
    _run(["systemctl", "daemon-reload"], "reload systemd")
    _run(["systemctl", "enable", "--now", UNIT], "enable and start the service")
    _say(f"done: `systemctl status {UNIT}`, `journalctl -u {UNIT} -f`, `headrace status`")


def _run(cmd: list[str], what: str) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InstallError(f"cannot {what}: `{cmd[0]}` not found (is this a systemd system?)") from None
    if p.returncode != 0:
        raise InstallError(f"cannot {what}: `{' '.join(cmd)}` failed: {p.stderr.strip() or p.stdout.strip()}")
    _say(f"ok       {what}")
