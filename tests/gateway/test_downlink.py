import json

import pytest

from gateway.decisions.downlink import CommandError, Downlink, parse
from gateway.runtime.registry import Registry


@pytest.fixture
def reg():
    r = Registry()
    r.add("pump3", bytes(32))
    return r


def cmd(**kw):
    return json.dumps(kw).encode()


def test_valid_commands(reg):
    c = parse("pump3", cmd(id="a1", cmd="set_period", args={"period_ms": 5000}), reg)
    assert (c.node, c.id, c.cmd, c.args) == ("pump3", "a1", "set_period", {"period_ms": 5000})
    assert parse("pump3", cmd(id="a2", cmd="identify"), reg).args == {}
    assert parse("pump3", cmd(id="a3", cmd="reboot", args={}), reg).cmd == "reboot"


@pytest.mark.parametrize("node, payload, msg", [
    ("ghost", cmd(id="x", cmd="reboot"), "unknown node"),
    ("pump3", b"{not json", "not JSON"),
    ("pump3", b"[1]", "JSON object"),
    ("pump3", cmd(cmd="reboot"), "id must be"),
    ("pump3", cmd(id="x", cmd="format_disk"), "unknown cmd"),
    ("pump3", cmd(id="x", cmd="set_period"), "needs period_ms"),
    ("pump3", cmd(id="x", cmd="set_period", args={"period_ms": 1}), "from 10 to"),
    ("pump3", cmd(id="x", cmd="set_batch", args={"batch": True}), "whole number"),
    ("pump3", cmd(id="x", cmd="reboot", args={"now": 1}), "takes no argument"),
])
def test_rejected_with_the_reason(reg, node, payload, msg):
    with pytest.raises(CommandError, match=msg):
        parse(node, payload, reg)


def test_queue_is_bounded(reg):
    d = Downlink(reg, per_node=2)
    for i in range(3):
        d.submit("pump3", cmd(id=f"c{i}", cmd="identify"))
    assert [c.id for c in d.pending("pump3")] == ["c1", "c2"] and d.dropped == 1


def test_commands_ride_acks_until_the_node_reports_them(reg):
    answers = []
    dl = Downlink(reg, on_result=lambda node, a: answers.append((node, a)))
    assert dl.idle()  # the pipeline then writes every ack without asking for_ack
    for i in range(6):
        dl.submit("pump3", cmd(id=f"c{i}", cmd="set_batch", args={"batch": i + 1}))
    first = dl.for_ack("pump3")
    assert [c.id for c in first] == ["c0", "c1", "c2", "c3"]  # PER_ACK at a time, oldest first
    assert [c.id for c in dl.for_ack("pump3")] == ["c0", "c1", "c2", "c3"]  # repeated until answered
    assert dl.result("pump3", "c1:ok") and dl.result("pump3", "c0:error:batch must be a whole number")
    assert not dl.result("pump3", "c1:ok")  # a repeated report changes nothing
    assert [c.id for c in dl.for_ack("pump3")] == ["c2", "c3", "c4", "c5"]
    assert answers == [("pump3", {"id": "c1", "status": "applied"}),
                       ("pump3", {"id": "c0", "status": "failed", "error": "batch must be a whole number"})]
    assert dl.for_ack("other") == [] and not dl.idle()
    assert dl.result("pump3", "c2:ok") and dl.result("pump3", "c3:ok") and dl.result("pump3", "c4:ok")
    assert not dl.idle()  # c5 still rides the acks
    assert dl.result("pump3", "c5:ok") and dl.idle()


def test_a_command_nobody_answers_expires(reg):
    from gateway.decisions.downlink import MAX_TRIES
    answers = []
    dl = Downlink(reg, on_result=lambda node, a: answers.append(a))
    dl.submit("pump3", cmd(id="lost", cmd="identify"))
    for _ in range(MAX_TRIES):
        assert [c.id for c in dl.for_ack("pump3")] == ["lost"]
    assert dl.for_ack("pump3") == [] and dl.pending("pump3") == [] and dl.idle()
    assert answers == [{"id": "lost", "status": "expired", "error": f"no answer from the node after {MAX_TRIES} acks"}]


def test_ack_with_commands_and_reports_in_frames():
    import cbor2

    from gateway.decisions.downlink import Command
    from gateway.runtime.ingest import ack_message, command_reports
    from gateway.protocol import cose
    key = bytes(range(32))
    msg = ack_message(key, 9, 0, [Command("pump3", "c1", "set_period", {"period_ms": 500})])
    assert cbor2.loads(cose.parse_mac0(msg).verify(key)) == [1, 9, 0, [["c1", "set_period", {"period_ms": 500}]]]
    assert cbor2.loads(cose.parse_mac0(ack_message(key, 9, 1)).verify(key)) == [1, 9, 1]
    pack = cbor2.dumps([{-2: "pump3/", -3: 1.7e9, 0: "temp", 2: 20.5}, {0: "cmd", 3: "c1:ok"},
                        {0: "cmd", 3: "c2:error:unknown command x"}])
    assert command_reports("pump3", pack) == ["c1:ok", "c2:error:unknown command x"]
    assert command_reports("pump3", cbor2.dumps([{-2: "pump3/", 0: "temp", 2: 1.0}])) == []
    assert command_reports("pump3", b"\x63cmd\xff") == []  # not CBOR: nothing, no error
