"""What the gateway knows survives `kill -9`: the real gateway process, a real mosquitto, a
resource's node speaking the real CoAP + COSE protocol. Killed mid-dispatch (assigned, not
yet accepted) twice, with a demand waiting and a cloud command queued, the gateway carries
each one on after its restart: no demand opened twice, no dispatch made twice, each queued
command delivered under its own id, every step on the events topic once at rest."""
from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request

import cbor2
import pytest
from aiocoap.numbers.codes import Code

from gateway.protocol import cose
from sink.decode import event_key

from .rig import GatewayProcess, coap_post, post_demand, received_events, wait_for

RESOURCES = """
[dispatch]
accept_timeout = 600

[[resources]]
id = "mech1"
capabilities = ["mechanic"]
home = [0.0, 0.0]
speed = 1.5
node = "m1"
"""


class MechanicNode:
    """The mechanic's tablet: frames of SenML records, and the commands its acks carry."""

    def __init__(self, gw: GatewayProcess, key: bytes, node: str = "m1"):
        self.gw, self.key, self.seq, self.node = gw, key, 0, node
        self.delivered: list[str] = []  # command ids, once per ack that carried them
        self.reports: list[str] = []

    def send(self, **records) -> list:
        items = [("cmd", {3: r}) for r in self.reports] + [(n, {2: float(v)}) for n, v in records.items()]
        recs = [{0: name, **value} for name, value in items or [("battery", {2: 90.0})]]
        recs[0].update({-2: f"{self.node}/", -3: time.time()})
        self.reports = []
        resp = coap_post(self.gw.coap_port, cose.mac0(self.key, self.node.encode(), cbor2.dumps(recs), seq=self.seq))
        assert resp.code == Code.CHANGED
        self.seq += 1
        body = cbor2.loads(cose.parse_mac0(resp.payload).verify(self.key))
        cmds = body[3] if len(body) == 4 else []
        for cid, _cmd, _args in cmds:
            self.delivered.append(cid)
            self.reports.append(f"{cid}:ok")  # applied once, reported on each repeat
        return cmds


def restores(gw) -> int:
    """The dispatcher's restore lines so far (another restore line, "... command answers for the
    broker", follows it when answers were waiting for the broker at the kill: not counted)."""
    return len(re.findall(r"restored from the spool: \d+ open demands", gw.log()))


def demands(gw) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.http_port}/demands", timeout=5) as r:
        return {d["id"]: d for d in json.load(r)["demands"]}


@pytest.mark.long
def test_kill_9_mid_dispatch_each_demand_dispatch_and_command_carries_on(tmp_path, mosquitto, subscriber):
    key = os.urandom(32)
    gw = GatewayProcess(tmp_path, mosquitto.port, {"m1": key}, extra=RESOURCES).start()
    node = MechanicNode(gw, key)
    try:
        wait_for(lambda: gw.metric("headrace_uplink_connected") == 1, 10, "the uplink")
        a = post_demand(gw.http_port, {"need": "mechanic", "at": [3, 4], "priority": 8})["id"]
        b = post_demand(gw.http_port, {"need": "mechanic", "at": [6, 8], "priority": 2})["id"]
        subscriber.client.publish("headrace/v1/bench/gwtest/cmd/m1",
                                  json.dumps({"id": "c-1", "cmd": "identify", "args": {"seconds": 5}}), qos=1)
        wait_for(lambda: any(t.endswith("cmd_result/m1") for t, _ in subscriber.messages), 10, "c-1 queued")
        wait_for(lambda: any(e.get("state") == "assigned" for e in received_events(subscriber)), 10, "a dispatch")
        assert demands(gw)[a]["state"] == "assigned" and demands(gw)[b]["state"] == "open"

        gw.stop(signal.SIGKILL)  # mid-dispatch: assigned, its command not yet delivered
        gw.restart()
        wait_for(lambda: restores(gw) == 1, 10, "the restore")
        d = demands(gw)
        assert (d[a]["state"], d[a]["resource"], d[a]["attempt"]) == ("assigned", "mech1", 1)
        assert d[b]["state"] == "open"
        # the node's next ack carries the dispatch and the cloud's command, queued before the kill
        cmds = node.send()
        assert sorted(c[0] for c in cmds) == sorted([f"dispatch-{a}", "c-1"])
        node.send(accept=a)
        node.send(done=a)
        wait_for(lambda: demands(gw).get(b, {}).get("state") == "assigned", 10, "b assigned once mech1 is free")

        gw.stop(signal.SIGKILL)  # mid-dispatch again: b assigned, not accepted
        gw.restart()
        wait_for(lambda: restores(gw) == 2, 10, "the second restore")
        d = demands(gw)
        assert set(d) == {b} and (d[b]["state"], d[b]["attempt"]) == ("assigned", 1)
        cmds = node.send()
        assert [c[0] for c in cmds] == [f"dispatch-{b}"]
        node.send(accept=b)
        node.send(done=b)
        wait_for(lambda: not demands(gw), 10, "every demand done")
        assert node.send() == []  # the last reports: nothing is left to carry
        # each command rode one ack: the node answered it in its next frame, before and after the kills
        assert sorted(node.delivered) == sorted([f"dispatch-{a}", "c-1", f"dispatch-{b}"])

        def steps():
            seen = {}
            for e in received_events(subscriber):
                seen.setdefault(event_key(e), e)  # at rest, as the sink stores them: once per key
            return seen
        want = {str(a), str(b)} | {f"{x}|{s}|1" for x in (a, b) for s in ("assigned", "accepted", "done")}
        got = wait_for(lambda: s if want <= set(s := steps()) else None, 20, "every step on the events topic")
        dispatches = [k for k, e in got.items() if e["type"] == "dispatch"]
        assert sorted(dispatches) == sorted(k for k in want if "|" in k), "a step made twice or one missing"
        assert len([e for e in got.values() if e["type"] == "demand"]) == 2
        results = [json.loads(p) for t, p in subscriber.messages if t.endswith("cmd_result/m1")]
        assert [r["status"] for r in results if r["id"] == "c-1"].count("applied") == 1
    finally:
        gw.stop()
