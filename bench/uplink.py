"""Uplink cost per reading: Sparkplug B against headrace's native batches, same load, same run.

    python bench/uplink.py [--nodes 20] [--frames 6000] [--rate 400] [--rounds 3]

The uplink runs in this process (the gateway's own MqttUplink or SparkplugUplink,
unchanged) against a private mosquitto, through a TCP relay that counts every byte
on the wire in both directions (CONNECT, births, PUBLISH, PUBACK, pings). Each
round runs both modes back to back on identical spools, alternating which goes
first, in two scenarios:

* backlog: the spool holds `--frames` frames (8 readings each, `--nodes` nodes, as
  the firmware packs them, values random walks in the simulated sensors' steps); the
  uplink sends it all and the spool is empty.
  Batches are as full as `[mqtt] batch_records` allows: the native format's best case.
* live: frames committed at `--rate` frames/s (round-robin over the nodes) for
  `--frames / --rate` seconds with the default `batch_delay` (0.2 s), as a gateway
  under that load sends them.

Per reading: bytes on the wire, and the CPU time of the whole process (all threads:
the uplink's encoding and publishing, paho, the spool's reads and deletes; in `live`
also the commits of the frames, the same in both modes) divided by readings sent.
Sparkplug mode runs without a primary host (no STATE to wait for). Printed:
medians over the rounds and Sparkplug/native ratios. The machine may be shared:
compare ratios, not absolute figures, across runs.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2  # noqa: E402

from gateway.config import from_dict  # noqa: E402
from gateway.runtime.metrics import Metrics  # noqa: E402
from gateway.runtime.spool import Spool  # noqa: E402
from gateway.runtime.uplink import batch  # noqa: E402
from gateway.runtime.uplink.mqtt import MqttUplink  # noqa: E402
from gateway.runtime.uplink.sparkplug import SparkplugUplink  # noqa: E402
from hil_tests.rig import Mosquitto, free_port  # noqa: E402

READINGS = 8  # a frame: 4 samples of temp and vib, the firmware's default batch of 8 readings


class SimNode:
    """Readings like the simulated nodes': temp in 1/16 degC steps and vib in 1/64 steps, random
    walks; 4 samples of both a frame, 250 ms apart with a few ms of jitter; SenML grouped by sensor
    (base name and time, times relative in s) as the firmware packs it."""

    def __init__(self, name: str, rng: random.Random, t0: float):
        self.name, self.rng, self.t = name, rng, t0
        self.temp, self.vib, self.seq = 21.0 + rng.random() * 4, 2.0, 0

    def frame(self) -> bytes:
        times, temps, vibs = [], [], []
        for _ in range(READINGS // 2):
            self.t += 0.25 + self.rng.randint(-3, 3) / 1000
            self.temp = round((self.temp + self.rng.gauss(0, 0.05)) * 16) / 16
            self.vib = max(0.0, round((self.vib + self.rng.gauss(0, 0.08)) * 64) / 64)
            times.append(round(self.t, 3))
            temps.append(self.temp)
            vibs.append(self.vib)
        bt = times[0]
        # one base name a sensor (node/sensor), as the firmware does for records of one sensor in a row
        recs = [{-2: f"{self.name}/temp", -3: bt, 2: temps[0]}]
        recs += [{6: round(t - bt, 3), 2: v} for t, v in zip(times[1:], temps[1:])]
        recs += [{-2: f"{self.name}/vib", 6: round(t - bt, 3), 2: v} if i == 0 else {6: round(t - bt, 3), 2: v}
                 for i, (t, v) in enumerate(zip(times, vibs))]
        self.seq += 1
        return batch.frame_body(self.name, self.seq, self.t + 0.05, cbor2.dumps(recs))


class Relay:
    """A TCP relay to the broker that counts the bytes each way."""

    def __init__(self, target: int):
        self.target, self.port, self.bytes = target, free_port(), 0
        self._server = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    self.bytes += len(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def run_mode(mode: str, scenario: str, workdir: Path, broker: int, args) -> dict:
    relay = Relay(broker)
    await relay.start()
    cfg = from_dict({"gateway": {"data_dir": str(workdir / f"{mode}-{scenario}"), "id": "gw1", "site": "s1"},
                     "mqtt": {"port": relay.port, "client_id": f"bench-{mode}"},
                     "sparkplug": {"enabled": mode == "sparkplug", "group_id": "bench"}})
    spool = await Spool.open(cfg.spool_path)
    committed = asyncio.Event()
    up = (SparkplugUplink if mode == "sparkplug" else MqttUplink)(cfg, spool, committed, Metrics())
    nodes = [f"node{i:03d}" for i in range(args.nodes)]
    rng = random.Random(7)  # the same readings in both modes and every round
    sims = [SimNode(n, rng, 1.7e9) for n in nodes]
    bodies = [sims[i % len(sims)].frame() for i in range(args.frames)]
    if scenario == "backlog":
        for i in range(0, len(bodies), 500):
            await spool.commit([("frame", b) for b in bodies[i:i + 500]], {})
    cpu0, wall0 = time.process_time(), time.monotonic()
    task = asyncio.create_task(up.run())
    if scenario == "live":
        step = 0.05  # commit every 50 ms, as a busy gateway's group commit does
        per = max(1, int(args.rate * step))
        for i in range(0, len(bodies), per):
            await spool.commit([("frame", b) for b in bodies[i:i + per]], {})
            committed.set()
            await asyncio.sleep(step)
    while (await spool.depth())[0]:
        await asyncio.sleep(0.01)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await spool.close()
    await relay.stop()
    n = args.frames * READINGS
    return {"bytes": relay.bytes / n, "cpu_us": cpu / n * 1e6, "wall": wall}


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            results = {(s, m): [] for s in ("backlog", "live") for m in ("native", "sparkplug")}
            for r in range(args.rounds):
                for scenario in ("backlog", "live"):
                    order = ("native", "sparkplug") if r % 2 == 0 else ("sparkplug", "native")
                    for mode in order:
                        results[(scenario, mode)].append(
                            await run_mode(mode, scenario, Path(tmp) / f"r{r}", broker.port, args))
        finally:
            broker.stop()
    print(f"{args.nodes} nodes, {args.frames} frames of {READINGS} readings, live at {args.rate} frames/s, "
          f"{args.rounds} rounds (medians)")
    print(f"{'scenario':9} {'mode':10} {'bytes/reading':>14} {'CPU us/reading':>15}")
    for scenario in ("backlog", "live"):
        med = {m: {k: statistics.median(x[k] for x in results[(scenario, m)]) for k in ("bytes", "cpu_us")}
               for m in ("native", "sparkplug")}
        for m in ("native", "sparkplug"):
            print(f"{scenario:9} {m:10} {med[m]['bytes']:14.1f} {med[m]['cpu_us']:15.2f}")
        print(f"{scenario:9} {'ratio':10} {med['sparkplug']['bytes'] / med['native']['bytes']:13.2f}x "
              f"{med['sparkplug']['cpu_us'] / med['native']['cpu_us']:14.2f}x   (Sparkplug / native)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--frames", type=int, default=6000)
    ap.add_argument("--rate", type=float, default=400.0, help="frames/s in the live scenario")
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
