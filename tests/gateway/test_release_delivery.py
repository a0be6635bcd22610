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


def test_delivery_is_throttled_and_aligned():
    clock = Clock()
    d = Delivery("n1", (1, 1, 0), b"M" * 100, bytes(range(256)) * 10, block_size=256, rate=512.0, clock=clock)
    assert d.next_block()[0] == "manifest"
    assert d.next_block() is None  # the bucket: 100 bytes spent of 256
    d.node_at(0)
    clock.t += 1.0  # 512 bytes of budget
    kind, off, data, more = d.next_block(window=4)
    assert (kind, off, len(data), more) == ("block", 0, 256, True)
    assert d.next_block(window=4)[1] == 256
    assert d.next_block(window=4) is None  # 512 bytes a second
    clock.t += 10.0  # the bucket holds a second's worth at most, not ten
    got = [d.next_block(window=8) for _ in range(4)]
    assert [g[1] for g in got if g] == [512, 768] and got[2] is None
    # the node holds 700 bytes: resume from the block that holds byte 700, on a block boundary
    d.node_at(700)
    clock.t += 1.0
    assert d.next_block()[1] == 512
    d.node_at(2560)
    assert d.state == "sent" and d.next_block() is None
    assert d.report("1.1.0:installed") and d.state == "installed"
    assert not d.report("1.0.9:confirmed")  # another release's report
    assert d.report("1.1.0:confirmed") and d.state == "confirmed"
    p = d.progress()
    assert p["percent"] == 100.0 and p["bytes"] == 2560 and p["eta_s"] is None


def test_delivery_failures_are_reported():
    d = Delivery("n1", (2, 0, 0), b"M", b"x" * 64, block_size=16, clock=Clock())
    assert d.report("2.0.0:refused:hash:app.py does not match the manifest")
    assert d.state == "failed" and d.error.startswith("refused:hash") and d.next_block() is None
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
    d.next_block()
    d.node_at(2048)
    r.save()
    assert r.counts()["sending"] == 1
    again = Rollout(pub, tmp_path / "rollout.json", block_size=1024, rate=1e9, clock=clock)
    d2 = again.deliveries["n1"]
    assert d2.at == 2048 and d2.next_block()[1] == 2048 and again.progress()[0]["percent"] == 68.3


def test_delivery_into_the_node_receiver_through_drops_and_a_reboot(tmp_path):
    """The gateway's blocks fed to the node's own Receiver: some lost, the node rebooted
    halfway (a new Receiver on the same flash); the slot ends whole and verified."""
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    try:
        import update
        key = Ed25519PrivateKey.generate()
        parts = {"app.py": os.urandom(5000), "data/x.bin": os.urandom(1234)}
        path = _release(tmp_path, key, (1, 1, 0), parts)
        clock = Clock()
        d = Rollout(release.public_bytes(key), None, block_size=512, rate=51200.0, clock=clock).add("n1", path)
        root = str(tmp_path / "node")
        rx = update.Receiver(update.Slots(root, (1, 0, 0)))
        dropped = 0
        for turn in range(200):
            clock.t += 0.01  # 512 bytes of budget a turn
            item = d.next_block(window=2)
            if item is None:
                d.lost()  # nothing in flight answered: send again from where the node stands
                continue
            if turn % 5 == 3:
                dropped += 1
                continue  # lost on the link
            if item[0] == "manifest":
                d.node_at(rx.begin(item[1]))
            else:
                d.node_at(rx.write(item[1], item[2]))
            if turn == 9:
                rx = update.Receiver(update.Slots(root, (1, 0, 0)))  # the node rebooted
                d.manifest_taken = False  # it asks again with the manifest: begin() answers where it stands
            if d.state == "sent":
                break
        assert d.state == "sent" and dropped > 3
        rx.finish()
        slots, reports = update.boot(root, release.public_bytes(key), (1, 0, 0))
        assert reports == ["1.1.0:installed"]
        assert open(os.path.join(root, str(slots.active), "app.py"), "rb").read() == parts["app.py"]
        assert d.report(reports[0]) and d.state == "installed"
        sys.path.remove(slots.path())
    finally:
        sys.path.remove(os.path.join(ROOT, "firmware"))
        for name in ("update", "board", "board.unix", "board._files", "cbor", "ed25519", "sha512"):
            sys.modules.pop(name, None)
