"""headrace under the load of a peer harness: the simulated nodes, and the measured run.

    python -m bench.peer_load SPEC.json      (the nodes: a process started by run_headrace)

A *load* is what a peer gateway's harness in ../shared/peers/ generates: its
devices, sensors and values, 8 readings a message, round-robin over the
devices. For headrace each device is a node with its own key, and each message
one authenticated frame: a SenML pack of the 8 readings at one time (byte for
byte what `firmware/senml.py` encodes) in a COSE_Mac0 with the node's sequence
number. Serial: one pty per node (the serial transport serves one node per
port; the gateway opens it by name, the nodes write its master end, with no
relay between), COBS/CRC framing. CoAP: one UDP endpoint per node, a confirmable
`POST /d` per frame.

The nodes are open loop, like the peers' load generators: message i goes to its
node's link at start + i/rate whatever became of earlier ones, and is never
resent, so a frame the gateway does not take is lost (serial bytes a pty cannot
take yet wait in the node, as in its outbox). Frames are built before the clock
starts, with base times on the schedule.

The nodes talk to `run_headrace` in JSON lines on stdout: `warm` (sequence
number 0 of every node, acked), `built`; then a line on stdin starts the load:
`start`, `sent` (the schedule is over), `done` with the counts. The time each
message was handed over is written to `stamps` (doubles, epoch seconds, by
message index). `run_headrace` runs the gateway with its durable defaults, a
private mosquitto and a subscriber that checks every reading and times it, and
accounts CPU, RSS and other processes' load with the peers' own tools
(nodered/quiet.py, procsnap.py, foreign.py).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cbor2  # noqa: E402

from bench.gateway_e2e import cpu_seconds, rss_mb  # noqa: E402
from bench.soak import coap_post  # noqa: E402
from gateway.protocol import cose  # noqa: E402
from gateway.protocol.framing import encode_frame  # noqa: E402
from gateway.protocol.numbers import SENML_BN, SENML_BT, SENML_N, SENML_V  # noqa: E402
from gateway.protocol.numbers import COAP_CHANGED, COAP_SERVICE_UNAVAILABLE  # noqa: E402
from gateway.runtime.uplink import batch  # noqa: E402
from hil_tests.rig import GatewayProcess, Mosquitto, Subscriber, wait_for  # noqa: E402

READINGS_PER_MESSAGE = 8
WARM_SEQ = 0  # the load's messages take sequence numbers from 1 on
_TICK = 0.001  # at most 1 ms of messages go out together, as the peers' load generators do
FOREIGN_CPU_LIMIT = 10.0  # % of one core used by other processes: the run is disturbed (both harnesses' rule)


def foreign_limit(o) -> float:
    """The share of a core other processes may use during a run that is still counted (`--busy-ok`:
    any, for a machine that is never quiet; the runs record what the others used)."""
    return float("inf") if getattr(o, "busy_ok", False) else FOREIGN_CPU_LIMIT


def log(msg: str) -> None:
    print(time.strftime("[%H:%M:%S] ") + msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Load:
    """The devices, sensors and values of one peer harness's load generator."""

    name: str
    devices: tuple[str, ...]
    sensors: tuple[str, ...]
    values: Callable[[int], list[float]]  # message index -> 8 values, in sensor order

    def device(self, i: int) -> int:
        return i % len(self.devices)  # both harnesses go round-robin over their devices

    def seq(self, i: int) -> int:
        return WARM_SEQ + 1 + i // len(self.devices)

    def index(self, device: int, seq: int) -> int:
        """Message index of a node's sequence number (the inverse of device() and seq())."""
        return (seq - WARM_SEQ - 1) * len(self.devices) + device


def _thingsboard_values(i: int) -> list[float]:
    # thingsboard/loadgen.py: v = [((sent * 7 + j * 13) % 100000) / 100.0 for j in range(8)]
    return [((i * 7 + j * 13) % 100000) / 100.0 for j in range(READINGS_PER_MESSAGE)]


def _nodered_load(peers_dir: Path) -> Load:
    # the values of nodered/loadgen.py, taken from the script itself: a pool of 1024
    # readings sets from random.Random(seed 1), message i carrying pool[i & 1023]
    spec = importlib.util.spec_from_file_location("nodered_loadgen", peers_dir / "nodered" / "loadgen.py")
    gen = importlib.util.module_from_spec(spec)
    sys.dont_write_bytecode = True  # the harness folder is not ours to write in
    spec.loader.exec_module(gen)
    pool = [[r["value"] for r in json.loads("[" + p + "]")] for p in gen.readings_pool(1024, random.Random(1))]
    return Load("nodered", tuple("dev-%04d" % d for d in range(100)), tuple(gen.SENSORS), lambda i: pool[i & 1023])


