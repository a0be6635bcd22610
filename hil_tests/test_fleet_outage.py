"""The cloud unreachable, out of process: two gateway processes (two lines), MicroPython
mechanics and an electrician (the real firmware over CoAP, simulated workers at their
terminals), and the cloud side as real processes: mosquitto (persistent sessions), the sink
storing into SQLite, and the fleet dispatcher (`headrace fleet run`). The whole cloud side is
killed (`kill -9`); each line goes on dispatching its own resources, its escalations wait in
its spool, and a demand its line serves meanwhile is withdrawn. The cloud comes back: the
demand no line could serve alone is lent across and done, and nothing happens twice."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from sink.decode import event_key

from .rig import (REPO, GatewayProcess, Mosquitto, SinkProcess, Subscriber, mechanic, open_demands, post_demand,
                  received_events, wait_for)

FLEET = """
[fleet]
enabled = true
escalate_after = 1
remote = ["electrician"]

[dispatch]
accept_timeout = 600
"""


def resource(rid: str, need: str, home: str, node: str) -> str:
    return f'\n[[resources]]\nid = "{rid}"\ncapabilities = ["{need}"]\nhome = {home}\nnode = "{node}"\n'


def state(gw, demand: int) -> dict:
    return next((d for d in open_demands(gw) if d["id"] == demand), {})


def applied(node) -> list[int]:
    return [e["args"]["demand"] for e in node.events("cmd") if e["cmd"] == "dispatch"]


@pytest.mark.long
def test_the_cloud_killed_each_line_dispatches_alone_and_back_it_lends_without_repeats(tmp_path):
    broker = Mosquitto(tmp_path, persistent=True).start()
    port = broker.port
    db = tmp_path / "cloud.sqlite"
    (tmp_path / "sink.toml").write_text(f'[sink]\nsqlite = "{db}"\nsource = "mqtt"\n[mqtt]\nport = {port}\n'
                                        f'client_id = "sink-outage"\n')
    (tmp_path / "fleet.toml").write_text(f'site = "bench"\ntick = 0.1\ndatabase = "{db}"\n[mqtt]\nport = {port}\n'
                                         f'client_id = "fleet-outage"\n')
    fleet_log = open(tmp_path / "fleet.log", "ab")
    keys = {n: os.urandom(32) for n in ("m1", "m2", "e2")}
    procs, gws, nodes = {}, [], []
    sub = Subscriber(port, persistent_session=True)

    def start_cloud():
        procs["sink"] = SinkProcess(tmp_path, tmp_path / "sink.toml", "sink").start()
        before = (tmp_path / "fleet.log").read_text().count("running")
        procs["fleet"] = subprocess.Popen([sys.executable, "-m", "gateway", "fleet", "run", "--config",
                                           str(tmp_path / "fleet.toml")], cwd=REPO, stdout=fleet_log,
                                          stderr=subprocess.STDOUT)
        wait_for(lambda: (tmp_path / "fleet.log").read_text().count("running") > before, 20, "the fleet dispatcher")

    try:
        start_cloud()
        for name, res in (("line1", resource("mech-line1", "mechanic", "[2.0, 2.0]", "m1")),
                          ("line2", resource("mech-line2", "mechanic", "[60.0, 2.0]", "m2")
                           + resource("elec-line2", "electrician", "[62.0, 2.0]", "e2"))):
            (tmp_path / name).mkdir()
            nodes_here = {n: keys[n] for n in (("m1",) if name == "line1" else ("m2", "e2"))}
            gws.append(GatewayProcess(tmp_path / name, port, nodes_here, extra=FLEET + res, gateway_id=name,
                                      mqtt_extra="reconnect_max = 1\n").start())
        l1, l2 = gws
        m1 = mechanic(tmp_path, l1, "m1", keys["m1"], accept_ms=300, work_ms=3000)
        m2 = mechanic(tmp_path, l2, "m2", keys["m2"], accept_ms=300, work_ms=1000)
        e2 = mechanic(tmp_path, l2, "e2", keys["e2"], accept_ms=300, work_ms=1000)
        nodes += [m1, m2, e2]
        for gw in gws:
            wait_for(lambda gw=gw: gw.metric("headrace_uplink_connected") == 1, 10, "the uplinks")
        # the broker keeps its sessions (the sink's, the fleet dispatcher's) in a file it saves every
        # second: a kill before the first save would lose them, which no outage test is about
        subscribed = time.time()
        wait_for(lambda: (tmp_path / "mosquitto.db").exists() and (tmp_path / "mosquitto.db").stat().st_mtime
                 > subscribed + 0.1, 10, "the broker to save its sessions")

        # the cloud side dies: broker, sink worker and fleet dispatcher, kill -9 each
        procs["fleet"].kill()
        procs["fleet"].wait()
        procs["sink"].kill()
        broker.proc.kill()
        broker.proc.wait()
        for gw in gws:
            wait_for(lambda gw=gw: gw.metric("headrace_uplink_connected") == 0, 10, "the uplinks down")
        a = post_demand(l1.http_port, {"need": "mechanic", "at": [3, 2], "priority": 9})["id"]
        wait_for(lambda: state(l1, a).get("state") == "accepted", 10, "line1's mechanic on A")
        b = post_demand(l1.http_port, {"need": "mechanic", "at": [20, 12], "priority": 8})["id"]
        e = post_demand(l1.http_port, {"need": "electrician", "at": [20, 12], "priority": 7})["id"]
        d = post_demand(l2.http_port, {"need": "mechanic", "at": [61, 2], "priority": 5})["id"]
        # each line goes on alone: line2 serves D, line1 serves A and then B (escalated after 1 s meanwhile)
        wait_for(lambda: not state(l2, d), 15, "line2's D done by its own mechanic")
        wait_for(lambda: not state(l1, a) and state(l1, b).get("resource") == "mech-line1", 15,
                 "line1's B taken by its own mechanic once A is done")
        wait_for(lambda: not state(l1, b), 15, "line1's B done")
        assert state(l1, e)["state"] == "open" and not state(l1, e).get("resource")  # nobody here can
        assert l1.metric("headrace_uplink_connected") == 0 and l1.metric("headrace_spool_depth") > 0

        # the cloud comes back: the broker on its port with its sessions, the sink, the fleet dispatcher
        broker.start()
        start_cloud()
        got = wait_for(lambda: s if (s := state(l1, e)).get("resource") == "line2/elec-line2" else None, 30,
                       "E lent line2's electrician")
        assert got["attempt"] == 1
        wait_for(lambda: not state(l1, e), 20, "E done by line2's electrician")
        (loan,) = applied(e2)

        def at_rest():  # every event once per key, as the sink keeps them
            seen = {}
            for ev in received_events(sub):
                seen.setdefault((ev["gw"], event_key(ev)), ev)
            return list(seen.values())

        def steps(gw, demand):
            return [(ev.get("resource"), ev["state"]) for ev in at_rest()
                    if ev["gw"] == gw and ev["type"] == "dispatch" and ev["demand"] == demand]
        want = {("line1", a): "mech-line1", ("line1", b): "mech-line1", ("line1", e): "line2/elec-line2",
                ("line2", d): "mech-line2", ("line2", loan): "elec-line2"}

        def all_steps():
            return {k: steps(*k) for k in want}
        try:  # each dispatch's three steps, each once, by the resource it had from the start
            wait_for(lambda: all(len(v) >= 3 for v in all_steps().values()), 20, "every step on the events topics")
        finally:
            got = all_steps()
        assert got == {k: [(r, s) for s in ("assigned", "accepted", "done")] for k, r in want.items()}
        esc = {(ev["demand"], ev["state"]) for ev in at_rest() if ev["gw"] == "line1" and ev["type"] == "escalation"}
        assert {(b, "escalated"), (b, "withdrawn"), (e, "escalated"), (e, "withdrawn")} <= esc
        assert not {x for x in esc if x[0] == a}  # A was taken at once
        # one loan in all, for E: the cloud never lent for B, which line1 served during the outage
        loans = [(ev["demand"], ev["state"]) for ev in at_rest() if ev["type"] == "loan"]
        assert [x for x in loans if x[1] == "granted"] == [(e, "granted")], loans
        # each node applied each of its dispatches once
        assert applied(m1) == [a, b] and applied(m2) == [d] and applied(e2) == [loan]
        # and the sink stored line1's steps once each
        def stored():
            with sqlite3.connect(db) as c:
                return c.execute("SELECT key, count(*) FROM events WHERE gateway = 'line1' AND type = 'dispatch' "
                                 "GROUP BY key").fetchall()
        rows = wait_for(lambda: r if len(r := stored()) >= 9 else None, 20, "the sink to store line1's steps")
        assert sorted(k for k, _ in rows) == sorted(f"{x}|{s}|1" for x in (a, b, e)
                                                    for s in ("assigned", "accepted", "done"))
        assert {n for _, n in rows} == {1}
        # the fleet's commands (cmd/_fleet) and the nodes' (cmd/<node>) on the same topic tree are
        # passed over by the sink, not kept as dead letters
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    finally:
        if "fleet" in procs:
            procs["fleet"].terminate()
            procs["fleet"].wait(10)
        fleet_log.close()
        for node in nodes:
            node.kill()
        for gw in gws:
            gw.stop()
        if "sink" in procs:
            procs["sink"].stop()
        sub.close()
        broker.stop()
