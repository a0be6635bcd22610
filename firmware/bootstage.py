# The boot stage of a node that takes updates (firmware/update.py): run first, before any
# other firmware module is imported, so the signature check has the heap to itself.
#   micropython firmware/bootstage.py CONFIG.json UPDATE_DIR     (the unix board, the bench)
#   on a board, /main.py:  import bootstage; bootstage.main(["", "/node.json", "/update"])
# UPDATE_DIR holds release.pub (the release public key, hex, from `headrace release keygen`)
# and base_version (the version flashed by cable, e.g. 1.0.0); without release.pub the node
# installs nothing (a pending slot is refused) but still counts trial boots and rolls back.
# Code on trial that fails (at import or later) resets the board, so that the next boot is
# counted and, past update.MAX_TRIAL_BOOTS, the old slot runs again: no watchdog or person is
# needed for a release that crashes to roll back. Confirmed code that fails is left as it is.
# Prints one JSON line when done: {"ev": "stage", "v", "trial" (boots on trial, 0: confirmed),
# "reports", "ms" (the stage's time, a signature check included), "free" (heap after it)}.
#
# Heap: what the stage imported (update, cbor, the verify's ed25519 and sha512) is dropped
# before the node starts; the node keeps only a Trial (a few hundred bytes) and imports
# update again only if it confirms a slot or fetches a release (firmware/fetch.py).
import sys

_BEFORE = set(sys.modules)


class Trial:
    """The running node's side: the boot stage's outcomes to report (SenML text records
    `update`), and the confirmation of a slot on trial once the gateway acks a frame made
    in this boot (an authenticated ack: firmware/link_serial.parse_ack checks its MAC)."""

    def __init__(self, root, base, version, on_trial, reports):
        self.root = root
        self.base = base  # the version flashed by cable
        self.version = version  # of the code running
        self.on_trial = on_trial
        self.reports = list(reports)
        self.first_seq = None  # the first sequence number of this boot (Node sets it)
        self.t0 = 0  # when the node started (ticks_ms), and how long code on trial may go
        self.limit_ms = 0  # without an acked frame before it resets the board (Node sets both)

    @property
    def slots(self):
        """The slots as the flash holds them now (update.Slots; imports update)."""
        import update
        return update.Slots(self.root, self.base)

    def version_text(self):
        v = self.version
        return "%d.%d.%d" % (v[0], v[1], v[2])

    def take_reports(self):
        out = [("update", r) for r in self.reports]
        self.reports = []
        return out

    def acked(self, seq):
        if self.on_trial and self.first_seq is not None and seq >= self.first_seq:
            text = self._confirm()  # a MemoryError here: the next ack tries again
            self.on_trial = False
            if text:
                self.reports.append(text)

    def _confirm(self):
        # update.Slots.confirm without importing update (1.5 KB on a Cortex-M3: on a small
        # heap the confirmation failed for want of it): the state file, trial and boots cleared
        import gc
        import json

        import board
        gc.collect()  # two file objects (about 250 B each) on what may be a fragmented heap
        path = self.root + "/state"
        st = json.loads(board.read_file(path) or b"{}")
        if not st.get("trial"):
            return None
        st["trial"] = 0
        st["boots"] = 0
        board.write_file_atomic(path, json.dumps(st).encode())
        return self.version_text() + ":confirmed"


def _version(text):
    try:
        v = tuple(int(x) for x in text.strip().split("."))
        return v if len(v) == 3 else (0, 0, 0)
    except ValueError:
        return (0, 0, 0)


def _stage(root):
    """Install, count, roll back (update.boot): the Trial the node runs with."""
    import board
    import update
    t0 = board.ticks_ms()
    raw = board.read_file(root + "/release.pub")
    try:
        public = bytes.fromhex(raw.decode().strip()) if raw else b""
    except ValueError:
        public = b""
    base = _version((board.read_file(root + "/base_version") or b"0.0.0").decode())
    slots, reports = update.boot(root, public, base, update.target())
    st = slots.st
    trial = Trial(root, base, slots.version, slots.on_trial, reports)
    ms = board.ticks_diff(board.ticks_ms(), t0)
    return trial, '{"ev": "stage", "v": "%s", "trial": %d, "reports": %d, "ms": %d' % (
        update.version_text(slots.version), st["boots"] if st["trial"] else 0, len(reports), ms)


def main(argv):
    trial, event = _stage(argv[2])
    # every module imported so far comes again from the active slot (a release replaces
    # board, cbor… too) or is dropped (the signature check's ed25519, sha512)
    for name in list(sys.modules):
        if name not in _BEFORE and name != __name__:
            del sys.modules[name]
    import gc
    gc.collect()
    free = gc.mem_free() if hasattr(gc, "mem_free") else -1
    print(event + ', "free": %d}' % free)
    try:
        return _run(argv, trial)
    except Exception as exc:
        if not trial.on_trial:
            raise
        # the code on trial cannot run: the next boot counts, and rolls back past the limit
        print("boot stage: the code on trial failed (%r); resetting" % (exc,))
        import board
        board.reset()
        raise  # a board without a reset (the unix port outside the bench): the process ends


def _run(argv, trial):
    try:
        import node  # type: ignore[import-not-found]  # a slot or a board holds main.py as node.mpy (gateway/tools/release.py, flash.py)
    except ImportError as exc:
        if "node" not in str(exc):
            raise  # the slot's node module is there and imports something missing
        import main as node  # the unix board running the sources
    return node.main(argv[:2], trial)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