def load_named(name: str, peers_dir: Path) -> Load:
    """The load of the peer harness `name` (thingsboard: 10 devices, nodered: 100)."""
    if name == "thingsboard":
        return Load(name, tuple("bench-%02d" % d for d in range(10)), tuple("k%d" % j for j in range(8)),
                    _thingsboard_values)
    if name == "nodered":
        return _nodered_load(peers_dir)
    raise ValueError(f"unknown load {name!r}: thingsboard or nodered")


def number(x: float):
    """As firmware/senml.py: integral floats travel as integers."""
    return int(x) if x == int(x) and -9.0e15 < x < 9.0e15 else x


def senml_pack(node: str, sensors, values, base_time: float) -> bytes:
    """The node's SenML pack of one sample of every sensor (canonical CBOR = the firmware's encoding)."""
    recs = [{SENML_N: s, SENML_V: number(v)} for s, v in zip(sensors, values)]
    recs[0][SENML_BN] = node + "/"
    recs[0][SENML_BT] = number(base_time)
    return cbor2.dumps(recs, canonical=True)


def check_against_firmware(load: Load, t: float) -> None:
    """The packs built here must be the bytes the firmware's own encoder writes."""
    # the firmware's folder stays on the path while its encoder runs: senml.encode_pack is loaded
    # from senml_whole.py at its first use, as on a board
    sys.path.insert(0, str(REPO / "firmware"))
    try:
        import senml  # the firmware module (flat imports, as on a board)
        for i in range(64):
            node, vals = load.devices[load.device(i)], load.values(i)
            ms = round((t + i / 7) * 1000)  # the node keeps integer ms
            ours = senml_pack(node, load.sensors, vals, ms / 1000)
            theirs = senml.encode_pack(node, [(s, 0, v) for s, v in zip(load.sensors, vals)], ms)
            if ours != bytes(theirs):
                raise AssertionError(f"pack {i} differs from the firmware's: {ours.hex()} != {bytes(theirs).hex()}")
    finally:
        sys.path.remove(str(REPO / "firmware"))


def message(load: Load, transport: str, key: bytes, d: int, seq: int, values, base_time: float) -> bytes:
    """Node d's frame `seq` as its link carries it (a serial frame, or a CoAP CON POST /d)."""
    node = load.devices[d]
    frame = cose.mac0(key, node.encode(), senml_pack(node, load.sensors, values, round(base_time, 3)), seq=seq)
    if transport == "serial":
        return encode_frame(frame)
    return coap_post(seq & 0xFFFF, seq.to_bytes(4, "big"), frame)


def scheduled(load: Load, transport: str, keys: list[bytes], i: int, base_time: float) -> bytes:
    d = load.device(i)
    return message(load, transport, keys[d], d, load.seq(i), load.values(i), base_time)


