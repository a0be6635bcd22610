"""The firmware frozen into MicroPython v1.28.0 (firmware/build/frozen.py): the unix port at 64
and 32 bits, run as a node against an acking peer on a pty. Skipped, with the reason, where
no MicroPython source is at hand (MICROPY_DIR, or ../shared/micropython/ beside the clone)."""
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "firmware" / "build"))
import frozen  # noqa: E402

sys.path.insert(0, str(ROOT))
from bench.firmware import acking_peer, run_node  # noqa: E402

# the targets (bench/firmware.py measures 10,000 frames there, and the smallest heaps)
HEAPS = {"unix64": "32k", "unix32": "24k"}
# what code loaded at its first use takes (docs/firmware.md, "Heap budget"): on the 64-bit image
# a command (commands.py, the CBOR decoder) needs more than its 32 KB target holds beside the
# steady state (below it, commands are refused and no frame is lost:
# test_a_command_with_no_heap_to_take_it_loses_no_frame); frames restored at boot (read into
# the ring, their check) fit the targets
LATE = {"unix64": {"commands": "38k", "restore": "32k"}, "unix32": {"commands": "24k", "restore": "24k"}}


@pytest.fixture(scope="module", params=sorted(HEAPS))
def image(request):
    why = frozen.missing_reason(request.param)
    if why:
        pytest.skip(why)
    return request.param, frozen.build(request.param)


def test_the_image_holds_the_firmware_frozen(image):
    target, path = image
    # with nothing but the frozen modules on the path, the firmware and asyncio import
    # (and hmac256's viper functions, frozen as native code, import: cose uses them)
    code = ("import sys; sys.path[:] = ['.frozen']; import main, senml, board, sensors.sim, asyncio, cose; "
            "print(board.NAME, sys.maxsize > 2**32, cose.hmac256 is not None)")
    p = subprocess.run([str(path), "-c", code], capture_output=True, text=True, timeout=30, cwd="/")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["unix", "True" if target == "unix64" else "False", "True"], p.stdout


def test_a_frozen_node_sends_in_a_small_heap_that_stays_flat(image, tmp_path):
    target, path = image
    d = run_node([str(path), "-X", f"heapsize={HEAPS[target]}"], 400, tmp_path)
    assert "failed" not in d, d
    assert d["sent"] == d["acked"] == 400 and d["dropped"] == 0, json.dumps(d)
    h = d["heap"]
    assert h["windows"] >= 2 and h["live_end"] <= h["live_100"] + 256, h  # flat from frame 100 on
    # a frame allocates nothing; rare work (the sequence mark, the log's compaction) does when
    # it falls in a measured frame: bounded
    assert h["alloc_min"] == 0 and h["alloc_max"] <= 1024, h


def test_an_image_is_built_once_for_its_inputs(image):
    target, path = image
    again = frozen.build(target)
    assert again == path and again.stat().st_mtime == path.stat().st_mtime


