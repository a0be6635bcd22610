# Node updates (firmware/update.py): a full update, each refusal, rollback, and a power
# cut before every file operation of an update (and halfway through every write).
# argv: ROOT TMP RELEASES, where RELEASES holds what tests/firmware/test_on_interpreters.py
# made with gateway/tools/release.py: release.pub (hex) and, per case, NAME.man (the
# COSE_Sign1) and NAME.bin (the parts, concatenated in the manifest's order).
# Each release has one part, app.py, whose VERSION says which slot runs.
import sys

ROOT, TMP, REL = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, ROOT + "/firmware")
import board  # noqa: E402
import update  # noqa: E402

try:
    import os
except ImportError:
    import uos as os  # type: ignore[no-redef]

PUB = bytes.fromhex(board.read_file(REL + "/release.pub").decode().strip())
BASE = (1, 0, 0)


def release(name):
    return board.read_file(REL + "/" + name + ".man"), board.read_file(REL + "/" + name + ".bin")


def fresh(name):
    root = TMP + "/" + name
    update._rmtree(root)
    return root


def running(slots_path):
    """The VERSION of app.py the node would import now (the base's is 1.0.0)."""
    sys.modules.pop("app", None)
    if slots_path is not None:
        sys.path.insert(0, slots_path)
    try:
        import app  # noqa: F401
        return app.VERSION
    except ImportError:
        return "1.0.0"  # the base: no app in any slot
    finally:
        if slots_path is not None:
            sys.path.remove(slots_path)
        sys.modules.pop("app", None)


def boot(root, **kw):
    slots, reports = update.boot(root, PUB, BASE, **kw)
    path = slots.path()
    if path is not None:
        sys.path.remove(path)  # boot() put it first; running() puts it back for the import
    return slots, reports, running(path)


def receive(root, name, chunk=100):
    """Send release `name` as the gateway would: begin, then chunks from the offset the node
    asks for, then finish. Returns the Receiver."""
    man, body = release(name)
    r = update.Receiver(update.Slots(root, BASE))
    pos = r.begin(man)
    while pos < len(body):
        pos = r.write(pos, body[pos:pos + chunk])
    r.finish()
    return r


# a full update: installed on the next boot, on trial, confirmed by an ack
root = fresh("full")
receive(root, "good")
slots, reports, ver = boot(root)
assert ver == "1.1.0" and reports == ["1.1.0:installed"] and slots.on_trial, (ver, reports)
assert slots.confirm() == "1.1.0:confirmed" and slots.confirm() is None
slots, reports, ver = boot(root)
assert ver == "1.1.0" and reports == [] and not slots.on_trial
# then 1.2.0 into the other slot, over the first
receive(root, "good2")
slots, reports, ver = boot(root)
assert ver == "1.2.0" and reports == ["1.2.0:installed"] and slots.active == 0
# a repeat of a chunk or a gap is ignored; the node says where it stands
root = fresh("resume")
man, body = release("good")
r = update.Receiver(update.Slots(root, BASE))
assert r.begin(man) == 0
assert r.write(0, body[:10]) == 10 and r.write(0, body[:10]) == 10 and r.write(50, body[50:60]) == 10
assert r.write(0, body[:16]) == 16  # a block that overlaps where the node stands: the rest is taken
r2 = update.Receiver(update.Slots(root, BASE))  # a reboot: the same release resumes at 10
assert r2.begin(man) == 16

# refused: forged manifest (another key), downgrade, not newer, wrong hash, truncated
root = fresh("forged")
receive(root, "forged")
slots, reports, ver = boot(root)
assert ver == "1.0.0" and reports[0].startswith("1.1.0:refused:signature"), reports
assert not slots.on_trial and slots.st["pending"] is None
for name, reason in (("downgrade", "downgrade"), ("same", "downgrade")):
    root = fresh(name)
    try:
        receive(root, name)
        raise AssertionError(name + " accepted")
    except update.UpdateError as e:
        assert e.reason == reason, (name, e.reason)
    assert boot(root)[2] == "1.0.0"
# a downgrade that gets past the receiver (signed, put there by hand) is refused at boot too
root = fresh("downgrade_boot")
receive(root, "good")
boot(root)[0].confirm()
slots = update.Slots(root, BASE)
d = slots.dir(slots.spare)
update._rmtree(d)
update._makedirs(d)
man, body = release("downgrade")
board.write_file_atomic(d + "/" + update.MANIFEST, man)
board.write_file_atomic(d + "/app.py", body)
slots.st["pending"] = slots.spare
slots.save()
slots, reports, ver = boot(root)
assert ver == "1.1.0" and reports[0].startswith("0.9.0:refused:downgrade"), reports
root = fresh("badhash")
try:
    receive(root, "badhash")
    raise AssertionError("a part with the wrong hash was taken")
