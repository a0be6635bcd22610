"""Gateway end to end: frames/s from load generators to the spool (acked) and on to mosquitto.

    python bench/gateway_e2e.py [--frames N] [--serial-ports K] [--window W] [--coap N]
    python bench/gateway_e2e.py --hot-path N [--nodes K]

Serial: one CPython load generator per socat pty pair writes pre-built,
authenticated 8-reading frames with W frames awaiting their ack (the gateway acks
only after its SQLite commit). CoAP: aiocoap clients with up to 16 requests in
flight. Reports acked frames/s, readings/s, frames/s seen by a subscriber at the
broker, the gateway's CPU time per frame and its RSS. The durable settings are
the gateway's defaults (WAL, synchronous=FULL, ack after commit).

`--hot-path` measures the gateway's own per-frame work without transports,
load generators or broker, in one process: N frames of K nodes offered to the
pipeline (MAC check, replay window, SenML into columns), group-committed to a
real spool and acked, then read back and encoded as the uplink does. CPU time
per frame (all threads), so a busy machine moves it far less than the end to end
figures.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from gateway.protocol import cose  # noqa: E402
from gateway.protocol.framing import Deframer, encode_frame  # noqa: E402
from hil_tests.rig import GatewayProcess, Mosquitto, PtyPair, Subscriber, wait_for  # noqa: E402


def make_frames(node: str, key: bytes, n: int, t0: float) -> list[bytes]:
    out = []
    for seq in range(n):
        recs = [{-2: f"{node}/", -3: t0 + seq, 0: "temp", 2: 20.0 + (seq % 64) / 16}]
        recs += [{0: "temp" if i % 2 == 0 else "vib", 6: i / 8, 2: (seq * 7 + i) % 97 / 4} for i in range(1, 8)]
        out.append(cose.mac0(key, node.encode(), cbor2.dumps(recs), seq=seq))
    return out


def serial_load(path: str, frames: list[bytes], window: int, result: dict) -> None:
    import tty
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    wire = [encode_frame(f) for f in frames]
    deframer = Deframer()
    sent = acked = 0
    os.write(fd, b"\x00")
    t0 = time.perf_counter()
    while acked < len(wire):
        burst = []
        while sent < len(wire) and sent - acked < window:
            burst.append(wire[sent])
            sent += 1
        if burst:
            os.write(fd, b"".join(burst))
        data = os.read(fd, 65536)
        acked += sum(1 for m in deframer.feed(data) if isinstance(m, bytes))
    result["seconds"] = time.perf_counter() - t0
    result["acked"] = acked
    os.close(fd)


async def coap_load(port: int, shares: list[list[bytes]], result: dict) -> None:
    """One aiocoap client context per simulated node (one UDP endpoint each), each sending its
    own node's frames in order, one request at a time (NSTART = 1, RFC 7252 §4.7)."""
    import aiocoap
    from aiocoap.numbers.codes import Code

    ctxs = [await aiocoap.Context.create_client_context() for _ in shares]
    ok = 0

    async def client(ctx, share):
        nonlocal ok
        for f in share:
            r = await ctx.request(aiocoap.Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/d", payload=f,
                                                  content_format=17)).response
            ok += r.code == Code.CHANGED

    t0 = time.perf_counter()
    await asyncio.gather(*(client(ctx, share) for ctx, share in zip(ctxs, shares)))
    result["seconds"] = time.perf_counter() - t0
    result["acked"] = ok
    for ctx in ctxs:
        await ctx.shutdown()