def _run_with_peer(path, heap, tmp_path, frames, acks=True, commands=(), drain_s=30, every=False):
    """The bench's node (16 simulated sensors, 8 readings a frame) on the image with `heap`,
    against a peer on a pty that acks (or not), the first ack carrying `commands`
    ([id, cmd, args] lists), or with `every` each ack (as a gateway offers a command until it
    is reported); its events, its exit code and the peer's counts (with the frames' payloads
    that carry a `fault` record)."""
    import os
    import threading
    import tty
    from types import SimpleNamespace

    master, slave = os.openpty()
    tty.setraw(slave)
    key = bytes(range(32))
    cfg = {"node": "fw", "key": key.hex(), "transport": "serial", "port": os.ttyname(slave),
           "sensors": ["temp", "vib", "pressure", "current", "humidity"] * 3 + ["temp"], "period_ms": 0,
           "batch": 8, "frames": frames, "state_file": str(tmp_path / "seq"), "quiet": True, "outbox": 16,
           "drain_timeout_s": drain_s}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    stop = threading.Event()
    counts = {"frames": 0, "seqs": set(), "faults": []}
    cmds = [SimpleNamespace(id=c[0], cmd=c[1], args=c[2]) for c in commands]
    t = threading.Thread(target=acking_peer, args=(master, key, stop, counts, acks, cmds, every), daemon=True)
    t.start()
    boot = f"import sys; import main; sys.exit(main.main(['main', {str(tmp_path / 'cfg.json')!r}]))"
    try:
        p = subprocess.run([str(path), "-X", f"heapsize={heap}", "-c", boot], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    finally:
        stop.set()
        t.join(2)
        os.close(master)
        os.close(slave)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return events, p, counts


def test_code_loaded_at_its_first_use_runs_in_the_heap_the_docs_give(image, tmp_path):
    """Code off the frame path is loaded at its first use, in the heaps LATE gives. A command
    riding an ack (commands.py and the CBOR decoder; identify: board/unix_rare.py) is applied
    and reported; then the node, restarted with frames its gateway never acked in its log, reads
    the log back (outbox_whole.py), checks those frames (cose_whole.py, cbor) and sends them
    again under their numbers."""
    target, path = image
    heap = LATE[target]["commands"]
    events, p, counts = _run_with_peer(path, heap, tmp_path, 300, commands=[["c1", "identify", {"seconds": 1}]])
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-1500:]
    done = events[-1]
    # the report of the command is a frame of its own (no readings: not one of `sent`)
    assert done["ev"] == "done" and done["sent"] == 300 and done["acked"] == 301 and done["cmds"] == 1, \
        json.dumps(done)
    assert done["faults"] == 0 and "led: identify 1 s" in p.stderr, p.stderr[-2000:]
    heap = LATE[target]["restore"]
    # no acks: the frames stay in the log (the drain gives up after a second)
    events, p, counts = _run_with_peer(path, heap, tmp_path, 12, acks=False, drain_s=1)
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-1500:]
    unacked = events[-1]["unacked"]
    assert unacked >= 8 and events[-1]["acked"] == 0, events[-1]
    waiting = set(counts["seqs"])
    events, p, counts = _run_with_peer(path, heap, tmp_path, 100)
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-1500:]
    boot, done = events[0], events[-1]
    assert boot["ev"] == "boot" and boot["restored"] == unacked and boot["stale"] == 0, boot
    assert done["acked"] == done["sent"] + unacked and done["faults"] == 0, done
    # the restored frames went again under their numbers (those sent before among them), below
    # the numbers of this run's own frames
    assert waiting <= counts["seqs"] and len([s for s in counts["seqs"] if s < boot["seq"]]) == unacked


def test_a_command_with_no_heap_to_take_it_loses_no_frame(image, tmp_path):
    """Below the heap a command needs (the 64-bit image at its 32 KB target), a command offered
    in every ack is not applied, but every frame is acked and none dropped, each ack's commands
    counted as a fault, and the next frame tells why, once. Left to resend, each ack would carry
    the command again and the outbox would drop its oldest frames; a fault with no heap to tell
    it, tried in every frame, reset the node."""
    target, path = image
    if LATE[target]["commands"] == HEAPS[target]:
        pytest.skip(f"the {target} image takes commands at its target heap ({HEAPS[target]}): "
                    "test_code_loaded_at_its_first_use_runs_in_the_heap_the_docs_give")
    events, p, counts = _run_with_peer(path, HEAPS[target], tmp_path, 300,
                                       commands=[["c1", "identify", {"seconds": 1}]], every=True)
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-1500:]
    done = events[-1]
    assert done["ev"] == "done" and done["sent"] == 300 and done["acked"] == 300 and done["dropped"] == 0, \
        json.dumps(done)
    assert done["cmds"] == 0 and done["faults"] >= 100 and "led: identify" not in p.stderr, json.dumps(done)
    assert len(counts["faults"]) == 1 and b"commands: no heap to take them" in counts["faults"][0], counts["faults"]
