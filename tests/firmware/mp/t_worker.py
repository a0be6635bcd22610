# A resource's simulated worker (worker.py): a dispatch accepted accept_ms later and done
# work_ms after that, a resend of the same dispatch one job, a recall drops it, and a
# dispatch with no demand id an error. MicroPython and CPython.
import sys

ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/firmware")
import board  # noqa: E402
import worker  # noqa: E402

D = 1764900000123  # demand ids are milliseconds since 1970: past 2**32
w = worker.Worker({"accept_ms": 10000, "work_ms": 20000})
assert w.dispatch({"demand": D, "need": "mechanic"}) is None
t0 = board.ticks_ms()
assert w.dispatch({"demand": D}) is None and len(w.jobs) == 1  # a resend: one job
assert w.due(t0) is None
assert w.due(board.ticks_add(t0, 10000)) == (worker.ACCEPT, D)
t1 = board.ticks_add(t0, 10000)
assert w.due(t1) is None and w.due(board.ticks_add(t1, 19999)) is None
assert w.due(board.ticks_add(t1, 20000)) == (worker.DONE, D)
assert w.jobs == [] and w.due(board.ticks_add(t1, 90000)) is None
# a recall drops the job, whatever its step
assert w.dispatch({"demand": D + 1}) is None and w.dispatch({"demand": D + 2}) is None
w.recall({"demand": D + 1})
assert [j[0] for j in w.jobs] == [D + 2]
assert w.due(board.ticks_add(board.ticks_ms(), 10000)) == (worker.ACCEPT, D + 2)
for bad in ({}, {"demand": "7"}, {"demand": True}, {"demand": 1.5}):
    assert w.dispatch(bad) == "dispatch without a demand id", bad
assert worker.NAMES[worker.ACCEPT] == b"accept" and worker.NAMES[worker.DONE] == b"done"
print("OK t_worker")
