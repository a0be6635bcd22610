# Sequence numbers never reused across reboots; the outbox drops the oldest when full.
import sys
import os

ROOT = sys.argv[1]
TMP = sys.argv[2]
sys.path.insert(0, ROOT + "/firmware")
from outbox import Outbox, SeqStore  # noqa: E402

path = TMP + "/seq.dat"
try:
    os.remove(path)
except OSError:
    pass
used = []
for boot in range(5):
    s = SeqStore(path, margin=10)
    for _ in range(boot * 7 + 3):  # a power cut at any point between frames
        used.append(s.take())
assert len(used) == len(set(used)), "a sequence number was reused"
assert used == sorted(used)

o = Outbox(3)
for seq in range(5):
    o.push(seq, b"m%d" % seq if hasattr(b"", "__mod__") else b"m")
assert len(o) == 3 and o.dropped == 2 and [i[0] for i in o.items] == [2, 3, 4]
assert [i[0] for i in o.due(1000, 100, 2)] == [2, 3]
assert [i[0] for i in o.due(1050, 100, 5)] == [4]  # 2 and 3 were sent 50 ms ago
assert o.ack(3) and not o.ack(3)
assert [i[0] for i in o.due(1100, 100, 5)] == [2]  # 100 ms since the first send: resend
assert [i[0] for i in o.due(1250, 100, 5)] == [4]  # 2 backs off to 200 ms after its second try
# never more than SPAN numbers ahead of the oldest unacked frame (the gateway's replay window is 64)
import outbox  # noqa: E402
o = Outbox(100)
for seq in range(10, 80):
    o.push(seq, b"m")
sent = [i[0] for i in o.due(0, 100, 100)]
assert sent == list(range(10, 10 + outbox.SPAN)), sent
assert o.ack(10)
assert [i[0] for i in o.due(1, 100, 100)] == [10 + outbox.SPAN]

# on flash: a reboot (a new Outbox on the same log) brings back exactly the unacked frames
log = TMP + "/out.log"
for f in (log, log + ".b"):
    try:
        os.remove(f)
    except OSError:
        pass
o = Outbox(4, log, log_max=200)
for seq in range(6):
    o.push(seq, bytes([seq]) * (10 + seq))  # 0 and 1 are dropped as the outbox fills
assert o.ack(3) and o.dropped == 2
r = Outbox(4, log, log_max=200)
assert [(i[0], i[1]) for i in r.items] == [(2, bytes([2]) * 12), (4, bytes([4]) * 14), (5, bytes([5]) * 15)]
assert r.restored == 3 and all(i[2] is None for i in r.items)  # to be sent again
for seq in range(6, 40):  # long enough to compact the log several times
    r.push(seq, b"x" * 20)
    assert r.ack(seq - 1) or seq - 1 in (2, 4)
r2 = Outbox(4, log, log_max=200)
assert [i[0] for i in r2.items] == [i[0] for i in r.items], ([i[0] for i in r2.items], [i[0] for i in r.items])
assert r.log_size <= 200 + 27


def gen_of(p):  # the generation in a log file's head, -1 for none
    with open(p, "rb") as f:
        h = f.read(5)
    return int.from_bytes(h[1:5], "big") if len(h) == 5 and h[0] == 0x47 else -1


def in_use():  # the log file with the newest head, and the other
    a, b = gen_of(log), gen_of(log + ".b")
    return (log, log + ".b") if a > b else (log + ".b", log)


# a power cut in the middle of a write: the torn record is ignored, the rest restored
cur, other = in_use()
with open(cur, "ab") as f:
    f.write(b"F" + gen_of(cur).to_bytes(4, "big") + bytes([0, 0, 0, 99, 0, 50]) + b"half")
r3 = Outbox(4, log)
assert [i[0] for i in r3.items] == [i[0] for i in r.items]
# a power cut in the middle of a compaction: the file being rewritten has no valid head yet (made
# invalid first, written last), so the one in use is restored, whatever the other holds
cur, other = in_use()
want = [(i[0], i[1]) for i in Outbox(4, log).items]
cur, other = in_use()
with open(other, "r+b") as f:
    f.write(b"\0" + bytes([0x15, 0xA5, 0xA5, 0xA5]) + b"F" + bytes(30))
assert [(i[0], i[1]) for i in Outbox(4, log).items] == want
# frames under another key (a rekeyed node) go, the rest stay; the log agrees after a reboot
r4 = Outbox(4, log)
before = [i[0] for i in r4.items]
assert r4.keep(lambda msg: msg != b"x" * 20) == len([s for s in before if s not in (2, 4)])
assert [i[0] for i in Outbox(4, log).items] == [s for s in before if s in (2, 4)]
# a compaction into a file that was longer: what is left past its end is an older generation's
for f in (log, log + ".b"):
    os.remove(f)
o = Outbox(4, log, log_max=400)
for seq in range(30):
    o.push(seq, bytes([seq]) * 40)  # fills a file past log_max with 4 frames kept
acked = [s for s in range(30) if s % 3]
for seq in acked:
    o.ack(seq)
want = [i[0] for i in o.items]
assert want == [s for s in range(26, 30) if s not in acked], want
assert [i[0] for i in Outbox(4, log).items] == want
# a compaction that finds no heap for its file (open raises MemoryError: one file is open at
# a time, and the one in use is closed first) raises to the caller, the node's task; the next
# record writes the log whole from the ring, and a reboot restores what was pending
import outbox as outbox_module  # noqa: E402


