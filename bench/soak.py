"""Soak: N simulated nodes at a fixed rate for a set time, through CoAP, to mosquitto.

    python bench/soak.py [--nodes 1000] [--rate 1000] [--duration 60]

Each simulated node has its own key and UDP socket and sends authenticated
8-reading frames as confirmable CoAP POSTs (one in flight per node, as NSTART=1),
spread evenly so the gateway sees `--rate` frames/s in all. Every 5 s the
gateway's RSS and CPU are sampled. At the end a subscriber checks that every
acked frame reached the broker. Prints frames/s, loss, RSS over time (it must
stay flat; target <= 40 MB with 1000 nodes) and CPU per frame.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
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

    def frame(self, t: float) -> bytes:
        recs = [{-2: self.name + "/", -3: t, 0: "temp", 2: 21.0 + (self.seq % 16) / 16}]
        recs += [{0: ("temp", "vib")[i % 2], 6: i // 2 * 0.25, 2: 1.0 + i / 8} for i in range(1, 8)]
        return cose.mac0(self.key, self.name.encode(), cbor2.dumps(recs, canonical=True), seq=self.seq)

    async def send_one(self, loop) -> None:
        token = struct.pack(">I", self.seq)
        data = coap_post(self.seq & 0xFFFF, token, self.frame(time.time()))
        fut = loop.create_future()
        self.waiting = fut
        loop.add_reader(self.sock, self._readable, token)
        try:
            for attempt in range(4):  # RFC 7252 retransmission, short timeouts on loopback
                self.sock.send(data)
                try:
                    await asyncio.wait_for(asyncio.shield(fut), 1.0 * 2 ** attempt)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1000.0, help="frames/s in all")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="headrace-soak-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp).start()
        keys = {f"n{i:04d}": os.urandom(32) for i in range(args.nodes)}
        gw = GatewayProcess(tmp, broker.port, keys).start()
        sub = Subscriber(broker.port)
        samples = []
        try:
            pid = gw.proc.pid
            rss0, cpu0, t0 = rss_mb(pid), cpu_seconds(pid), time.monotonic()
            nodes = [SimNode(n, k, gw.coap_port) for n, k in keys.items()]

            async def tick():
                while True:
                    await asyncio.sleep(5)
                    samples.append((time.monotonic() - t0, rss_mb(pid)))
                    print(f"  t={samples[-1][0]:5.0f} s  gateway RSS {samples[-1][1]:5.1f} MB  "
                          f"acked {sum(n.acked for n in nodes):,}", flush=True)

            print(f"soak: {args.nodes} nodes, {args.rate:.0f} frames/s for {args.duration:.0f} s "
                  f"(gateway RSS at start {rss0:.1f} MB)", flush=True)
            asyncio.run(load(nodes, args.rate, args.duration, tick))
            wall = time.monotonic() - t0
            cpu = cpu_seconds(pid) - cpu0
            acked = sum(n.acked for n in nodes)
            timeouts = sum(n.timeouts for n in nodes)
            sent = {(n.name, s) for n in nodes for s in range(n.seq)}
            got = wait_for(lambda: f if len(f := set(sub.frames())) >= acked else None, 120, "frames at the broker")
            missing = len(sent - got) - timeouts  # frames the node timed out on may be missing: not loss
            rss = [r for _, r in samples]
            print(f"soak result: {acked:,} frames acked in {wall:.0f} s = {acked / wall:,.0f} frames/s; "
                  f"{timeouts} timed out at the node; {max(missing, 0)} acked but not at the broker (loss); "
                  f"gateway CPU {cpu / max(acked, 1) * 1e6:.0f} µs/frame; RSS start {rss0:.1f} MB, "
                  f"min {min(rss, default=0):.1f}, max {max(rss, default=0):.1f}, end {rss[-1] if rss else 0:.1f} MB")
        finally:
            sub.close()
            gw.stop()
            broker.stop()


if __name__ == "__main__":
    main()
