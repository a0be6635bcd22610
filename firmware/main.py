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
from array import array

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython: micropython-lib's fallback
        return x

import board
import clock
import cose
import framing
import protocol
import senml
import sensors
import outbox


def emit(obj):
    # streamed: no string of the whole event, which a fragmented small heap may not hold
    json.dump(obj, sys.stdout)
    _end()


def field(name, value):
    """`, "name": value` of an event written a field at a time (after its `{"ev": ...`)."""
    sys.stdout.write(', "')
    sys.stdout.write(name)
    sys.stdout.write('": ')
    json.dump(value, sys.stdout)


def _end():
    sys.stdout.write("\n")
    try:
        sys.stdout.flush()
    except (AttributeError, OSError):
        pass


if hasattr(asyncio, "sleep_ms"):
    sleep_ms = asyncio.sleep_ms  # MicroPython: one preallocated awaitable, no coroutine per call
else:
    def sleep_ms(ms):  # type: ignore[misc]
        return asyncio.sleep(ms / 1000)


_FAULTS_IN_A_ROW = const(5)  # a task failing this often with no frame made between: reset the board
_RAW_NONE = const(255)  # Node.shifts: the sensor gives floats (read()), not raw integers
_TAG = const(9)  # a COSE_Mac0's tag: 8 bytes and their head
_CFG_KEPT = const(("ack_timeout_ms", "batch", "drain_timeout_s", "frames", "period_ms", "quiet", "sleep",
                   "state_file", "transport", "watchdog_ms"))  # Node.cfg after boot
_ROOM_MIN = const(160)  # the shortest run of the ring a pack is tried in when its bound finds none


# Heap figures in quiet mode (bench/firmware.py), in one array("i") (Node.heap) and four
# functions: the bytes allocated between two frames, measured with the collector paused after
# a collection; the live heap after a collection at frame 100 and at the end; the largest free
# block at the end. A class of its own and an instance of twelve attributes kept about 220
# bytes more of heap on 64-bit ports.
_H_EVERY = const(97)  # frames between measurements (odd: not in step with the outbox or the log)
_H_ARMED = const(0)
_H_START = const(1)
_H_WINDOWS = const(2)
_H_MIN = const(3)
_H_MAX = const(4)
_H_TOTAL = const(5)
_H_LIVE_100 = const(6)
_H_PEAK = const(7)
_H_END = const(8)
_H_FREE = const(9)
_H_LARGEST = const(10)
_H_N = const(11)
# the done event's names of the figures, from _H_MIN on
_H_NAMES = const(("alloc_min", "alloc_max", "alloc_mean", "live_100", "live_peak", "live_end", "free_end", "largest_free"))


def heap_frame(h, made):
    """After frame `made`: close the window open (one frame's allocations, with nothing
    collected meanwhile), and every _H_EVERY frames from frame 100 collect and open one."""
    if not hasattr(gc, "mem_alloc"):
        return
    if h[_H_ARMED]:
        a = gc.mem_alloc() - h[_H_START]
        gc.enable()
        h[_H_ARMED] = 0
        h[_H_WINDOWS] += 1
        h[_H_TOTAL] += a
        if a > h[_H_MAX]:
            h[_H_MAX] = a
        if h[_H_MIN] < 0 or a < h[_H_MIN]:
            h[_H_MIN] = a
    if made == 100 or (made > 100 and made % _H_EVERY == 0):
        gc.collect()
        used = gc.mem_alloc()
        if made == 100:
            h[_H_LIVE_100] = used
        if used > h[_H_PEAK]:
            h[_H_PEAK] = used
        if gc.mem_free() > 512:  # room for what a window allocates (nothing, in the steady state)
            gc.disable()
            h[_H_ARMED] = 1
            h[_H_START] = gc.mem_alloc()


def heap_report(h):
    """The end of the run: the last figures, kept for heap_end()."""
    if not hasattr(gc, "mem_alloc"):
        return
    if h[_H_ARMED]:
        gc.enable()
    gc.collect()
    h[_H_END] = gc.mem_alloc()
    h[_H_FREE] = gc.mem_free()
    lo, hi = 0, gc.mem_free()  # the largest block the heap can give now, probed by halving
    while hi - lo > 16:
        mid = (lo + hi) // 2
        try:
            b = bytearray(mid)
            del b
            lo = mid
        except MemoryError:
            hi = mid
        gc.collect()
    h[_H_LARGEST] = lo