except update.UpdateError as e:
    assert e.reason == "hash"
slots, reports, ver = boot(root)
assert ver == "1.0.0" and reports == []
root = fresh("truncated")
man, body = release("good")
r = update.Receiver(update.Slots(root, BASE))
r.write(r.begin(man), body[:len(body) // 2])
try:
    r.finish()
    raise AssertionError("a truncated release was finished")
except update.UpdateError as e:
    assert e.reason == "size"
assert boot(root)[2] == "1.0.0"
# a target the node does not run
root = fresh("target")
r = update.Receiver(update.Slots(root, BASE))
try:
    r.begin(release("good")[0], node_target="mpy99")
    raise AssertionError("a release for another target was taken")
except update.UpdateError as e:
    assert e.reason == "target"
# a second release while one is on trial waits for the confirmation
root = fresh("busy")
receive(root, "good")
boot(root)
try:
    receive(root, "good2")
    raise AssertionError("an update over an unconfirmed one was taken")
except update.UpdateError as e:
    assert e.reason == "busy"

# a release that never comes up healthy (its code crashes at boot: never confirmed) rolls back
root = fresh("rollback")
receive(root, "crash")
for n in range(update.MAX_TRIAL_BOOTS):
    slots, reports = update.boot(root, PUB, BASE)
    sys.path.remove(slots.path())
    try:
        running(slots.path())
        raise AssertionError("the crashing release imported")
    except ValueError:
        pass  # it crashes at import: the board resets, the boot is counted
slots, reports, ver = boot(root)
assert ver == "1.0.0" and reports == ["1.3.0:rolled_back:not confirmed after %d boots" % update.MAX_TRIAL_BOOTS], \
    reports
assert not slots.on_trial
try:  # and the same release is not taken again
    receive(root, "crash")
    raise AssertionError("a rolled-back release was taken again")
except update.UpdateError as e:
    assert e.reason == "bad"
assert boot(root)[2] == "1.0.0"


# power cuts: before the k-th file operation (and halfway through a write), for every k
class PowerCut(Exception):
    pass


class Faults:
    def __init__(self):
        self.left = -1

    def tick(self):
        if self.left == 0:
            raise PowerCut()
        self.left -= 1


FAULTS = Faults()
_open = open
_real_os = os
_real_write_atomic = board.write_file_atomic


class CutFile:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        FAULTS.tick()
        if FAULTS.left == 0 and len(data) > 1:  # the next tick cuts: tear this write in half
            self.f.write(data[:len(data) // 2])
            FAULTS.tick()
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


def cut_open(path, mode="r"):
    if "w" in mode or "a" in mode:
        FAULTS.tick()
        return CutFile(_open(path, mode))
    return _open(path, mode)


class CutOs:
    def __getattr__(self, name):
        fn = getattr(_real_os, name)
        if name in ("remove", "rename", "mkdir", "rmdir"):
            def cut(*a):
                FAULTS.tick()
                return fn(*a)
            return cut
        return fn


def cut_write_atomic(path, data):
    tmp = path + ".tmp"
    with cut_open(tmp, "wb") as f:
        f.write(data)
    FAULTS.tick()
    _real_os.rename(tmp, path)


update.open = cut_open
update.os = CutOs()
board.write_file_atomic = cut_write_atomic
seen = 0
k = 0
while True:
    root = fresh("cut")
    # running 1.1.0, confirmed; now 1.2.0 arrives and is cut short at operation k
    receive(root, "good")
    boot(root)[0].confirm()
    FAULTS.left = k
    cut = False
    try:
        receive(root, "good2", chunk=64)
        slots, reports, ver = boot(root)
        slots.confirm()
    except PowerCut:
        cut = True
    FAULTS.left = -1
    # after the cut: the node boots on a slot that works, and the update completes when sent again
    slots, reports, ver = boot(root)
    assert ver in ("1.1.0", "1.2.0"), (k, ver, reports)
    if not slots.on_trial and ver == "1.1.0":
        receive(root, "good2", chunk=64)
        slots, reports, ver = boot(root)
    assert ver == "1.2.0", (k, ver, reports)
    slots.confirm()
    assert boot(root)[2] == "1.2.0"
    if not cut:
        break
    seen += 1
    k += 1
update.open = _open
update.os = _real_os
board.write_file_atomic = _real_write_atomic
assert seen > 20, seen
print("OK t_update: %d power cuts" % seen)