async def hot_path(n: int, nodes: int, tmp: Path) -> None:
    from gateway.config import from_dict
    from gateway.runtime.ingest import Ingest
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.pipeline import Pipeline
    from gateway.runtime.registry import Registry
    from gateway.runtime.spool import PRIO_FRAME, Spool
    from gateway.runtime.uplink import batch

    cfg = from_dict({"gateway": {"data_dir": str(tmp)}})
    reg = Registry()
    keys = {f"n{i}": os.urandom(32) for i in range(nodes)}
    for name, key in keys.items():
        reg.add(name, key)
    per = {name: make_frames(name, key, n // nodes, time.time()) for name, key in keys.items()}
    order = [per[f"n{i % nodes}"][i // nodes] for i in range(n // nodes * nodes)]
    spool = await Spool.open(cfg.spool_path)
    pipe = Pipeline(cfg, Ingest(reg, {}), spool, Metrics())
    task = asyncio.create_task(pipe.run())
    all_acked = asyncio.Event()
    acked = 0

    def done(ack, err):
        nonlocal acked
        acked += 1
        if acked == len(order):
            all_acked.set()

    c0, w0 = time.process_time(), time.perf_counter()
    for i, frame in enumerate(order):
        if not pipe.has_space():
            await pipe.wait_space()
        pipe.offer(frame, "serial", done)
        if i % 64 == 63:
            await asyncio.sleep(0)  # let the committer run, as a transport's reads would
    await all_acked.wait()
    c1, w1 = time.process_time(), time.perf_counter()
    after = 0
    while rows := await spool.read(PRIO_FRAME, after, 256):
        after = rows[-1][0]
        batch.encode("gw", "site", [body for _id, _kind, body in rows], [])
    c2 = time.process_time()
    print(f"hot path: {len(order):,} frames of {nodes} nodes: offer + commit + ack {(c1 - c0) / len(order) * 1e6:.1f} "
          f"µs CPU/frame ({len(order) / (w1 - w0):,.0f} frames/s); uplink read + encode "
          f"{(c2 - c1) / len(order) * 1e6:.1f} µs CPU/frame")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await spool.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20000, help="frames per serial port")
    ap.add_argument("--serial-ports", type=int, default=2)
    ap.add_argument("--window", type=int, default=64, help="serial frames awaiting ack per port")
    ap.add_argument("--coap", type=int, default=3000, help="CoAP frames (0 to skip)")
    ap.add_argument("--hot-path", type=int, default=0, metavar="N",
                    help="only the gateway's per-frame work, in process: N frames (no transports, no broker)")
    ap.add_argument("--nodes", type=int, default=10, help="nodes for --hot-path")
    args = ap.parse_args()
    if args.hot_path:
        import uvloop
        with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
            uvloop.run(hot_path(args.hot_path, args.nodes, Path(tmp)))
        return

    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp).start()
        names = [f"ser{i}" for i in range(args.serial_ports)]
        coap_nodes = [f"coap{i}" for i in range(16)]
        keys = {n: os.urandom(32) for n in names + coap_nodes}
        pairs = [PtyPair(tmp, n) for n in names]
        gw = GatewayProcess(tmp, broker.port, keys, serial_ports=[p.a for p in pairs]).start()
        sub = Subscriber(broker.port)
        try:
            wait_for(lambda: gw.log().count("serial port") >= len(pairs), 10, "serial ports open")
            t0 = time.time()
            loads = {n: make_frames(n, keys[n], args.frames, t0) for n in names}
            cpu0, rss_idle = cpu_seconds(gw.proc.pid), rss_mb(gw.proc.pid)
            results = {n: {} for n in names}
            threads = [threading.Thread(target=serial_load, args=(p.b, loads[n], args.window, results[n]))
                       for n, p in zip(names, pairs)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            wall = time.perf_counter() - start
            total = sum(r["acked"] for r in results.values())
            cpu = cpu_seconds(gw.proc.pid) - cpu0
            print(f"serial: {len(names)} ptys x {args.frames} frames, window {args.window}: "
                  f"{total / wall:,.0f} frames/s acked after commit ({total * 8 / wall:,.0f} readings/s); "
                  f"gateway CPU {cpu / total * 1e6:.1f} µs/frame; RSS idle {rss_idle:.1f} MB, "
                  f"now {rss_mb(gw.proc.pid):.1f} MB")
            want = {(n, s) for n in names for s in range(args.frames)}
            wait_for(lambda: want <= set(sub.frames()), 120, "all serial frames at the broker")
            wall2 = time.perf_counter() - start
            print(f"serial: all {len(want):,} frames at the broker after {wall2:.2f} s "
                  f"= {len(want) / wall2:,.0f} frames/s end to end; zero loss")
            if args.coap:
                per = args.coap // len(coap_nodes)
                shares = [make_frames(n, keys[n], per, t0) for n in coap_nodes]
                res: dict = {}
                cpu0 = cpu_seconds(gw.proc.pid)
                asyncio.run(coap_load(gw.coap_port, shares, res))
                cpu = cpu_seconds(gw.proc.pid) - cpu0
                print(f"coap: {res['acked']:,} frames acked in {res['seconds']:.2f} s = "
                      f"{res['acked'] / res['seconds']:,.0f} frames/s (16 nodes, each an aiocoap client with one request in flight); "
                      f"gateway CPU {cpu / res['acked'] * 1e6:.1f} µs/frame")
                want = {(n, s) for n in coap_nodes for s in range(per)}
                wait_for(lambda: want <= set(sub.frames()), 60, "all CoAP frames at the broker")
                print("coap: all frames at the broker; zero loss")
            print(f"gateway RSS peak (VmHWM): {_hwm(gw.proc.pid):.1f} MB")
        finally:
            sub.close()
            gw.stop()
            for p in pairs:
                p.stop()
            broker.stop()


def _hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