class Links:
    """The nodes' ends of their links: a pty or a UDP socket per node, written without blocking."""

    def __init__(self, transport: str, spec: dict, n: int):
        self.transport = transport
        self.poll = select.poll()
        self.acks = self.busy = self.other = self.send_errors = 0
        self.pending = [bytearray() for _ in range(n)]
        if transport == "serial":
            self.fds = spec["pty_fds"]  # the ptys' master ends, given to this process (pass_fds)
            for fd in self.fds:
                os.set_blocking(fd, False)
                os.write(fd, b"\x00")  # a delimiter: the gateway resynchronises on it
        else:
            self.socks = []
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect(("127.0.0.1", spec["coap_port"]))
                self.socks.append(s)
            self.fds = [s.fileno() for s in self.socks]
        self.by_fd = {fd: d for d, fd in enumerate(self.fds)}
        for fd in self.fds:
            self.poll.register(fd, select.POLLIN)

    def put(self, d: int, data: bytes) -> None:
        if self.transport == "serial":
            self.pending[d] += data
            return
        try:
            self.socks[d].send(data)
        except (BlockingIOError, ConnectionRefusedError):
            self.send_errors += 1

    def flush(self, d: int) -> None:
        buf = self.pending[d]
        if not buf:
            return
        try:
            n = os.write(self.fds[d], buf)
        except BlockingIOError:
            n = 0
        del buf[:n]
        self.poll.modify(self.fds[d], select.POLLIN | (select.POLLOUT if buf else 0))

    def backlog(self) -> int:
        return sum(len(b) for b in self.pending)

    def wait(self, timeout: float) -> None:
        """Read answers and write what the ptys can take, for up to `timeout` seconds."""
        for fd, ev in self.poll.poll(max(0, int(timeout * 1000 + 0.999))):
            if ev & select.POLLOUT:
                self.flush(self.by_fd[fd])
            if ev & (select.POLLIN | select.POLLERR | select.POLLHUP):
                self._read(fd)

    def _read(self, fd: int) -> None:
        if self.transport == "serial":
            try:
                self.acks += os.read(fd, 65536).count(0)  # every ack frame ends with the one 0x00 of its COBS
            except OSError:  # nothing after all, or the pty went away: the counts say so
                pass
            return
        sock = self.socks[self.by_fd[fd]]
        while True:
            try:
                data = sock.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return
            code = data[1] if len(data) > 1 else 0
            if code == COAP_CHANGED:
                self.acks += 1
            elif code == COAP_SERVICE_UNAVAILABLE:
                self.busy += 1
            else:
                self.other += 1

    def answered(self) -> int:
        return self.acks + self.busy + self.other


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def warm_up(links: Links, load: Load, transport: str, keys: list[bytes]) -> tuple:
    """Sequence number 0 of every node, acked: ports, replay windows and series exist before the clock."""
    n, now = len(load.devices), time.time()
    for d in range(n):
        links.put(d, message(load, transport, keys[d], d, WARM_SEQ, load.values(0), now))
        links.flush(d)
    deadline = time.monotonic() + 30
    while links.answered() < n and time.monotonic() < deadline:
        links.wait(0.05)
    answers = (links.acks, links.busy, links.other)
    links.acks, links.busy, links.other = 0, 0, 0
    return answers


def build(load: Load, transport: str, keys: list[bytes], rate: float, total: int) -> tuple[list, float, float]:
    """(wire bytes by message index, epoch second of message 0, build seconds per frame). Base times
    follow the schedule from a start a margin after the estimated build time."""
    t = time.perf_counter()
    probe = [scheduled(load, transport, keys, i, 0.0) for i in range(min(total, 2000))]
    per_frame = (time.perf_counter() - t) / max(1, len(probe))
    anchor = time.time() + per_frame * total * 1.3 + 3.0
    return [scheduled(load, transport, keys, i, anchor + i / rate) for i in range(total)], anchor, per_frame


def send(links: Links, wire: list, rate: float, n: int, stamps: array) -> float:
    """Message i to its node's link at i/rate from now, open loop; returns the seconds it took."""
    total, sent, serial = len(wire), 0, links.transport == "serial"
    wall0, t0 = time.time(), time.perf_counter()
    while sent < total:
        el = time.perf_counter() - t0
        due = min(total, int(el * rate) + 1)
        if due > sent:
            wall = wall0 + el
            touched = set()
            for i in range(sent, due):
                d = i % n  # load.device(i), inline in the hot loop
                links.put(d, wire[i])
                stamps[i] = wall
                touched.add(d)
            sent = due
            if serial:
                for d in touched:
                    links.flush(d)
        links.wait(min(_TICK, max(0.0, sent / rate - (time.perf_counter() - t0))))
    return time.perf_counter() - t0


def finish(links: Links, sent: int) -> None:
    """What the links still hold goes out; answers are read until they stop coming for 5 s."""
    last, state = time.monotonic(), None
    while time.monotonic() - last < 5 and (links.answered() < sent or links.backlog()):
        links.wait(0.05)
        if (links.answered(), links.backlog()) != state:
            last, state = time.monotonic(), (links.answered(), links.backlog())


