# The node: sample, pack, authenticate, send, resend until acked.
#   micropython firmware/main.py CONFIG.json      (also: python firmware/main.py CONFIG.json)
# Prints one JSON object per event on stdout (boot, sent, ack, error, done).
import gc
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
import json

import board
import config
import cose
import senml
from outbox import Outbox, SeqStore
from sensors.sim import SimSensor


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    try:
        sys.stdout.flush()
    except (AttributeError, OSError):
        pass


def emit_seq(seq):
    # quiet mode: the sequence number only, without building the readings list (small heaps)
    sys.stdout.write('{"ev": "sent", "seq": %d}\n' % seq)


async def sleep_ms(ms):
    if hasattr(asyncio, "sleep_ms"):
        await asyncio.sleep_ms(ms)
    else:
        await asyncio.sleep(ms / 1000)


class Node:
    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg["node"]
        self.kid = self.name.encode()
        self.mac = cose.Mac(cfg["key"])
        self.seq = SeqStore(cfg["state_file"])
        self.outbox = Outbox(cfg["outbox"])
        self.sensors = [SimSensor(s, cfg["seed"] * 131 + i) for i, s in enumerate(cfg["sensors"])]
        if cfg["transport"] == "serial":
            import link_serial
            self.link = link_serial.SerialLink(cfg["port"], self.mac)
        else:
            import link_coap
            self.link = link_coap.CoapLink(cfg["host"], cfg["coap_port"], self.mac, cfg["ack_timeout_ms"],
                                           cfg["max_retransmit"])
        self.window = cfg["window"] or self.link.window_default
        self.made = 0
        self.acked = 0
        self.rejected = 0
        self.heap_peak = 0  # bytes in use after a frame is made, at the most (for the footprint benchmark)

    def make_frame(self, samples):
        t0 = samples[0][1]
        readings = [(name, (t - t0) / 1000, v) for name, t, v in samples]
        bt = t0 / 1000
        payload = senml.encode_pack(self.name, readings, bt)
        seq = self.seq.take()
        self.outbox.push(seq, cose.mac0(self.mac, self.kid, payload, seq))
        self.made += 1
        if self.cfg["quiet"]:
            emit_seq(seq)
        else:
            emit({"ev": "sent", "seq": seq, "r": [[n, bt + dt, v] for n, dt, v in readings]})
        if self.cfg["quiet"] and self.made % 64 == 1 and hasattr(gc, "mem_alloc"):
            gc.collect()  # live data only: what the heap must hold
            used = gc.mem_alloc()
            if used > self.heap_peak:
                self.heap_peak = used

    async def sample(self):
        cfg = self.cfg
        samples = []
        while not cfg["frames"] or self.made < cfg["frames"]:
            now = board.epoch_ms()
            for s in self.sensors:
                samples.append((s.name, now, s.read()))
                if len(samples) >= cfg["batch"]:
                    self.make_frame(samples)
                    samples = []
            await sleep_ms(cfg["period_ms"])
            # as fast as possible means as fast as the link acks: wait for room rather than drop
            while not cfg["period_ms"] and len(self.outbox) >= self.outbox.capacity - 1:
                await sleep_ms(1)

    async def send(self):
        cfg = self.cfg
        link = self.link
        timeout = cfg["ack_timeout_ms"]
        while True:
            now = board.ticks_ms()
            for seq, status in link.poll(now):
                if self.outbox.ack(seq):
                    self.acked += 1
                    if status == 2:
                        self.rejected += 1
                    if not self.cfg["quiet"]:
                        emit({"ev": "ack", "seq": seq, "st": status})
            if not link.busy():
                free = self.window - self.outbox.in_flight(now, timeout)
                if free > 0:
                    for item in self.outbox.due(now, timeout, free):
                        link.send(item[0], item[1])
                        if link.busy():
                            break
            await sleep_ms(1)

    async def run(self):
        emit({"ev": "boot", "node": self.name, "seq": self.seq.next, "transport": self.cfg["transport"]})
        sender = asyncio.create_task(self.send())
        await self.sample()
        deadline = board.ticks_ms() + self.cfg["drain_timeout_s"] * 1000
        while len(self.outbox) and board.ticks_diff(deadline, board.ticks_ms()) > 0:
            await sleep_ms(5)
        sender.cancel()
        emit({"ev": "done", "sent": self.made, "acked": self.acked, "rejected": self.rejected,
              "dropped": self.outbox.dropped, "unacked": len(self.outbox), "heap_peak": self.heap_peak})


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: main.py CONFIG.json\n")
        return 2
    try:
        cfg = config.load(argv[1])
    except config.ConfigError as e:
        emit({"ev": "error", "what": str(e)})
        return 2
    asyncio.run(Node(cfg).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
