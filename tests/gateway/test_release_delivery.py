"""Node updates, the gateway's side (gateway/decisions/update.py) and the RFC 7959 block option
(gateway/protocol/coap.py), checked against aiocoap's; a delivery driven against the node's own
Receiver (firmware/update.py) through drops, a node reboot and a gateway restart."""
from __future__ import annotations

import os
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.decisions.update import Delivery, Rollout
from gateway.protocol import coap
from gateway.protocol.coap import CoapFormatError
from gateway.tools import release

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_block_option_matches_aiocoap():
    from aiocoap import optiontypes
    from aiocoap.numbers import OptionNumber

    for num in (0, 1, 5, 15, 16, 4095, 4096, (1 << 20) - 1):
        for more in (False, True):
            for szx in range(7):
                ours = coap.block(num, more, 16 << szx)
                theirs = optiontypes.BlockOption(OptionNumber.BLOCK2,
                                                 optiontypes.BlockOption.BlockwiseTuple(num, more, szx)).encode()
                assert ours == theirs, (num, more, szx)
                assert coap.parse_block(ours) == (num, more, 16 << szx)
    for bad in ((0, False, 8), (0, False, 2048), (0, False, 100), (1 << 20, False, 16)):
        with pytest.raises(ValueError):
            coap.block(*bad)
    with pytest.raises(CoapFormatError):
        coap.parse_block(b"\x07")  # SZX 7: BERT, reserved
    with pytest.raises(CoapFormatError):
        coap.parse_block(b"\x00\x00\x00\x10")


def test_delivery_serves_blocks_throttled():
    clock = Clock()
    body = bytes(range(256)) * 10
    d = Delivery("n1", (1, 1, 0), b"M" * 100, body, block_size=256, rate=512.0, clock=clock)
    assert d.offer_args() == {"rid": d.rid, "v": "1.1.0", "size": 2560, "block": 256, "rate": 512}
    assert d.serve("m", 0, 256) == (0.0, b"M" * 100, False)
    assert d.serve("m", 1, 256) is None  # past the end
    delay, data, more = d.serve("b", 0, 256)
    assert data == body[:256] and more and delay == pytest.approx(100 / 512)  # the manifest spent the bucket
    clock.t += 10.0  # the bucket holds one block, not ten seconds' worth
    assert d.serve("b", 1, 256)[0] == 0.0
    assert d.serve("b", 2, 256)[0] == pytest.approx(0.5)  # a node asking faster than the rate waits
    assert d.at == 512 and d.progress()["percent"] == 20.0
    # the node's size, not the gateway's: block 9 of 256 bytes is block 36 of 64
    assert d.serve("b", 36, 64)[1:] == (body[2304:2368], True)
    assert d.serve("b", 9, 256)[1:] == (body[2304:], False)
    assert d.state == "sending" and d.stalled(clock.t, 20)  # never offered
    d.offered()
    assert not d.stalled(clock.t + 19, 20) and d.stalled(clock.t + 20, 20)
    assert d.report("1.1.0:received") and d.state == "sent" and not d.stalled(clock.t + 99, 20)
    assert d.report("1.1.0:installed") and d.state == "installed"
    assert not d.report("1.0.9:confirmed")  # another release's report
    assert d.report("1.1.0:confirmed") and d.state == "confirmed"
    p = d.progress()
    assert p["percent"] == 100.0 and p["bytes"] == 2560 and p["eta_s"] is None


def test_delivery_failures_are_reported():
    d = Delivery("n1", (2, 0, 0), b"M", b"x" * 64, block_size=16, clock=Clock())
    assert d.report("2.0.0:refused:hash:app.py does not match the manifest")
    assert d.state == "failed" and d.error.startswith("refused:hash")
    assert not d.report("2.0.0:confirmed")  # ended
    d = Delivery("n1", (2, 0, 0), b"M", b"x" * 64, block_size=16, clock=Clock())
    assert d.report("2.0.0:rolled_back:not confirmed after 3 boots") and d.state == "failed"
    with pytest.raises(ValueError):
        Delivery("n1", (2, 0, 0), b"M", b"x", block_size=100)


def _release(tmp_path, key, version, parts, name="r"):
    path = tmp_path / f"{name}-{'.'.join(map(str, version))}.hrr"
    path.write_bytes(release.make(key, version, "mpy6", parts))
    return path