def run_nodes(spec: dict) -> None:
    load = load_named(spec["load"], Path(spec["peers_dir"]))
    transport, rate, total = spec["transport"], float(spec["rate"]), int(round(spec["rate"] * spec["duration"]))
    keys = [bytes.fromhex(spec["keys"][dev]) for dev in load.devices]
    check_against_firmware(load, time.time())
    links = Links(transport, spec, len(load.devices))
    warm = warm_up(links, load, transport, keys)
    emit("warm", acked=warm[0], nodes=len(load.devices))
    t = time.perf_counter()
    wire, anchor, per_frame = build(load, transport, keys, rate, total)
    emit("built", frames=total, bytes_per_frame=round(sum(map(len, wire[:1000])) / min(total, 1000), 1),
         build_s=round(time.perf_counter() - t, 2))
    if not sys.stdin.readline():
        return  # the parent is gone
    delay = anchor - time.time()
    if delay > 0:
        time.sleep(delay)
    stamps = array("d", bytes(8 * total))
    emit("start", t=time.time(), late_s=round(-delay if delay < 0 else 0.0, 3))
    send_s = send(links, wire, rate, len(load.devices), stamps)
    emit("sent", sent=total, seconds=round(send_s, 3), backlog_bytes=links.backlog())
    finish(links, total)
    with open(spec["stamps"], "wb") as f:
        stamps.tofile(f)
    emit("done", sent=total, send_s=round(send_s, 3), achieved_rate=round(total / send_s, 1), acked=links.acks,
         busy=links.busy, other_answers=links.other, send_errors=links.send_errors,
         unsent_bytes=links.backlog(), warm=warm, per_frame_build_us=round(per_frame * 1e6, 1))


# -- the harnesses' own machine-load tools (nodered/quiet.py, procsnap.py, foreign.py) ------------

class MachineLoad:
    def __init__(self, peers_dir: Path):
        self.dir = peers_dir / "nodered"
        spec = importlib.util.spec_from_file_location("nodered_foreign", self.dir / "foreign.py")
        self._foreign = importlib.util.module_from_spec(spec)
        sys.dont_write_bytecode = True
        spec.loader.exec_module(self._foreign)

    def wait_quiet(self, max_wait: float) -> float:
        out = subprocess.run([sys.executable, str(self.dir / "quiet.py"), str(max_wait)], capture_output=True,
                             text=True, timeout=max_wait + 30)
        return float(out.stdout.strip() or 0)

    def snap(self, label: str, **pids: int) -> dict:
        out = subprocess.run([sys.executable, str(self.dir / "procsnap.py"), label,
                              *(f"{k}={v}" for k, v in pids.items())], capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout)

    def foreign(self, a: dict, b: dict, top: list | None = None) -> float:
        """CPU (% of one core) of processes that are neither this one nor its descendants;
        `top` gets the five busiest as (ticks, pid)."""
        return self._foreign.foreign(a, b, [os.getpid()], top)

    @staticmethod
    def names(top: list) -> str:
        out = []
        for ticks, pid in top:
            try:
                out.append(f"{Path(f'/proc/{pid}/comm').read_text().strip()}[{pid}]: {ticks} ticks")
            except OSError:
                out.append(f"[{pid}]: {ticks} ticks")
        return ", ".join(out)


def cpu_between(a: dict, b: dict, name: str) -> float | None:
    A, B = a.get(name, {}), b.get(name, {})
    if "ticks" not in A or "ticks" not in B:
        return None
    return round(100.0 * (B["ticks"] - A["ticks"]) / a["clk_tck"] / (b["t"] - a["t"]), 1)


# -- headrace -------------------------------------------------------------------------------

class CountingSubscriber(Subscriber):
    """The bench subscriber, with the time each message arrived (epoch seconds)."""

    def __init__(self, port: int):
        self.arrivals: list[float] = []
        self._cursor, self._seen = 0, set()
        super().__init__(port)

    def _on_message(self, client, userdata, msg):
        now = time.time()
        with self._lock:
            self._keep(msg.topic, msg.payload)
            self.arrivals.append(now)

    def frames(self, start: int = 0):
        """(arrival, node, seq, [(sensor, time, value), ...]) of every frame in the data batches
        from message `start` on (any batch version the decoder reads)."""
        for t, data in self._data(start):
            for node, seq, _received, readings in batch.readings(data):
                yield t, node, seq, readings

    def _data(self, start: int):
        with self._lock:
            msgs, times = self.messages[start:], self.arrivals[start:]
        for (topic, payload), t in zip(msgs, times):
            if topic.endswith("/data"):
                yield t, self.decode(payload)

    def distinct(self) -> int:
        """(node, seq) pairs seen so far (decodes only what arrived since the last call)."""
        with self._lock:
            end = len(self.messages)
        for _t, data in self._data(self._cursor):
            self._seen.update(batch.frame_ids(data))
        self._cursor = max(self._cursor, end)
        return len(self._seen)


