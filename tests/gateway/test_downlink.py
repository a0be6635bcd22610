import json

import pytest

from gateway.downlink import CommandError, Downlink, parse
from gateway.registry import Registry


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
