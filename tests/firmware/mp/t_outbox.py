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
print("OK t_outbox")