class Events:
    """JSON lines from the load generator, read by a thread."""

    def __init__(self, stream):
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with contextlib.suppress(ValueError):
                self.q.put(json.loads(line))
        self.q.put({"event": "eof"})

    def expect(self, name: str, timeout: float) -> dict:
        try:
            ev = self.q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the load generator sent no `{name}` within {timeout:.0f} s") from None
        if ev.get("event") != name:
            raise RuntimeError(f"the load generator sent {ev} where `{name}` was due")
        return ev


def pct(xs: list[float], q: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else None


def check_frames(sub: CountingSubscriber, load, stamps: array, total: int) -> dict:
    """Every load frame at the broker: readings checked against what was sent, latency from its send."""
    dev = {name: d for d, name in enumerate(load.devices)}
    seen: set[int] = set()
    dup = bad = stray = 0
    lat = []
    for t, node, seq, readings in sub.frames():
        if node not in dev or seq == WARM_SEQ:
            continue
        i = load.index(dev[node], seq)
        if not 0 <= i < total:
            stray += 1
            continue
        if i in seen:
            dup += 1
            continue
        seen.add(i)
        if [(s, v) for s, _t, v in readings] != list(zip(load.sensors, load.values(i))):
            bad += 1
        lat.append(1000.0 * (t - stamps[i]))
    lat.sort()
    return {"delivered": len(seen) - bad, "duplicates": dup, "bad_frames": bad, "stray_frames": stray,
            "lat_p50_ms": pct(lat, 0.5), "lat_p99_ms": pct(lat, 0.99), "lat_max_ms": round(lat[-1], 1) if lat else None}


class HeadraceRun:
    """One run of the gateway under a load: mosquitto, the gateway (and the ptys), a subscriber, the nodes."""

    def __init__(self, stack: contextlib.ExitStack, load: Load, transport: str, rate: float, o):
        self.load, self.transport, self.rate, self.o = load, transport, rate, o
        self.n, self.total = len(load.devices), int(round(rate * o.duration))
        self.tmp = Path(tempfile.mkdtemp(prefix="headrace-peers-"))
        stack.callback(shutil.rmtree, self.tmp, ignore_errors=True)
        self.broker = Mosquitto(self.tmp).start()
        stack.callback(self.broker.stop)
        keys = {dev: os.urandom(32) for dev in load.devices}
        # a pty a node: the gateway opens its end by name, the nodes write its master end, as a
        # board's UART would be wired (no relay between them: 100 socat relays took 25 µs of CPU a
        # message, as much as the gateway, on the same two cores)
        masters, ports = [], []
        for _dev in load.devices if transport == "serial" else ():
            master, slave = os.openpty()
            tty.setraw(slave)
            ports.append(os.ttyname(slave))
            os.close(slave)
            masters.append(master)
            stack.callback(_close, master)
        self.gw = GatewayProcess(self.tmp, self.broker.port, keys, serial_ports=ports)
        # a batch at most every second (the default waits up to 4 s, past the bench's 2 s keep-up bound)
        self.gw.config.write_text(self.gw.config.read_text().replace("batch_delay = 0.05", "batch_delay = 1.0"))
        self.gw.start()
        stack.callback(self.gw.stop)
        wait_for(lambda: self.gw.log().count(" open at ") >= len(ports), 60, "the gateway's serial ports")
        self.sub = CountingSubscriber(self.broker.port)
        stack.callback(self.sub.close)
        spec = {"load": load.name, "transport": transport, "rate": rate, "duration": o.duration,
                "peers_dir": str(o.peers_dir), "keys": {d: k.hex() for d, k in keys.items()},
                "pty_fds": masters, "coap_port": self.gw.coap_port, "stamps": str(self.tmp / "stamps")}
        (self.tmp / "spec.json").write_text(json.dumps(spec))
        self.nodes = subprocess.Popen([sys.executable, "-m", "bench.peer_load", str(self.tmp / "spec.json")],
                                      cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      pass_fds=masters)
        stack.callback(_stop, self.nodes)
        self.events = Events(self.nodes.stdout)
        self.pid = self.gw.proc.pid
        self.pids = {"gateway": self.pid, "mosquitto": self.broker.proc.pid, "loadgen": self.nodes.pid}

    def warm(self) -> dict:
        """Every node's first frame at the broker; the gateway's RSS then is its idle RSS."""
        self.events.expect("warm", 90)
        wait_for(lambda: self.sub.distinct() >= self.n, 30, "the warm-up frames at the broker")
        rss = round(rss_mb(self.pid), 1)
        return {"rss_idle_mb": rss, "bytes_per_frame": self.events.expect("built", 600)["bytes_per_frame"]}

    def load_and_drain(self, ml: MachineLoad, stack: contextlib.ExitStack) -> dict:
        """The load, timed and accounted; then up to --drain s for the frames still on their way."""
        pre, cpu0 = ml.snap("pre", **self.pids), cpu_seconds(self.pid)
        if self.o.profile:
            stack.callback(_stop, _py_spy(self.pid, self.o, self.load.name, self.transport, self.rate))
        self.nodes.stdin.write("go\n")
        self.nodes.stdin.flush()
        start = self.events.expect("start", 120)
        t0 = time.monotonic()
        sent = self.events.expect("sent", self.o.duration * 4 + 120)
        t1, cpu1 = time.monotonic(), cpu_seconds(self.pid)
        load_end = ml.snap("load_end", **self.pids)
        last, count = time.monotonic(), -1
        while time.monotonic() - t1 < self.o.drain and time.monotonic() - last < 5:
            c = self.sub.distinct()
            if c >= self.total + self.n:
                break
            if c != count:
                last, count = time.monotonic(), c
            time.sleep(0.2)
        done = self.events.expect("done", 60)
        drain_end = ml.snap("drain_end", **self.pids)
        stamps = array("d")
        with open(self.tmp / "stamps", "rb") as f:
            stamps.fromfile(f, self.total)
        udp = [s["udp"]["RcvbufErrors"] for s in (pre, drain_end)]
        return {
            **check_frames(self.sub, self.load, stamps, self.total),
            "sent": done["sent"], "achieved_rate": done["achieved_rate"], "acked": done["acked"],
            "coap_busy": done["busy"], "unsent_bytes": done["unsent_bytes"], "late_start_s": start["late_s"],
            "backlog_bytes_at_end": sent["backlog_bytes"],
            "cpu_pct": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1),
            "rss_peak_mb": round(drain_end["gateway"].get("VmHWM", 0) / 1024, 1),
            "mosquitto_cpu_pct": cpu_between(pre, load_end, "mosquitto"),
            "loadgen_cpu_pct": cpu_between(pre, load_end, "loadgen"),
            "udp_rcvbuf_drops": udp[1] - udp[0],
            "foreign_cpu_pct": ml.foreign(pre, load_end),
            "steal_pct": round(100.0 * (load_end["sys"]["steal"] - pre["sys"]["steal"])
                               / max(1, load_end["sys"]["total"] - pre["sys"]["total"]), 1),
        }


