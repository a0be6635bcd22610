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
import sys

_BEFORE = set(sys.modules)

import board  # noqa: E402
import update  # noqa: E402


def _version(text):
    try:
        v = tuple(int(x) for x in text.strip().split("."))
        return v if len(v) == 3 else (0, 0, 0)
    except ValueError:
        return (0, 0, 0)


def main(argv):
    root = argv[2]
    raw = board.read_file(root + "/release.pub")
    try:
        public = bytes.fromhex(raw.decode().strip()) if raw else b""
    except ValueError:
        public = b""
    base = _version((board.read_file(root + "/base_version") or b"0.0.0").decode())
    slots, reports = update.boot(root, public, base, update.target())
    trial = update.Trial(slots, reports)
    # every module imported so far comes again from the active slot (a release replaces
    # board, cbor… too); the boot stage's own copies live on only inside `trial`
    for name in list(sys.modules):
        if name not in _BEFORE and name != __name__:
            del sys.modules[name]
    import gc
    gc.collect()
    try:
        return _run(argv, trial)
    except Exception as exc:
        if not slots.on_trial:
            raise
        # the code on trial cannot run: the next boot counts, and rolls back past the limit
        print("boot stage: the code on trial failed (%r); resetting" % (exc,))
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
