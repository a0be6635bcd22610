# A resource's terminal with a simulated worker (a mechanic, a forklift driver) at it, for
# the bench and demos: each `dispatch` the gateway sends is accepted `accept_ms` later and
# reported done `work_ms` after that, as the readings `accept` and `done` whose value is the
# demand's id (the gateway's dispatcher takes them, docs/matching.md); a `recall` drops the
# job. Node config: "worker": {"accept_ms": 2000, "work_ms": 5000}. A real terminal sends the
# same two readings when its person presses a button.
import board

ACCEPT = 0  # a job's step: waiting to be accepted, then to be done
DONE = 1
NAMES = (b"accept", b"done")  # the readings, by step


class Worker:
    def __init__(self, spec, emit=None):
        self.emit = emit  # main.emit: the node's events (work())
        self.accept_ms = spec["accept_ms"]
        self.work_ms = spec["work_ms"]
        self.jobs = []  # [demand id, step, due (ticks_ms)], one a dispatch

    def dispatch(self, args):
        """A dispatch command's args; an error text, or None."""
        d = args.get("demand")
        if not isinstance(d, int) or isinstance(d, bool):
            return "dispatch without a demand id"
        for job in self.jobs:
            if job[0] == d:
                return None  # the same demand again (a resend): one job
        self.jobs.append([d, ACCEPT, board.ticks_add(board.ticks_ms(), self.accept_ms)])
        return None

    def recall(self, args):
        d = args.get("demand")
        self.jobs = [job for job in self.jobs if job[0] != d]
        return None

    def due(self, now):
        """The (step, demand id) of the next step due at `now` (ticks_ms), taken; None if none."""
        for job in self.jobs:
            if board.ticks_diff(now, job[2]) >= 0:
                step = job[1]
                if step == ACCEPT:
                    job[1] = DONE
                    job[2] = board.ticks_add(now, self.work_ms)
                else:
                    self.jobs.remove(job)
                return step, job[0]
        return None

    def work(self, node, now):
        """The step due now, sent at once in a frame of its own by `node` (main.Node)."""
        due = self.due(now)
        if due is None:
            return
        step, demand = due
        if node.pack.n:
            node.make_frame()  # the readings waiting first: the step goes in a frame of its own
        pack = node.pack
        node.clock.now()
        pack.day = node.clock.day
        pack.msod = node.clock.msod
        pack.add_obj(len(node.sensors) + step, 0, demand)
        if self.emit is not None:
            self.emit({"ev": "work", "demand": demand, "step": "done" if step else "accept"})
        node.make_frame(pack)
