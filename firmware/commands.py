# Commands from the gateway (docs/protocol.md §3), loaded by the node at the first ack that
# carries some (or at boot when a reboot it asked for is to be reported): a node that gets
# none keeps none of this on its heap (main.Node.cmds).
import sys

import board
import protocol
import senml


class Commands:
    """Commands from the gateway, riding its acks (docs/protocol.md §3): applied once,
    reported in the next frame as `cmd` records `<id>:ok` or `<id>:error:<why>`.
    Only an ack for a frame still in the outbox is taken (the MAC binds the ack to that
    frame's sequence number, never reused), so a replayed ack applies nothing. Ids
    applied lately are kept, in RAM and for a reboot in a file, so a repeat is
    reported again rather than applied twice."""

    KEEP = 16

    def __init__(self, node, path, emit):
        self.node = node
        self.emit = emit  # main.emit (main may run as __main__, or as a slot's `node` module)
        self.path = path
        self.applied = []
        self.reports = []
        self.applied_count = 0
        self.replayed = 0
        self.reboot_at = None
        cid = board.read_file(path)
        if cid:
            cid = cid.decode().strip()
            if cid:
                self.applied.append(cid)
                self.reports.append(cid + ":ok")  # the reboot it asked for is done

    def take_reports(self):
        """(b"cmd", report bytes) records for the next frame; () when none wait (no allocation)."""
        if not self.reports:
            return ()
        out = [(b"cmd", r.encode()) for r in self.reports]
        self.reports = []
        return out

    def apply(self, cmds):
        for c in cmds:
            if not (isinstance(c, list) and len(c) == 3 and isinstance(c[0], str)):
                continue
            cid, name, args = c
            if cid in self.applied and name != "update":  # an update offer again is taken again: it resumes
                self.reports.append(cid + ":ok")
                continue
            err = self.run(cid, name, args if isinstance(args, dict) else {})
            if cid not in self.applied:
                self.applied.append(cid)
            if len(self.applied) > self.KEEP:
                self.applied.pop(0)
            self.applied_count += 1
            self.reports.append(cid + (":ok" if err is None else ":error:" + err))
            self.emit({"ev": "cmd", "id": cid, "cmd": name, "args": args, "ok": err is None, "error": err})
        if self.reports:
            self.node.make_frame(self.node.empty)  # report now, not at the next sample

    def run(self, cid, name, args):
        cfg = self.node.cfg
        if name == "set_period":
            return _set(cfg, "period_ms", args.get("period_ms"), protocol.PERIOD_MS_MIN, protocol.PERIOD_MS_MAX)
        if name == "set_batch":
            err = _set(cfg, "batch", args.get("batch"), protocol.BATCH_MIN, protocol.BATCH_MAX)
            if err is None:
                _resize(self.node, cfg["batch"])
            return err
        if name == "identify":
            if hasattr(board, "identify"):
                board.identify(args.get("seconds", 10))
            return None
        if name == "reboot":
            with open(self.path, "w") as f:
                f.write(cid)  # after the reboot, reported as done and never applied again
            self.reboot_at = board.ticks_add(board.ticks_ms(), 1000)  # time for the report to go out first
            return None
        if name == "update":  # node updates: fetch the release the gateway offers (fetch.py)
            node = self.node
            if node.fetcher is None:
                import fetch
                node.fetcher = fetch.Fetcher(node)
            return node.fetcher.offer(args)
        if name in ("dispatch", "recall"):
            worker = self.node.worker  # a simulated worker acts on it; else shown by the event
            return None if worker is None else getattr(worker, name)(args)
        return "unknown command " + str(name)

    def tick(self, now):
        if self.reboot_at is not None and board.ticks_diff(now, self.reboot_at) >= 0:
            self.emit({"ev": "reboot"})
            if hasattr(board, "reset"):
                board.reset()
            sys.exit(3)


def _set(cfg, key, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return "%s must be a whole number from %d to %d" % (key, low, high)
    cfg[key] = value
    return None


def _resize(node, batch):
    """The node's pack for `batch` readings (and the drop count), keeping those waiting
    (set_batch: here, with the command, rather than on every node's heap)."""
    old = node.pack
    if len(old.idx) >= batch + 1:
        return
    node.pack = senml.Pack(node.name, node.names, batch + 1)
    for k in range(old.n):
        if old.shift[k] == senml.OBJ:
            node.pack.add_obj(old.idx[k], old.dt[k], old.obj[k])
        else:
            node.pack.add_raw(old.idx[k], old.dt[k], old.raw[k], old.shift[k])
    node.pack.day = old.day
    node.pack.msod = old.msod
