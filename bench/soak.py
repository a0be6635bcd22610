"""Soak: N simulated nodes at a fixed rate for a set time, through CoAP, to mosquitto.

    python bench/soak.py [--nodes 1000] [--rate 1000] [--duration 60] [--repeat 1]
                         [--baseline "[spool]\ncommit_interval = 0"]

Each simulated node has its own key and UDP socket and sends authenticated
8-reading frames as confirmable CoAP POSTs (one in flight per node, as NSTART=1),
spread evenly so the gateway sees `--rate` frames/s in all. Every 5 s the
gateway's RSS and CPU are sampled. At the end a subscriber checks that every
acked frame reached the broker. Prints frames/s, loss, RSS over time (it must
stay flat; target <= 40 MB with 1000 nodes), CPU per frame, the node's ack
latency (send to 2.04, p50/p99), the bytes the gateway process wrote to the disk
(`write_bytes` of /proc/<pid>/io: the spool's journal, SQLite's WAL and checkpoints, logs) per
reading against the frame bytes per reading (target <= 3x), the commits per
second, and the uplinked data bytes per reading. The project's modules are compiled to
bytecode first, as an installed gateway has them (`--source`: not).

`--firmware` measures the uplink at the demo's rate instead: the real node
firmware under MicroPython (three nodes over CoAP, two simulated sensors each,
one 8-reading frame a second each, as `headrace demo` runs them) against the
gateway with the sample configuration's uplink settings, and prints the data
bytes uplinked per reading (the payloads of the `data` topic, and apart from
them the retained schema) against the nodes' SenML bytes per reading (target
<= 0.25x), with the delay from reception to the broker (p99 <= 5 s).

`--idle SECONDS` measures a gateway with `--nodes` registered nodes (3 by
default then) and no traffic instead: its CPU over that time, after 5 s of start.

`--baseline TOML` runs a second gateway configuration (TOML appended to the
bench's; lines before the first table header are [mqtt] keys) interleaved with the defaults, `--repeat` times each, and prints the
ratios defaults / baseline with the spread of the runs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from bench.gateway_e2e import cpu_seconds, rss_mb  # noqa: E402
from gateway.protocol import coap, cose  # noqa: E402
from gateway.protocol.numbers import COAP_CHANGED  # noqa: E402
from hil_tests.rig import GatewayProcess, Mosquitto, Subscriber, wait_for  # noqa: E402


READINGS = 8  # a frame's readings


def coap_post(mid: int, token: bytes, payload: bytes) -> bytes:
    return coap.request(mid, payload, token)  # CON POST /d, Content-Format 17


class SimNode:
    def __init__(self, name: str, key: bytes, port: int):
        self.name, self.key, self.port = name, key, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", port))
        self.seq = 0
        self.acked = 0
        self.timeouts = 0
        self.waiting: asyncio.Future | None = None
        self.latencies: list[float] = []  # seconds from the first send to the 2.04
        self.frame_bytes = 0

    def frame(self, t: float) -> bytes:
        recs = [{-2: self.name + "/", -3: t, 0: "temp", 2: 21.0 + (self.seq % 16) / 16}]
        recs += [{0: ("temp", "vib")[i % 2], 6: i // 2 * 0.25, 2: 1.0 + i / 8} for i in range(1, 8)]
        return cose.mac0(self.key, self.name.encode(), cbor2.dumps(recs, canonical=True), seq=self.seq)

    async def send_one(self, loop) -> None:
        token = struct.pack(">I", self.seq)
        frame = self.frame(time.time())
        data = coap_post(self.seq & 0xFFFF, token, frame)
        fut = loop.create_future()
        self.waiting = fut
        loop.add_reader(self.sock, self._readable, token)
        try:
            sent = time.perf_counter()
            for attempt in range(4):  # RFC 7252 retransmission, short timeouts on loopback
                self.sock.send(data)
                try:
                    await asyncio.wait_for(asyncio.shield(fut), 1.0 * 2 ** attempt)
                    self.latencies.append(time.perf_counter() - sent)
                    self.frame_bytes += len(frame)
                    self.acked += 1
                    self.seq += 1
                    return
                except asyncio.TimeoutError:
                    continue
            self.timeouts += 1
            self.seq += 1
        finally:
            loop.remove_reader(self.sock)

    def _readable(self, token: bytes) -> None:
        try:
            data = self.sock.recv(2048)
        except OSError:
            return
        tkl = data[0] & 15
        if data[4:4 + tkl] == token and data[1] == COAP_CHANGED and self.waiting and not self.waiting.done():
            self.waiting.set_result(True)


async def load(nodes: list[SimNode], rate: float, duration: float, tick) -> None:
    loop = asyncio.get_running_loop()
    period = len(nodes) / rate  # seconds between two frames of one node

    async def run(node: SimNode, offset: float):
        await asyncio.sleep(offset)
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < duration:
            await node.send_one(loop)
            k += 1
            await asyncio.sleep(max(0.0, start + k * period - time.monotonic()))

    ticker = asyncio.create_task(tick())
    await asyncio.gather(*(run(n, i * period / len(nodes)) for i, n in enumerate(nodes)))
    ticker.cancel()


def write_bytes(pid: int) -> int:
    """Bytes this process caused to be written to the storage layer (/proc/<pid>/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_parts(pid: int, top: int = 6) -> str:
    """Where the RSS is, from /proc/<pid>/smaps: anonymous (the heaps, Python's arenas, thread stacks)
    and file-backed (shared libraries by name, the largest first), in MB."""
    parts: dict[str, int] = {}
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
            path = head[5] if len(head) > 5 else "[anon]"
            name = path.rsplit("/", 1)[-1].split(".so")[0] if path.startswith("/") else path
        elif head[0] == "Rss:":
            parts[name] = parts.get(name, 0) + int(head[1])
    anon = sum(kb for n, kb in parts.items() if n.startswith("["))
    libs = sorted(((kb, n) for n, kb in parts.items() if not n.startswith("[")), reverse=True)
    return (f"anonymous {anon / 1024:.1f} MB ([heap] {parts.get('[heap]', 0) / 1024:.1f}, other "
            f"{(anon - parts.get('[heap]', 0)) / 1024:.1f}), files {sum(kb for kb, _ in libs) / 1024:.1f} MB ("
            + ", ".join(f"{n} {kb / 1024:.1f}" for kb, n in libs[:top]) + ")")


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def gateway(tmp: Path, broker_port: int, keys: dict, extra: str, args) -> GatewayProcess:
    """The bench's gateway; `extra` is TOML, its lines before any table header go to [mqtt]."""
    head, sep, rest = extra.partition("\n[")
    mqtt, extra = (head, sep[1:] + rest) if not head.lstrip().startswith("[") else ("", extra)
    # a [coap] table joins the rig's own (TOML has one table of a name)
    coap = "".join(m.group(1) for m in re.finditer(r"(?ms)^\[coap\]\n(.*?)(?=^\[|\Z)", extra))
    extra = re.sub(r"(?ms)^\[coap\]\n(.*?)(?=^\[|\Z)", "", extra)
    gw = GatewayProcess(tmp, broker_port, keys, extra=extra)
    # the sample configuration's uplink delay, not the test rig's 0.05 s
    gw.config.write_text(gw.config.read_text().replace(
        "batch_delay = 0.05", f"batch_delay = {args.batch_delay}\n{mqtt.strip()}").replace(
        "\n[coap]\n", f"\n[coap]\n{coap}", 1))
    return gw.start()


def soak(args, extra: str, label: str) -> dict:
    """One gateway run under the load; returns its figures."""
    with tempfile.TemporaryDirectory(prefix="headrace-soak-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp).start()
        keys = {f"n{i:04d}": os.urandom(32) for i in range(args.nodes)}
        gw = gateway(tmp, broker.port, keys, extra, args)
        sub = Subscriber(broker.port)
        samples = []
        try:
            pid = gw.proc.pid
            time.sleep(1.0)  # start-up writes (the spool's creation) are not the load's
            m0 = gw.metrics()
            rss0, cpu0, io0, t0 = rss_mb(pid), cpu_seconds(pid), write_bytes(pid), time.monotonic()
            split0 = cpu_split(pid)
            nodes = [SimNode(n, k, gw.coap_port) for n, k in keys.items()]

            async def tick():
                while True:
                    await asyncio.sleep(5)
                    samples.append((time.monotonic() - t0, rss_mb(pid)))
                    print(f"  t={samples[-1][0]:5.0f} s  gateway RSS {samples[-1][1]:5.1f} MB  "
                          f"acked {sum(n.acked for n in nodes):,}", flush=True, file=sys.stderr)

            print(f"soak [{label}]: {args.nodes} nodes, {args.rate:.0f} frames/s for {args.duration:.0f} s "
                  f"(gateway RSS at start {rss0:.1f} MB)", flush=True, file=sys.stderr)
            asyncio.run(load(nodes, args.rate, args.duration, tick))
            wall = time.monotonic() - t0
            acked = sum(n.acked for n in nodes)
            timeouts = sum(n.timeouts for n in nodes)
            sent = {(n.name, s) for n in nodes for s in range(n.seq)}
            got = wait_for(lambda: f if len(f := set(sub.frames())) >= acked else None, 120, "frames at the broker")
            # what the gateway spent on the load, its uplink and its deletes after PUBACK included
            time.sleep(args.settle)
            cpu = cpu_seconds(pid) - cpu0
            sys_share = (cpu_split(pid)[1] - split0[1]) / max(cpu, 1e-9)
            written = write_bytes(pid) - io0
            m1 = gw.metrics()
            parts = rss_parts(pid)
            missing = len(sent - got) - timeouts  # frames the node timed out on may be missing: not loss
            rss = [r for _, r in samples]
            lat = [x for n in nodes for x in n.latencies]
            readings = acked * READINGS
            frame_bytes = sum(n.frame_bytes for n in nodes)

            def delta(name):
                return m1.get(name, 0.0) - m0.get(name, 0.0)
            r = {"label": label, "acked": acked, "rate": acked / wall, "timeouts": timeouts, "loss": max(missing, 0),
                 "cpu_us_frame": cpu / max(acked, 1) * 1e6, "system_share": sys_share, "ack_p50_ms": quantile(lat, 0.5) * 1e3,
                 "ack_p99_ms": quantile(lat, 0.99) * 1e3, "disk_b_reading": written / max(readings, 1),
                 "frame_b_reading": frame_bytes / max(readings, 1),
                 "commits_s": delta("headrace_spool_commits_total") / wall,
                 "uplink_b_reading": delta("headrace_uplink_bytes_total") / max(readings, 1),
                 "uplink_msgs": delta("headrace_uplink_messages_total"),
                 "rss_start": rss0, "rss_max": max(rss, default=0), "rss_end": rss[-1] if rss else 0}
            r["disk_x_frame"] = r["disk_b_reading"] / max(r["frame_b_reading"], 1e-9)
            print(f"soak result [{label}]: {acked:,} frames acked in {wall:.0f} s = {r['rate']:,.0f} frames/s; "
                  f"{timeouts} timed out at the node; {r['loss']} acked but not at the broker (loss); "
                  f"gateway CPU {r['cpu_us_frame']:.0f} µs/frame ({sys_share:.0%} in the kernel); ack p50 {r['ack_p50_ms']:.1f} ms, "
                  f"p99 {r['ack_p99_ms']:.1f} ms; {r['commits_s']:.1f} commits/s; disk written "
                  f"{r['disk_b_reading']:.1f} B/reading = {r['disk_x_frame']:.2f}x the frame bytes "
                  f"({r['frame_b_reading']:.1f} B/reading); uplink {r['uplink_b_reading']:.1f} B/reading in "
                  f"{r['uplink_msgs']:.0f} messages; RSS start {rss0:.1f} MB, min {min(rss, default=0):.1f}, "
                  f"max {r['rss_max']:.1f}, end {r['rss_end']:.1f} MB; after the settle: {parts}", flush=True)
            return r
        finally:
            sub.close()
            gw.stop()
            broker.stop()


def without_windows(payload: bytes) -> bytes:
    """The same data batch without its windows, encoded as the gateway would (for their share)."""
    from gateway.runtime.uplink import batch, columns
    obj = cbor2.loads(payload)
    v4 = obj["v"] == 4
    deflate, keys = (2, (9, 10)) if v4 else ("deflate", ("windows",))
    assert not v4 or batch.V4_KEYS["deflate"] == 2 and (batch.V4_KEYS["windows"], batch.V4_KEYS["window_columns"]) == keys
    if deflate in obj:
        inner = cbor2.loads(columns.inflate(obj.pop(deflate)))
        for k in keys:
            inner.pop(k, None)
        obj[deflate] = columns.deflate(cbor2.dumps(inner))
    else:
        for k in keys:
            obj.pop(k, None)
    return cbor2.dumps(obj)


DEMO_SENSORS = (["temp", "vib"], ["temp", "pressure"], ["pressure", "temp"])  # gateway/tools/demo.py


def uplink(args, extra: str, label: str) -> dict:
    """The firmware's nodes at one 8-reading frame a second each; uplink bytes per reading."""
    from gateway.runtime.uplink import batch
    from gateway.tools.sim.nodes import NodeProcess

    with tempfile.TemporaryDirectory(prefix="headrace-uplink-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp).start()
        keys = {f"node{i}": os.urandom(32) for i in range(args.nodes)}
        gw = gateway(tmp, broker.port, keys, extra, args)
        sub = Subscriber(broker.port)
        arrivals: list[tuple[float, str, bytes]] = []
        on_message = sub.client.on_message
        sub.client.on_message = lambda c, u, msg: (arrivals.append((time.time(), msg.topic, msg.payload)),
                                                   on_message(c, u, msg))
        try:
            async def run_nodes():
                nodes = [NodeProcess({"node": n, "key": k.hex(), "transport": "coap", "host": "127.0.0.1",
                                      "coap_port": gw.coap_port, "sensors": list(DEMO_SENSORS[i % 3]),
                                      "period_ms": 250, "batch": READINGS, "seed": i + 1, "quiet": True,
                                      "state_file": str(tmp / f"{n}.seq")}, tmp)
                         for i, (n, k) in enumerate(keys.items())]
                for node in nodes:
                    await node.start()
                try:
                    await asyncio.sleep(args.duration)
                finally:
                    for node in nodes:
                        await node.stop()
            print(f"uplink [{label}]: {args.nodes} firmware nodes, one {READINGS}-reading frame a second each, "
                  f"{args.duration:.0f} s, batch_delay {args.batch_delay} s", flush=True, file=sys.stderr)
            m0 = gw.metrics()
            asyncio.run(run_nodes())
            time.sleep(args.batch_delay + args.settle)
            m1 = gw.metrics()
        finally:
            sub.close()
            gw.stop()
            broker.stop()
        dec = batch.Decoder()
        data_bytes = schema_bytes = readings = windows_bytes = 0
        delays = []
        for t, topic, payload in arrivals:
            if topic.endswith("/schema"):
                schema_bytes += len(payload)
                dec.feed(payload)
            elif topic.endswith("/data"):
                data_bytes += len(payload)
                windows_bytes += len(payload) - len(without_windows(payload))
                for _node, _seq, received, rs in batch.readings(dec.decode(payload)):
                    readings += len(rs)
                    delays.append(t - received)
        senml = (m1.get("headrace_payload_bytes_total", 0) - m0.get("headrace_payload_bytes_total", 0)) / max(
            m1.get("headrace_readings_total", 0) - m0.get("headrace_readings_total", 0), 1)
        r = {"label": label, "readings": readings, "senml_b_reading": senml,
             "data_b_reading": data_bytes / max(readings, 1), "schema_bytes": schema_bytes,
             "data_msgs": sum(1 for _, t, _ in arrivals if t.endswith("/data")),
             "delay_p99_s": quantile(delays, 0.99), "windows_b_reading": windows_bytes / max(readings, 1)}
        r["data_x_senml"] = r["data_b_reading"] / max(senml, 1e-9)
        if args.dump:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            for i, (_t, topic, payload) in enumerate(arrivals):
                Path(args.dump, f"{label}-{i:04d}-{topic.rsplit('/', 1)[1]}.cbor").write_bytes(payload)
        print(f"uplink result [{label}]: {readings} readings; nodes' SenML {senml:.1f} B/reading; data uplinked "
              f"{r['data_b_reading']:.2f} B/reading = {r['data_x_senml']:.3f}x in {r['data_msgs']} messages "
              f"(windows {r['windows_b_reading']:.2f} B/reading of it; + {schema_bytes} B of schema, + {33 * r['data_msgs'] / max(readings, 1):.2f} B/reading of MQTT "
              f"PUBLISH headers); reception to broker p99 {r['delay_p99_s']:.2f} s", flush=True)
        return r


def idle(args, extra: str, label: str) -> dict:
    """A gateway with --nodes registered nodes (3 by default here) and no traffic: its CPU over
    --idle seconds, after 5 s of start."""
    with tempfile.TemporaryDirectory(prefix="headrace-soak-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp).start()
        gw = gateway(tmp, broker.port, {f"n{i:04d}": os.urandom(32) for i in range(args.nodes)}, extra, args)
        try:
            time.sleep(5.0)
            cpu0, t0 = cpu_seconds(gw.proc.pid), time.monotonic()
            time.sleep(args.idle)
            cpu, wall = cpu_seconds(gw.proc.pid) - cpu0, time.monotonic() - t0
            r = {"label": label, "idle_cpu_pct": cpu / wall * 100, "rss_end": rss_mb(gw.proc.pid)}
            print(f"idle [{label}]: {args.nodes} nodes registered, no traffic: gateway CPU {cpu:.2f} s in "
                  f"{wall:.0f} s = {r['idle_cpu_pct']:.2f} % of a core ({cpu * os.sysconf('SC_CLK_TCK'):.0f} clock "
                  f"ticks); RSS {r['rss_end']:.1f} MB", flush=True)
            return r
        finally:
            gw.stop()
            broker.stop()


def compile_bytecode() -> None:
    """The project's modules compiled to bytecode beside them (`__pycache__`, as pip leaves an
    installed gateway): otherwise, where PYTHONDONTWRITEBYTECODE is set, the gateway compiles
    them from source at every start and its RSS holds about 0.8 MB of the compiler's leftovers."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for pkg in ("gateway", "core_ext"):
        compileall.compile_dir(root / pkg, quiet=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1000.0, help="frames/s in all")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument("--extra", default="", help="TOML appended to the bench configuration of every run")
    ap.add_argument("--batch-delay", type=float, default=4.0,
                    help="[mqtt] batch_delay, seconds (default: the sample configuration's)")
    ap.add_argument("--baseline", default=None, help="TOML appended for the baseline runs, interleaved")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each configuration")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds after the last frame, for the uplink")
    ap.add_argument("--firmware", action="store_true",
                    help="the uplink at the demo's rate: --nodes firmware nodes (default 3), 1 frame/s each")
    ap.add_argument("--dump", default=None, help="with --firmware: write every payload received to this folder")
    ap.add_argument("--idle", type=float, default=0.0,
                    help="seconds: no load, the gateway's idle CPU with --nodes registered nodes (default 3)")
    ap.add_argument("--source", action="store_true",
                    help="leave the project's bytecode uncompiled (by default it is compiled first, as installed)")
    args = ap.parse_args()
    if not args.source:
        compile_bytecode()
    if (args.firmware or args.idle) and args.nodes == 1000:
        args.nodes = 3
    run = uplink if args.firmware else idle if args.idle else soak
    runs: dict[str, list[dict]] = {"defaults": [], "baseline": []}
    for _ in range(args.repeat):
        runs["defaults"].append(run(args, args.extra, "defaults"))
        if args.baseline is not None:
            runs["baseline"].append(run(args, args.baseline + "\n" + args.extra, "baseline"))
    keys = ("data_b_reading", "data_x_senml", "delay_p99_s") if args.firmware else ("idle_cpu_pct", "rss_end") if (
        args.idle) else (
        "cpu_us_frame", "ack_p99_ms", "disk_b_reading", "disk_x_frame", "commits_s", "uplink_b_reading", "rss_end")
    for label, rs in runs.items():
        if rs:
            print(f"{label}: " + "; ".join(
                f"{k} median {statistics.median(r[k] for r in rs):.2f} [{min(r[k] for r in rs):.2f}-"
                f"{max(r[k] for r in rs):.2f}]" for k in keys))
    if runs["baseline"]:
        print("defaults / baseline (medians): " + "; ".join(
            f"{k} {statistics.median(r[k] for r in runs['defaults']) / max(statistics.median(r[k] for r in runs['baseline']), 1e-9):.2f}"
            for k in keys))


if __name__ == "__main__":
    main()