def test_rollout_refuses_bad_releases_and_resumes_after_a_restart(tmp_path):
    key = Ed25519PrivateKey.generate()
    pub = release.public_bytes(key)
    clock = Clock()
    good = _release(tmp_path, key, (1, 1, 0), {"app.py": b"A" * 3000})
    forged = _release(tmp_path, Ed25519PrivateKey.generate(), (1, 1, 0), {"app.py": b"A" * 3000}, "forged")
    r = Rollout(pub, tmp_path / "rollout.json", block_size=1024, rate=1e9, clock=clock)
    with pytest.raises(release.ReleaseError) as e:
        r.add("n1", forged)
    assert e.value.reason == "signature"
    with pytest.raises(release.ReleaseError) as e:
        r.add("n1", good, running=(1, 1, 0))
    assert e.value.reason == "downgrade"
    d = r.add("n1", good)
    assert r.serve("n1", d.rid, "b", 2, 1024)[1] == b"A" * 952
    assert r.serve("n1", "0" * 16, "b", 0, 1024) is None and r.serve("n2", d.rid, "b", 0, 1024) is None
    r.save()
    assert r.counts()["sending"] == 1
    again = Rollout(pub, tmp_path / "rollout.json", block_size=1024, rate=1e9, clock=clock)
    d2 = again.deliveries["n1"]
    assert d2.at == 2048 and d2.rid == d.rid and again.progress()[0]["percent"] == 68.3
    assert again.report("n1", "1.1.0:refused:downgrade:1.1.0 is not newer than 1.2.0").state == "failed"
    assert again.serve("n1", d.rid, "b", 0, 1024) is None  # an ended delivery serves nothing
    assert again.cancel("n1") and not again.deliveries
    # a release file gone from under a restarted gateway ends its delivery, not the gateway
    again.add("n1", good)
    good.unlink()
    assert Rollout(pub, tmp_path / "rollout.json", clock=clock).deliveries == {}


def test_delivery_into_the_node_receiver_through_drops_and_a_reboot(tmp_path):
    """The node's fetcher (firmware/fetch.py) asking the gateway's delivery for blocks and
    writing them with its own Receiver: answers lost, the node rebooted halfway (a new
    Fetcher and Receiver on the same flash); the slot ends whole and verified, and the
    second boot fetched only what the first had not written."""
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    try:
        import fetch
        import update
        key = Ed25519PrivateKey.generate()
        parts = {"app.py": os.urandom(5000), "data/x.bin": os.urandom(1234)}
        path = _release(tmp_path, key, (1, 1, 0), parts)
        clock = Clock()
        d = Rollout(release.public_bytes(key), None, block_size=256, rate=1e9, clock=clock).add("n1", path)
        root = str(tmp_path / "node")
        link = Link()
        node = FakeNode(link, update.Slots(root, (1, 0, 0)))
        f = fetch.Fetcher(node)
        assert f.offer(d.offer_args()) is None and f.offer(d.offer_args()) is None  # again: going on
        served = {"b": 0}
        now = fetch.board.ticks_ms()
        for turn in range(400):
            now = fetch.board.ticks_add(now, 5000)  # past any pacing or timeout
            f.tick(now)
            if not link.out:
                break
            req = coap.parse(link.out.pop())
            _, code, mid, token, options, _ = req
            part = options[11][2].decode()
            num, _, size = coap.parse_block(options[23][0])
            got = d.serve(part, num, size)
            if turn % 7 == 3:
                continue  # lost: the fetcher asks again after its timeout
            if part == "b":
                served["b"] += len(got[1])  # body bytes that reached the node
            f.answer(coap.encode(2, 0x45, mid, token, [(23, coap.block(num, got[2], size))], got[1]))
            if turn == 20:  # the node reboots: where it stands is on its flash
                node = FakeNode(link, update.Slots(root, (1, 0, 0)))
                f = fetch.Fetcher(node)
                assert f.offer(d.offer_args()) is None
        assert node.trial.reports == ["1.1.0:received"] and node.commands.reboot_at is not None
        assert served["b"] < d.size + 256  # resumed, not started again (at most one block twice)
        slots, reports = update.boot(root, release.public_bytes(key), (1, 0, 0))
        assert reports == ["1.1.0:installed"]
        assert open(os.path.join(root, str(slots.active), "app.py"), "rb").read() == parts["app.py"]
        assert d.report("1.1.0:received") and d.report(reports[0]) and d.state == "installed"
        sys.path.remove(slots.path())
        # a downgrade is refused at the offer, before a byte is fetched
        node = FakeNode(Link(), slots)
        assert fetch.Fetcher(node).offer(d.offer_args()).startswith("refused:downgrade")
        assert node.trial.reports[0].startswith("1.1.0:refused:downgrade:")
        # a transfer cut short: the gateway's block 3 says it is the last (M = 0) while the
        # manifest's size says more: refused as size, the spare slot emptied
        d2 = Rollout(release.public_bytes(key), None, block_size=256, rate=1e9, clock=clock).add("n1", path)
        root2 = str(tmp_path / "node2")
        link = Link()
        node = FakeNode(link, update.Slots(root2, (1, 0, 0)))
        f = fetch.Fetcher(node)
        assert f.offer(d2.offer_args()) is None
        for _ in range(100):
            now = fetch.board.ticks_add(now, 5000)
            f.tick(now)
            if not link.out:
                break
            _, code, mid, token, options, _ = coap.parse(link.out.pop())
            part = options[11][2].decode()
            num, _, size = coap.parse_block(options[23][0])
            got = d2.serve(part, num, size)
            more = got[2] and not (part == "b" and num == 3)
            f.answer(coap.encode(2, 0x45, mid, token, [(23, coap.block(num, more, size))], got[1]))
        assert node.trial.reports == ["1.1.0:refused:size:the body ended at 1024 of %d bytes" % d2.size]
        assert not f.busy() and node.commands.reboot_at is None
        slots = update.Slots(root2, (1, 0, 0))
        assert not os.path.exists(slots.dir(slots.spare)) and slots.st["pending"] is None
    finally:
        sys.path.remove(os.path.join(ROOT, "firmware"))
        for name in ("update", "fetch", "board", "board.unix", "board._files", "cbor", "ed25519", "sha512"):
            sys.modules.pop(name, None)