def run_headrace(load_name: str, transport: str, rate: float, o, ml: MachineLoad) -> dict:
    """One measured run of headrace under a peer's load at `rate` messages/s; clean=False if disturbed."""
    res = {"gateway": "headrace", "transport": transport, "load": load_name}
    with contextlib.ExitStack() as stack:
        res["waited_quiet_s"] = ml.wait_quiet(o.quiet)
        run = HeadraceRun(stack, load_named(load_name, o.peers_dir), transport, rate, o)
        res.update(run.warm())
        gate0, top = ml.snap("gate0", **run.pids), []
        time.sleep(1.5)
        gate = ml.foreign(gate0, ml.snap("gate1", **run.pids), top)
        if gate >= foreign_limit(o):  # another benchmark started meanwhile: give up before the load
            return {**res, "clean": False, "aborted": f"other processes used {gate} % of a core before the load "
                                                      f"({ml.names(top)})"}
        res.update(run.load_and_drain(ml, stack))
    res["clean"] = res["foreign_cpu_pct"] < foreign_limit(o) and not o.profile
    if o.profile:
        res["profiled"] = True
    return res


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _py_spy(pid: int, o, load: str, transport: str, rate: float) -> subprocess.Popen:
    o.profile.mkdir(parents=True, exist_ok=True)
    out = o.profile / f"headrace-{transport}-{load}-{rate:g}.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    log(f"  py-spy records the gateway into {out}")
    # --threads: the event loop and the spool's SQLite thread apart; --native: uvloop's and sqlite3's C frames
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--duration",
                             str(int(o.duration) + 1), "--output", str(out), "--threads", "--native"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    run_nodes(json.loads(Path(sys.argv[1]).read_text()))
