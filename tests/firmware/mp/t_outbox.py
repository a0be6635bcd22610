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
for f in (log, log + ".tmp"):
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
# a power cut in the middle of a write: the torn record is ignored, the rest restored
with open(log, "ab") as f:
    f.write(bytes([0x46, 0, 0, 0, 99, 0, 50]) + b"half")
r3 = Outbox(4, log)
assert [i[0] for i in r3.items] == [i[0] for i in r.items]
# frames under another key (a rekeyed node) go, the rest stay; the log agrees after a reboot
r4 = Outbox(4, log)
before = [i[0] for i in r4.items]
assert r4.keep(lambda msg: msg != b"x" * 20) == len([s for s in before if s not in (2, 4)])
assert [i[0] for i in Outbox(4, log).items] == [s for s in before if s in (2, 4)]
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
print("OK t_outbox")