class Link:
    def __init__(self):
        self.out = []
        self.other = None
        self.mid = 0

    def send_coap(self, msg):
        self.out.append(msg)

    def next_mid(self):
        self.mid += 1
        return self.mid


class FakeNode:
    """What fetch.Fetcher uses of main.Node."""

    def __init__(self, link, slots):
        self.link, self.kid, self.cfg = link, b"n1", {"ack_timeout_ms": 300}
        self.trial = type("Trial", (), {"slots": slots, "version": slots.version, "reports": []})()
        self.commands = type("Commands", (), {"reboot_at": None})()
        self.empty = None

    def make_frame(self, pack):
        pass


def test_the_clouds_update_command(tmp_path):
    """`{"cmd": "update", "args": {"release": base64}}` on cmd/<node>: bad ones refused with the
    reason, a good one queued and offered to the node, its outcome answered to the cloud."""
    import base64
    import json

    from gateway.config.sections import UpdateSection
    from gateway.decisions.downlink import CommandError, Downlink
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.registry import Registry
    from gateway.runtime.updates import Updates

    key = Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_text(release.public_bytes(key).hex())
    registry = Registry()
    registry.add("n1")
    answers = []
    downlink = Downlink(registry, on_result=lambda node, a: answers.append((node, a)))
    metrics = Metrics()
    updates = Updates(UpdateSection(public_key=str(tmp_path / "release.pub")), str(tmp_path), downlink, metrics,
                      registry)
    downlink.route_updates(updates.cloud_command)
    good = _release(tmp_path, key, (1, 1, 0), {"app.py": b"A" * 3000}).read_bytes()
    forged = _release(tmp_path, Ed25519PrivateKey.generate(), (1, 1, 0), {"app.py": b"A"}, "forged").read_bytes()

    def cmd(node, **args):
        return json.dumps({"id": "u1", "cmd": "update", "args": args}).encode()

    for node, payload, why in (("n1", cmd("n1", release="%%%"), "not base64"),
                               ("n1", cmd("n1"), "one argument"),
                               ("n9", cmd("n9", release=base64.b64encode(good).decode()), "unknown node"),
                               ("n1", cmd("n1", release=base64.b64encode(forged).decode()),
                                "release refused: signature")):
        with pytest.raises(CommandError, match=why):
            downlink.submit(node, payload)
    assert metrics.get("headrace_update_releases_refused_total", reason="signature") == 1
    c = downlink.submit("n1", cmd("n1", release=base64.b64encode(good).decode()))
    assert (c.id, c.cmd, c.args) == ("u1", "update", {"nodes": ["n1"]})
    offer = downlink.for_ack("n1")[0]
    assert offer.cmd == "update" and offer.args == updates.rollout.deliveries["n1"].offer_args()
    updates.report("n1", "1.1.0:received")
    # the gateway restarts mid-update: the command's id comes back with the delivery
    updates = Updates(UpdateSection(public_key=str(tmp_path / "release.pub")), str(tmp_path), downlink, metrics,
                      registry)
    assert updates.rollout.deliveries["n1"].cloud_id == "u1"
    updates.report("n1", "1.1.0:installed")
    assert answers == []
    updates.report("n1", "1.1.0:confirmed")
    assert answers == [("n1", {"id": "u1", "status": "applied"})]
    updates.report("n1", "1.1.0:confirmed")  # a repeated report, and another restart: answered once
    updates = Updates(UpdateSection(public_key=str(tmp_path / "release.pub")), str(tmp_path), downlink, metrics,
                      registry)
    assert updates.rollout.deliveries["n1"].cloud_id == ""
    assert answers == [("n1", {"id": "u1", "status": "applied"})]
    assert metrics.get("headrace_update_state", node="n1", state="confirmed") == 1