def heap_end(h):
    """`, "heap": {...}` of the done event, a field at a time (a dict of its nine keys took a
    144-byte table on 64-bit ports, at the end of the run)."""
    sys.stdout.write(', "heap": {')
    if hasattr(gc, "mem_alloc"):
        sys.stdout.write('"windows": ')
        json.dump(h[_H_WINDOWS], sys.stdout)
        h[_H_TOTAL] //= max(1, h[_H_WINDOWS])  # the mean, in the order of _H_NAMES
        for i in range(8):
            field(_H_NAMES[i], h[_H_MIN + i])
    sys.stdout.write("}")


class Node:
    def __init__(self, cfg, trial=None):
        # the instance's dict takes its final size first, while the heap is in one piece:
        # grown at the end of boot, it needed a block the boot had split (296 B on 32-bit
        # ports; a 28 KB heap failed there on the Cortex-M3)
        for k in ("cfg", "name", "kid", "mac", "link", "seq", "trial", "outbox", "stale", "dropped_told",
                  "sensors", "problems", "clock", "shifts", "worker", "names", "pack", "heap", "converters",
                  "fillers", "wdt", "window", "payload", "too_big", "faults", "fault", "reset_path", "made",
                  "acked", "rejected", "commands", "fetcher", "boot_error", "sensor_blink", "jobs", "fault_row",
                  "fault_made"):
            setattr(self, k, None)
        # the settings used after boot, in a dict of their own made first, at its size, while the
        # heap is in one piece: the config's 27 keys (and their strings: port, host, Wi-Fi, node)
        # kept about 600 bytes more of heap on 64-bit ports; `cfg` is read at boot only
        kept: dict = dict.fromkeys(_CFG_KEPT)
        self.cfg = kept
        for k in _CFG_KEPT:
            kept[k] = cfg[k]
        # a reboot a command asked for, to report (its file looked up now: late in boot, a 32 KB
        # heap on 64-bit ports had no block for the lookup's result)
        cmd_kept = bool(board.read_file(cfg["state_file"] + ".cmd"))
        self.name = cfg["node"]
        self.kid = self.name.encode()
        self.mac = cose.Mac(cfg["key"])
        cfg["key"] = None  # in the MAC's state now
        # the buffers that live as long as the node first, while the heap is still in one piece
        # (on a 24 KB heap, made after the churn of boot, they find no hole large enough)
        gc.collect()
        if cfg["transport"] == "serial":
            import link_serial
            self.link = link_serial.SerialLink(cfg["port"], self.mac)
        else:
            import link_coap
            if not board.network_up(cfg["wifi_ssid"], cfg["wifi_password"]):
                raise OSError("Wi-Fi %r did not connect" % cfg["wifi_ssid"])
            self.link = link_coap.CoapLink(  # type: ignore[assignment]
                cfg["host"], cfg["coap_port"], self.mac, cfg["ack_timeout_ms"], cfg["max_retransmit"])
        # unacked frames survive a reboot or a power cut in a log beside the sequence file
        self.outbox = outbox.Outbox(cfg["outbox"], cfg["state_file"] + ".out" if cfg["state_file"] else None)
        # the sequence mark is a record of that log (a file of its own took a file object a time)
        self.seq = outbox.SeqStore(cfg["state_file"], log=self.outbox)
        # the tasks' coroutines (sample's frame takes 140 B on 32-bit ports) made while the heap
        # is in one piece: made when run() starts them, after boot, they found no block in 26 KB
        self.jobs = (self.send(), self.sample())
        self.trial = trial  # node updates (firmware/update.py, bootstage.py): None when booted without
        if trial is not None:
            trial.first_seq = self.seq.next
            # code on trial that runs but gets no frame acked (a link it broke, a gateway it cannot
            # reach) resets the board: the boot counts, and past the limit the old code is back
            trial.limit_ms = max(cfg["trial_s"] * 1000, 4 * cfg["batch"] * cfg["period_ms"])
            trial.t0 = board.ticks_ms()
        # frames restored from the log under another key (the node was rekeyed) would never
        # be acked and would hold the outbox up for good: they go, counted as dropped
        self.stale = 0
        if len(self.outbox):
            def ours(msg, mac=self.mac, kid=self.kid):  # a frame of this node's key: its own kid
                try:
                    header = cose.verify_mac0(mac, msg)[0]
                except ValueError:
                    return False
                return header.get(cose.HDR_KID) == kid
            self.stale = self.outbox.keep(ours)
            del ours
            # the check's code goes now, before the buffers below are made: left to run() to
            # unload, a 64-bit node with frames to restore found no heap for its sensors in 34 KB
            for m in ("outbox_whole", "cose_whole", "cbor"):
                sys.modules.pop(m, None)
            gc.collect()
        self.dropped_told = 0  # the outbox's drop count as last reported in a frame
        # the pack (its table of twelve attributes, its arrays) before the sensors, whose tables
        # grow as they are made and leave holes of 16 to 64 bytes behind: made after them, the
        # pack's table found no block in a 32 KB heap on 64-bit ports; its names come with them
        pack = self.pack = senml.Pack(self.name, (), cfg["batch"] + 1)  # remade by set_batch
        self.sensors, self.problems = sensors.build(cfg["sensors"], cfg["seed"], board)
        cfg["sensors"] = None  # built: their list is not needed again
        self.worker = None  # a resource's terminal (worker.py): its steps are readings of their own
        steps: tuple = ()
        if cfg["worker"]:
            import worker
            self.worker = worker.Worker(cfg["worker"], emit)
            steps = worker.NAMES
        # the sensors' names as bytes, one object for each name however many sensors share it
        # (a bytes object and its data are 64 bytes of heap on 64-bit ports), then the worker's
        # steps and the drop count; the list made at its size (grown, or joined, it left holes
        # in the heap where boot makes the pack next)
        ns = len(self.sensors)
        names = self.names = [b"dropped"] * (ns + len(steps) + 1)
        for i in range(ns):
            name = self.sensors[i].name
            for j in range(i):
                if self.sensors[j].name == name:
                    names[i] = names[j]
                    break
            else:
                names[i] = name.encode()
        for i in range(len(steps)):
            names[ns + i] = steps[i]
        # a frame's readings and its pack, in buffers made once: the steady state allocates
        # nothing for them (times from the clock in small ints, raw integer readings)
        pack.names = names
        pack.count = bytearray(len(names) + 1)
        self.clock = clock.Clock(board)
        shifts = self.shifts = bytearray(ns)
        for i in range(ns):
            s = self.sensors[i]
            shifts[i] = getattr(s, "shift", _RAW_NONE) if hasattr(s, "read_raw") else _RAW_NONE
        self.heap = array("i", [0] * _H_N)  # figures in quiet mode: heap_frame()
        self.heap[_H_MIN] = -1
        # sensors that convert for a while before a read (DS18B20: up to 750 ms) are all
        # started first, then read once the longest is done; the loop runs meanwhile
        self.converters = [s for s in self.sensors if hasattr(s, "start")]
        # and those that take a window of samples (ADXL345) fill it while the loop runs
        self.fillers = [s for s in self.sensors if hasattr(s, "fill")]
        self.wdt = None  # the hardware watchdog, started by run()
        self.window = cfg["window"] or self.link.window_default
        # the pack is written in the outbox's ring where the frame will be, then sealed there
        # (moved forward over the room left for the COSE head), or in the CoAP link's receive
        # buffer (free between polls): no buffer of a whole message of its own, 1 KB less of
        # heap. A pack whose bound passes half the ring (a large batch) takes a scratch made
        # at its first frame.
        self.payload = getattr(self.link, "scratch", None)
        self.too_big = 0  # packs that did not fit a message (a batch too large for its names)
        self.faults = 0  # tasks that failed (failed())
        self.fault = None  # the last failure, for the next frame
        self.fault_row = 0  # failures with no frame made between them (failed())
        self.fault_made = -1  # frames made at the last failure
        self.reset_path = cfg["state_file"] + ".reset" if cfg["state_file"] else None
        self.made = 0
        self.acked = 0
        self.rejected = 0
        # commands (commands.py) are loaded at the first ack that carries some (cmds()), or now
        # when a reboot one asked for is to be reported: a node that gets none keeps none of it
        self.commands = None
        if cmd_kept:
            self.cmds()
        self.fetcher = None  # node updates: made by the first `update` offer (fetch.py)
        self.boot_error = None  # config.error(cfg), and the sensor fault's blink code: set by main()
        self.sensor_blink = None

    def cmds(self):
        """The node's Commands (commands.py), loaded and made at the first need: about 510 bytes
        of heap on 32-bit ports, 1,010 on 64-bit (and the CBOR decoder that an ack's commands
        load, 430 / 830), then kept (docs/firmware.md, "Code loaded at its first use")."""
        c = self.commands
        if c is None:
            import commands
            c = self.commands = commands.Commands(self, self.cfg["state_file"] + ".cmd", emit)
        return c

    @property
    def empty(self):
        """The pack a frame of reports goes in (make_frame(node.empty)): the readings' own, so
        the readings waiting go with the reports, sooner than the batch would send them (a
        pack of its own would keep about 430 bytes of heap for rare frames)."""
        return self.pack

    def add(self, i, value):
        """Reading of sensor i at the clock's time: value an int in the sensor's quanta (raw),
        else a float."""
        pack = self.pack
        c = self.clock
        if pack.n == 0:
            pack.day = c.day
            pack.msod = c.msod
            dt = 0
        else:
            dt = c.since(pack.day, pack.msod)
        s = self.shifts[i]
        if s == _RAW_NONE:
            pack.add_obj(i, dt, value)
        else:
            pack.add_raw(i, dt, value, s)

    def make_frame(self, pack=None):
        """The pack of the readings added since the last frame (and the reports waiting), as
        a COSE_Mac0 into the outbox."""
        if pack is None:
            pack = self.pack
        if pack.n == 0:
            self.clock.now()
            pack.day = self.clock.day
            pack.msod = self.clock.msod
        readings = pack.n
        try:
            self._frame(pack, readings)
        finally:  # whatever failed, the next readings start a new pack (a failure is the task's: failed())
            pack.clear()
        if self.cfg["quiet"]:
            heap_frame(self.heap, self.made)

    def _frame(self, pack, readings):
        if self.outbox.dropped != self.dropped_told:
            # frames lost to a full outbox are reported in the next one: a series of their own
            self.dropped_told = self.outbox.dropped
            pack.add_obj(len(self.names) - 1, 0, self.dropped_told)
        texts = self.commands.take_reports() if self.commands else ()
        fault = self.fault
        if fault is not None:  # a task failed: told once, in the next frame
            self.fault = None  # (with no heap to tell it, not told: else no frame would be made again)
            try:
                if type(fault) is tuple:  # text records made already (commands with no heap)
                    texts = list(texts) + list(fault) if texts else fault
                else:
                    texts = list(texts) + [(b"fault", fault[:200].encode())]
            except MemoryError:
                pass
        if self.trial is not None:
            reports = self.trial.take_reports()  # node updates: installed, refused, rolled back, confirmed
            if reports:
                texts = list(texts) + [(n.encode(), r.encode()) for n, r in reports]
        box = self.outbox
        scratch = self.payload
        need = cose.MAC0_OVERHEAD + pack.bound(texts)
        if scratch is None and (2 * need > len(box.data) or need > framing.MAX_ENCODED):
            scratch = self.payload = bytearray(framing.MAX_ENCODED + 1)
        at = -1
        spill = None
        limit = 0
        if scratch is None:  # in the ring, after room for the COSE head
            at = box.reserve(need)
            if at < 0:  # no run as long as the bound (the ring fills: an outage): the longest
                at = box.reserve(_ROOM_MIN, True)
                limit = box.room - _TAG
            if at < 0:  # the ring is full: this frame gets a buffer of its own
                spill = box.spill_buffer(need)
                at = box.SCRATCH
            scratch = box.data if spill is None else spill
        src = 0 if at < 0 else at + cose.MAC0_OVERHEAD - _TAG
        end = -1
        try:
            end = pack.write(scratch, src, texts, limit) - src
        except IndexError:
            if limit:  # the pack is longer than that run: a buffer of its own
                spill = scratch = box.spill_buffer(need)
                at = box.SCRATCH
                src = at + cose.MAC0_OVERHEAD - _TAG
                try:
                    end = pack.write(scratch, src, texts) - src
                except IndexError:
                    pass
        if end < 0 or end + cose.MAC0_OVERHEAD > framing.MAX_MESSAGE:
            # more than a message holds: the readings go, counted and told
            self.too_big += 1
            emit({"ev": "error", "what": "a pack of %d readings passed %d bytes: lower batch" % (
                readings, framing.MAX_MESSAGE)})
            return
        seq = self.seq.take()
        if at < 0:  # in a scratch: sealed into the ring
            at = box.reserve(end + cose.MAC0_OVERHEAD)
            if at < 0:
                spill = box.spill_buffer(end + cose.MAC0_OVERHEAD)
                at = box.SCRATCH
        out = box.data if spill is None else spill
        size = cose.seal_into(self.mac, self.kid, seq, scratch, end, out, at, src)
        if spill is not None and scratch is spill:  # spilled for its bound: into the ring if it fits now
            k = box.reserve(size)
            if k >= 0:
                d = box.data
                for i in range(size):
                    d[k + i] = spill[at + i]
                at = k
                spill = None
        box.commit(seq, at, size, spill)
        if readings:
            self.made += 1  # frames of readings (a report alone is not one of cfg["frames"])
        if not self.cfg["quiet"]:
            self._sent(pack, seq, texts)

    def _sent(self, pack, seq, texts):
        # The `sent` event: its own method, as its comprehensions make closures over the locals
        # they use, and a function's closed-over locals are cells allocated at every call.
        # The readings in the order the pack carries them (grouped by sensor), times in ms.
        t0 = pack.day * clock.DAY_MS + pack.msod
        pack.plan()
        emit({"ev": "sent", "seq": seq, "r": [[self.names[pack.idx[k]].decode(), t0 + pack.dt[k], pack.value(k)]
                                              for k in pack.order[:pack.n]]
              + [[n.decode(), t0, text.decode()] for n, text in texts]})

    async def sample(self):
        cfg = self.cfg
        tick = 0
        sensors_ = self.sensors
        shifts = self.shifts
        while not cfg["frames"] or self.made < cfg["frames"]:
            try:
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
                self.clock.now()  # one time for the round's readings
                for i in range(len(sensors_)):
                    s = sensors_[i]
                    if tick % s.every:
                        continue  # a sensor with a longer period than the node's
                    try:
                        v = s.read() if shifts[i] == _RAW_NONE else s.read_raw()
                    except (sensors.SensorError, OSError) as e:
                        if not cfg["quiet"]:
                            emit({"ev": "error", "what": "%s: %s" % (s.name, e)})
                        continue
                    self.add(i, v)
                    if self.pack.n >= cfg["batch"]:
                        self.make_frame()
                tick += 1
                if cfg["sleep"] == "deep" and self.sensors:
                    if self.pack.n:
                        self.make_frame()
                    await self.drain()
                    board.deepsleep(cfg["period_ms"])  # boots again; unacked frames wait in the outbox log
                if cfg["sleep"] == "light" and cfg["period_ms"] >= 20:
                    await self.rest(cfg["period_ms"])
                else:
                    await sleep_ms(cfg["period_ms"])
                # as fast as possible means as fast as the link acks: wait for room rather than drop
                while not cfg["period_ms"] and len(self.outbox) >= self.outbox.capacity - 1:
                    await sleep_ms(1)
            except Exception as e:  # not CancelledError: a task cancelled ends
                self.failed("sample", e)  # counted, told; after a few in a row with no frame made: a reset
                await sleep_ms(100)

    async def send(self):
        cfg = self.cfg
        link = self.link
        timeout = cfg["ack_timeout_ms"]
        while True:
            try:
                if self.wdt is not None:
                    self.wdt.feed()
                now = board.ticks_ms()
                for i in range(link.poll(now)):  # acks in link.acks (seq, status, commands or None)
                    seq = link.ack_seq[i]
                    cmds = link.ack_cmds[i]
                    if cmds:  # commands loaded before the ack is taken
                        c = self.commands
                        if c is None and cmds is not True:
                            try:
                                c = self.cmds()
                            except MemoryError:
                                pass
                        if not c or cmds is True:  # no heap for them (here, or the link's decoder)
                            # the ack is taken all the same (its frame is stored: left to resend,
                            # each ack would carry the command again and frames would be dropped);
                            # commands are not taken until a reboot (the gateway offers them
                            # until they expire), counted, and the next frame tells why, once
                            cmds = None
                            self.faults += 1
                            ls = sys.modules["link_serial"]
                            if not getattr(ls, "no_cmds"):
                                setattr(ls, "no_cmds", 1)  # the links decode acks' commands no more
                                # the frame's text records themselves, a constant (no heap to make them)
                                self.fault = ((b"fault", b"commands: no heap to take them (MemoryError), "
                                                         b"none until a reboot"),)
                    if self.outbox.ack(seq):
                        self.acked += 1
                        status = link.ack_status[i]
                        if status == protocol.ACK_REJECTED:
                            self.rejected += 1
                        elif self.trial is not None:
                            self.trial.acked(seq)  # node updates: the slot on trial works
                        if not self.cfg["quiet"]:
                            emit({"ev": "ack", "seq": seq, "st": status})
                        if cmds:
                            self.cmds().apply(cmds)
                    elif cmds:
                        # an ack for no frame in the outbox: a late repeat, or a replay
                        self.cmds().replayed += 1
                if self.commands:
                    self.commands.tick(now)
                if self.worker is not None:
                    self.worker.work(self, now)
                if self.fetcher is not None:
                    self.fetcher.tick(now)  # node updates: the next block, paced
                trial = self.trial
                if trial is not None and trial.on_trial and board.ticks_diff(now, trial.t0) > trial.limit_ms:
                    self.reset("update: %s not confirmed in %d s" % (trial.version_text(), trial.limit_ms // 1000))
                if not link.busy():
                    free = self.window - self.outbox.in_flight(now, timeout)
                    box = self.outbox
                    while free > 0:
                        k = box.next_due(now, timeout)
                        if k < 0:
                            break
                        link.send(box.seqs[k], box.buf(k), box.offs[k], box.lens[k])
                        free -= 1
                        if link.busy():
                            break
                await sleep_ms(1)
            except Exception as e:  # not CancelledError: a task cancelled ends
                self.failed("send", e)  # counted, told; after a few in a row with no frame made: a reset
                await sleep_ms(100)

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
              "restored": self.outbox.restored, "stale": self.stale,
              "outbox_bytes": len(self.outbox.data)})
        for text in [self.boot_error] + self.problems:
            if text:
                self.report(text)
        if self.problems:
            board.show_code(self.sensor_blink)
        # what boot and its reports loaded off the frame path goes (each is loaded again at its
        # next use): the check of restored frames, the reports' whole-message encoders
        for m in ("outbox_whole", "cose_whole", "senml_whole", "cbor"):
            sys.modules.pop(m, None)
        if self.cfg["watchdog_ms"]:  # from here on the loop must feed it
            self.wdt = board.Watchdog(self.cfg["watchdog_ms"])
        kept = board.read_file(self.reset_path) if self.reset_path else None
        if kept:  # the reason for the reset this node did itself, kept across it
            self.report("reset: " + kept.decode())
            try:
                import os
                os.remove(self.reset_path)
            except (ImportError, OSError):
                pass
        sender = asyncio.create_task(self.jobs[0])
        await self.jobs[1]
        heap_report(self.heap)  # the steady state's heap, before the drain
        # drain() inline: its coroutine (112 bytes on 64-bit ports), made now, found no block
        # in a 32 KB heap after an ack with commands it had no heap to take
        deadline = board.ticks_add(board.ticks_ms(), self.cfg["drain_timeout_s"] * 1000)
        while len(self.outbox) and board.ticks_diff(deadline, board.ticks_ms()) > 0:
            await sleep_ms(5)
        sender.cancel()
        # the done event a field at a time: a dict of its twelve keys takes a 192-byte table on
        # 64-bit ports (96 on 32-bit), a block the heap may not have in one piece by now
        sys.stdout.write('{"ev": "done"')
        field("sent", self.made)
        field("acked", self.acked)
        field("rejected", self.rejected)
        field("dropped", self.outbox.dropped)
        field("unacked", len(self.outbox))
        heap_end(self.heap)
        c = self.commands
        field("cmds", c.applied_count if c else 0)
        field("cmds_replayed", c.replayed if c else 0)
        field("bad_acks", getattr(self.link, "bad_acks", 0))
        field("too_big", self.too_big)
        field("faults", self.faults)
        sys.stdout.write("}")
        _end()

    def failed(self, name, e):
        """The task `name` failed (MemoryError included; the task goes on with its next turn,
        after 100 ms): counted, the reason kept for the next frame (a text record `fault`) and
        told. After _FAULTS_IN_A_ROW failures with no frame made between them the node resets,
        the reason kept in a file across the reset and reported after boot (a text record
        `error`, "reset: ..."). Each task catches its own failures in its loop: a coroutine
        of its own to guard it (and start it again) kept 288 bytes of heap a task on 64-bit
        ports, 144 on 32-bit ones."""
        self.faults += 1
        self.fault_row = self.fault_row + 1 if self.fault_made == self.made else 1
        self.fault_made = self.made
        try:
            self.fault = "%s: %s %s" % (name, type(e).__name__, e)
            emit({"ev": "error", "what": "task " + self.fault, "faults": self.faults})
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)  # the console's stderr: where it failed
            else:  # CPython (simulated nodes): its traceback module, which boards do not have
                __import__("traceback").print_exc()
        except MemoryError:  # no heap to tell it (a MemoryError, mostly): counted, and this is told
            self.fault = "no heap to tell a task's failure"
        if self.fault_row >= _FAULTS_IN_A_ROW:
            self.reset(self.fault)

    def reset(self, reason):
        """Reset the board, the reason kept for the report after boot."""
        try:
            if self.reset_path:
                board.write_file_atomic(self.reset_path, reason[:200].encode())
            emit({"ev": "reset", "why": reason})
        except (MemoryError, OSError):  # reset all the same (the reason is lost)
            pass
        board.reset()
        sys.exit(4)  # a board without a reset (the unix board): the process ends