def no_heap(*args):
    raise MemoryError("memory allocation failed")


for f in (log, log + ".b"):
    os.remove(f)
o = Outbox(4, log, log_max=200)
outbox_module.open = no_heap
failed = 0
try:
    for seq in range(10):
        o.push(seq, bytes([seq + 1]) * 40)
except MemoryError:
    failed = seq
outbox_module.open = open
assert failed and seq == failed, "no compaction failed"
assert [i[0] for i in o.items] == list(range(max(0, failed - 3), failed + 1)), [i[0] for i in o.items]
assert o.ack(failed - 1)  # the next record: the log written whole again
want = [(i[0], i[1]) for i in o.items]
assert [(i[0], i[1]) for i in Outbox(4, log).items] == want, want
# when the ring is full before `capacity` frames are (an outage), frames spill into buffers of
# their own, in order; at `capacity` the oldest go, counted; the ring serves again once acked
o = Outbox(40)
for seq in range(40):
    o.push(seq, bytes([seq]) * 150)
assert len(o) == 40 and o.dropped == 0 and o.spilled == 40 - len(o.data) // 154, (len(o.data), o.spilled)
assert [(i[0], i[1]) for i in o.items] == [(s, bytes([s]) * 150) for s in range(40)]
assert o.ack(0) and o.ack(5)
for seq in range(40, 60):
    o.push(seq, bytes([seq]) * 150)
assert len(o) == 40 and o.dropped == 18 and [i[0] for i in o.items][:2] == [20, 21]
for seq in range(20, 60):
    assert o.ack(seq)
assert len(o) == 0 and o.reserve(150) == o.SCRATCH  # all acked: the ring is empty again

# the free runs of the ring: reserve gives the first that holds n bytes, or with `largest` the
# longer one, and `room` says where the run ends (a pack written there stops before it)
o = Outbox(8, size=1000)
for seq in range(4):
    o.push(seq, bytes([seq + 1]) * 196)  # at 4, 204, 404, 604: top 800
assert o.ack(0) and o.ack(1)  # free: [800, 1000) and [0, 400)
assert o.reserve(100) == 804 and o.room == 1000
assert o.reserve(100, True) == 4 and o.room == 400
assert o.reserve(300) == 4 and o.room == 400
assert o.reserve(400) == -1
before = [(i[0], i[1]) for i in o.items]
import senml  # noqa: E402
pack = senml.Pack("n1", [b"temp", b"vib"], 8)
for k in range(8):
    pack.add_raw(k % 2, k * 250, 100 + k, 4)
n = len(senml.encode_pack("n1", [(("temp", "vib")[k % 2], k * 250, (100 + k) / 16) for k in range(8)], 0))
assert n <= pack.bound(), (n, pack.bound())
try:  # a run too short for the pack: IndexError before anything past it is written
    pack.write(o.data, 804, (), 804 + n - 1)
    raise AssertionError("no IndexError")
except IndexError:
    pass
assert [(i[0], i[1]) for i in o.items] == before
assert pack.write(o.data, 804, (), 1000) - 804 == n

# the sequence mark in the outbox log: never reused across reboots (a cut at any point between
# frames), taken from an older firmware's mark file once, which then goes
for f in (log, log + ".b", path):
    try:
        os.remove(f)
    except OSError:
        pass
with open(path, "w") as f:
    f.write("1000")  # the mark older firmware wrote
used = []
for boot in range(5):
    box = Outbox(4, log, log_max=300)
    s = SeqStore(path, margin=10, log=box)
    for _ in range(boot * 7 + 3):
        seq = s.take()
        used.append(seq)
        box.push(seq, b"y" * 30)  # the log compacts now and then: the mark goes with it
        box.ack(seq)
    try:
        open(path).close()
        assert False, "the old mark file stays"
    except OSError:
        pass
assert used[0] == 1000 and len(used) == len(set(used)) and used == sorted(used), used

# nothing is allocated by a mark after boot, nearly nothing by a compaction (MicroPython: its
# collector counts)
try:
    import gc
    alloc = gc.mem_alloc
except (ImportError, AttributeError):
    alloc = None


def steady(box, s, m):  # 40 frames made, logged and acked; the bytes allocated meanwhile
    gc.collect()
    gc.disable()
    a0 = alloc()
    for _ in range(40):
        seq = s.take()
        at = box.reserve(60)
        for i in range(60):
            box.data[at + i] = m[i]
        box.commit(seq, at, 60)
        box.ack(seq)
    a = alloc() - a0
    gc.enable()
    return a


if alloc is not None:
    box = Outbox(4, log, log_max=300)
    s = SeqStore(path, margin=10, log=box)
    gens = box.gen
    a = steady(box, s, bytearray(b"z" * 60))
    compactions = box.gen - gens
    assert compactions > 3 and s.mark > 40, (box.gen, s.mark)  # compacted and marked
    # a compaction opens the file it rewrites again (to empty it: LittleFS keeps a file's
    # length), its old object collected first: what stays is at most a small piece a time
    assert a <= 16 * compactions, (a, compactions)
print("OK t_outbox")