def _cloud_update(tmp_path, cid: str, make_downlink):
    """A gateway with node n1 and updates on, and the cloud's `update` command `cid` for n1
    submitted: (registry, the [update] section, the Updates)."""
    import base64
    import json

    from gateway.config.sections import UpdateSection
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.registry import Registry
    from gateway.runtime.updates import Updates

    key = Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_text(release.public_bytes(key).hex())
    registry = Registry()
    registry.add("n1")
    downlink = make_downlink(registry)
    section = UpdateSection(public_key=str(tmp_path / "release.pub"))
    updates = Updates(section, str(tmp_path), downlink, Metrics(), registry)
    downlink.route_updates(updates.cloud_command)
    good = _release(tmp_path, key, (1, 1, 0), {"app.py": b"A" * 3000}).read_bytes()
    downlink.submit("n1", json.dumps({"id": cid, "cmd": "update",
                                      "args": {"release": base64.b64encode(good).decode()}}).encode())
    return registry, section, updates


def test_an_outcome_reached_just_before_a_restart_is_answered_at_start(tmp_path):
    """The node confirmed, the gateway saved it, and died before the cloud was answered: the
    next start answers it, once."""
    import asyncio

    from gateway.decisions.downlink import Downlink
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.updates import Updates

    answers = []
    registry, section, updates = _cloud_update(tmp_path, "u2", Downlink)  # no uplink yet: not answered
    updates.report("n1", "1.1.0:confirmed")
    downlink = Downlink(registry, on_result=lambda node, a: answers.append((node, a)))
    updates = Updates(section, str(tmp_path), downlink, Metrics(), registry)

    async def a_while():
        task = asyncio.create_task(updates.run(period=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(a_while())
    asyncio.run(a_while())
    assert answers == [("n1", {"id": "u2", "status": "applied"})]
    assert Updates(section, str(tmp_path), downlink, Metrics(), registry).rollout.deliveries["n1"].cloud_id == ""


def test_an_answered_outcome_is_forgotten_only_after_its_answer_is_committed(tmp_path):
    """With the downlink's ledger the answer is a spool row written by the next commit: the
    delivery keeps the command's id on disk until that commit, so a kill -9 in between
    answers it again after the restart (at least once), never not at all."""

    from gateway.decisions.downlink import Downlink
    from gateway.decisions.ledger import Ledger
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.updates import Updates

    answers, ledger = [], Ledger()
    registry, section, updates = _cloud_update(
        tmp_path, "u3", lambda r: Downlink(r, on_result=lambda node, a: answers.append((node, a)), ledger=ledger))
    epoch, _ = ledger.take()
    ledger.committed(epoch)
    updates.report("n1", "1.1.0:confirmed")
    updates.report("n1", "1.1.0:confirmed")  # repeated before the commit: still answered once
    assert answers == [("n1", {"id": "u3", "status": "applied"})]

    def saved_id():
        return Updates(section, str(tmp_path), Downlink(registry), Metrics(), registry).rollout.deliveries["n1"].cloud_id
    assert saved_id() == "u3"  # died here: the restart answers it again
    epoch, _ = ledger.take()
    ledger.committed(epoch)
    assert saved_id() == ""
    updates.report("n1", "1.1.0:confirmed")
    assert answers == [("n1", {"id": "u3", "status": "applied"})]


def test_ledger_after_runs_once_its_epoch_is_committed():
    from gateway.decisions.ledger import Ledger

    ledger, ran = Ledger(), []
    made = ledger.mark("k", "a", lambda: 1)
    ledger.after(made, lambda: ran.append("a"))
    assert ran == []
    epoch, _ = ledger.take()
    ledger.after(ledger.epoch, lambda: ran.append("b"))  # a later epoch: not yet
    ledger.failed({})
    assert ran == []
    ledger.committed(epoch)
    assert ran == ["a"]
    ledger.after(made, lambda: ran.append("c"))  # already durable: now
    assert ran == ["a", "c"]
    ledger.committed(ledger.take()[0])
    assert ran == ["a", "c", "b"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a real ENOSPC")
def test_a_release_the_disk_cannot_hold_is_refused_and_nothing_is_queued(tmp_path, caplog):
    """The release's temporary file is /dev/full, so its write meets the kernel's ENOSPC: the
    POST gets 507 and the cloud's command `rejected`, each saying what to free; counted, logged,
    nothing queued, the rollout's state untouched; once the disk has room, the same release goes."""
    import asyncio
    import base64
    import json

    from gateway.config.sections import HttpSection, UpdateSection
    from gateway.decisions.downlink import CommandError, Downlink
    from gateway.decisions.update import release_id
    from gateway.runtime.http import StatusServer
    from gateway.runtime.metrics import Metrics
    from gateway.runtime.registry import Registry
    from gateway.runtime.updates import Updates
    from tests.gateway.test_http_demands import post

    key = Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_text(release.public_bytes(key).hex())
    registry = Registry()
    registry.add("n1")
    metrics = Metrics()
    updates = Updates(UpdateSection(public_key=str(tmp_path / "release.pub")), str(tmp_path / "data"),
                      Downlink(registry), metrics, registry)
    data = _release(tmp_path, key, (1, 1, 0), {"app.py": b"A" * 3000}).read_bytes()
    _, sign1, _ = release.read(data, release.load_public(tmp_path / "release.pub"))
    tmp = updates.dir / f"{release_id(sign1)}.hrr.tmp"
    tmp.symlink_to("/dev/full")

    class Gw:
        pass
    gw = Gw()
    gw.updates = updates

    async def main():
        server = StatusServer(HttpSection(port=0), gw)
        await server.start()
        try:
            return await asyncio.to_thread(post, f"http://127.0.0.1:{server.port}/updates?nodes=n1", data)
        finally:
            await server.stop()
    code, err = asyncio.run(main())
    assert code == 507 and "No space left on device" in err["error"] and "free space" in err["error"]
    with pytest.raises(CommandError, match="cannot keep the release: No space left on device"):
        updates.cloud_command("n1", {"id": "u-1", "cmd": "update",
                                     "args": {"release": base64.b64encode(data).decode()}})
    assert 'headrace_update_releases_refused_total{reason="storage"} 2' in metrics.render()
    assert "cannot keep the release for n1" in caplog.text and "nothing was queued" in caplog.text
    assert updates.rollout.deliveries == {} and not (updates.dir / "rollout.json").exists()
    tmp.unlink()  # room for the release, none for the rollout's state: still nothing queued
    state_tmp = updates.dir / "rollout.json.tmp"
    state_tmp.symlink_to("/dev/full")
    with pytest.raises(OSError, match="No space left"):
        updates.queue(["n1"], data)
    assert updates.rollout.deliveries == {} and updates.rollout.release_files == {}
    assert 'headrace_update_releases_refused_total{reason="storage"} 3' in metrics.render()
    state_tmp.unlink()  # room again
    assert [q["node"] for q in updates.queue(["n1"], data)] == ["n1"]
    assert (updates.dir / f"{release_id(sign1)}.hrr").read_bytes() == data
    assert "n1" in json.loads((updates.dir / "rollout.json").read_text())
