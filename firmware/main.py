# The node: sample, pack, authenticate, send, resend until acked.
#   micropython firmware/main.py CONFIG.json      (also: python firmware/main.py CONFIG.json)
# Prints one JSON object per event on stdout (boot, sent, ack, error, done).
import gc
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio  # type: ignore[no-redef]
import json

import board
import config
import cose
import protocol
import senml
import sensors
from outbox import Outbox, SeqStore


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
    def __init__(self, cfg, trial=None):
        self.cfg = cfg
        self.name = cfg["node"]
        self.kid = self.name.encode()
        self.mac = cose.Mac(cfg["key"])
        self.seq = SeqStore(cfg["state_file"])
        self.trial = trial  # node updates (firmware/update.py, bootstage.py): None when booted without
        if trial is not None:
            trial.first_seq = self.seq.next
        # unacked frames survive a reboot or a power cut in a log beside the sequence file
        self.outbox = Outbox(cfg["outbox"], cfg["state_file"] + ".out" if cfg["state_file"] else None)
        # frames restored from the log under another key (the node was rekeyed) would never
        # be acked and would hold the outbox up for good: they go, counted as dropped
        self.stale = self.outbox.keep(self._ours)
        self.dropped_told = 0  # the outbox's drop count as last reported in a frame
        self.sensors, self.problems = sensors.build(cfg["sensors"], cfg["seed"], board)
        # sensors that convert for a while before a read (DS18B20: up to 750 ms) are all
        # started first, then read once the longest is done; the loop runs meanwhile
        self.converters = [s for s in self.sensors if hasattr(s, "start")]
        # and those that take a window of samples (ADXL345) fill it while the loop runs
        self.fillers = [s for s in self.sensors if hasattr(s, "fill")]
        self.wdt = None  # the hardware watchdog, started by run()
        if cfg["transport"] == "serial":
            import link_serial
            self.link = link_serial.SerialLink(cfg["port"], self.mac)
        else:
            import link_coap
            if not board.network_up(cfg["wifi_ssid"], cfg["wifi_password"]):
                raise OSError("Wi-Fi %r did not connect" % cfg["wifi_ssid"])
            self.link = link_coap.CoapLink(  # type: ignore[assignment]
                cfg["host"], cfg["coap_port"], self.mac, cfg["ack_timeout_ms"], cfg["max_retransmit"])
        self.window = cfg["window"] or self.link.window_default
        self.made = 0
        self.acked = 0
        self.rejected = 0
        self.heap_peak = 0  # bytes in use after a frame is made, at the most (for the footprint benchmark)
        self.commands = Commands(self, cfg["state_file"] + ".cmd")

    def _ours(self, msg):
        try:
            header = cose.verify_mac0(self.mac, msg)[0]
        except ValueError:
            return False
        return header.get(cose.HDR_KID) == self.kid

    def make_frame(self, samples):
        # times are integer ms since 1970 from the first sample's on (never floats: single
        # precision on most boards would put them minutes off)
        t0 = samples[0][1] if samples else board.epoch_ms()
        readings = [(name, t - t0, v) for name, t, v in samples]
        if self.outbox.dropped != self.dropped_told:
            # frames lost to a full outbox are reported in the next one: a series of their own
            self.dropped_told = self.outbox.dropped
            readings.append(("dropped", 0, self.dropped_told))
        texts = self.commands.take_reports()
        if self.trial is not None:
            texts += self.trial.take_reports()  # node updates: installed, refused, rolled back, confirmed
        payload = senml.encode_pack(self.name, readings, t0, texts)
        seq = self.seq.take()
        self.outbox.push(seq, cose.mac0(self.mac, self.kid, payload, seq))
        if samples:
            self.made += 1  # frames of readings (a report alone is not one of cfg["frames"])
        if self.cfg["quiet"]:
            emit_seq(seq)
        else:
            # the readings in the order the pack carries them (grouped by sensor), times in ms
            emit({"ev": "sent", "seq": seq, "r": [[readings[i][0], t0 + readings[i][1], readings[i][2]]
                                                  for i in senml.wire_order(readings)]
                  + [[n, t0, text] for n, text in texts]})
        if self.cfg["quiet"] and self.made % 64 == 1 and hasattr(gc, "mem_alloc"):
            gc.collect()  # live data only: what the heap must hold
            used = gc.mem_alloc()
            if used > self.heap_peak:
                self.heap_peak = used

    async def sample(self):
        cfg = self.cfg
        samples = []
        tick = 0
        while not cfg["frames"] or self.made < cfg["frames"]:
            now = board.epoch_ms()
            wait = 0
            for s in self.converters:
                if not tick % s.every:
                    ms = s.start()
                    if ms > wait:
                        wait = ms
            t0 = board.ticks_ms()
            for s in self.fillers:
                if not tick % s.every:
                    await s.fill(sleep_ms)
            wait -= board.ticks_diff(board.ticks_ms(), t0)
            if wait > 0:
                await sleep_ms(wait)  # acks, resends and the watchdog go on
            for s in self.sensors:
                if tick % s.every:
                    continue  # a sensor with a longer period than the node's
                try:
                    samples.append((s.name, now, s.read()))
                except (sensors.SensorError, OSError) as e:
                    if not cfg["quiet"]:
                        emit({"ev": "error", "what": "%s: %s" % (s.name, e)})
                    continue
                if len(samples) >= cfg["batch"]:
                    self.make_frame(samples)
                    samples = []
            tick += 1
            if cfg["sleep"] == "deep" and self.sensors:
                if samples:
                    self.make_frame(samples)
                await self.drain()
                board.deepsleep(cfg["period_ms"])  # boots again; unacked frames wait in the outbox log
            await self.rest(cfg["period_ms"])
            # as fast as possible means as fast as the link acks: wait for room rather than drop
            while not cfg["period_ms"] and len(self.outbox) >= self.outbox.capacity - 1:
                await sleep_ms(1)

    async def send(self):
        cfg = self.cfg
        link = self.link
        timeout = cfg["ack_timeout_ms"]
        while True:
            if self.wdt is not None:
                self.wdt.feed()
            now = board.ticks_ms()
            for seq, status, cmds in link.poll(now):
                if self.outbox.ack(seq):
                    self.acked += 1
                    if status == protocol.ACK_REJECTED:
                        self.rejected += 1
                    elif self.trial is not None:
                        self.trial.acked(seq)  # node updates: the slot on trial works
                    if not self.cfg["quiet"]:
                        emit({"ev": "ack", "seq": seq, "st": status})
                    if cmds:
                        self.commands.apply(cmds)
                elif cmds:
                    # an ack for no frame in the outbox: a late repeat, or a replay
                    self.commands.replayed += 1
            self.commands.tick(now)
            if not link.busy():
                free = self.window - self.outbox.in_flight(now, timeout)
                if free > 0:
                    for item in self.outbox.due(now, timeout, free):
                        link.send(item[0], item[1])
                        if link.busy():
                            break
            await sleep_ms(1)

    async def rest(self, ms):
        """Wait a period: idle, or with "sleep": "light" in the board's light sleep once no
        frame awaits an ack (the link runs until then), woken in time to feed the watchdog."""
        if self.cfg["sleep"] != "light" or ms < 20:
            await sleep_ms(ms)
            return
        t0 = board.ticks_ms()
        while len(self.outbox) and board.ticks_diff(board.ticks_ms(), t0) < ms:
            await sleep_ms(5)
        left = ms - board.ticks_diff(board.ticks_ms(), t0)
        while left > 0:
            if self.wdt is not None:
                self.wdt.feed()
                left = min(left, self.wdt.timeout_ms // 2)
            board.lightsleep(left)
            left = ms - board.ticks_diff(board.ticks_ms(), t0)
        await sleep_ms(0)  # the send task's turn: acks and commands

    async def drain(self):
        deadline = board.ticks_add(board.ticks_ms(), self.cfg["drain_timeout_s"] * 1000)
        while len(self.outbox) and board.ticks_diff(deadline, board.ticks_ms()) > 0:
            await sleep_ms(5)

    def report(self, text):
        """An error frame: a text record `error` (what config.error() or a sensor said)."""
        emit({"ev": "error", "what": text})
        payload = senml.encode_pack(self.name, [], board.epoch_ms(), [("error", text[:200])])
        seq = self.seq.take()
        self.outbox.push(seq, cose.mac0(self.mac, self.kid, payload, seq))

    async def run(self):
        emit({"ev": "boot", "node": self.name, "seq": self.seq.next, "transport": self.cfg["transport"],
              "restored": self.outbox.restored, "stale": self.stale})
        for text in [config.error(self.cfg)] + self.problems:
            if text:
                self.report(text)
        if self.problems:
            board.show_code(config.blink_pattern(config.FAULT_SENSOR_START))
        if self.cfg["watchdog_ms"]:  # from here on the loop must feed it
            self.wdt = board.Watchdog(self.cfg["watchdog_ms"])
        sender = asyncio.create_task(self.send())
        await self.sample()
        await self.drain()
        sender.cancel()
        emit({"ev": "done", "sent": self.made, "acked": self.acked, "rejected": self.rejected,
              "dropped": self.outbox.dropped, "unacked": len(self.outbox), "heap_peak": self.heap_peak,
              "cmds": self.commands.applied_count, "cmds_replayed": self.commands.replayed,
              "bad_acks": getattr(self.link, "bad_acks", 0)})


class Commands:
    """Commands from the gateway, riding its acks (docs/protocol.md §3): applied once,
    reported in the next frame as `cmd` records `<id>:ok` or `<id>:error:<why>`.
    Only an ack for a frame still in the outbox is taken (the MAC binds the ack to that
    frame's sequence number, never reused), so a replayed ack applies nothing. Ids
    applied lately are kept, in RAM and for a reboot in a file, so a repeat is
    reported again rather than applied twice."""

    KEEP = 16

    def __init__(self, node, path):
        self.node = node
        self.path = path
        self.applied = []
        self.reports = []
        self.applied_count = 0
        self.replayed = 0
        self.reboot_at = None
        try:
            with open(path) as f:
                cid = f.read().strip()
            if cid:
                self.applied.append(cid)
                self.reports.append(cid + ":ok")  # the reboot it asked for is done
        except OSError:
            pass

    def take_reports(self):
        out = [("cmd", r) for r in self.reports]
        self.reports = []
        return out

    def apply(self, cmds):
        for c in cmds:
            if not (isinstance(c, list) and len(c) == 3 and isinstance(c[0], str)):
                continue
            cid, name, args = c
            if cid in self.applied:
                self.reports.append(cid + ":ok")
                continue
            err = self.run(cid, name, args if isinstance(args, dict) else {})
            self.applied.append(cid)
            if len(self.applied) > self.KEEP:
                self.applied.pop(0)
            self.applied_count += 1
            self.reports.append(cid + (":ok" if err is None else ":error:" + err))
            emit({"ev": "cmd", "id": cid, "cmd": name, "args": args, "ok": err is None, "error": err})
        if self.reports:
            self.node.make_frame([])  # report now, not at the next sample

    def run(self, cid, name, args):
        cfg = self.node.cfg
        if name == "set_period":
            return _set(cfg, "period_ms", args.get("period_ms"), protocol.PERIOD_MS_MIN, protocol.PERIOD_MS_MAX)
        if name == "set_batch":
            return _set(cfg, "batch", args.get("batch"), protocol.BATCH_MIN, protocol.BATCH_MAX)
        if name == "identify":
            if hasattr(board, "identify"):
                board.identify(args.get("seconds", 10))
            return None
        if name == "reboot":
            with open(self.path, "w") as f:
                f.write(cid)  # after the reboot, reported as done and never applied again
            self.reboot_at = board.ticks_add(board.ticks_ms(), 1000)  # time for the report to go out first
            return None
        if name in ("dispatch", "recall"):
            return None  # shown by the event: a resource's terminal acts on it
        return "unknown command " + str(name)

    def tick(self, now):
        if self.reboot_at is not None and board.ticks_diff(now, self.reboot_at) >= 0:
            emit({"ev": "reboot"})
            if hasattr(board, "reset"):
                board.reset()
            sys.exit(3)


def _set(cfg, key, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return "%s must be a whole number from %d to %d" % (key, low, high)
    cfg[key] = value
    return None


def main(argv, trial=None):
    if len(argv) < 2:
        sys.stderr.write("usage: main.py CONFIG.json\n")
        return 2
    cfg = config.boot(argv[1])  # never raises: bad settings fall back to their defaults
    if cfg["led_pin"] is not None:
        board.use_led(cfg["led_pin"])
    code = config.fault(cfg)
    if code and code <= config.FATAL:  # no identity to send frames with: only the LED can tell
        emit({"ev": "error", "what": config.error(cfg)})
        board.show_code(config.blink_pattern(code), True)  # on a board, until it is reflashed
        return 2
    if code:
        board.show_code(config.blink_pattern(code))  # once; the error frame says what is wrong
    try:
        node = Node(cfg, trial)
    except (OSError, ValueError) as e:  # the link did not open (a serial port, Wi-Fi): try again
        emit({"ev": "error", "what": "link: %s" % e})
        board.show_code(config.blink_pattern(config.FAULT_LINK))
        board.reset()
        return 2
    asyncio.run(node.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