def main(argv, trial=None):
    if len(argv) < 2:
        sys.stderr.write("usage: main.py CONFIG.json\n")
        return 2
    # config is needed at boot only: what the node uses of it later is taken now, and the module
    # is unloaded before the node's buffers are made (about 800 bytes of heap on 32-bit ports)
    import config
    cfg = config.boot(argv[1])  # never raises: bad settings fall back to their defaults
    error = config.error(cfg)
    code = config.fault(cfg)
    fatal = code and code <= config.FATAL
    blink = config.blink_pattern(code) if code else None
    sensor_blink = config.blink_pattern(config.FAULT_SENSOR_START)
    del config
    sys.modules.pop("config", None)
    gc.collect()
    if cfg["led_pin"] is not None:
        board.use_led(cfg["led_pin"])
    if fatal:  # no identity to send frames with: only the LED can tell
        emit({"ev": "error", "what": error})
        board.show_code(blink, True)  # on a board, until it is reflashed
        return 2
    if code:
        board.show_code(blink)  # once; the error frame says what is wrong
    try:
        node = Node(cfg, trial)
    except (OSError, ValueError) as e:  # the link did not open (a serial port, Wi-Fi): try again
        emit({"ev": "error", "what": "link: %s" % e})
        import config  # again, for this rare path only: its pattern was not kept through the run
        board.show_code(config.blink_pattern(config.FAULT_LINK))
        board.reset()
        return 2
    node.boot_error = error
    del cfg  # the node keeps what it uses of it (Node.cfg)
    node.sensor_blink = sensor_blink
    asyncio.run(node.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
